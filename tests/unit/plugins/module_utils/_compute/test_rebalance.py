"""Rebalancing through the core on fake hypervisors and a real registry (rebalance.rebalance): what is selected,
measured, planned and moved; check mode; what is never moved; the scheduler's filters; failures; leases; and the
bad input of issue 18 §4 (nodes of both types, unknown names, bounds), each refused with nothing moved."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import rebalance as _rebalance
from support.fake_driver import FakeCloud, FakeWorld


def make_cloud(world, tmp_path):
    cloud = FakeCloud(world, tmp_path)
    cloud.flavor('small', ram_mb=1024)
    cloud.image('tick')
    return cloud


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1, fake2 and fake3 (8 CPUs, 8192 MB each, one shared directory); four busy instances on fake1."""
    world = FakeWorld()
    for name in ('fake1', 'fake2', 'fake3'):
        world.add_node(name)
    with make_cloud(world, tmp_path) as made:
        for index in range(4):
            made.boot('a%d' % index, node='fake1', storage='shared')
            world.set_usage('a%d' % index, cpu=1.0)
        yield made


def locks(cloud):
    with sqlite3.connect(cloud.path) as db:
        return db.execute('SELECT name, owner, expires_at, generation FROM locks ORDER BY name').fetchall()


def state_of(cloud):
    """Everything a rebalance could change: records, allocations, migrations, leases and the VMs."""
    return ([i.as_dict() for i in cloud.registry.list_instances()], cloud.allocations(),
            [m.as_dict() for m in cloud.registry.list_migrations()], locks(cloud), cloud.world.placed())


def moved(result):
    return [(m['instance'], m['source'], m['target'], m['status']) for m in result['moves']]


def test_check_mode_returns_the_plan_with_loads_and_changes_nothing_not_even_a_lease(cloud):
    before = state_of(cloud)
    result = _rebalance.rebalance(cloud.context(), interval=2.5, check_mode=True)
    assert result['changed'] is True and result['failures'] == [] and result['skipped'] == []
    assert moved(result) == [('a0', 'fake1', 'fake2', 'would run'), ('a1', 'fake1', 'fake3', 'would run')]
    first, second = result['moves']
    assert first['load_before'] == {'source': 0.5, 'target': 0.0} and first['load_after'] == {'source': 0.375, 'target': 0.125}
    assert first['spread_after'] < first['spread_before'] == result['spread_before']
    assert second['spread_before'] == first['spread_after'] and second['spread_after'] == result['spread_after']
    assert (result['threshold'], result['min_gain']) == (0.1, 0.02) and result['spread_after'] <= 0.1
    nodes = dict((n['node'], n) for n in result['nodes'])
    assert nodes['fake1'] == {'node': 'fake1', 'cpus': 8, 'memory_mb': 8192, 'cpu_used': 4.0, 'memory_mb_used': 4096.0,
                              'load_before': 0.5, 'load_after': 0.25, 'instances': 4, 'movable': 4}
    assert state_of(cloud) == before
    assert not [call for call in cloud.world.calls if call[1] == 'migrate']
    assert sorted(cloud.world.usage_calls) == [('fake1', 2.5), ('fake2', 2.5), ('fake3', 2.5)]  # the interval reaches the drivers


def test_a_run_moves_as_planned_frees_its_leases_and_a_second_run_moves_nothing(cloud):
    result = _rebalance.rebalance(cloud.context(), interval=1)
    assert result['changed'] is True and result['failures'] == []
    assert moved(result) == [('a0', 'fake1', 'fake2', 'completed'), ('a1', 'fake1', 'fake3', 'completed')]
    migration = result['moves'][0]['migration']
    assert (migration['migration_type'], migration['status'], migration['source_node'], migration['dest_node']) == (
        'live', 'completed', 'fake1', 'fake2')
    assert cloud.nodes_of() == {'a0': 'fake2', 'a1': 'fake3', 'a2': 'fake1', 'a3': 'fake1'}
    assert cloud.allocations() == [('a0', 'fake2'), ('a1', 'fake3'), ('a2', 'fake1'), ('a3', 'fake1')]
    assert dict((n['node'], n['load_after']) for n in result['nodes']) == {'fake1': 0.25, 'fake2': 0.125, 'fake3': 0.125}
    assert all(owner == '' for _name, owner, _expires, _generation in locks(cloud)), 'every lease given back'
    assert set(name for name, *_rest in locks(cloud)) >= {'node:fake1', 'node:fake2', 'node:fake3'}
    again = _rebalance.rebalance(cloud.context(), interval=1)
    assert (again['changed'], again['moves'], again['spread_before']) == (False, [], result['spread_after'])


