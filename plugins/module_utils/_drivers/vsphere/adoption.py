# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A cluster's VMs as adoption sees them (issue 17 §3): VMDetails from the Records of two
retrievals, and the annotation that marks an adopted VM. Private to multihv.cloud: do not import.
Pure functions of Records, no pyVmomi; devices are read duck-typed.
"""

from __future__ import annotations

import collections

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import VMDetails
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import format_annotation, normal_uuid, parse_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.instances import disk_gb_of, disks_of, nics_of, power_state
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import cluster_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import DEVICES, LIST_PROPERTIES, by_kind, merge_properties, vm_name

# list_vms: list_instances' view, plus which datastores each host mounts (shared or not) and the names of
# the datastores and distributed port groups (a NIC's backing names its port group by key).
VM_PROPERTIES = merge_properties(LIST_PROPERTIES, collections.OrderedDict([
    ('HostSystem', ('datastore',)),
    ('Datastore', ('summary.name',)),
    ('DistributedVirtualPortgroup', ('name', 'key')),
]))


def node_vms(vcenter, records, node):
    """Ids of the VMs (templates excluded) on the hosts of cluster node `node`, among Records of VM_PROPERTIES."""
    objects = by_kind(records)
    clusters = [moid for moid, name in cluster_nodes(vcenter, objects, strict=False).items() if name == node]
    hosts = objects['HostSystem']
    return sorted(moid for moid, props in objects['VirtualMachine'].items()
                  if not props.get('summary.config.template') and (hosts.get(props.get('runtime.host')) or {}).get('parent') in clusters)


def datastore_of(disk, names):
    """The name of the datastore a disk's backing is on ({moid: name} names), from its backing's datastore,
    else from its file name ('[name] folder/file.vmdk')."""
    backing = getattr(disk, 'backing', None)
    datastore = getattr(backing, 'datastore', None)
    moid = getattr(datastore, '_moId', datastore)
    if moid in names:
        return names[moid]
    path = getattr(backing, 'fileName', '') or ''
    return path[1:path.index(']')] if path.startswith('[') and ']' in path else None


def nic_backing(nic, portgroups):
    """The port group a NIC is on, as InstanceSpec.networks names it ({key: name} of distributed port groups)."""
    backing = getattr(nic, 'backing', None)
    if getattr(backing, 'deviceName', None):
        return backing.deviceName
    port = getattr(backing, 'port', None)
    key = getattr(port, 'portgroupKey', None)
    return portgroups.get(key, key or '')


def vm_details(vcenter, records, node, devices):
    """VMDetails of the VMs of node_vms (devices: {moid: their DEVICES}, from a second retrieval; a VM missing
    there was deleted in between and is left out). storage: shared when every datastore of its disks is
    mounted by every host of the cluster (and it has some), else local."""
    objects = by_kind(records)
    hosts = objects['HostSystem']
    names = dict((moid, props.get('summary.name', moid)) for moid, props in objects['Datastore'].items())
    portgroups = dict((props.get('key'), props.get('name')) for props in objects['DistributedVirtualPortgroup'].values())
    result = []
    for moid in node_vms(vcenter, records, node):
        if moid not in devices:
            continue
        props = objects['VirtualMachine'][moid]
        vm_uuid = normal_uuid(props.get('config.uuid'))
        if vm_uuid is None:
            continue  # its configuration cannot be read (files inaccessible): nothing to adopt
        host = hosts.get(props.get('runtime.host')) or {}
        members = [h for h in hosts.values() if h.get('parent') == host.get('parent')]
        disks = disks_of(devices[moid])
        datastores = sorted(set(filter(None, (datastore_of(disk, names) for disk in disks))))
        mounted = [set(names.get(ds, ds) for ds in h.get('datastore') or ()) for h in members]
        shared = bool(datastores) and len(members) > 1 and all(set(datastores) <= m for m in mounted)
        marked_uuid = parse_annotation(props.get('config.annotation'))[0]
        result.append(VMDetails(
            uuid=vm_uuid, name=vm_name(props.get('name')), node=node, host=host.get('name', ''),
            power_state=power_state(props.get('runtime.powerState')), vcpus=int(props.get('summary.config.numCpu') or 0),
            memory_mb=int(props.get('summary.config.memorySizeMB') or 0), disk_gb=disk_gb_of(devices[moid]),
            nics=[{'mac': (nic.macAddress or '').lower(), 'backing': nic_backing(nic, portgroups)} for nic in nics_of(devices[moid])],
            disk_paths=[disk.backing.fileName for disk in disks if getattr(disk.backing, 'fileName', None)],
            storage='shared' if shared else 'local', datastores=datastores, marked=marked_uuid is not None, marked_uuid=marked_uuid))
    return sorted(result, key=lambda vm: (vm.name, vm.uuid))


def adopted_annotation(instance_uuid, name, node, metadata, annotation):
    """The annotation of an adopted VM: the marker line and its JSON (as annotation_for writes them) above what
    the annotation said before (the operator's notes are kept)."""
    marker = format_annotation(instance_uuid, {'name': name, 'hostname': name, 'image': metadata.get('image') or '', 'node': node,
                                               'metadata': {'adopted': True}})
    return marker + ('\n' + annotation if annotation else '')


__all__ = ['DEVICES', 'VM_PROPERTIES', 'adopted_annotation', 'datastore_of', 'nic_backing', 'node_vms', 'vm_details']
