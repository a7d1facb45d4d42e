"""Instance HA passes through the core on fake hypervisors and a real registry (instance_ha.run_pass):
the grace period and down_since, HA instances only or all of them, reserved failover nodes first,
a node with nothing to restart, and the node types left to their own HA."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT
from support.fake_driver import FakeCloud, FakeWorld


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 (fenceable; it fails), fake2 and fake3 (8 GB each); flavor small, image tick; on fake1
    an HA instance and a plain one."""
    world = FakeWorld()
    world.add_node('fake1', fence_command='true')
    world.add_node('fake2')
    world.add_node('fake3')
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.image('tick')
        made.boot('ha-one', node='fake1', ha=True)
        made.boot('plain-one', node='fake1')
        yield made


def down_for(cloud, node, seconds, probes=_instance_ha.MIN_DOWN_PROBES - 1):
    """Make node seen down since `seconds` ago by `probes` passes, as earlier passes would have recorded
    it: by default, the next pass that finds it down is the min_down_probes-th."""
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    cloud.registry.set_node(node, 'fake', down_since=since.strftime(TIMESTAMP_FORMAT), down_probes=probes)


def test_a_node_down_waits_out_its_grace_period_counted_from_the_first_pass_that_saw_it(cloud):
    cloud.world.power_loss('fake1')
    first = _instance_ha.run_pass(cloud.context(), grace_period=60)
    since = cloud.registry.get_node('fake1')['down_since']
    assert [(w['node'], w['down_since']) for w in first['waiting']] == [('fake1', since)] and since
    assert 59 <= first['waiting'][0]['seconds_left'] <= 60
    assert (first['changed'], first['down'], first['recovered']) == (True, [], [])  # it wrote down_since
    second = _instance_ha.run_pass(cloud.context(), grace_period=60)
    assert second['waiting'][0]['down_since'] == since == cloud.registry.get_node('fake1')['down_since']
    assert cloud.nodes_of() == {'ha-one': 'fake1', 'plain-one': 'fake1'} and not cloud.registry.get_node('fake1')['forced_down']


def test_past_its_grace_period_a_node_is_fenced_and_its_ha_instances_restarted(cloud):
    cloud.world.power_loss('fake1')
    down_for(cloud, 'fake1', 120)
    result = _instance_ha.run_pass(cloud.context(), grace_period=60)
    assert result['changed'] is True and [(d['node'], d['fencing']) for d in result['down']] == [('fake1', 'fenced')]
    assert [(r['name'], r['status']) for r in result['recovered']] == [('ha-one', 'done')]
    assert cloud.registry.get_node('fake1')['forced_down'] is True
    assert cloud.nodes_of()['ha-one'] != 'fake1' and cloud.nodes_of()['plain-one'] == 'fake1'
    # The next pass has nothing new to do.
    again = _instance_ha.run_pass(cloud.context(), grace_period=60)
    assert (again['changed'], again['down'], again['recovered'], again['failures']) == (False, [], [], [])


def test_evacuate_all_restarts_every_instance_ha_first(cloud):
    cloud.world.power_loss('fake1')
    down_for(cloud, 'fake1', 120)
    result = _instance_ha.run_pass(cloud.context(), grace_period=60, evacuate_all=True)
    assert [r['name'] for r in result['recovered']] == ['ha-one', 'plain-one']
    assert 'fake1' not in cloud.nodes_of().values()


def test_a_reserved_failover_node_takes_the_restarted_instances_first_and_nothing_else(cloud):
    cloud.registry.set_node('fake3', 'fake', reserved_for_failover=True)
    cloud.world.nodes['fake2'].hosts[0].memory_mb = 16384  # the scheduler would rather pick fake2 otherwise
    assert cloud.boot('new-one').node == 'fake2'  # not a failover: the reserved node is left alone
    cloud.world.power_loss('fake1')
    down_for(cloud, 'fake1', 120)
    result = _instance_ha.run_pass(cloud.context(), grace_period=60, evacuate_all=True)
    assert [(r['name'], r['dest_node']) for r in result['recovered']] == [('ha-one', 'fake3'), ('plain-one', 'fake3')]