def test_level_one_measures_and_moves_nothing(cloud):
    result = _rebalance.rebalance(cloud.context(), aggressiveness=1, interval=1)
    assert (result['changed'], result['moves'], result['threshold'], result['min_gain']) == (False, [], None, None)
    assert result['spread_before'] > 0.2 and cloud.nodes_of()['a0'] == 'fake1'


def test_max_moves_bounds_a_run(cloud):
    assert moved(_rebalance.rebalance(cloud.context(), max_moves=1, interval=1)) == [('a0', 'fake1', 'fake2', 'completed')]


def test_what_is_not_running_held_by_another_run_or_not_the_clouds_loads_its_node_and_stays(tmp_path):
    world = FakeWorld()
    world.add_node('fake1')
    world.add_node('fake2')
    with make_cloud(world, tmp_path) as cloud:
        for name in ('held', 'resizing', 'stopped', 'free'):
            cloud.boot(name, node='fake1', storage='shared', state='stopped' if name == 'stopped' else 'started')
            world.set_usage(name, cpu=1.0)
        world.add_foreign_vm('fake1', 'foreign', vcpus=4, memory_mb=2048)
        world.set_usage('foreign', cpu=3.0)
        registry = cloud.registry
        registry.update_instance(registry.get_instance(name='resizing').uuid, state='verify_resize')
        other = _leases.take(registry, 'instance:%s' % registry.get_instance(name='held').uuid, 0, 'test', 'another run')
        result = _rebalance.rebalance(cloud.context(), aggressiveness=5, interval=1)
        assert moved(result) == [('free', 'fake1', 'fake2', 'completed')]
        (fake1,) = [n for n in result['nodes'] if n['node'] == 'fake1']
        # held, resizing, free and the foreign VM ran through the interval; the stopped one uses nothing.
        assert (fake1['instances'], fake1['movable'], fake1['cpu_used'], fake1['memory_mb_used']) == (4, 1, 6.0, 2048 + 3 * 1024)
        assert cloud.nodes_of() == {'held': 'fake1', 'resizing': 'fake1', 'stopped': 'fake1', 'free': 'fake2'}
        assert world.vm('foreign').node == 'fake1'
        registry.release_lease(other.name, other.owner)


def test_an_instance_counts_at_least_its_claims_ram(tmp_path):
    world = FakeWorld()
    world.add_node('fake1')
    world.add_node('fake2')
    with make_cloud(world, tmp_path) as cloud:
        cloud.boot('small-rss', node='fake1', storage='shared')
        world.set_usage('small-rss', cpu=0.0, memory_mb=100)
        result = _rebalance.rebalance(cloud.context(), aggressiveness=1, interval=1)
        assert [n['memory_mb_used'] for n in result['nodes'] if n['node'] == 'fake1'] == [1024.0]


def test_no_move_breaks_a_server_groups_anti_affinity(tmp_path):
    world = FakeWorld()
    for name in ('fake1', 'fake2', 'fake3'):
        world.add_node(name)
    with make_cloud(world, tmp_path) as cloud:
        cloud.registry.set_server_group('web', 'anti-affinity')
        cloud.boot('g1', node='fake1', storage='shared', server_group='web')
        cloud.boot('g2', node='fake2', storage='shared', server_group='web')
        for name in ('x', 'y'):
            cloud.boot(name, node='fake1', storage='shared')
        cloud.boot('z', node='fake3', storage='shared')
        for name, cpu in (('g1', 2.0), ('x', 2.0), ('y', 2.0), ('g2', 0.0), ('z', 1.0)):
            world.set_usage(name, cpu=cpu)
        result = _rebalance.rebalance(cloud.context(), aggressiveness=5, interval=1)
        assert result['failures'] == [] and result['moves']
        # g1 sorts first among equal gains towards fake2, the least loaded: the group's filter sends it elsewhere.
        assert ('g1', 'fake1', 'fake2', 'completed') not in moved(result)
        assert cloud.nodes_of()['g1'] != cloud.nodes_of()['g2']


