# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vSphere nodes from one PropertyCollector answer: one cluster of a vCenter is one node,
whose resources are those of its ESXi hosts and datastores. Private to multihv.cloud: do not
import. Pure functions of Records (properties.py), tested without a vCenter.
"""

from __future__ import annotations

import collections

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import HostResources, NodeResources
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import managed_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.capabilities import HYPERVISOR_TYPE
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import by_kind

MIB = 1024 * 1024
GIB = 1024 * MIB

NO_USABLE_HOST = 'no connected host out of maintenance'


def select_clusters(vcenter, clusters):
    """The clusters the vCenter's `clusters` filter keeps: {moid: (datacenter, name)} in,
    the kept moids out. An entry is a cluster name or datacenter/cluster; an entry that
    matches nothing is a configuration error (errors.NotFound naming what exists)."""
    if not vcenter.clusters:
        return set(clusters)
    kept = set()
    for entry in vcenter.clusters:
        matched = set(moid for moid, (datacenter, name) in clusters.items()
                      if entry in (name, '%s/%s' % (datacenter, name)))
        if not matched:
            existing = sorted('%s/%s' % where for where in clusters.values())
            raise errors.NotFound('vCenter %s has no cluster %s (clusters filter of the cloud file); it has %s' % (
                vcenter.name, entry, ', '.join(existing) or 'no cluster'))
        kept |= matched
    return kept


def folder_tree(objects):
    """({datacenter id: name}, {folder id: parent id}) of by_kind objects: what the walk up
    to a datacenter needs."""
    datacenters = dict((moid, props.get('name', moid)) for moid, props in objects['Datacenter'].items())
    parents = dict((moid, props.get('parent')) for moid, props in objects['Folder'].items())
    return datacenters, parents


def datacenter_id(moid, parents, datacenters):
    """The id of the datacenter above object `moid`, walking parent ids through folders;
    None when the chain ends elsewhere (the bound guards against a malformed answer)."""
    for _step in range(len(parents) + 2):
        if moid in datacenters:
            return moid
        moid = parents.get(moid)
        if moid is None:
            return None
    return None


def datacenter_of(moid, parents, datacenters):
    """The name of the datacenter above object `moid` ({id: name} in datacenters), or None."""
    return datacenters.get(datacenter_id(moid, parents, datacenters))


def cluster_places(objects):
    """{cluster id: (datacenter name, cluster name)} of by_kind objects; '?' for a cluster
    whose datacenter is not found."""
    datacenters, parents = folder_tree(objects)
    return dict((moid, (datacenter_of(props.get('parent'), parents, datacenters) or '?', props.get('name', moid)))
                for moid, props in objects['ClusterComputeResource'].items())


def cluster_nodes(vcenter, objects, strict=True):
    """{cluster moid: node name}. strict applies the vCenter's clusters filter as get_nodes does
    (an entry that matches nothing is an error); otherwise every cluster seen is named."""
    where = cluster_places(objects)
    kept = select_clusters(vcenter, where) if strict else set(where)
    return dict((moid, vcenter.node_name(*where[moid])) for moid in kept)


def host_resources(props):
    """HostResources of one ESXi host, before its VMs are counted."""
    memory_mb = int(props.get('summary.hardware.memorySize') or 0) // MIB
    return HostResources(
        name=props.get('name', ''),
        connection_state=str(props.get('runtime.connectionState') or 'unknown'),
        in_maintenance=bool(props.get('runtime.inMaintenanceMode')),
        vcpus=int(props.get('summary.hardware.numCpuThreads') or 0),
        memory_mb=memory_mb,
    )


def count_vm(host, props):
    """Add one VM to its host: every VM counts as an instance, only a powered-on one
    holds vCPUs and RAM (a powered-off or suspended VM takes nothing from the host)."""
    host.instances += 1
    foreign = managed_uuid(props) is None  # no mark of the cloud's: counted apart too (adoption, issue 17 §3)
    host.unmanaged_vms += int(foreign)
    if str(props.get('runtime.powerState')) == 'poweredOn':
        host.vcpus_used += int(props.get('summary.config.numCpu') or 0)
        host.memory_mb_used += int(props.get('summary.config.memorySizeMB') or 0)
        if foreign:
            host.unmanaged_vcpus_used += int(props.get('summary.config.numCpu') or 0)
            host.unmanaged_memory_mb_used += int(props.get('summary.config.memorySizeMB') or 0)


def memory_free(host, quick_stats_usage_mb):
    """RAM a new VM can still get on the host: physical RAM minus the larger of what the
    host reports in use (quickStats: VM memory actually touched plus the hypervisor's own
    overhead) and what its powered-on VMs are configured with (idle VMs touch little
    but may grow to their full size at any time). Taking the larger never promises RAM
    that either view says is taken; floored at 0."""
    return max(host.memory_mb - max(int(quick_stats_usage_mb or 0), host.memory_mb_used), 0)


def datastore_entry(props, hosts=()):
    """One datastore of a cluster node as compute_node_info shows it; hosts are the names of
    the cluster's ESXi hosts that mount it (sorted here), whatever their state."""
    return {
        'name': props.get('summary.name', ''),
        'capacity_gb': int(props.get('summary.capacity') or 0) // GIB,
        'free_gb': int(props.get('summary.freeSpace') or 0) // GIB,
        # An inaccessible datastore (NFS server gone, LUN lost) reports stale numbers.
        'accessible': props.get('summary.accessible') is not False,
        'hosts': sorted(hosts),
    }


