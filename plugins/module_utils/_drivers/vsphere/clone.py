# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pyVmomi specs that make an instance of a template VM: the clone's CloneSpec and
ConfigSpec (the flavor, the instance's uuid and marker annotation, its NICs, its guest data as
extraConfig), and what a fresh clone still lacks. Private to multihv.cloud: do not import.

vcsim 0.24.2 ignores CloneSpec.location.host and most of CloneSpec.config (it keeps
extraConfig, but not the template's), a vCenter applies them; spawn reads the clone back
(CLONE_PATHS) and applies missing_config. Pure functions:
they build data objects, they call nothing.
"""

from __future__ import annotations

import copy

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import (
    annotation_for, normal_uuid, parse_annotation,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.instances import disk_bytes, disks_of, nics_of
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import GIB
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import DEVICES, EXTRA_CONFIG
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim


def cores_per_socket(vcpus, template_cores):
    """The template's cores per socket when they divide vcpus (vSphere refuses otherwise), else 1."""
    cores = int(template_cores or 1)
    return cores if cores > 0 and vcpus % cores == 0 else 1


def network_backing(choice):
    ethernet = vim.vm.device.VirtualEthernetCard
    if choice.kind == 'DistributedVirtualPortgroup':
        return ethernet.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(switchUuid=choice.switch_uuid, portgroupKey=choice.portgroup_key))
    return ethernet.NetworkBackingInfo(deviceName=choice.name, network=vim.Network(choice.moid))


def nic_changes(choices, template_nics):
    """Device changes that give the clone one NIC per NetworkChoice, in order, with its MAC
    (address type manual). The template's NICs are reused in order (same adapter type and
    PCI slot, so the guest's interface names stay), extra ones removed, missing ones added
    with the adapter type of the template's first NIC (vmxnet3 when it has none). No
    choices: the template's NICs are kept as they are."""
    if not choices:
        return []
    operation = vim.vm.device.VirtualDeviceSpec.Operation
    changes = []
    for index, choice in enumerate(choices):
        if index < len(template_nics):
            nic, change = copy.copy(template_nics[index]), operation.edit
        else:
            adapter = type(template_nics[0]) if template_nics else vim.vm.device.VirtualVmxnet3
            nic, change = adapter(key=-(index + 1)), operation.add
        nic.backing = network_backing(choice)
        nic.connectable = vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, connected=True, allowGuestControl=True)
        nic.addressType, nic.macAddress = ('manual', choice.mac) if choice.mac else ('generated', None)
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=change, device=nic))
    for nic in template_nics[len(choices):]:
        changes.append(vim.vm.device.VirtualDeviceSpec(operation=operation.remove, device=nic))
    return changes


def clone_config(spec, placement, template_devices, template_cores, guest_keys=None):
    """The ConfigSpec of the clone: the flavor's vCPUs and RAM, the instance uuid as BIOS and
    instance uuid, the marker annotation, the NICs of spec.networks, and guest_keys (the
    extra_config.wanted guestinfo) as extraConfig: on a vCenter the clone has them before it
    first powers on; none when guest_keys is empty."""
    return vim.vm.ConfigSpec(
        numCPUs=spec.vcpus, numCoresPerSocket=cores_per_socket(spec.vcpus, template_cores), memoryMB=spec.memory_mb,
        uuid=spec.uuid, instanceUuid=spec.uuid, annotation=annotation_for(spec),
        deviceChange=nic_changes(placement.networks, nics_of(template_devices)),
        extraConfig=extra_config.options(guest_keys or {}))


def clone_spec(placement, config):
    """Into the cluster's resource pool, onto the chosen host and datastore; powered on only
    once spawn has checked the clone (vcsim ignores powerOn anyway)."""
    return vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(pool=vim.ResourcePool(placement.pool), host=vim.HostSystem(placement.host),
                                     datastore=vim.Datastore(placement.datastore)),
        config=config, powerOn=False, template=False)


def grown_disk(devices, disk_gb):
    """A device change growing the first disk to disk_gb GiB, or None when it is that large
    already (a disk is never shrunk: the flavor's disk is a minimum)."""
    disks = disks_of(devices)
    if not disks or disk_bytes(disks[0]) >= disk_gb * GIB:
        return None
    disk = copy.copy(disks[0])
    disk.capacityInBytes = disk_gb * GIB
    disk.capacityInKB = disk_gb * GIB // 1024
    return vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)


def missing_config(spec, props, guest_keys=None):
    """A ConfigSpec with what the fresh clone (CLONE_PATHS props) lacks of the instance, or None:
    nothing but a too small root disk on a vCenter that applied CloneSpec.config. guest_keys:
    the guestinfo the clone must have (extra_config.wanted); the keys it lacks are given again."""
    config = vim.vm.ConfigSpec()
    missing = False
    if int(props.get('summary.config.numCpu') or 0) != spec.vcpus:
        config.numCPUs = spec.vcpus
        config.numCoresPerSocket = cores_per_socket(spec.vcpus, props.get('config.hardware.numCoresPerSocket'))
        missing = True
    if int(props.get('summary.config.memorySizeMB') or 0) != spec.memory_mb:
        config.memoryMB, missing = spec.memory_mb, True
    if normal_uuid(props.get('config.uuid')) != spec.uuid:
        config.uuid, missing = spec.uuid, True
    if normal_uuid(props.get('config.instanceUuid')) != spec.uuid:
        config.instanceUuid, missing = spec.uuid, True
    wanted = annotation_for(spec)
    if parse_annotation(props.get('config.annotation')) != parse_annotation(wanted):
        config.annotation, missing = wanted, True
    disk = grown_disk(props.get(DEVICES) or [], spec.disk_gb)
    if disk is not None:
        config.deviceChange, missing = [disk], True
    guest = extra_config.lacking(guest_keys or {}, props.get(EXTRA_CONFIG))
    if guest:
        config.extraConfig, missing = extra_config.options(guest), True
    return config if missing else None


__all__ = ['clone_config', 'clone_spec', 'cores_per_socket', 'grown_disk', 'missing_config', 'nic_changes']
