"""Migrations through the core on fake hypervisors and a real registry (migrations.migrate, run,
drain): what a completed move does to the records and allocations, what a failed one releases,
how auto picks its mode from the capabilities and the storage, moves inside a cluster node."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from support.fake_driver import CAPABILITIES, CLUSTER, FakeCloud, FakeWorld


@pytest.fixture(name='world')
def world_fixture():
    """fake1 and fake2, one shared directory between them; fake1 is where instances are booted."""
    made = FakeWorld()
    made.add_node('fake1')
    made.add_node('fake2')
    return made


@pytest.fixture(name='cloud')
def cloud_fixture(world, tmp_path):
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.image('tick')
        yield made


def migrations_of(cloud, name):
    return cloud.registry.list_migrations(instance_uuid=cloud.registry.get_instance(name=name).uuid)


@pytest.mark.parametrize('storage, state, expected', [
    ('shared', 'running', 'live'),    # both see the shared directory: memory only
    ('local', 'running', 'block'),    # the disk is not shared: copied as it runs
    ('local', 'stopped', 'cold'),
])
def test_a_completed_move_follows_the_mode_auto_picks_and_frees_the_source(cloud, storage, state, expected):
    cloud.boot('a', node='fake1', storage=storage, state=state)
    result = _migrations.migrate(cloud.context(), 'a')
    migration = result['migration']
    assert (migration['migration_type'], migration['status'], migration['source_node'], migration['dest_node'], migration['dest_host']) \
        == (expected, 'completed', 'fake1', 'fake2', 'fake2')
    assert migration['stats']['mode'] == expected and migration['finished_at']
    assert (result['instance']['node'], result['instance']['host'], result['instance']['state']) == ('fake2', 'fake2', state)
    assert cloud.allocations() == [('a', 'fake2')]
    assert cloud.world.placed() == {'a': ('fake2', state)}


def test_auto_is_live_without_a_storage_check_where_the_type_has_no_block_migration(world, tmp_path):
    caps = dataclasses.replace(CAPABILITIES, migration_modes=('live', 'cold'))
    for name in ('vm1', 'vm2'):
        world.add_endpoint(name, hypervisor_type='noblock', capabilities=caps)
        world.add_node(name)
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tick', hypervisor_type='noblock')
        cloud.boot('a', node='vm1', storage='shared')
        assert _migrations.migrate(cloud.context(), 'a')['migration']['migration_type'] == 'live'
        assert not [call for call in world.calls if call[1] == 'shares_storage']


def test_a_migration_that_fails_half_way_releases_the_target_and_records_the_failure(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    cloud.world.fail_migration('a')
    with pytest.raises(errors.MultihvError, match=r'migration \S+ of instance a from fake1 to fake2 failed: '
                                                  'injected failure half way through the migration'):
        _migrations.migrate(cloud.context(), 'a', 'live')
    (migration,) = migrations_of(cloud, 'a')
    assert (migration.status, migration.migration_type, migration.error) == (
        'failed', 'live', 'injected failure half way through the migration')
    assert migration.finished_at and cloud.nodes_of() == {'a': 'fake1'}
    assert cloud.allocations() == [('a', 'fake1')]
    assert cloud.world.placed() == {'a': ('fake1', 'running')}
    # Nothing is left held: the next move goes through.
    assert _migrations.migrate(cloud.context(), 'a', 'live')['migration']['status'] == 'completed'
    assert cloud.allocations() == [('a', 'fake2')]


def test_a_move_its_completion_timeout_aborted_is_cancelled(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    cloud.world.fail_migration('a', errors.MigrationCancelled('the completion timeout ran out; it was aborted'))
    with pytest.raises(errors.MultihvError, match='cancelled: the completion timeout ran out'):
        _migrations.migrate(cloud.context(), 'a')
    assert [m.status for m in migrations_of(cloud, 'a')] == ['cancelled']
    assert cloud.allocations() == [('a', 'fake1')] and cloud.world.placed() == {'a': ('fake1', 'running')}


def test_live_on_storage_the_target_does_not_share_fails_before_the_move_and_releases_the_target(cloud):
    cloud.boot('a', node='fake1', storage='local')
    with pytest.raises(errors.MultihvError, match='instance a has local storage that fake1 does not share with fake2: live migration '
                                                  'needs the disk on storage both hosts see; use mode block'):
        _migrations.migrate(cloud.context(), 'a', 'live')
    assert [m.status for m in migrations_of(cloud, 'a')] == ['failed']
    assert cloud.allocations() == [('a', 'fake1')] and ('fake1', 'migrate') not in cloud.world.calls


def test_refusals_come_before_any_claim_or_record(cloud):
    cloud.boot('a', node='fake1', state='stopped')
    with pytest.raises(errors.MultihvError, match='instance a is stopped: a live migration moves a running instance'):
        _migrations.migrate(cloud.context(), 'a', 'live')
    other = cloud.take_room('fake2')
    with pytest.raises(errors.MultihvError, match='no node can take instance a: .*ResourcesFilter removed fake2; instance a was not moved'):
        _migrations.migrate(cloud.context(), 'a')
    assert migrations_of(cloud, 'a') == [] and cloud.allocations() == sorted([('a', 'fake1'), (other.name, 'fake2')])


def test_a_drain_disables_the_node_moves_what_it_can_and_reports_the_rest(cloud):
    for name, state in (('a', 'present'), ('b', 'stopped'), ('c', 'present')):
        cloud.boot(name, node='fake1', storage='shared', state=state)
    cloud.world.fail_migration('c')
    result = _migrations.drain(cloud.context(), 'fake1', reason='maintenance')
    assert result['changed'] is True
    assert sorted((m['migration_type'], m['status']) for m in result['migrations']) == [('cold', 'completed'), ('live', 'completed')]
    assert [f['name'] for f in result['failures']] == ['c'] and 'injected failure half way' in result['failures'][0]['msg']
    node = cloud.registry.get_node('fake1')
    assert (node['enabled'], node['disabled_reason']) == (False, 'maintenance')
    assert cloud.nodes_of() == {'a': 'fake2', 'b': 'fake2', 'c': 'fake1'}
    assert cloud.allocations() == [('a', 'fake2'), ('b', 'fake2'), ('c', 'fake1')]
    assert cloud.world.placed() == {'a': ('fake2', 'running'), 'b': ('fake2', 'stopped'), 'c': ('fake1', 'running')}


def test_a_move_between_hosts_of_a_cluster_node_keeps_its_allocation(tmp_path):
    world = FakeWorld()
    world.add_cluster('vc/c1')
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tick', hypervisor_type=CLUSTER, template='tmpl')
        booted = cloud.boot('a')
        assert (booted.node, booted.host) == ('vc/c1', 'vc/c1-h2')  # equal hosts: the last by name
        result = _migrations.migrate(cloud.context(), 'a', target_host='vc/c1-h0')
        assert (result['instance']['node'], result['instance']['host']) == ('vc/c1', 'vc/c1-h0')
        migration = result['migration']
        assert (migration['migration_type'], migration['source_node'], migration['dest_node'], migration['dest_host']) == (
            'live', 'vc/c1', 'vc/c1', 'vc/c1-h0')
        assert cloud.allocations() == [('a', 'vc/c1')] and world.vm('a').host == 'vc/c1-h0'
        with pytest.raises(errors.MultihvError, match='Fake cluster nodes have no block migration; instance a was not moved'):
            _migrations.migrate(cloud.context(), 'a', 'block', target_host='vc/c1-h1')


def locks(cloud):
    return [dict(row) for row in cloud.registry._rows('SELECT * FROM locks ORDER BY name')]  # pylint: disable=protected-access


def test_an_instance_on_the_target_given_is_not_moved_and_without_a_target_each_run_moves_it(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    for check_mode in (True, False):
        stays = _migrations.migrate(cloud.context(), 'a', target_node='fake1', check_mode=check_mode)
        assert (stays['changed'], stays['migration'], stays['instance']['node']) == (False, None, 'fake1')
    # A KVM-like node is its own host: target_host names it too.
    assert _migrations.migrate(cloud.context(), 'a', target_host='fake1')['changed'] is False
    assert migrations_of(cloud, 'a') == [] and cloud.world.placed() == {'a': ('fake1', 'running')}

    moved = _migrations.migrate(cloud.context(), 'a', target_node='fake2')
    assert moved['changed'] is True and moved['instance']['node'] == 'fake2'
    assert _migrations.migrate(cloud.context(), 'a', target_node='fake2')['changed'] is False
    # No target: no desired place, each run is a move.
    assert _migrations.migrate(cloud.context(), 'a')['instance']['node'] == 'fake1'
    assert _migrations.migrate(cloud.context(), 'a')['instance']['node'] == 'fake2'
    assert len(migrations_of(cloud, 'a')) == 3


def test_check_mode_of_a_move_writes_nothing_not_even_a_lease(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    before = locks(cloud)
    planned = _migrations.migrate(cloud.context(), 'a', target_node='fake2', check_mode=True)
    assert planned['changed'] is True and planned['migration']['status'] == 'would run'
    assert locks(cloud) == before, 'check mode took a lease'
    assert migrations_of(cloud, 'a') == [] and cloud.world.placed() == {'a': ('fake1', 'running')}


def test_an_instance_on_the_host_given_of_a_cluster_node_is_not_moved(tmp_path):
    world = FakeWorld()
    world.add_cluster('vc/c1')
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tick', hypervisor_type=CLUSTER, template='tmpl')
        booted = cloud.boot('a')
        for target in ({'target_host': booted.host}, {'target_node': 'vc/c1'}, {'target_node': 'vc/c1', 'target_host': booted.host}):
            assert _migrations.migrate(cloud.context(), 'a', **target)['changed'] is False, target
        assert migrations_of(cloud, 'a') == [] and world.vm('a').host == booted.host


def test_the_diff_of_a_move_is_the_node_and_host_before_and_after(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    planned = _migrations.migrate(cloud.context(), 'a', target_node='fake2', check_mode=True)
    fake1, fake2 = {'node': 'fake1', 'host': 'fake1'}, {'node': 'fake2', 'host': 'fake2'}
    assert _migrations.diff(planned) == {'before': fake1, 'after': fake2}
    assert _migrations.diff(_migrations.migrate(cloud.context(), 'a', target_node='fake2')) == {'before': fake1, 'after': fake2}
    assert _migrations.diff(_migrations.migrate(cloud.context(), 'a', target_node='fake2')) == {'before': fake2, 'after': fake2}
    uuid = cloud.registry.get_instance(name='a').uuid
    drained = _migrations.drain(cloud.context(), 'fake2', check_mode=True)
    assert _migrations.diff(drained) == {'before': {uuid: fake2}, 'after': {uuid: fake1}}
