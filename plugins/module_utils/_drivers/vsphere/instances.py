# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cloud's instances among a vCenter's VMs, as InstanceState. Private to multihv.cloud: do
not import.

list_instances costs a constant number of SOAP calls as get_nodes does, plus one
RetrievePropertiesEx for the devices (MACs, disks) of the managed VMs only: the Records of
the first (LIST_PROPERTIES) are joined with those of the second here (with_devices). Pure
functions of Records; devices are read duck-typed.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceState
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import managed_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import GIB, cluster_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import DEVICES, Record, by_kind, vm_name

POWER_STATES = {'poweredOn': 'running', 'poweredOff': 'stopped', 'suspended': 'suspended'}


def power_state(value):
    return POWER_STATES.get(str(value), 'unknown')


def nics_of(devices):
    """The network adapters of a device list (duck-typed: only they have a macAddress)."""
    return [device for device in devices or () if hasattr(device, 'macAddress')]


def disks_of(devices):
    return [device for device in devices or () if hasattr(device, 'capacityInKB')]


def disk_bytes(disk):
    return int(getattr(disk, 'capacityInBytes', 0) or 0) or int(disk.capacityInKB or 0) * 1024


def disk_gb_of(devices):
    """GiB of all disks, rounded up: what an instance cloned from these devices needs at least."""
    return -(-sum(disk_bytes(disk) for disk in disks_of(devices)) // GIB)


def instance_state(node, host_name, props):
    devices = props.get(DEVICES) or []
    return InstanceState(
        uuid=managed_uuid(props), name=vm_name(props.get('name')), node=node, host=host_name,
        power_state=power_state(props.get('runtime.powerState')),
        vcpus=int(props.get('summary.config.numCpu') or 0), memory_mb=int(props.get('summary.config.memorySizeMB') or 0),
        macs=[nic.macAddress.lower() for nic in nics_of(devices) if nic.macAddress],
        disk_paths=[disk.backing.fileName for disk in disks_of(devices) if getattr(disk.backing, 'fileName', None)])


def instance_states(vcenter, records, strict=True):
    """InstanceState of every managed VM on a host of a node (a cluster; strict: one the
    clusters filter keeps), sorted by node, name and uuid. macs and disk_paths come from
    DEVICES where the records carry them, and are empty otherwise."""
    objects = by_kind(records)
    nodes = cluster_nodes(vcenter, objects, strict)
    hosts = objects['HostSystem']
    states = []
    for props in objects['VirtualMachine'].values():
        host = hosts.get(props.get('runtime.host')) or {}
        node = nodes.get(host.get('parent'))
        if node is not None and managed_uuid(props) is not None:
            states.append(instance_state(node, host.get('name', ''), props))
    return sorted(states, key=lambda state: (state.node, state.name, state.uuid))


def managed_ids(records):
    """Ids of the managed VMs among Records."""
    return sorted(r.moid for r in records if r.kind == 'VirtualMachine' and managed_uuid(r.props) is not None)


def with_devices(records, answer):
    """records with the DEVICES of each managed VM taken from answer (a second retrieval of
    those VMs only); a managed VM missing from answer was destroyed in between and is dropped."""
    devices = dict((r.moid, r.props.get(DEVICES) or []) for r in answer)
    result = []
    for record in records:
        if record.kind == 'VirtualMachine' and managed_uuid(record.props) is not None:
            if record.moid not in devices:
                continue
            record = Record(record.kind, record.moid, dict(record.props, **{DEVICES: devices[record.moid]}))
        result.append(record)
    return result


__all__ = ['POWER_STATES', 'disk_bytes', 'disk_gb_of', 'disks_of', 'instance_state', 'instance_states', 'managed_ids',
           'nics_of', 'power_state', 'with_devices']
