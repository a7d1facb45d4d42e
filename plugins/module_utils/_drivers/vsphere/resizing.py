# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resizing a vSphere instance in place: one ReconfigVM_Task with the new vCPUs and RAM and, when the
flavor's disk is larger, the first virtual disk grown. Private to multihv.cloud: do not import.

A running VM takes more vCPUs or RAM only when CPU or memory hot add is enabled on it, and never
fewer: otherwise it is powered off for the change and on again after. vSphere cannot shrink a virtual
disk, so a revert gives back the vCPUs and RAM and leaves the disk at its new size; the disk's data is
the guest's either way (nothing is copied, nothing is kept for a confirm to drop).
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.instances import disk_bytes, disks_of
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import GIB
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.power import power
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import DEVICES, retrieve_objects
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

HOT_ADD = ('config.cpuHotAddEnabled', 'config.memoryHotAddEnabled')


def needs_power_off(state, vcpus, memory_mb, cpu_hot_add, memory_hot_add):
    """True when a running VM must be off to get vcpus and memory_mb: fewer of either, or more without hot add."""
    if state.power_state != 'running':
        return False
    cpus_ok = vcpus == state.vcpus or (vcpus > state.vcpus and cpu_hot_add)
    memory_ok = memory_mb == state.memory_mb or (memory_mb > state.memory_mb and memory_hot_add)
    return not (cpus_ok and memory_ok)


def config_spec(vcpus, memory_mb, disk_gb, devices):
    """The ConfigSpec: vcpus and memory_mb, and the first disk grown to disk_gb when it is smaller (None: left as it is)."""
    spec = vim.vm.ConfigSpec(numCPUs=int(vcpus), memoryMB=int(memory_mb))
    disks = disks_of(devices)
    if disk_gb is not None and disks and int(disk_gb) * GIB > disk_bytes(disks[0]):
        disk = disks[0]
        disk.capacityInKB = int(disk_gb) * GIB // 1024
        disk.capacityInBytes = int(disk_gb) * GIB
        spec.deviceChange = [vim.vm.device.VirtualDeviceSpec(operation='edit', device=disk)]
    return spec


def reconfigure(content, vm, state, vcpus, memory_mb, disk_gb, deadline, what):
    """Give the VM vcpus, memory_mb (and disk_gb, see config_spec), powered off for it when need be and on again
    after: it ends in the power state it had, reconfigured or not."""
    pc = content.propertyCollector
    answer = retrieve_objects(pc, [vm], 'VirtualMachine', HOT_ADD + (DEVICES,))
    if not answer:
        raise errors.NotFound('%s: the VM is gone; nothing was changed' % what)
    props = answer[0].props
    off = needs_power_off(state, int(vcpus), int(memory_mb), bool(props.get(HOT_ADD[0])), bool(props.get(HOT_ADD[1])))
    spec = config_spec(vcpus, memory_mb, disk_gb, props.get(DEVICES) or [])
    if off:
        power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
    try:
        wait_task(pc, vm.ReconfigVM_Task(spec=spec), deadline, what)
    finally:
        if off:  # running again, reconfigured or not
            power(pc, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)


__all__ = ['config_spec', 'needs_power_off', 'reconfigure']
