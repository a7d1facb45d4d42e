"""Evacuation and instance HA logic that needs no hypervisor: restart order, the refusals that
come before anything is touched, fencing's exit status, the clean-up trigger and the HA pass's
grace period (the lab tests in tests/integration/test_evacuation.py run the real thing)."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._config import KvmHost
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT


def test_restart_order_is_ha_first_then_priority_then_name():
    records = [{'name': 'b', 'ha': False, 'restart_priority': 9}, {'name': 'a', 'ha': False, 'restart_priority': 9},
               {'name': 'z', 'ha': True, 'restart_priority': 0}, {'name': 'y', 'ha': True, 'restart_priority': 5},
               {'name': 'c', 'ha': False, 'restart_priority': None}]
    assert [r['name'] for r in sorted(records, key=_evacuation.restart_order)] == ['y', 'z', 'a', 'b', 'c']


class FakeRegistry:
    def __init__(self, nodes=None):
        self.nodes = nodes or {}
        self.set = []

    def get_node(self, name):
        return self.nodes.get(name)

    def set_node(self, name, kind, **fields):
        self.set.append((name, kind, fields))
        self.nodes.setdefault(name, {}).update(fields)


class FakeCloudFile:
    def __init__(self, hosts):
        self.kvm_hosts = hosts
        self.vcenters = []

    def node_names(self):
        return [h.name for h in self.kvm_hosts]


def core_cloud(views, hosts, registry=None):
    """The core's own Cloud over a fake registry, with no drivers and the node views given."""
    ctx = _instances.Cloud(FakeCloudFile(hosts), registry or FakeRegistry(), drivers=[])
    ctx._views = views  # pylint: disable=protected-access
    return ctx


def kvm_view(name, state):
    return {'name': name, 'hypervisor_type': 'kvm', 'state': state, 'reason': None if state == 'up' else 'connection refused'}


@pytest.mark.parametrize('state, forced, fence_command, expected', [
    ('up', True, 'true', 'answers (its hypervisor is reachable)'),
    ('down', False, '', 'neither forced down nor fenceable'),
    ('down', False, 'false', 'fencing node kvm2 failed: false exited 1'),
    ('down', False, '/nonexistent/fence-it', 'fencing node kvm2 failed (/nonexistent/fence-it'),
])
def test_refusals_touch_nothing(state, forced, fence_command, expected):
    registry = FakeRegistry({'kvm2': {'forced_down': forced}})
    ctx = core_cloud([kvm_view('kvm2', state)], [KvmHost('kvm2', 'qemu:///system', fence_command=fence_command)], registry)
    with pytest.raises(errors.MultihvError, match='nothing was evacuated|Nothing was evacuated') as refused:
        _evacuation.check_failed(ctx, 'kvm2')
    assert expected in str(refused.value)
    assert registry.set == []


def test_forced_down_needs_no_fence_and_a_fence_forces_down(tmp_path):
    forced = core_cloud([kvm_view('kvm2', 'down')], [KvmHost('kvm2', 'qemu:///system')], FakeRegistry({'kvm2': {'forced_down': True}}))
    assert _evacuation.check_failed(forced, 'kvm2') == 'forced_down' and forced.registry.set == []

    mark = tmp_path / 'fenced'
    host = KvmHost('kvm2', 'qemu:///system', fence_command='sh -c "echo $MULTIHV_NODE > %s"' % mark)
    ctx = core_cloud([kvm_view('kvm2', 'down')], [host])
    assert _evacuation.check_failed(ctx, 'kvm2', check_mode=True) == 'would fence' and not mark.exists()
    assert _evacuation.check_failed(ctx, 'kvm2') == 'fenced'
    assert mark.read_text() == 'kvm2\n' and ctx.registry.set == [('kvm2', 'kvm', {'forced_down': True})]


def test_vsphere_nodes_are_left_to_vsphere_ha():
    ctx = core_cloud([{'name': 'vc/dc/c1', 'hypervisor_type': 'vsphere', 'state': 'down'}], [])
    with pytest.raises(errors.MultihvError, match='vSphere HA restarts the VMs'):
        _evacuation.check_failed(ctx, 'vc/dc/c1')


def test_only_a_return_to_service_cleans_stale_copies(monkeypatch):
    asked = []
    monkeypatch.setattr(_evacuation, 'stale_copies', lambda registry, name: asked.append(name) or [])
    monkeypatch.setattr(_evacuation._nodes, 'set_admin_state', lambda *args, **kwargs: (False, {}, {}))  # pylint: disable=protected-access
    ctx = core_cloud([], [])
    monkeypatch.setattr(_evacuation._instances, 'Cloud', lambda cloud, registry: ctx)  # pylint: disable=protected-access
    for changes, cleans in (({'enabled': True}, True), ({'forced_down': False}, True), ({'enabled': False}, False),
                            ({'aggregates': ['a']}, False), ({'forced_down': True}, False)):
        asked.clear()
        assert _evacuation.set_admin_state(None, None, 'kvm2', changes) == (False, {}, {}, [])
        assert bool(asked) is cleans, changes


def test_the_grace_period_counts_from_the_first_pass_that_saw_the_node_down():
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)).strftime(TIMESTAMP_FORMAT)
    registry = FakeRegistry({'kvm2': {'down_since': since}, 'kvm1': {'down_since': since}})
    registry.list_instances = lambda node: []
    ctx = core_cloud([kvm_view('kvm2', 'down'), kvm_view('kvm1', 'up')], [KvmHost('kvm2', 'qemu:///system'), KvmHost('kvm1', 'qemu:///system')],
                     registry)
    result = _instance_ha.run_pass(ctx, grace_period=60)
    assert [w['node'] for w in result['waiting']] == ['kvm2'] and 25 < result['waiting'][0]['seconds_left'] <= 30
    assert result['cleared'] == ['kvm1'] and registry.nodes['kvm1']['down_since'] is None
    assert result['changed'] is False and result['down'] == []
    # Past the grace period, a node that cannot be fenced is a failure of the pass, reported.
    result = _instance_ha.run_pass(ctx, grace_period=10)
    assert result['failures'] and 'neither forced down nor fenceable' in result['failures'][0]['msg']