def mounted_by(host_props):
    """{datastore moid: [names of the hosts that mount it]} of some hosts' props (their
    datastore and name), each host once per datastore."""
    mounts = collections.defaultdict(list)
    for props in host_props:
        for datastore in sorted(set(props.get('datastore') or ())):
            mounts[datastore].append(props.get('name', ''))
    return mounts


def disk_totals(datastores):
    """(disk_gb, disk_gb_free) of a cluster: its accessible datastores, each once (ids are
    unique), summed in bytes and then rounded down to GiB, so rounding is done once."""
    usable = [props for props in datastores if props.get('summary.accessible') is not False]
    capacity = sum(int(props.get('summary.capacity') or 0) for props in usable)
    free = sum(int(props.get('summary.freeSpace') or 0) for props in usable)
    return capacity // GIB, free // GIB


def build_nodes(vcenter, records):
    """NodeResources of every cluster the vCenter's filter keeps, from the Records of one
    PropertyCollector retrieval; sorted by node name, hosts and datastores by name.

    A cluster answers even when none of its hosts can take a VM: it is 'up' with no
    capacity, and its reason says why."""
    objects = by_kind(records)
    clusters = objects['ClusterComputeResource']
    where = cluster_places(objects)
    kept = select_clusters(vcenter, where)

    hosts = {}
    members = collections.defaultdict(list)
    member_props = collections.defaultdict(list)
    for moid, props in objects['HostSystem'].items():
        if props.get('parent') in kept:  # standalone hosts and filtered-out clusters are no node
            hosts[moid] = host_resources(props)
            members[props['parent']].append(hosts[moid])
            member_props[props['parent']].append(props)
    for props in objects['VirtualMachine'].values():
        host = hosts.get(props.get('runtime.host'))
        if host is not None and not props.get('summary.config.template'):  # a template is an image, not an instance
            count_vm(host, props)
    for moid, host in hosts.items():
        host.memory_mb_free = memory_free(host, objects['HostSystem'][moid].get('summary.quickStats.overallMemoryUsage'))

    nodes = []
    for moid in kept:
        props = clusters[moid]
        attached = [ds for ds in sorted(set(props.get('datastore') or ())) if ds in objects['Datastore']]
        datastores = [objects['Datastore'][ds] for ds in attached]
        disk_gb, disk_gb_free = disk_totals(datastores)
        mounts = mounted_by(member_props[moid])
        datacenter, name = where[moid]
        node = NodeResources(
            name=vcenter.node_name(datacenter, name),
            hypervisor_type=HYPERVISOR_TYPE,
            hosts=sorted(members[moid], key=lambda h: h.name),
            disk_gb=disk_gb,
            disk_gb_free=disk_gb_free,
            extra={
                'moid': moid,
                'vcenter': vcenter.name,
                'datacenter': datacenter,
                'cluster': name,
                'ha_enabled': bool(props.get('configurationEx.dasConfig.enabled')),
                'drs_enabled': bool(props.get('configurationEx.drsConfig.enabled')),
                'datastores': sorted((datastore_entry(objects['Datastore'][ds], mounts.get(ds, ())) for ds in attached),
                                     key=lambda d: d['name']),
            },
        )
        if not any(h.usable for h in node.hosts):
            node.reason = NO_USABLE_HOST
        nodes.append(node)
    return sorted(nodes, key=lambda n: n.name)


__all__ = ['GIB', 'MIB', 'NO_USABLE_HOST', 'build_nodes', 'cluster_nodes', 'cluster_places', 'datacenter_id', 'datacenter_of',
           'datastore_entry', 'disk_totals', 'folder_tree', 'mounted_by', 'select_clusters']