def test_an_instance_stays_in_its_nodes_availability_zone_and_a_node_without_room_takes_nothing(tmp_path):
    world = FakeWorld()
    world.add_node('fake1', availability_zone='az1')
    world.add_node('fake2', availability_zone='az2')
    world.add_node('fake3', availability_zone='az1')
    world.add_node('fake4', availability_zone='az1')
    with make_cloud(world, tmp_path) as cloud:
        for index in range(4):
            cloud.boot('a%d' % index, node='fake1', storage='shared')
            world.set_usage('a%d' % index, cpu=1.0)
        cloud.take_room('fake4')  # another run's claims fill it: empty as measured, full as the scheduler counts
        result = _rebalance.rebalance(cloud.context(), aggressiveness=5, interval=1)
        assert moved(result) == [('a0', 'fake1', 'fake3', 'completed'), ('a1', 'fake1', 'fake3', 'completed')]


def test_a_failed_move_leaves_its_instance_where_it_was_and_the_others_go_on(cloud):
    cloud.world.fail_migration('a0')
    result = _rebalance.rebalance(cloud.context(), interval=1)
    assert moved(result) == [('a0', 'fake1', 'fake2', 'failed'), ('a1', 'fake1', 'fake3', 'completed')]
    assert result['changed'] is True and [f['name'] for f in result['failures']] == ['a0']
    assert 'injected failure half way through the migration' in result['failures'][0]['msg']
    assert result['moves'][0]['msg'] == result['failures'][0]['msg'] and result['moves'][0]['migration'] is None
    assert cloud.nodes_of()['a0'] == 'fake1' and cloud.world.vm('a0').node == 'fake1'
    assert ('a0', 'fake1') in cloud.allocations() and ('a0', 'fake2') not in cloud.allocations()
    (failed,) = cloud.registry.list_migrations(instance_uuid=cloud.registry.get_instance(name='a0').uuid)
    assert failed.status == 'failed'
    # The spread after counts what moved, not what was planned.
    assert dict((n['node'], n['load_after']) for n in result['nodes']) == {'fake1': 0.375, 'fake2': 0.0, 'fake3': 0.125}


def test_an_instance_moved_by_another_run_since_it_was_measured_is_not_moved_again(cloud, monkeypatch):
    plan = _rebalance._balance.plan  # pylint: disable=protected-access

    def plan_then_another_run_moves(*args):
        planned = plan(*args)
        uuid = cloud.registry.get_instance(name='a0').uuid
        cloud.registry.update_instance(uuid, node='fake3', host='fake3')
        return planned
    monkeypatch.setattr(_rebalance._balance, 'plan', plan_then_another_run_moves)  # pylint: disable=protected-access
    result = _rebalance.rebalance(cloud.context(), interval=1)
    assert moved(result)[0] == ('a0', 'fake1', 'fake2', 'failed')
    assert result['failures'][0]['msg'] == ('instance a0 no longer runs on node fake1 (another run moved, stopped or deleted it '
                                            'since it was measured); instance a0 was not moved')


def test_moves_run_concurrency_at_a_time_and_never_two_on_one_node(tmp_path, monkeypatch):
    world = FakeWorld()
    for index in range(1, 7):
        world.add_node('fake%d' % index)
    active, seen, guard = [], [], threading.Lock()

    def move_apart(_ctx, move, _held):
        with guard:
            ends = {move.source, move.target}
            assert not any(ends & other for other in active), 'two moves at once on one node'
            active.append(ends)
            seen.append(len(active))
        time.sleep(0.1)
        with guard:
            active.remove(ends)
        return {'migration': {'id': move.item.name}}
    monkeypatch.setattr(_rebalance, '_move_apart', move_apart)
    with make_cloud(world, tmp_path) as cloud:
        for source in ('fake1', 'fake2'):
            for index in range(3):
                name = '%s-%d' % (source, index)
                cloud.boot(name, node=source, storage='shared')
                world.set_usage(name, cpu=2.0)
        result = _rebalance.rebalance(cloud.context(), aggressiveness=5, concurrency=3, interval=1)
    assert len(result['moves']) >= 3 and all(m['status'] == 'completed' for m in result['moves'])
    assert max(seen) == 2, 'fake1 and fake2 shed at once, each one move at a time'


def test_two_rebalances_of_one_node_never_run_at_once(cloud):
    other = _leases.take(cloud.registry, 'node:fake2', 0, 'test', 'drain')
    before = state_of(cloud)
    with pytest.raises(errors.LeaseHeld, match=r'^lease node:fake2 is held by .*\(drain\) until .*; another run works on node fake2; '
                                               'nothing was moved$'):
        _rebalance.rebalance(cloud.context(), interval=1)
    after = state_of(cloud)
    assert after[:3] == before[:3] and after[4] == before[4]
    assert [row for row in locks(cloud) if row[1]] == [row for row in locks(cloud) if row[0] == 'node:fake2'], 'fake1\'s was given back'
    assert cloud.world.usage_calls == []
    # Check mode takes no lease, so it plans while another run works.
    assert _rebalance.rebalance(cloud.context(), interval=1, check_mode=True)['moves']
    cloud.registry.release_lease(other.name, other.owner)


