# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a vSphere instance goes, decided before anything is created or moved. Private to
multihv.cloud: do not import.

An image is a template VM, cloned for each instance into the cluster's resource pool, onto
the ESXi host the scheduler chose (or the usable one with the most free RAM), onto a
datastore of the cluster that host mounts, with one NIC per requested port group. plan_spawn
and plan_relocate are pure functions of one PropertyCollector answer (SPAWN_PROPERTIES):
their errors say what is missing and that nothing was created or moved.
"""

from __future__ import annotations

import collections

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import normal_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import (
    NO_USABLE_HOST, build_nodes, datacenter_id, datacenter_of, folder_tree,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import by_kind, vm_name

# Where spawn puts an instance, decided before anything is created (plan_spawn).
Placement = collections.namedtuple('Placement', 'node cluster datacenter folder pool host host_name datastore template networks')

# One NIC of spec.networks, resolved to its port group: kind is Network (a standard port
# group) or DistributedVirtualPortgroup; mac None lets vCenter generate one.
NetworkChoice = collections.namedtuple('NetworkChoice', 'name kind moid switch_uuid portgroup_key mac')


def pick_template(vcenter_name, objects, name, datacenter=None, untouched=''):
    """The template VM named `name` as a dict (no disk_gb yet: that needs its devices).
    One in `datacenter` wins over those of other datacenters; errors.NotFound when there is
    none, errors.DriverError when the name is ambiguous. untouched ends the messages."""
    datacenters, parents = folder_tree(objects)
    named = [(moid, props) for moid, props in sorted(objects['VirtualMachine'].items()) if vm_name(props.get('name')) == name]
    found = [dict(name=name, moid=moid, datacenter=datacenter_of(props.get('parent'), parents, datacenters),
                  vcpus=int(props.get('summary.config.numCpu') or 0), memory_mb=int(props.get('summary.config.memorySizeMB') or 0),
                  guest_id=props.get('summary.config.guestId') or '')
             for moid, props in named if props.get('summary.config.template')]
    if not found:
        hint = ' (VM %s has that name but is not marked as a template)' % named[0][0] if named else ''
        raise errors.NotFound('vCenter %s has no template VM %s%s; a vSphere image is a template VM, cloned for each instance%s'
                              % (vcenter_name, name, hint, untouched))
    local = [t for t in found if t['datacenter'] == datacenter]
    if datacenter and local:
        found = local
    if len(found) > 1:
        raise errors.DriverError('vCenter %s has %d template VMs named %s (%s); rename all but one%s' % (
            vcenter_name, len(found), name, ', '.join('%s in datacenter %s' % (t['moid'], t['datacenter']) for t in found), untouched))
    return found[0]


def choose_host(node, wanted, instance, untouched='nothing was created', avoid=None):
    """The HostResources of node to place onto: `wanted` (the scheduler's choice) when it is a
    usable host of the node, else the usable host other than `avoid` with the most free RAM
    (the first by name of equals). Errors say why there is none, then `untouched`."""
    if wanted:
        host = next((h for h in node.hosts if h.name == wanted), None)
        if host is None:
            raise errors.NotFound('node %s has no host %s (its hosts: %s) for instance %s; %s' % (
                node.name, wanted, ', '.join(h.name for h in node.hosts) or 'none', instance, untouched))
        if not host.usable:
            why = 'in maintenance' if host.in_maintenance else host.connection_state
            raise errors.DriverError('host %s of node %s cannot take instance %s: it is %s; %s' % (
                wanted, node.name, instance, why, untouched))
        return host
    usable = [h for h in node.hosts if h.usable and h.name != avoid]
    if not usable:
        raise errors.DriverError('node %s has %s for instance %s; %s' % (
            node.name, NO_USABLE_HOST + (' other than %s' % avoid if avoid else ''), instance, untouched))
    return max(usable, key=lambda h: h.memory_mb_free)  # node.hosts are sorted by name; max keeps the first


def _node_named(vcenter, records, name, instance, untouched):
    """The NodeResources of node `name` among the vCenter's nodes; errors.NotFound otherwise."""
    node = next((n for n in build_nodes(vcenter, records) if n.name == name), None)
    if node is None:
        raise errors.NotFound('vCenter %s has no node %s for instance %s; %s' % (vcenter.name, name, instance, untouched))
    return node


def _host_id(objects, cluster_id, name):
    """The id of the host named `name` in cluster `cluster_id`."""
    return next(moid for moid, props in sorted(objects['HostSystem'].items())
                if props.get('parent') == cluster_id and props.get('name') == name)


def plan_relocate(vcenter, records, node_name, wanted, instance, current_host):
    """(host moid, host name, resource pool moid) to relocate an instance to on node_name: the
    wanted host, else the usable host with the most free RAM that is not the current one."""
    untouched = 'nothing moved'
    node = _node_named(vcenter, records, node_name, instance, untouched)
    host = choose_host(node, wanted, instance, untouched, avoid=current_host)
    if host.name == current_host:
        raise errors.DriverError('instance %s already runs on host %s of node %s; %s' % (instance, host.name, node_name, untouched))
    objects = by_kind(records)
    cluster_id = node.extra['moid']
    return _host_id(objects, cluster_id, host.name), host.name, objects['ClusterComputeResource'][cluster_id].get('resourcePool')


def pick_datastore(objects, cluster, host, where):
    """The accessible datastore of the cluster that the host mounts with the most free space."""
    shared = set(cluster.get('datastore') or ()) & set(host.get('datastore') or ())
    usable = [(moid, objects['Datastore'][moid]) for moid in sorted(shared)
              if moid in objects['Datastore'] and objects['Datastore'][moid].get('summary.accessible') is not False]
    if not usable:
        raise errors.DriverError('%s: host %s mounts no accessible datastore of its cluster; nothing was created' % (where, host.get('name')))
    return max(usable, key=lambda item: int(item[1].get('summary.freeSpace') or 0))[0]


def refuse_duplicates(objects, spec, folder, where):
    """errors.DriverError when a VM already has the instance's uuid (BIOS or instance uuid)
    or its name in the target folder: vCenter would refuse the name, and a second VM with
    the uuid would make the instance ambiguous."""
    for moid, props in sorted(objects['VirtualMachine'].items()):
        if spec.uuid in (normal_uuid(props.get('summary.config.uuid')), normal_uuid(props.get('summary.config.instanceUuid'))):
            raise errors.DriverError('%s: VM %s (%s) already has the uuid of instance %s; nothing was created' % (
                where, vm_name(props.get('name')), moid, spec.uuid))
        if props.get('parent') == folder and vm_name(props.get('name')) == spec.name:
            raise errors.DriverError('%s: the VM folder already has a VM named %s (%s); nothing was created' % (where, spec.name, moid))


def resolve_network(objects, datacenter, parents, datacenters, network, where):
    """The NetworkChoice of one entry of spec.networks: its port group by name, in the datacenter."""
    name = network.get('network')
    found = [(kind, moid, props) for kind in ('Network', 'DistributedVirtualPortgroup', 'OpaqueNetwork')
             for moid, props in sorted(objects[kind].items())
             if vm_name(props.get('name')) == name and datacenter_id(props.get('parent'), parents, datacenters) == datacenter]
    if not found:
        raise errors.NotFound('%s: datacenter %s has no port group %s; nothing was created' % (where, datacenters.get(datacenter), name))
    if len(found) > 1:
        raise errors.DriverError('%s: port group name %s is ambiguous in datacenter %s (%s); nothing was created' % (
            where, name, datacenters.get(datacenter), ', '.join(moid for _kind, moid, _props in found)))
    kind, moid, props = found[0]
    if kind == 'OpaqueNetwork':
        raise errors.DriverError('%s: network %s is an NSX opaque network, which this driver does not attach; nothing was created' % (where, name))
    switch_uuid = None
    if kind == 'DistributedVirtualPortgroup':
        switch = props.get('config.distributedVirtualSwitch')
        switch_uuid = next((p.get('uuid') for k in ('DistributedVirtualSwitch', 'VmwareDistributedVirtualSwitch')
                            for m, p in objects[k].items() if m == switch), None)
        if not switch_uuid:
            raise errors.DriverError('%s: the switch of port group %s is not readable; nothing was created' % (where, name))
    return NetworkChoice(name, kind, moid, switch_uuid, props.get('key') if switch_uuid else None, network.get('mac') or None)


def plan_spawn(vcenter, records, spec):
    """The Placement of an instance from one retrieval of SPAWN_PROPERTIES: node (cluster),
    host, datacenter VM folder, resource pool, datastore, template and port groups. Everything
    that can be checked before cloning is: errors say what is missing; nothing was created."""
    return _plan(vcenter, records, spec, with_template=True)[0]


def plan_import(vcenter, records, spec, disk_bytes):
    """(Placement without a template, datacenter moid, datastore name) of an instance made from uploaded disks
    (issue 19: a move from another hypervisor type), from one retrieval of SPAWN_PROPERTIES: the host as spawn
    chooses it (the scheduler's, else the usable one with the most free RAM) and the datastore of the cluster it
    mounts with the most free space, which must hold disk_bytes (the VMFS flat disks are thick). Nothing created."""
    plan, datacenter, objects = _plan(vcenter, records, spec, with_template=False)
    store = objects['Datastore'][plan.datastore]
    free = int(store.get('summary.freeSpace') or 0)
    if free < disk_bytes:
        raise errors.DriverError('instance %s on node %s: datastore %s has %d MiB free, its disks need %d MiB; nothing was created' % (
            spec.uuid, plan.node, store.get('summary.name'), free // 2 ** 20, -(-disk_bytes // 2 ** 20)))
    return plan, datacenter, store.get('summary.name')


def _plan(vcenter, records, spec, with_template):
    objects = by_kind(records)
    node = _node_named(vcenter, records, spec.node, spec.uuid, 'nothing was created')
    cluster_id = node.extra['moid']
    cluster = objects['ClusterComputeResource'][cluster_id]
    host = choose_host(node, spec.host, spec.uuid)
    host_id = _host_id(objects, cluster_id, host.name)
    datacenters, parents = folder_tree(objects)
    datacenter = datacenter_id(cluster.get('parent'), parents, datacenters)
    where = 'instance %s on node %s' % (spec.uuid, node.name)
    template = None
    if with_template:
        template = pick_template(vcenter.name, objects, spec.image, node.extra['datacenter'], untouched=' (%s); nothing was created' % where)
    folder = objects['Datacenter'][datacenter].get('vmFolder')
    refuse_duplicates(objects, spec, folder, where)
    plan = Placement(
        node=node.name, cluster=node.extra['cluster'], datacenter=node.extra['datacenter'], folder=folder,
        pool=cluster.get('resourcePool'), host=host_id, host_name=host.name,
        datastore=pick_datastore(objects, cluster, objects['HostSystem'][host_id], where), template=template,
        networks=[resolve_network(objects, datacenter, parents, datacenters, net, where) for net in spec.networks])
    return plan, datacenter, objects


__all__ = ['NetworkChoice', 'Placement', 'choose_host', 'pick_datastore', 'pick_template', 'plan_import', 'plan_relocate', 'plan_spawn',
           'refuse_duplicates', 'resolve_network']
