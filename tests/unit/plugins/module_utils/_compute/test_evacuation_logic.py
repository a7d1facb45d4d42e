"""Evacuation and instance HA logic that needs no hypervisor: restart order, the refusals that
come before anything is touched, fencing's exit status, the clean-up trigger and the HA pass's
grace period, over fake KVM hosts and vSphere clusters (support.fake_driver) and a real registry (the
lab tests in tests/integration/test_evacuation.py run the real thing)."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import capabilities as kvm
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import capabilities as vsphere
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT
from support.fake_driver import FakeCloud, FakeWorld
from support.records import instance


def test_restart_order_is_ha_first_then_priority_then_name():
    records = [instance(name='b', ha=False, restart_priority=9), instance(name='a', ha=False, restart_priority=9),
               instance(name='z', ha=True, restart_priority=0), instance(name='y', ha=True, restart_priority=5),
               instance(name='c', ha=False, restart_priority=None)]
    assert [r.name for r in sorted(records, key=_evacuation.restart_order)] == ['y', 'z', 'a', 'b', 'c']


def kvm_cloud(directory, states, fence_command=''):
    """A cloud of fake KVM hosts (the KVM driver's type and capabilities): states {name: 'up' or 'down'}."""
    world = FakeWorld()
    for name, state in states.items():
        world.add_endpoint(name, hypervisor_type='kvm', capabilities=kvm.CAPABILITIES)
        world.add_node(name, fence_command=fence_command)
        if state == 'down':
            world.stop_answering(name)
    directory.mkdir(exist_ok=True)
    return FakeCloud(world, directory)


@pytest.mark.parametrize('state, forced, fence_command, expected', [
    ('up', True, 'true', 'answers (its hypervisor is reachable)'),
    ('down', False, '', 'neither forced down nor fenceable'),
    ('down', False, 'false', 'fencing node kvm2 failed: false exited 1'),
    ('down', False, '/nonexistent/fence-it', 'fencing node kvm2 failed (/nonexistent/fence-it'),
])
def test_refusals_touch_nothing(tmp_path, state, forced, fence_command, expected):
    with kvm_cloud(tmp_path, {'kvm2': state}, fence_command) as cloud:
        cloud.registry.set_node('kvm2', 'kvm', forced_down=forced)
        before = cloud.registry.list_nodes()
        with pytest.raises(errors.MultihvError, match='nothing was evacuated|Nothing was evacuated') as refused:
            _evacuation.check_failed(cloud.context(), 'kvm2')
        assert expected in str(refused.value)
        assert cloud.registry.list_nodes() == before


def test_forced_down_needs_no_fence_and_a_fence_forces_down(tmp_path):
    with kvm_cloud(tmp_path / 'forced', {'kvm2': 'down'}) as forced:
        forced.registry.set_node('kvm2', 'kvm', forced_down=True)
        before = forced.registry.list_nodes()
        assert _evacuation.check_failed(forced.context(), 'kvm2') == 'forced_down' and forced.registry.list_nodes() == before

    mark = tmp_path / 'fenced'
    with kvm_cloud(tmp_path / 'fenceable', {'kvm2': 'down'}, 'sh -c "echo $MULTIHV_NODE > %s"' % mark) as cloud:
        assert _evacuation.check_failed(cloud.context(), 'kvm2', check_mode=True) == 'would fence' and not mark.exists()
        assert cloud.registry.list_nodes() == []
        assert _evacuation.check_failed(cloud.context(), 'kvm2') == 'fenced'
        assert mark.read_text() == 'kvm2\n'
        assert [(n['name'], n['hypervisor_type'], n['forced_down']) for n in cloud.registry.list_nodes()] == [('kvm2', 'kvm', True)]


def test_vsphere_nodes_are_left_to_vsphere_ha(tmp_path):
    world = FakeWorld()
    world.add_endpoint('vc', hypervisor_type='vsphere', capabilities=vsphere.CAPABILITIES, templates={'tmpl'})
    world.add_node('vc/dc/c1', endpoint='vc', hosts=2)
    world.stop_answering('vc')
    with FakeCloud(world, tmp_path) as cloud:
        with pytest.raises(errors.MultihvError, match='vSphere HA restarts the VMs'):
            _evacuation.check_failed(cloud.context(), 'vc/dc/c1')


def test_only_a_return_to_service_cleans_stale_copies(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(_evacuation, 'stale_copies', lambda registry, name: asked.append(name) or [])
    monkeypatch.setattr(_evacuation._nodes, 'set_admin_state', lambda *args, **kwargs: (False, {}, {}))  # pylint: disable=protected-access
    with kvm_cloud(tmp_path, {'kvm2': 'up'}) as cloud:
        ctx = cloud.context()
        for changes, cleans in (({'enabled': True}, True), ({'forced_down': False}, True), ({'enabled': False}, False),
                                ({'aggregates': ['a']}, False), ({'forced_down': True}, False)):
            asked.clear()
            assert _evacuation.set_admin_state(ctx, 'kvm2', changes) == (False, {}, {}, [])
            assert bool(asked) is cleans, changes


def test_the_grace_period_counts_from_the_first_pass_that_saw_the_node_down(tmp_path):
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)).strftime(TIMESTAMP_FORMAT)
    with kvm_cloud(tmp_path, {'kvm2': 'down', 'kvm1': 'up'}) as cloud:
        registry = cloud.registry
        for name in ('kvm2', 'kvm1'):
            registry.set_node(name, 'kvm', down_since=since)
        result = _instance_ha.run_pass(cloud.context(), grace_period=60)
        assert [w['node'] for w in result['waiting']] == ['kvm2'] and 25 < result['waiting'][0]['seconds_left'] <= 30
        assert result['cleared'] == ['kvm1'] and registry.get_node('kvm1')['down_since'] is None
        # Nothing recovered, but the pass wrote both nodes' marks (kvm2's probe, kvm1's cleared): a change.
        assert result['changed'] is True and result['down'] == []
        # Past the grace period and min_down_probes, a node with something to recover that cannot be fenced is a
        # failure of the pass, reported (an HA instance's record is enough: the refusal comes before anything).
        registry.set_flavor('small', vcpus=1, ram_mb=1024, disk_gb=1, extra_specs={})
        registry.create_instance(name='ha-one', node='kvm2', storage='shared', image='-', flavor='small', ha=True, state='running')
        result = _instance_ha.run_pass(cloud.context(), grace_period=10, min_down_probes=2)
        assert result['failures'] and 'neither forced down nor fenceable' in result['failures'][0]['msg']