def test_node_leases_are_renewed_by_one_heartbeat_and_given_back(cloud):
    cloud.registry.lease_seconds = 0.6  # renewed every 0.2 s
    threads = threading.active_count()
    with _leases.on_nodes(cloud.registry, ['fake2', 'fake1', 'fake1'], 'nothing was moved', 'rebalance') as held:
        assert sorted(held) == ['fake1', 'fake2'] and threading.active_count() == threads + 1
        time.sleep(1.0)
        for lease in held.values():
            lease.check()  # still held after more than a lifetime: renewed
        with pytest.raises(errors.LeaseHeld):
            with _leases.on_nodes(cloud.registry, ['fake3', 'fake2'], 'nothing was moved', 'rebalance'):
                pass
        assert cloud.registry.lease_holder('node:fake3') is None, 'what the refused run took was given back'
    assert cloud.registry.lease_holder('node:fake1') is None and cloud.registry.lease_holder('node:fake2') is None


# -- which nodes: selection, and the bad input of issue 18 §4


@pytest.fixture(name='mixed')
def mixed_fixture(tmp_path):
    """fake1 and fake2 (gold, zone az1), fake3 (zone az2), a cluster vc/c1 (gold, az1), fake4 disabled, fake5 forced
    down, fake6 down; two busy instances on fake1."""
    world = FakeWorld()
    world.add_node('fake1', aggregates=('gold',), availability_zone='az1')
    world.add_node('fake2', aggregates=('gold',), availability_zone='az1')
    world.add_node('fake3', availability_zone='az2')
    world.add_cluster('vc/c1', aggregates=('gold',), availability_zone='az1')
    for name in ('fake4', 'fake5', 'fake6'):
        world.add_node(name, availability_zone='az2')
    world.stop_answering('fake6')
    with make_cloud(world, tmp_path) as cloud:
        cloud.registry.set_node('fake4', 'fake', enabled=False, disabled_reason='firmware')
        cloud.registry.set_node('fake5', 'fake', forced_down=True)
        for index in range(2):
            cloud.boot('a%d' % index, node='fake1', storage='shared')
            world.set_usage('a%d' % index, cpu=2.0)
        yield cloud


def test_all_skips_and_lists_clusters_and_nodes_that_take_nothing(mixed):
    result = _rebalance.rebalance(mixed.context(), interval=1)
    assert sorted(n['node'] for n in result['nodes']) == ['fake1', 'fake2', 'fake3']
    reasons = dict((s['node'], s['reason']) for s in result['skipped'])
    assert reasons == {
        'vc/c1': 'node vc/c1 is a fake cluster, not a single host: fake DRS balances its hosts by itself; rebalance moves instances '
                 'between single-host nodes only',
        'fake4': 'node fake4 is disabled (firmware): it takes no instance, and a drain empties it',
        'fake5': 'node fake5 is forced down',
        'fake6': 'node fake6 is down (fake endpoint fake6 does not answer)',
    }
    assert set(m['target'] for m in result['moves']) <= {'fake2', 'fake3'} and result['moves']
    assert sorted(node for node, _interval in mixed.world.usage_calls) == ['fake1', 'fake2', 'fake3']


def test_an_aggregate_or_a_zone_selects_its_nodes(mixed):
    gold = _rebalance.rebalance(mixed.context(), aggregate='gold', interval=1, check_mode=True)
    assert sorted(n['node'] for n in gold['nodes']) == ['fake1', 'fake2'] and [s['node'] for s in gold['skipped']] == ['vc/c1']
    assert [(m['source'], m['target']) for m in gold['moves']] == [('fake1', 'fake2')]
    both = _rebalance.rebalance(mixed.context(), aggregate='gold', availability_zone='az1', interval=1, check_mode=True)
    assert sorted(n['node'] for n in both['nodes']) == ['fake1', 'fake2'] and [s['node'] for s in both['skipped']] == ['vc/c1']
    zone = _rebalance.rebalance(mixed.context(), availability_zone='az2', interval=1, check_mode=True)
    assert [n['node'] for n in zone['nodes']] == ['fake3'] and zone['moves'] == []