def test_what_fits_nowhere_is_reported_unplaced_with_its_node(cloud):
    for node in ('fake2', 'fake3'):
        cloud.take_room(node)
    cloud.world.power_loss('fake1')
    down_for(cloud, 'fake1', 120)
    result = _instance_ha.run_pass(cloud.context(), grace_period=60)
    assert [(u['node'], u['name']) for u in result['unplaced']] == [('fake1', 'ha-one')] and result['recovered'] == []
    assert result['down'][0]['fencing'] == 'fenced' and cloud.nodes_of()['ha-one'] == 'fake1'


def test_a_node_with_nothing_to_restart_is_not_fenced_but_reported(cloud, tmp_path):
    mark = tmp_path / 'fenced'
    cloud.world.add_node('fake4', fence_command='touch %s' % mark)
    cloud.boot('plain-four', node='fake4')
    cloud.world.power_loss('fake4')
    down_for(cloud, 'fake4', 120)
    for _pass in range(2):  # and the next pass neither
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        # The first pass counts the last probe min_down_probes needs (a write); the next has nothing to write.
        assert (result['changed'], result['down'], result['failures']) == (_pass == 0, [], [])
        assert [(w['node'], w['why']) for w in result['withheld']] == [('fake4', 'nothing_to_recover')]
        assert 'nothing to recover' in result['withheld'][0]['reason']
        assert not mark.exists() and not cloud.registry.get_node('fake4')['forced_down']
    # Its instance is not HA: evacuate_all covers it, and then the node is fenced.
    result = _instance_ha.run_pass(cloud.context(), grace_period=60, evacuate_all=True)
    assert [(d['node'], d['fencing']) for d in result['down']] == [('fake4', 'fenced')] and mark.exists()
    assert cloud.nodes_of()['plain-four'] != 'fake4' and cloud.registry.get_node('fake4')['forced_down'] is True


def test_a_node_that_answers_again_loses_its_down_since(cloud):
    down_for(cloud, 'fake1', 30)
    result = _instance_ha.run_pass(cloud.context(), grace_period=60)
    assert (result['cleared'], result['waiting'], result['changed']) == (['fake1'], [], True)  # its marks were cleared
    assert cloud.registry.get_node('fake1')['down_since'] is None


def test_check_mode_records_nothing(cloud):
    cloud.world.power_loss('fake1')
    assert _instance_ha.run_pass(cloud.context(), grace_period=60, check_mode=True)['waiting'][0]['node'] == 'fake1'
    assert cloud.registry.get_node('fake1')['down_since'] is None
    down_for(cloud, 'fake1', 120)
    result = _instance_ha.run_pass(cloud.context(), grace_period=60, check_mode=True)
    assert result['down'][0]['fencing'] == 'would fence' and result['recovered'][0]['status'] == 'would run'
    assert cloud.nodes_of()['ha-one'] == 'fake1' and not cloud.registry.get_node('fake1')['forced_down']


def test_nodes_that_recover_by_themselves_are_left_to_their_hypervisor(tmp_path):
    world = FakeWorld()
    world.add_cluster('vc/c1', fence_command='true')
    world.power_loss('vc')
    with FakeCloud(world, tmp_path) as cloud:
        result = _instance_ha.run_pass(cloud.context(), grace_period=0)
        assert (result['waiting'], result['down'], result['failures']) == ([], [], [])
        assert cloud.registry.list_nodes() == []


def test_a_pass_reports_the_marks_it_writes_as_a_change_and_check_mode_the_same_without_writing(cloud):
    cloud.world.power_loss('fake1')
    planned = _instance_ha.run_pass(cloud.context(), grace_period=600, check_mode=True)
    assert planned['changed'] is True and cloud.registry.get_node('fake1')['down_since'] is None
    first = _instance_ha.run_pass(cloud.context(), grace_period=600)
    assert first['changed'] is True and cloud.registry.get_node('fake1')['down_probes'] == 1
    for _pass in range(_instance_ha.MIN_DOWN_PROBES - 1):
        assert _instance_ha.run_pass(cloud.context(), grace_period=600)['changed'] is True
    row = cloud.registry.get_node('fake1')
    # Enough probes: a node that stays down costs no write and reports no change, in check mode neither.
    for check_mode in (True, False):
        assert _instance_ha.run_pass(cloud.context(), grace_period=600, check_mode=check_mode)['changed'] is False
    assert cloud.registry.get_node('fake1') == row
