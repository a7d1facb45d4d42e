"""ESXi host maintenance in the vSphere driver (issue 18 §2), without a vCenter: the host found in one retrieval's
records, the refusals, the task and its arguments, and idempotence."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import VCenter
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import capabilities, maintenance
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import Record


def vcenter():
    return VCenter(name='vc1', hostname='vc1.example.com', username='svc@vsphere.local', password='s3cret')


def records(maintenance_mode=False):
    """DC0 with clusters C0 (esx1, esx2) and C1 (esx3); on esx1 a running VM, a powered-off one and a template."""
    def host(moid, name, cluster, mode=False):
        return Record('HostSystem', moid, {'name': name, 'parent': cluster, 'runtime.connectionState': 'connected',
                                           'runtime.inMaintenanceMode': mode})

    def vm(moid, name, on, power):
        return Record('VirtualMachine', moid, {'name': name, 'runtime.host': on, 'runtime.powerState': power,
                                               'summary.config.template': name.startswith('tmpl')})
    return [
        Record('Datacenter', 'datacenter-1', {'name': 'DC0'}),
        Record('Folder', 'folder-h', {'parent': 'datacenter-1'}),
        Record('ClusterComputeResource', 'domain-c1', {'name': 'C0', 'parent': 'folder-h'}),
        Record('ClusterComputeResource', 'domain-c2', {'name': 'C1', 'parent': 'folder-h'}),
        host('host-1', 'esx1', 'domain-c1', maintenance_mode),
        host('host-2', 'esx2', 'domain-c1'),
        host('host-3', 'esx3', 'domain-c2'),
        vm('vm-1', 'web%2f1', 'host-1', 'poweredOn'),
        vm('vm-2', 'off', 'host-1', 'poweredOff'),
        vm('vm-3', 'tmpl', 'host-1', 'poweredOn'),
        vm('vm-4', 'elsewhere', 'host-2', 'poweredOn'),
    ]


class HostRef:
    """What set_maintenance calls on a HostSystem: the task methods, recorded."""

    def __init__(self):
        self.calls = []

    def EnterMaintenanceMode_Task(self, **kwargs):  # pylint: disable=invalid-name  # pyVmomi's name
        self.calls.append(('EnterMaintenanceMode_Task', kwargs))
        return 'task-1'

    def ExitMaintenanceMode_Task(self, **kwargs):  # pylint: disable=invalid-name
        self.calls.append(('ExitMaintenanceMode_Task', kwargs))
        return 'task-2'


class Content:
    propertyCollector = 'pc'


@pytest.fixture
def waited(monkeypatch):
    seen = []
    monkeypatch.setattr(maintenance, 'wait_task', lambda pc, task, deadline, what: seen.append((pc, task, what)))
    return seen


def test_the_driver_declares_host_maintenance():
    assert capabilities.CAPABILITIES.host_maintenance is True and capabilities.CAPABILITIES.hosts_in_node is True


def test_find_host_in_its_node_and_refusals_naming_where_it_is():
    assert maintenance.find_host(vcenter(), records(), 'vc1/DC0/C0', 'esx2')[0] == 'host-2'
    with pytest.raises(errors.NotFound, match=r'node vc1/DC0/C0 has no host esx3 \(it is a host of vc1/DC0/C1\); its hosts: esx1, esx2; '
                                              r'no host was put in or out of maintenance'):
        maintenance.find_host(vcenter(), records(), 'vc1/DC0/C0', 'esx3')
    with pytest.raises(errors.NotFound, match=r'node vc1/DC0/C0 has no host esx9; its hosts: esx1, esx2;'):
        maintenance.find_host(vcenter(), records(), 'vc1/DC0/C0', 'esx9')
    with pytest.raises(errors.NotFound, match=r'vCenter vc1 has no cluster node vc1/DC0/C7'):
        maintenance.find_host(vcenter(), records(), 'vc1/DC0/C7', 'esx1')


def test_powered_on_vms_leave_out_templates_powered_off_vms_and_other_hosts():
    assert maintenance.powered_on_vms(records(), 'host-1') == ['web/1']


def test_task_arguments_leave_powered_off_vms_registered_and_set_no_vcenter_timeout():
    assert maintenance.task_call(True) == ('EnterMaintenanceMode_Task', {'timeout': 0, 'evacuatePoweredOffVms': False})
    assert maintenance.task_call(False) == ('ExitMaintenanceMode_Task', {'timeout': 0})


def test_entering_with_a_running_vm_is_refused_and_calls_no_task(waited):
    ref = HostRef()
    with pytest.raises(errors.DriverError, match=r'host esx1 of node vc1/DC0/C0 still runs VMs web/1: they must move or stop before it '
                                                 r'enters maintenance mode; it was left out of maintenance'):
        maintenance.set_maintenance(Content(), vcenter(), records(), 'vc1/DC0/C0', 'esx1', True, ref, 0)
    assert ref.calls == [] and waited == []


def test_entering_a_host_without_running_vms_runs_the_task_and_is_idempotent(waited):
    ref = HostRef()
    assert maintenance.set_maintenance(Content(), vcenter(), records(), 'vc1/DC0/C1', 'esx3', True, ref, 0) is True
    assert ref.calls == [('EnterMaintenanceMode_Task', {'timeout': 0, 'evacuatePoweredOffVms': False})]
    assert waited == [('pc', 'task-1', 'EnterMaintenanceMode_Task of host esx3 (node vc1/DC0/C1)')]
    again = HostRef()
    assert maintenance.set_maintenance(Content(), vcenter(), records(maintenance_mode=True), 'vc1/DC0/C0', 'esx1', True, again, 0) is False
    assert maintenance.set_maintenance(Content(), vcenter(), records(), 'vc1/DC0/C0', 'esx1', False, again, 0) is False
    assert again.calls == []


def test_leaving_runs_the_exit_task(waited):
    ref = HostRef()
    assert maintenance.set_maintenance(Content(), vcenter(), records(maintenance_mode=True), 'vc1/DC0/C0', 'esx1', False, ref, 0) is True
    assert ref.calls == [('ExitMaintenanceMode_Task', {'timeout': 0})] and waited[0][1] == 'task-2'