def test_named_nodes_of_both_types_are_refused_and_nothing_is_measured(mixed):
    before = state_of(mixed)
    with pytest.raises(errors.MultihvError) as caught:
        _rebalance.rebalance(mixed.context(), nodes=['fake1', 'vc/c1'], interval=1)
    assert str(caught.value) == (
        'node vc/c1 is a fake cluster, not a single host: fake DRS balances its hosts by itself; rebalance moves instances between '
        'single-host nodes only; name single-host nodes only (or select by aggregate or availability zone, which skips the '
        'others); nothing was moved')
    assert mixed.world.usage_calls == [] and state_of(mixed) == before


def test_named_nodes_are_balanced_among_themselves(mixed):
    result = _rebalance.rebalance(mixed.context(), nodes=['fake1', 'fake2', 'fake4'], interval=1)
    assert sorted(n['node'] for n in result['nodes']) == ['fake1', 'fake2'] and [s['node'] for s in result['skipped']] == ['fake4']
    assert moved(result) == [('a0', 'fake1', 'fake2', 'completed')]


@pytest.mark.parametrize('selection, message', [
    ({'nodes': ['fake1', 'nosuch']}, 'node nosuch is not in the cloud (it has fake1, fake2, fake3, fake4, fake5, fake6, vc/c1); '
                                     'nothing was moved'),
    ({'aggregate': 'silver'}, 'no node of the cloud is in aggregate silver (its aggregates: gold; its availability zones: az1, az2); '
                              'nothing was moved'),
    ({'availability_zone': 'az9'}, 'no node of the cloud is in availability zone az9 (its aggregates: gold; its availability '
                                   'zones: az1, az2); nothing was moved'),
    ({'aggregate': 'gold', 'availability_zone': 'az2'}, 'no node of the cloud is in aggregate gold and availability zone az2 (its '
                                                        'aggregates: gold; its availability zones: az1, az2); nothing was moved'),
])
def test_unknown_names_are_refused_and_nothing_is_measured(mixed, selection, message):
    before = state_of(mixed)
    with pytest.raises(errors.NotFound) as caught:
        _rebalance.rebalance(mixed.context(), interval=1, **selection)
    assert str(caught.value) == message
    assert mixed.world.usage_calls == [] and state_of(mixed) == before


@pytest.mark.parametrize('options, message', [
    ({'aggressiveness': 0}, 'aggressiveness must be one of 1, 2, 3, 4, 5 (1 moves nothing, 5 moves for the smallest gains), got 0; '
                            'nothing was moved'),
    ({'aggressiveness': 6}, 'aggressiveness must be one of 1, 2, 3, 4, 5 (1 moves nothing, 5 moves for the smallest gains), got 6; '
                            'nothing was moved'),
    ({'concurrency': 0}, 'concurrency must be at least 1, got 0; nothing was moved'),
    ({'max_moves': 0}, 'max_moves must be at least 1, got 0; nothing was moved'),
    ({'interval': 0}, 'interval must be at least 0.1, got 0; nothing was moved'),
    ({'nodes': ['fake1'], 'aggregate': 'gold'}, 'nodes names the nodes to balance; it cannot be combined with aggregate or '
                                                'availability_zone; nothing was moved'),
])
@pytest.mark.parametrize('check_mode', [False, True])
def test_bad_bounds_are_refused_before_anything_is_looked_at(mixed, options, message, check_mode):
    before, calls = state_of(mixed), len(mixed.world.calls)
    with pytest.raises(errors.MultihvError) as caught:
        _rebalance.rebalance(mixed.context(), check_mode=check_mode, **dict({'interval': 1}, **options))
    assert str(caught.value) == message
    assert state_of(mixed) == before and mixed.world.usage_calls == [] and len(mixed.world.calls) == calls


def test_a_run_that_lost_a_nodes_lease_starts_no_move_there(cloud, monkeypatch):
    move_apart = _rebalance._move_apart  # pylint: disable=protected-access

    def then_lose_the_lease(ctx, move, held):
        result = move_apart(ctx, move, held)
        held['fake1'].lost = 'lease node:fake1 was lost: another run took it while this one worked'  # as the heartbeat says it
        return result
    monkeypatch.setattr(_rebalance, '_move_apart', then_lose_the_lease)
    result = _rebalance.rebalance(cloud.context(), concurrency=1, interval=1)
    assert moved(result) == [('a0', 'fake1', 'fake2', 'completed'), ('a1', 'fake1', 'fake3', 'failed')]
    assert result['failures'] == [{'name': 'a1', 'msg': 'lease node:fake1 was lost: another run took it while this one worked'}]
    assert cloud.nodes_of()['a1'] == 'fake1' and cloud.world.vm('a1').node == 'fake1'
