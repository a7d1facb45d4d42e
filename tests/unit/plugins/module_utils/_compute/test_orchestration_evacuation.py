"""Evacuation through the core on fake hypervisors and a real registry (evacuation.evacuate,
check_failed, clean_stale, set_admin_state): who gets the room first, what is reported unplaced,
the refusals, shared and local disks, and the clean-up of the stale copies when the node is back."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from support.fake_driver import FakeCloud, FakeWorld


def make_cloud(tmp_path, fence_command='true', room_mb=8192, **fake1):
    """fake1 (fenceable, failing in the tests) and fake2 (room_mb of RAM) sharing one directory;
    flavor small (1 GB RAM), image tick."""
    world = FakeWorld()
    world.add_node('fake1', fence_command=fence_command, **fake1)
    world.add_node('fake2', memory_mb=room_mb)
    cloud = FakeCloud(world, tmp_path)
    cloud.flavor('small')
    cloud.image('tick')
    return cloud


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    with make_cloud(tmp_path) as made:
        yield made


def evacuations(cloud, status=None):
    return cloud.registry.list_migrations(migration_type='evacuation', status=status)


def test_a_fenced_node_s_instances_are_rebuilt_elsewhere_with_their_disks_kept_when_shared(cloud):
    cloud.network('default')
    shared = cloud.boot('shared-one', node='fake1', storage='shared', networks=[{'network': 'default'}])
    local = cloud.boot('local-one', node='fake1', storage='local')
    cloud.boot('stopped-one', node='fake1', storage='shared', state='stopped')
    cloud.world.power_loss('fake1')
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    assert (result['changed'], result['fencing'], result['unplaced'], result['failures']) == (True, 'fenced', [], [])
    assert cloud.registry.get_node('fake1')['forced_down'] is True
    done = dict((e['name'], e) for e in result['evacuations'])
    assert sorted((name, e['status'], e['dest_node'], e['disk']) for name, e in done.items()) == [
        ('local-one', 'done', 'fake2', 'rebuilt'), ('shared-one', 'done', 'fake2', 'kept'), ('stopped-one', 'done', 'fake2', 'kept')]
    assert 'admin_password' in done['local-one'] and 'admin_password' not in done['shared-one']
    assert cloud.nodes_of() == {'local-one': 'fake2', 'shared-one': 'fake2', 'stopped-one': 'fake2'}
    assert [node for _name, node in cloud.allocations()] == ['fake2'] * 3
    assert sorted(m.stats['disk'] for m in evacuations(cloud, 'done')) == ['kept', 'kept', 'rebuilt']
    # The rebuilt copies run where they should; the stale ones wait, powered off, on fake1.
    world = cloud.world
    assert world.vm('shared-one', 'fake2').disks == world.vm('shared-one', 'fake1').disks == ['shared/%s.disk' % shared.uuid]
    assert world.vm('shared-one', 'fake2').macs == shared.identity['macs']
    assert world.vm('local-one', 'fake2').disks == ['local-fake2/%s.disk' % local.uuid]
    assert (world.vm('stopped-one', 'fake2').power, world.vm('shared-one', 'fake2').power) == ('stopped', 'running')
    assert world.vm('shared-one', 'fake1').power == 'stopped'


def test_when_room_is_short_the_first_in_restart_order_get_it_and_the_rest_stay_recorded(tmp_path):
    with make_cloud(tmp_path, room_mb=2048) as cloud:
        for name, params in (('n1', {}), ('ha', {'ha': True}), ('p9', {'restart_priority': 9}), ('n2', {})):
            cloud.boot(name, node='fake1', **params)
        cloud.world.power_loss('fake1')
        result = _evacuation.evacuate(cloud.context(), 'fake1')
        assert [e['name'] for e in result['evacuations']] == ['ha', 'p9']
        assert [u['name'] for u in result['unplaced']] == ['n1', 'n2'] and result['failures'] == []
        assert result['unplaced'][0]['msg'].startswith('no node can take instance n1: ')
        assert result['unplaced'][0]['msg'].endswith('; instance n1 was not evacuated and is still recorded on fake1')
        assert cloud.nodes_of() == {'ha': 'fake2', 'p9': 'fake2', 'n1': 'fake1', 'n2': 'fake1'}
        assert cloud.allocations() == [('ha', 'fake2'), ('n1', 'fake1'), ('n2', 'fake1'), ('p9', 'fake2')]
        assert sorted(m.instance_uuid for m in evacuations(cloud)) == sorted(
            cloud.registry.get_instance(name=name).uuid for name in ('ha', 'p9'))
        # Again, once room is made: the rest follow, and what was done is not done twice.
        cloud.world.nodes['fake2'].hosts[0].memory_mb = 8192
        again = _evacuation.evacuate(cloud.context(), 'fake1')
        assert (again['fencing'], [e['name'] for e in again['evacuations']]) == ('forced_down', ['n1', 'n2'])
        assert set(cloud.nodes_of().values()) == {'fake2'}


@pytest.mark.parametrize('fail, fence_command, expected', [
    ('nothing', 'true', 'node fake1 answers (its hypervisor is reachable)'),
    ('network', '', 'node fake1 does not answer (fake endpoint fake1 does not answer) but is neither forced down nor fenceable'),
    ('network', 'false', 'fencing node fake1 failed: false exited 1'),
])
def test_a_refused_evacuation_leaves_everything_as_it_was(tmp_path, fail, fence_command, expected):
    with make_cloud(tmp_path, fence_command=fence_command) as cloud:
        cloud.boot('a', node='fake1', storage='shared')
        if fail == 'network':
            cloud.world.stop_answering('fake1')  # its VMs may well run on: two copies would corrupt the disk
        with pytest.raises(errors.MultihvError, match='[Nn]othing was evacuated') as refused:
            _evacuation.evacuate(cloud.context(), 'fake1')
        assert expected in str(refused.value)
        assert not (cloud.registry.get_node('fake1') or {}).get('forced_down')
        assert evacuations(cloud) == [] and cloud.allocations() == [('a', 'fake1')]
        assert cloud.world.placed() == {'a': ('fake1', 'running')}


def test_a_node_whose_type_recovers_by_itself_is_refused_with_how(tmp_path):
    world = FakeWorld()
    world.add_cluster('vc/c1', fence_command='true')
    world.stop_answering('vc')
    with FakeCloud(world, tmp_path) as cloud:
        with pytest.raises(errors.MultihvError) as refused:
            _evacuation.evacuate(cloud.context(), 'vc/c1')
        assert str(refused.value) == 'node vc/c1 is a fake cluster: fake HA restarts the VMs by itself. Nothing was evacuated'
        assert cloud.registry.list_nodes() == []


def test_a_rebuild_that_fails_releases_its_target_and_leaves_the_instance_on_the_failed_node(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    cloud.boot('b', node='fake1', storage='shared')
    cloud.world.power_loss('fake1')
    cloud.world.fail_spawn(name='a')
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    assert [e['name'] for e in result['evacuations']] == ['b']
    (failure,) = result['failures']
    assert failure['name'] == 'a' and failure['msg'].endswith(
        'to fake2 failed: injected spawn failure; instance a was not evacuated and is still recorded on fake1')
    assert cloud.nodes_of() == {'a': 'fake1', 'b': 'fake2'} and cloud.allocations() == [('a', 'fake1'), ('b', 'fake2')]
    assert sorted(m.status for m in evacuations(cloud)) == ['done', 'failed']
    assert cloud.world.vm('a', 'fake2') is None


def test_a_shared_disk_is_rebuilt_only_on_a_node_that_sees_it(tmp_path):
    with make_cloud(tmp_path, storage_peers=['fake1', 'fake3']) as cloud:
        cloud.world.add_node('fake3', memory_mb=2048)  # less room than fake2, which the scheduler would prefer
        cloud.boot('shared-one', node='fake1', storage='shared')
        cloud.boot('local-one', node='fake1', storage='local')
        cloud.world.power_loss('fake1')
        _evacuation.evacuate(cloud.context(), 'fake1')
        assert cloud.nodes_of() == {'shared-one': 'fake3', 'local-one': 'fake2'}


def test_check_mode_fences_nothing_and_says_where_each_would_go(tmp_path):
    mark = tmp_path / 'fenced'
    with make_cloud(tmp_path, fence_command='touch %s' % mark) as cloud:
        cloud.boot('a', node='fake1')
        cloud.world.power_loss('fake1')
        result = _evacuation.evacuate(cloud.context(), 'fake1', check_mode=True)
        assert (result['changed'], result['fencing']) == (True, 'would fence')
        assert [(e['name'], e['status'], e['dest_node']) for e in result['evacuations']] == [('a', 'would run', 'fake2')]
        assert not mark.exists() and cloud.registry.get_node('fake1')['forced_down'] is False
        assert evacuations(cloud) == [] and cloud.nodes_of() == {'a': 'fake1'}
        _evacuation.evacuate(cloud.context(), 'fake1')
        assert mark.exists() and cloud.nodes_of() == {'a': 'fake2'}


def test_the_stale_copies_go_when_the_node_is_back_and_only_then(cloud):
    shared = cloud.boot('shared-one', node='fake1', storage='shared')
    local = cloud.boot('local-one', node='fake1', storage='local')
    world = cloud.world
    world.power_loss('fake1')
    _evacuation.evacuate(cloud.context(), 'fake1')
    back = {'forced_down': False, 'enabled': True}
    with pytest.raises(errors.MultihvError, match='node fake1 has 2 evacuated instances whose stale copies must be destroyed before '
                                                  'it takes instances again, and it does not answer'):
        _evacuation.set_admin_state(cloud.context(), 'fake1', back)
    assert cloud.registry.get_node('fake1')['forced_down'] is True and world.vm('local-one', 'fake1') is not None

    world.answer_again('fake1')
    changed, before, after, cleaned = _evacuation.set_admin_state(cloud.context(), 'fake1', back)
    assert changed is True and (before['forced_down'], after['forced_down']) == (True, False)
    assert sorted((c['name'], c['destroyed'], c['disks_removed']) for c in cleaned) == [
        ('local-one', True, True), ('shared-one', True, False)]
    assert world.placed() == {'local-one': ('fake2', 'running'), 'shared-one': ('fake2', 'running')}
    # The shared disk is the rebuilt instance's now; the local one on fake1 was the stale copy's only.
    assert world.disks == {'shared/%s.disk' % shared.uuid, 'local-fake2/%s.disk' % local.uuid,
                           'shared/%s.config' % shared.uuid, 'local-fake2/%s.config' % local.uuid}  # their config drives
    assert [m.status for m in evacuations(cloud)] == ['completed', 'completed']
    assert cloud.registry.get_node('fake1')['forced_down'] is False
    assert _evacuation.set_admin_state(cloud.context(), 'fake1', back)[3] == []  # nothing left to clean


def test_a_rebuild_that_overstays_leaves_no_copy_on_the_target(cloud):
    cloud.boot('a', node='fake1', storage='shared')
    cloud.world.power_loss('fake1')
    cloud.world.fail_spawn(name='a', error=errors.Unreachable('fake2 did not answer within 600 s'), leave_behind=True)
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    assert [f['name'] for f in result['failures']] == ['a'] and cloud.nodes_of() == {'a': 'fake1'}
    assert cloud.allocations() == [('a', 'fake1')]
    assert cloud.world.vm('a', 'fake2') is None


def resized(cloud, name, on, **params):
    """name booted small on node `on`, then resized to big (2 vCPUs, 2048 MB, 5 GB) where params say: it waits in verify_resize."""
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import resize as _resize
    cloud.flavor('big', vcpus=2, ram_mb=2048, disk_gb=5)
    record = cloud.boot(name, node=on, storage='shared')
    changed, after = _resize.resize(cloud.context(), record, 'big', **params)
    assert changed and after.state == 'verify_resize'
    return after


@pytest.mark.parametrize('power', ['running', 'stopped'])
def test_an_instance_waiting_for_its_resize_is_evacuated_with_its_new_flavor_and_the_resize_confirmed(cloud, power):
    record = resized(cloud, 'r1', 'fake1')
    if power == 'stopped':  # stopped before the resize: the migration remembers it
        migration = cloud.registry.list_migrations(migration_type='resize')[0]
        cloud.registry.update_migration(migration.id, stats=dict(migration.stats, power='stopped'))
    kept = [d for d in cloud.world.disks if d.endswith('.resize')]
    assert kept == ['shared/%s.resize' % record.uuid]
    cloud.world.power_loss('fake1')
    planned = _evacuation.evacuate(cloud.context(), 'fake1', check_mode=True)
    assert [(e['name'], e['dest_node']) for e in planned['evacuations']] == [('r1', 'fake2')]
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    assert (result['failures'], result['unplaced']) == ([], [])
    (done,) = result['evacuations']
    resize = cloud.registry.get_migration(done['resize'])
    assert (resize.migration_type, resize.status) == ('resize', 'completed') and 'confirmed by the evacuation of node fake1' in resize.error
    after = cloud.registry.get_instance(name='r1')
    assert (after.node, after.flavor, after.state) == ('fake2', 'big', power)
    vm = cloud.world.vm('r1', 'fake2')
    assert (vm.vcpus, vm.memory_mb, vm.power) == (2, 2048, power)
    assert [(a['node'], a['vcpus'], a['memory_mb'], a['disk_gb']) for a in cloud.registry.list_allocations(instance_uuid=record.uuid)] == [
        ('fake2', 2, 2048, 5)]
    assert not [d for d in cloud.world.disks if d.endswith('.resize')], 'the copy of the old disk was left beside the shared disk'


def test_an_instance_resized_onto_the_failed_node_leaves_no_claim_on_the_node_it_came_from(tmp_path):
    world = FakeWorld()
    world.add_node('fake1', fence_command='true')
    world.add_node('fake2')
    world.add_node('fake3')
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tick')
        record = resized(cloud, 'r1', 'fake2', node='fake1')  # moved cold to fake1: its old claim stays on fake2
        assert sorted(a['node'] for a in cloud.registry.list_allocations(instance_uuid=record.uuid)) == ['fake1', 'fake2']
        world.power_loss('fake1')
        result = _evacuation.evacuate(cloud.context(), 'fake1', target_node='fake3')
        assert [(e['name'], e['dest_node']) for e in result['evacuations']] == [('r1', 'fake3')]
        assert [(a['node'], a['memory_mb']) for a in cloud.registry.list_allocations(instance_uuid=record.uuid)] == [('fake3', 2048)]
        assert cloud.registry.get_migration(result['evacuations'][0]['resize']).status == 'completed'
