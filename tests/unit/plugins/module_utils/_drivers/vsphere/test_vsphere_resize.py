"""The vSphere resize's decisions (pure logic): when a running VM must be powered off for the change, and the
ReconfigVM_Task spec (vCPUs, RAM, the first disk grown, never shrunk)."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceState
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import resizing
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import GIB
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim


def state(power='running', vcpus=2, memory_mb=2048):
    return InstanceState('u', 'vm', 'vc/dc/c', 'h', power, vcpus, memory_mb)


@pytest.mark.parametrize('power, vcpus, memory_mb, cpu_hot, memory_hot, off', [
    ('running', 4, 4096, True, True, False),     # both hot-addable
    ('running', 4, 4096, True, False, True),     # RAM without memory hot add
    ('running', 4, 2048, False, False, True),    # CPUs without CPU hot add
    ('running', 2, 4096, False, True, False),    # only RAM grows, and it may
    ('running', 1, 2048, True, True, True),      # fewer CPUs: never hot
    ('running', 2, 1024, True, True, True),      # less RAM: never hot
    ('stopped', 1, 1024, False, False, False),   # off already
])
def test_a_running_vm_is_powered_off_unless_hot_add_covers_every_change(power, vcpus, memory_mb, cpu_hot, memory_hot, off):
    assert resizing.needs_power_off(state(power), vcpus, memory_mb, cpu_hot, memory_hot) is off


def disk(gb):
    return vim.vm.device.VirtualDisk(key=2000, capacityInKB=gb * GIB // 1024, capacityInBytes=gb * GIB)


def test_the_spec_grows_the_first_disk_only_when_the_flavor_s_is_larger():
    spec = resizing.config_spec(4, 4096, 20, [vim.vm.device.VirtualCdrom(key=3000), disk(10), disk(5)])
    assert (spec.numCPUs, spec.memoryMB) == (4, 4096)
    (change,) = spec.deviceChange
    assert change.operation == 'edit' and change.device.key == 2000 and change.device.capacityInBytes == 20 * GIB
    for disk_gb in (10, 8, None):  # as large, smaller (never shrunk), or a revert's (left as it is)
        assert not resizing.config_spec(2, 2048, disk_gb, [disk(10)]).deviceChange
