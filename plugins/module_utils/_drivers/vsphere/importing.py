# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pyVmomi specs of a VM made from uploaded disks (issue 19: a move from another hypervisor type). Private
to multihv.cloud: do not import.

The VM's files live in a directory of the datastore named after the instance uuid (unique, and known before
anything exists, so that a failed import knows what to delete): its disks `disk<N>.vmdk` (+ `-flat.vmdk`), uploaded
first, and what CreateVM_Task makes (.vmx, .nvram, logs). The ConfigSpec gives the flavor's vCPUs and RAM, the
instance uuid as BIOS and instance uuid, the cloud's marker annotation (as spawn does), one LSI Logic SCSI
controller with the disks attached as they are (no file operation: they exist), and NICs with the spec's MACs
(clone.nic_changes, manual addresses). Pure functions: they build data objects, they call nothing.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import annotation_for
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.clone import cores_per_socket, nic_changes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.datastore_files import datastore_path
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmdk import names
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

# The guest OS vCenter is told: the KVM side does not record it; a generic 64-bit guest boots any x86-64 OS.
GUEST_ID = 'otherGuest64'
# Device keys of the new devices (negative: vCenter assigns the real ones); NICs use -1, -2... (clone.nic_changes).
CONTROLLER_KEY = -100
DISK_KEY = -200
# An LSI Logic SCSI controller holds 15 disks (unit 7 is the controller's own).
SCSI_UNITS = tuple(unit for unit in range(16) if unit != 7)


def vm_directory(instance_uuid):
    """The datastore directory of the imported VM's files."""
    return instance_uuid


def disk_stem(index):
    return 'disk%d' % index


def disk_file(instance_uuid, index):
    """The path in the datastore of disk `index`'s descriptor (what the VM's disk backing names)."""
    return '%s/%s' % (vm_directory(instance_uuid), names(disk_stem(index))[0])


def controller_spec():
    controller = vim.vm.device.VirtualLsiLogicController(key=CONTROLLER_KEY, busNumber=0, sharedBus='noSharing')
    return vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=controller)


def disk_specs(datastore, instance_uuid, sizes):
    """One device change per disk (sizes: virtual bytes, first disk first) attaching the uploaded VMFS flat disks,
    thick, persistent, on the SCSI controller; no fileOperation: the files exist and are kept."""
    if len(sizes) > len(SCSI_UNITS):
        raise ValueError('a VM takes at most %d disks on one SCSI controller, not %d' % (len(SCSI_UNITS), len(sizes)))
    changes = []
    for index, size in enumerate(sizes):
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=datastore_path(datastore, disk_file(instance_uuid, index)), diskMode='persistent', thinProvisioned=False)
        disk = vim.vm.device.VirtualDisk(key=DISK_KEY - index, controllerKey=CONTROLLER_KEY, unitNumber=SCSI_UNITS[index],
                                         capacityInKB=-(-int(size) // 1024), capacityInBytes=int(size), backing=backing)
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add, device=disk))
    return changes


def import_config(spec, placement, datastore, sizes):
    """The ConfigSpec of CreateVM_Task for InstanceSpec spec on Placement placement, its disks (sizes) in
    datastore: name, vCPUs, RAM, uuid (BIOS and instance), marker annotation, files in vm_directory, the SCSI
    controller and disks, the NICs of placement.networks with their MACs, and spec.guest as guestinfo (spawn's)."""
    return vim.vm.ConfigSpec(
        name=spec.name, guestId=GUEST_ID, numCPUs=spec.vcpus, numCoresPerSocket=cores_per_socket(spec.vcpus, 1), memoryMB=spec.memory_mb,
        uuid=spec.uuid, instanceUuid=spec.uuid, annotation=annotation_for(spec),
        files=vim.vm.FileInfo(vmPathName=datastore_path(datastore, '%s/%s.vmx' % (vm_directory(spec.uuid), spec.uuid))),
        deviceChange=[controller_spec()] + disk_specs(datastore, spec.uuid, sizes) + nic_changes(placement.networks, []),
        extraConfig=extra_config.options(extra_config.wanted(spec.guest, None)))


def powered_on(spec):
    """Whether the imported VM is powered on: as spawn leaves an instance (running), unless the spec's metadata
    says power_state stopped (a move of a stopped instance keeps it stopped)."""
    return (spec.metadata or {}).get('power_state') != 'stopped'


__all__ = ['CONTROLLER_KEY', 'DISK_KEY', 'GUEST_ID', 'controller_spec', 'disk_file', 'disk_specs', 'disk_stem', 'import_config',
           'powered_on', 'vm_directory']
