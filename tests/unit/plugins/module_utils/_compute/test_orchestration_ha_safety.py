"""The HA pass's safety rules through the core on fake hypervisors and a real registry (instance_ha.run_pass,
fencing.power_off): no fencing when more than max_down_share of the nodes look down (the controller is the one
cut off), no action before min_down_probes passes saw a node down, probes that restart when it answers, and
fences confirmed by the node's power status. (A node with nothing to recover: test_orchestration_ha.)"""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import fencing as _fencing
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT
from support.fake_driver import FakeCloud, FakeWorld

NODES = ('fake1', 'fake2', 'fake3')


def make_cloud(tmp_path, **fake1):
    """fake1, fake2, fake3 whose fence command leaves a mark file fenced-<node> (fake1's settings: fake1),
    each with one HA instance ha-<node>."""
    world = FakeWorld()
    for name in NODES:
        settings = {'fence_command': 'touch %s/fenced-%s' % (tmp_path, name)}
        world.add_node(name, **(dict(settings, **fake1) if name == 'fake1' else settings))
    cloud = FakeCloud(world, tmp_path)
    cloud.flavor('small')
    cloud.image('tick')
    for name in NODES:
        cloud.boot('ha-' + name, node=name, ha=True)
    return cloud


def fenced(tmp_path):
    return sorted(p.name[len('fenced-'):] for p in tmp_path.glob('fenced-*'))


def seen_down(cloud, node, seconds=120, probes=0):
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    cloud.registry.set_node(node, 'fake', down_since=since.strftime(TIMESTAMP_FORMAT), down_probes=probes)


def probes(cloud, node):
    return cloud.registry.get_node(node)['down_probes']


def test_when_most_nodes_look_down_the_controller_is_cut_off_and_nothing_is_fenced(tmp_path):
    with make_cloud(tmp_path) as cloud:
        before = cloud.nodes_of()
        for node in ('fake1', 'fake2'):
            cloud.world.stop_answering(node)
            seen_down(cloud, node, probes=5)
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        assert (result['changed'], result['down'], result['recovered'], result['failures']) == (False, [], [], [])
        assert [(w['node'], w['down_probes'], w['why']) for w in result['withheld']] == [
            ('fake1', 5, 'controller_cut_off'), ('fake2', 5, 'controller_cut_off')]  # past min_down_probes: not counted, not written
        assert all('2 of the 3 watched nodes look down' in w['reason'] and 'controller' in w['reason'] for w in result['withheld'])
        assert fenced(tmp_path) == [] and cloud.nodes_of() == before
        assert not any(cloud.registry.get_node(n)['forced_down'] for n in ('fake1', 'fake2'))
        assert cloud.registry.list_migrations() == []
        assert (probes(cloud, 'fake1'), probes(cloud, 'fake2')) == (5, 5)  # enough probes already: nothing more written
        # The share is an option: two of three is not more than 0.7.
        result = _instance_ha.run_pass(cloud.context(), grace_period=60, max_down_share=0.7)
        assert sorted((d['node'], d['fencing']) for d in result['down']) == [('fake1', 'fenced'), ('fake2', 'fenced')]
        assert fenced(tmp_path) == ['fake1', 'fake2'] and result['withheld'] == []


def test_a_node_forced_down_counts_in_neither_share(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.world.power_loss('fake1')
        cloud.registry.set_node('fake1', 'fake', forced_down=True)
        seen_down(cloud, 'fake1', probes=5)
        cloud.world.stop_answering('fake2')
        seen_down(cloud, 'fake2', probes=5)
        # fake2 is one of the two watched nodes: not more than half.
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        assert sorted((d['node'], d['fencing']) for d in result['down']) == [('fake1', 'forced_down'), ('fake2', 'fenced')]
        assert fenced(tmp_path) == ['fake2']


def test_one_failed_probe_past_the_grace_period_acts_on_nothing_until_min_down_probes(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.world.power_loss('fake1')
        seen_down(cloud, 'fake1', seconds=600)  # down_since long ago, but no pass saw it down yet
        for seen in (1, 2):
            result = _instance_ha.run_pass(cloud.context(), grace_period=60)
            assert [(w['node'], w['down_probes'], w['probes_left'], w['seconds_left']) for w in result['waiting']] == [
                ('fake1', seen, 3 - seen, 0.0)]
            assert (result['changed'], result['down'], fenced(tmp_path)) == (True, [], [])  # the probe was recorded
            assert probes(cloud, 'fake1') == seen and cloud.nodes_of()['ha-fake1'] == 'fake1'
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        assert [(d['node'], d['down_probes'], d['fencing']) for d in result['down']] == [('fake1', 3, 'fenced')]
        assert fenced(tmp_path) == ['fake1'] and cloud.nodes_of()['ha-fake1'] != 'fake1'


def test_min_down_probes_is_an_option(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.world.power_loss('fake1')
        result = _instance_ha.run_pass(cloud.context(), grace_period=0, min_down_probes=1)
        assert [(d['node'], d['down_probes'], d['fencing']) for d in result['down']] == [('fake1', 1, 'fenced')]


def test_the_probes_start_again_when_the_node_answers(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.world.stop_answering('fake1')
        seen_down(cloud, 'fake1', seconds=600, probes=1)
        assert _instance_ha.run_pass(cloud.context(), grace_period=0)['waiting'][0]['down_probes'] == 2
        cloud.world.answer_again('fake1')
        result = _instance_ha.run_pass(cloud.context(), grace_period=0)
        assert result['cleared'] == ['fake1'] and result['waiting'] == []
        assert (cloud.registry.get_node('fake1')['down_since'], probes(cloud, 'fake1')) == (None, 0)
        # Down again: counted from one, and one probe is not enough even with no grace period.
        cloud.world.stop_answering('fake1')
        result = _instance_ha.run_pass(cloud.context(), grace_period=0)
        assert [(w['node'], w['down_probes']) for w in result['waiting']] == [('fake1', 1)] and fenced(tmp_path) == []


def test_check_mode_counts_no_probe(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.world.power_loss('fake1')
        seen_down(cloud, 'fake1', probes=1)
        result = _instance_ha.run_pass(cloud.context(), grace_period=0, check_mode=True)
        assert result['waiting'][0]['down_probes'] == 2 and probes(cloud, 'fake1') == 1


@pytest.mark.parametrize('fence_command, power_status, fencing', [
    ('false', 'echo Chassis Power is off', 'fenced'),    # already off: fenced although its fence command failed
    ('', 'echo off', 'fenced'),                          # a power status alone is enough when it says off
    ('true', 'echo Chassis Power is on', 'is on after its fence command exited 0'),
    ('true', 'echo something else', 'is unknown after its fence command exited 0'),
    ('false', 'echo on', 'is on after its fence command failed (fencing node fake1 failed: false exited 1'),
    ('true', 'sh -c "echo off; exit 3"', 'reading the power status of node fake1 failed: sh exited 3'),
    ('false', '', 'fencing node fake1 failed: false exited 1'),  # no power_status_command: as before
    ('true', '', 'fenced'),
])
def test_a_fence_is_confirmed_by_the_power_status_where_there_is_one(tmp_path, fence_command, power_status, fencing):
    with make_cloud(tmp_path, fence_command=fence_command, power_status_command=power_status) as cloud:
        cloud.world.stop_answering('fake1')  # its guest may run on: only the power status can tell
        seen_down(cloud, 'fake1', probes=2)
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        if fencing == 'fenced':
            assert [(d['node'], d['fencing']) for d in result['down']] == [('fake1', 'fenced')] and result['failures'] == []
            assert cloud.registry.get_node('fake1')['forced_down'] is True
            assert cloud.nodes_of()['ha-fake1'] != 'fake1'
        else:
            assert result['down'] == [] and result['changed'] is True  # only its third probe was recorded
            assert [f['node'] for f in result['failures']] == ['fake1'] and fencing in result['failures'][0]['msg']
            assert 'nothing was evacuated' in result['failures'][0]['msg']
            assert not cloud.registry.get_node('fake1')['forced_down']
            assert cloud.nodes_of()['ha-fake1'] == 'fake1' and cloud.registry.list_migrations() == []


def test_the_power_status_command_names_its_node(tmp_path):
    mark = tmp_path / 'asked'
    _fencing.power_off('kvm7', '', 'sh -c "echo $MULTIHV_NODE > %s; echo off"' % mark)
    assert mark.read_text() == 'kvm7\n'
    with pytest.raises(errors.MultihvError, match='node kvm7 is not fenced: .* power is unknown and it has no fence_command'):
        _fencing.power_off('kvm7', '', 'true')


def test_a_node_whose_storage_heartbeat_advances_is_isolated_not_dead(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.world.stop_answering('fake1')  # libvirt cut off; the host and its guests live on
        cloud.world.heartbeat('fake1', age=4)
        seen_down(cloud, 'fake1', probes=2)
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        # Only its third probe was recorded.
        assert (result['changed'], result['down'], result['recovered'], result['failures']) == (True, [], [], [])
        assert [(w['node'], w['why']) for w in result['withheld']] == [('fake1', 'isolated')]
        assert 'isolated, not dead' in result['withheld'][0]['reason'] and 'read through fake2' in result['withheld'][0]['reason']
        assert fenced(tmp_path) == [] and not cloud.registry.get_node('fake1')['forced_down']
        assert cloud.nodes_of()['ha-fake1'] == 'fake1' and cloud.registry.list_migrations() == []
        # Its heartbeat stops: once it is older than heartbeat_timeout, the node is dead and recovered.
        cloud.world.heartbeat('fake1', age=45)
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        assert [(d['node'], d['fencing']) for d in result['down']] == [('fake1', 'fenced')] and result['withheld'] == []
        assert fenced(tmp_path) == ['fake1'] and cloud.nodes_of()['ha-fake1'] != 'fake1'


@pytest.mark.parametrize('case', ['disabled', 'not shared', 'peer down'])
def test_a_heartbeat_no_peer_can_read_is_no_evidence(tmp_path, case):
    with make_cloud(tmp_path) as cloud:
        cloud.world.stop_answering('fake1')
        cloud.world.heartbeat('fake1', age=1)
        seen_down(cloud, 'fake1', probes=2)
        options = {'heartbeat_timeout': 0} if case == 'disabled' else {}
        if case == 'not shared':  # the other nodes see another shared directory
            for name in ('fake2', 'fake3'):
                cloud.world.endpoints[name].storage['shared'] = 'elsewhere'
        if case == 'peer down':  # the only node that sees it does not answer either: 2 of 3 down, allowed here
            cloud.world.stop_answering('fake2')
            cloud.world.endpoints['fake3'].storage['shared'] = 'elsewhere'
            options['max_down_share'] = 1
        result = _instance_ha.run_pass(cloud.context(), grace_period=60, **options)
        assert ('fake1', 'fenced') in [(d['node'], d['fencing']) for d in result['down']]
        assert 'fake1' in fenced(tmp_path)


def test_a_young_heartbeat_from_before_the_node_was_seen_down_makes_the_pass_wait(tmp_path):
    """A host that just lost its power leaves a young heartbeat behind, and so does one cut off a moment ago: one
    written before the first pass that found the node down keeps the node waiting (neither fenced nor withheld) until
    it is heartbeat_timeout old (dead: fenced) or a newer one shows (isolated)."""
    with make_cloud(tmp_path) as cloud:
        cloud.world.power_loss('fake1')
        seen_down(cloud, 'fake1', seconds=5, probes=2)
        cloud.world.heartbeat('fake1', age=7)  # its last one, from before it was seen down; under heartbeat_timeout
        result = _instance_ha.run_pass(cloud.context(), grace_period=0)
        assert (result['changed'], result['down'], result['withheld'], fenced(tmp_path)) == (True, [], [], [])  # a probe recorded
        assert [(w['node'], w['probes_left']) for w in result['waiting']] == [('fake1', 0)] and 22 <= result['waiting'][0]['seconds_left'] <= 23
        assert 'from before it was first seen down' in result['waiting'][0]['reason']
        cloud.world.heartbeat('fake1', age=31)  # it aged: dead
        result = _instance_ha.run_pass(cloud.context(), grace_period=0)
        assert [(d['node'], d['fencing']) for d in result['down']] == [('fake1', 'fenced')] and result['waiting'] == []

    (tmp_path / 'isolated').mkdir()
    with make_cloud(tmp_path / 'isolated') as cloud:
        cloud.world.stop_answering('fake1')
        seen_down(cloud, 'fake1', seconds=5, probes=2)
        cloud.world.heartbeat('fake1', age=7)
        assert [w['node'] for w in _instance_ha.run_pass(cloud.context(), grace_period=0)['waiting']] == ['fake1']
        cloud.world.heartbeat('fake1', age=2)  # it advanced: written since it was seen down
        result = _instance_ha.run_pass(cloud.context(), grace_period=0)
        assert [(w['node'], w['why']) for w in result['withheld']] == [('fake1', 'isolated')] and result['down'] == []
        assert 'written since it was first seen down' in result['withheld'][0]['reason']
