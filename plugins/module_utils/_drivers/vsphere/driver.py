# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vSphere compute driver: one cluster of a vCenter is one node. Private to multihv.cloud: do not import.

get_nodes costs a constant number of SOAP calls whatever the size of the
inventory: one ContainerView over the root folder, one RetrievePropertiesEx
(plus one ContinueRetrievePropertiesEx per further page of PAGE_SIZE objects)
asking only for the property paths in PROPERTIES, and DestroyView. The answer
is joined by managed object id in Python (build_nodes, a pure function).
Reading a property of a pyVmomi managed object would be one round trip per
object and per property, so the driver never does.

Instances (issue: flavors, images, instances): an image is a template VM, cloned
for each instance into the cluster's resource pool, onto the ESXi host the
scheduler chose. A VM is the cloud's instance when its annotation carries the
marker line `multihv.cloud instance <uuid>` (followed by a line of JSON) and
its BIOS uuid (config.uuid) is that uuid; a copy of it (a new uuid) is not.
list_instances costs a constant number of SOAP calls as get_nodes does, plus
one RetrievePropertiesEx for the devices (MACs, disks) of the managed VMs only.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import http.client
import json
import re
import socket
import ssl
import threading
import time
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import (
    HYPERVISOR_VSPHERE, ComputeDriver, HostResources, InstanceState, NodeResources, call_within,
)

try:
    from pyVim import connect as pyvim_connect
    from pyVmomi import vim, vmodl
    HAS_PYVMOMI = True
except ImportError:  # pragma: no cover - reported when used
    pyvim_connect = vim = vmodl = None
    HAS_PYVMOMI = False

MIB = 1024 * 1024
GIB = 1024 * MIB

# Objects per RetrievePropertiesEx / ContinueRetrievePropertiesEx page. Large, so
# that a big estate (tens of thousands of VMs) is a handful of pages; vCenter may
# still return smaller pages, the loop follows its token either way.
PAGE_SIZE = 5000

NO_USABLE_HOST = 'no connected host out of maintenance'

# Every property path get_nodes reads, by managed object type; nothing else
# crosses the wire. Nested paths keep the answer small (configurationEx alone
# is the whole HA/DRS configuration of a cluster). A path whose value is unset
# (vcsim leaves dasConfig.enabled unset) is simply absent from the answer.
PROPERTIES = collections.OrderedDict([
    # Datacenters end the parent walk of a cluster and give the node its name.
    ('Datacenter', ('name',)),
    # Clusters may sit in folders inside a datacenter's host folder.
    ('Folder', ('parent',)),
    ('ClusterComputeResource', (
        'name', 'parent', 'datastore',
        'configurationEx.dasConfig.enabled', 'configurationEx.drsConfig.enabled',
    )),
    # A host's datastore (the datastores it mounts) tells which hosts of a cluster can
    # use each of the cluster's datastores.
    ('HostSystem', (
        'name', 'parent', 'datastore', 'runtime.connectionState', 'runtime.inMaintenanceMode',
        'summary.hardware.numCpuThreads', 'summary.hardware.memorySize',
        'summary.quickStats.overallMemoryUsage',
    )),
    # summary.config rather than config.hardware: summary is always filled,
    # config is unset for a VM whose files are inaccessible.
    ('VirtualMachine', (
        'runtime.host', 'runtime.powerState',
        'summary.config.numCpu', 'summary.config.memorySizeMB', 'summary.config.template',
    )),
    ('Datastore', ('summary.name', 'summary.capacity', 'summary.freeSpace', 'summary.accessible')),
])

# One object of the PropertyCollector's answer, with managed object references
# replaced by their ids: kind is the type name ('HostSystem'), moid its id,
# props {path: value} for the paths that have a value.
Record = collections.namedtuple('Record', 'kind moid props')

# ---------------------------------------------------------------- instances: what is read

# The marker line that makes a VM the cloud's instance; the annotation's next line is JSON.
MARKER = 'multihv.cloud instance'
_MARKER_LINE = re.compile(r'^multihv\.cloud instance (\S+)[ \t]*\r?$', re.MULTILINE)

# vCenter keeps '%', '/' and '\' of an entity name escaped.
_NAME_ESCAPES = re.compile(r'%(25|2[fF]|5[cC])')

POWER_STATES = {'poweredOn': 'running', 'poweredOff': 'stopped', 'suspended': 'suspended'}
POWER_ACTIONS = ('start', 'stop', 'shutdown', 'reboot')

# A clone copies whole disks on a real vCenter: minutes, not seconds.
TASK_TIMEOUT = 1800.0
# How long a guest may take to shut down when asked before it is powered off (Nova's default).
SHUTDOWN_TIMEOUT = 60.0

DEVICES = 'config.hardware.device'

# config.* rather than summary.config.* for what identifies an instance: vcsim does not
# update summary.config.annotation, and a VM whose configuration cannot be read (files
# inaccessible) cannot be managed anyway.
INSTANCE_PATHS = ('name', 'config.uuid', 'config.annotation', 'summary.config.template', 'runtime.host',
                  'runtime.powerState', 'summary.config.numCpu', 'summary.config.memorySizeMB')

# list_instances: every VM with what tells an instance apart, and what names its node.
LIST_PROPERTIES = collections.OrderedDict([
    ('Datacenter', ('name',)),
    ('Folder', ('parent',)),
    ('ClusterComputeResource', ('name', 'parent')),
    ('HostSystem', ('name', 'parent')),
    ('VirtualMachine', INSTANCE_PATHS),
])

# find_template: every VM's name and template flag, and what names its datacenter.
TEMPLATE_PROPERTIES = collections.OrderedDict([
    ('Datacenter', ('name',)),
    ('Folder', ('parent',)),
    ('VirtualMachine', ('name', 'parent', 'summary.config.template', 'summary.config.numCpu',
                        'summary.config.memorySizeMB', 'summary.config.guestId')),
])


def merge_properties(*parts):
    """One {type: paths} of several, paths of a type once each, in order."""
    merged = collections.OrderedDict()
    for part in parts:
        for kind, paths in part.items():
            known = merged.get(kind, ())
            merged[kind] = tuple(known) + tuple(p for p in paths if p not in known)
    return merged


# spawn: get_nodes' view (host capacity, to choose a host), the templates, the VMs' uuids and
# names (to refuse duplicates), where to put the clone, and the port groups of spec.networks.
SPAWN_PROPERTIES = merge_properties(PROPERTIES, TEMPLATE_PROPERTIES, collections.OrderedDict([
    ('Datacenter', ('vmFolder',)),
    ('ClusterComputeResource', ('resourcePool',)),
    ('HostSystem', ('datastore',)),
    ('VirtualMachine', ('name', 'parent', 'summary.config.uuid', 'summary.config.instanceUuid')),
    ('Network', ('name', 'parent')),
    ('DistributedVirtualPortgroup', ('key', 'config.distributedVirtualSwitch')),
    ('DistributedVirtualSwitch', ('uuid',)),
]))

# One instance (destroy, set_power, after spawn): the VM with its devices, and through its
# resource pool's owner, its cluster, the cluster's hosts and the folders up to the datacenter.
DESCRIBE_PROPERTIES = merge_properties(LIST_PROPERTIES, collections.OrderedDict([
    ('VirtualMachine', ('config.instanceUuid', DEVICES)),
]))

# What spawn checks on the fresh clone: vcsim 0.24.2 ignores CloneSpec.location.host and
# most of CloneSpec.config, a vCenter applies them; what is missing is applied again.
CLONE_PATHS = ('runtime.host', 'runtime.powerState', 'summary.config.numCpu', 'summary.config.memorySizeMB',
               'config.uuid', 'config.instanceUuid', 'config.annotation', 'config.hardware.numCoresPerSocket', DEVICES)

# Where spawn puts an instance, decided before anything is created (plan_spawn).
Placement = collections.namedtuple('Placement', 'node cluster datacenter folder pool host host_name datastore template networks')

# One NIC of spec.networks, resolved to its port group: kind is Network (a standard port
# group) or DistributedVirtualPortgroup; mac None lets vCenter generate one.
NetworkChoice = collections.namedtuple('NetworkChoice', 'name kind moid switch_uuid portgroup_key mac')

# Network failures: the vCenter did not answer (ssl.SSLError is an OSError but
# means it answered with something we refuse; it is told apart first).
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


# ---------------------------------------------------------------- pure logic

def plain(value):
    """A property value with managed object references (anything with a _moId)
    turned into their ids, in lists too, so that joins are by plain strings."""
    if hasattr(value, '_moId'):
        return value._moId  # pylint: disable=protected-access
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


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
    if str(props.get('runtime.powerState')) == 'poweredOn':
        host.vcpus_used += int(props.get('summary.config.numCpu') or 0)
        host.memory_mb_used += int(props.get('summary.config.memorySizeMB') or 0)


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
    objects = collections.defaultdict(dict)
    for record in records:
        objects[record.kind][record.moid] = record.props
    datacenters = dict((moid, props.get('name', moid)) for moid, props in objects['Datacenter'].items())
    parents = dict((moid, props.get('parent')) for moid, props in objects['Folder'].items())
    clusters = objects['ClusterComputeResource']
    where = dict((moid, (datacenter_of(props.get('parent'), parents, datacenters) or '?', props.get('name', moid)))
                 for moid, props in clusters.items())
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
            hypervisor_type=HYPERVISOR_VSPHERE,
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


# ---------------------------------------------------------------- instances: pure logic

def by_kind(records):
    """{type name: {moid: props}} of Records."""
    objects = collections.defaultdict(dict)
    for record in records:
        objects[record.kind][record.moid] = record.props
    return objects


def normal_uuid(value):
    """A UUID in its canonical lower-case form; None when value is not one."""
    try:
        return str(uuidlib.UUID(str(value)))
    except (TypeError, ValueError):
        return None


def vm_name(stored):
    """An entity name as it was given: vCenter keeps '%', '/' and '\\' as %25, %2f and %5c."""
    return _NAME_ESCAPES.sub(lambda match: chr(int(match.group(1), 16)), stored or '')


def power_state(value):
    return POWER_STATES.get(str(value), 'unknown')


def format_annotation(instance_uuid, data):
    """The annotation of a managed VM: the marker line, then the JSON of data on one line."""
    return '%s %s\n%s' % (MARKER, instance_uuid, json.dumps(data, sort_keys=True, separators=(',', ':'), default=str))


def parse_annotation(text):
    """(uuid, data) of an annotation; (None, {}) when it carries no marker line with a UUID.
    A marker whose JSON line is missing or damaged (edited by hand) still marks the VM."""
    match = _MARKER_LINE.search(text or '')
    instance = normal_uuid(match.group(1)) if match else None
    if instance is None:
        return None, {}
    following = text[match.end():].lstrip('\r\n').split('\n', 1)[0]
    try:
        data = json.loads(following)
    except ValueError:
        data = {}
    return instance, data if isinstance(data, dict) else {}


def annotation_for(spec):
    """What a node alone needs to tell what the instance is (InstanceSpec.metadata included);
    not user_data, which may hold secrets and has no size bound."""
    return format_annotation(spec.uuid, {'name': spec.name, 'hostname': spec.hostname, 'image': spec.image,
                                         'node': spec.node, 'metadata': spec.metadata})


def managed_uuid(props):
    """The instance uuid of a VM the cloud manages, else None: not a template, a marker, and the
    marker's uuid is the VM's own BIOS uuid (a copy of an instance gets a new one)."""
    if props.get('summary.config.template'):
        return None
    instance = parse_annotation(props.get('config.annotation'))[0]
    if instance is None or instance != normal_uuid(props.get('config.uuid')):
        return None
    return instance


def cluster_nodes(vcenter, objects, strict=True):
    """{cluster moid: node name}. strict applies the vCenter's clusters filter as get_nodes does
    (an entry that matches nothing is an error); otherwise every cluster seen is named."""
    datacenters = dict((moid, props.get('name', moid)) for moid, props in objects['Datacenter'].items())
    parents = dict((moid, props.get('parent')) for moid, props in objects['Folder'].items())
    where = dict((moid, (datacenter_of(props.get('parent'), parents, datacenters) or '?', props.get('name', moid)))
                 for moid, props in objects['ClusterComputeResource'].items())
    kept = select_clusters(vcenter, where) if strict else set(where)
    return dict((moid, vcenter.node_name(*where[moid])) for moid in kept)


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


def pick_template(vcenter_name, objects, name, datacenter=None, untouched=''):
    """The template VM named `name` as a dict (no disk_gb yet: that needs its devices).
    One in `datacenter` wins over those of other datacenters; errors.NotFound when there is
    none, errors.DriverError when the name is ambiguous. untouched ends the messages."""
    datacenters = dict((moid, props.get('name', moid)) for moid, props in objects['Datacenter'].items())
    parents = dict((moid, props.get('parent')) for moid, props in objects['Folder'].items())
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


def plan_relocate(vcenter, records, node_name, wanted, instance, current_host):
    """(host moid, host name, resource pool moid) to relocate an instance to on node_name: the
    wanted host, else the usable host with the most free RAM that is not the current one."""
    untouched = 'nothing moved'
    node = next((n for n in build_nodes(vcenter, records) if n.name == node_name), None)
    if node is None:
        raise errors.NotFound('vCenter %s has no node %s for instance %s; %s' % (vcenter.name, node_name, instance, untouched))
    host = choose_host(node, wanted, instance, untouched, avoid=current_host)
    if host.name == current_host:
        raise errors.DriverError('instance %s already runs on host %s of node %s; %s' % (instance, host.name, node_name, untouched))
    objects = by_kind(records)
    cluster_id = node.extra['moid']
    host_id = next(moid for moid, props in sorted(objects['HostSystem'].items())
                   if props.get('parent') == cluster_id and props.get('name') == host.name)
    return host_id, host.name, objects['ClusterComputeResource'][cluster_id].get('resourcePool')


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
    objects = by_kind(records)
    node = next((n for n in build_nodes(vcenter, records) if n.name == spec.node), None)
    if node is None:
        raise errors.NotFound('vCenter %s has no node %s for instance %s; nothing was created' % (vcenter.name, spec.node, spec.uuid))
    cluster_id = node.extra['moid']
    cluster = objects['ClusterComputeResource'][cluster_id]
    host = choose_host(node, spec.host, spec.uuid)
    host_id = next(moid for moid, props in sorted(objects['HostSystem'].items())
                   if props.get('parent') == cluster_id and props.get('name') == host.name)
    parents = dict((moid, props.get('parent')) for moid, props in objects['Folder'].items())
    datacenters = dict((moid, props.get('name', moid)) for moid, props in objects['Datacenter'].items())
    datacenter = datacenter_id(cluster.get('parent'), parents, datacenters)
    where = 'instance %s on node %s' % (spec.uuid, node.name)
    template = pick_template(vcenter.name, objects, spec.image, node.extra['datacenter'], untouched=' (%s); nothing was created' % where)
    folder = objects['Datacenter'][datacenter].get('vmFolder')
    refuse_duplicates(objects, spec, folder, where)
    return Placement(
        node=node.name, cluster=node.extra['cluster'], datacenter=node.extra['datacenter'], folder=folder,
        pool=cluster.get('resourcePool'), host=host_id, host_name=host.name,
        datastore=pick_datastore(objects, cluster, objects['HostSystem'][host_id], where), template=template,
        networks=[resolve_network(objects, datacenter, parents, datacenters, net, where) for net in spec.networks])


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


def clone_config(spec, placement, template_devices, template_cores):
    """The ConfigSpec of the clone: the flavor's vCPUs and RAM, the instance uuid as BIOS and
    instance uuid, the marker annotation, and the NICs of spec.networks."""
    return vim.vm.ConfigSpec(
        numCPUs=spec.vcpus, numCoresPerSocket=cores_per_socket(spec.vcpus, template_cores), memoryMB=spec.memory_mb,
        uuid=spec.uuid, instanceUuid=spec.uuid, annotation=annotation_for(spec),
        deviceChange=nic_changes(placement.networks, nics_of(template_devices)))


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


def missing_config(spec, props):
    """A ConfigSpec with what the fresh clone (CLONE_PATHS props) lacks of the instance, or None:
    nothing but a too small root disk on a vCenter that applied CloneSpec.config."""
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
    return config if missing else None


# ---------------------------------------------------------------- vCenter I/O

def _require_pyvmomi(vcenter):
    if not HAS_PYVMOMI:
        raise errors.MissingLibrary('pyvmomi', 'for the vSphere nodes of vCenter %s' % vcenter.name)


def property_specs(properties):
    return [vmodl.query.PropertyCollector.PropertySpec(type=getattr(vim, kind), pathSet=list(paths)) for kind, paths in properties.items()]


def filter_spec(view, properties=None):
    """Every object of the view, with the paths of its type in `properties` (PROPERTIES by default)."""
    collector = vmodl.query.PropertyCollector
    return collector.FilterSpec(
        objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[
            collector.TraversalSpec(name='view', path='view', skip=False, type=vim.view.ContainerView)])],
        propSet=property_specs(properties or PROPERTIES))


def retrieve_pages(pc, spec):
    """Records of RetrievePropertiesEx and of each ContinueRetrievePropertiesEx its token asks for."""
    result = pc.RetrievePropertiesEx(specSet=[spec], options=vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE_SIZE))
    records = []
    while result is not None:  # None: nothing matched
        objects = result.objects
        # Popped as converted, so that a page's pyVmomi objects are freed while its records
        # grow: peak memory is one copy of the inventory, not two (order does not matter,
        # the join is by id).
        while objects:
            item = objects.pop()
            records.append(Record(item.obj._wsdlName, item.obj._moId,  # pylint: disable=protected-access
                                  dict((p.name, plain(p.val)) for p in item.propSet)))
        result = pc.ContinueRetrievePropertiesEx(token=result.token) if result.token else None
    return records


def retrieve_inventory(content, properties=None):
    """Records of every object of the types in `properties` (PROPERTIES, what get_nodes needs,
    by default): CreateContainerView, RetrievePropertiesEx and its pages, DestroyView."""
    properties = properties or PROPERTIES
    view = content.viewManager.CreateContainerView(
        container=content.rootFolder, type=[getattr(vim, kind) for kind in properties], recursive=True)
    try:
        return retrieve_pages(content.propertyCollector, filter_spec(view, properties))
    except _NETWORK_ERRORS:
        # The connection is gone or stuck: do not wait on it once more for DestroyView;
        # the view ends with the session.
        view = None
        raise
    finally:
        if view is not None:
            try:
                view.Destroy()
            except (vmodl.MethodFault,) + _NETWORK_ERRORS:
                pass  # the view ends with the session anyway; do not hide a first error


def _stub(content):
    """The SOAP stub of a session, to make managed object references from ids."""
    return content.propertyCollector._stub  # pylint: disable=protected-access


def retrieve_objects(pc, objects, kind, paths):
    """Records of the given managed objects with `paths` of type `kind`: one RetrievePropertiesEx
    (and its pages) whatever their number. One deleted meanwhile is left out (vCenter refuses
    the whole call for it: it is asked again without it)."""
    collector = vmodl.query.PropertyCollector
    remaining = list(objects)
    while remaining:
        spec = collector.FilterSpec(objectSet=[collector.ObjectSpec(obj=obj, skip=False) for obj in remaining],
                                    propSet=[collector.PropertySpec(type=getattr(vim, kind), pathSet=list(paths))])
        try:
            return retrieve_pages(pc, spec)
        except vmodl.fault.ManagedObjectNotFound as exc:
            gone = plain(exc.obj)
            kept = [obj for obj in remaining if plain(obj) != gone]
            if len(kept) == len(remaining):
                raise
            remaining = kept
    return []


def describe_spec(vm):
    """One VM with DESCRIBE_PROPERTIES, and what names its node: resourcePool -> owner (the
    cluster) -> its hosts, and its parent folders up to the datacenter."""
    collector = vmodl.query.PropertyCollector
    up_folders = collector.TraversalSpec(name='up', type=vim.Folder, path='parent', skip=False,
                                         selectSet=[collector.SelectionSpec(name='up')])
    cluster_up = collector.TraversalSpec(name='cluster_up', type=vim.ComputeResource, path='parent', skip=False, selectSet=[up_folders])
    cluster_hosts = collector.TraversalSpec(name='cluster_hosts', type=vim.ComputeResource, path='host', skip=False)
    owner = collector.TraversalSpec(name='owner', type=vim.ResourcePool, path='owner', skip=False, selectSet=[cluster_up, cluster_hosts])
    pool = collector.TraversalSpec(name='pool', type=vim.VirtualMachine, path='resourcePool', skip=False, selectSet=[owner])
    return collector.FilterSpec(objectSet=[collector.ObjectSpec(obj=vm, skip=False, selectSet=[pool])],
                                propSet=property_specs(DESCRIBE_PROPERTIES))


def _task_error(error):
    """The text of a task's info.error: pyVmomi gives the MethodFault itself (its msg the
    localized message), a LocalizedMethodFault wrapper is read too."""
    if error is None:
        return 'no error detail'
    fault = getattr(error, 'fault', None) or error
    text = getattr(fault, 'msg', None) or getattr(error, 'localizedMessage', None) or ''
    kind = type(fault).__name__
    detail = getattr(fault, 'invalidProperty', None)
    return '%s%s%s' % (kind, ': ' + text if text and text != kind else '', ' (%s)' % detail if detail else '')


def wait_task(pc, task, deadline, what):
    """The result of a vCenter task (a moid for a managed object) once it succeeded, polling its
    state with a growing pause; errors.DriverError naming `what` when it failed or when it has
    not finished by the deadline (time.monotonic()), after asking vCenter to cancel it."""
    collector = vmodl.query.PropertyCollector
    spec = collector.FilterSpec(objectSet=[collector.ObjectSpec(obj=task, skip=False)],
                                propSet=[collector.PropertySpec(type=vim.Task, pathSet=['info.state', 'info.error', 'info.result'])])
    pause = 0.05
    while True:
        records = retrieve_pages(pc, spec)
        props = records[0].props if records else {}
        state = str(props.get('info.state'))
        if state == 'success':
            return props.get('info.result')
        if state == 'error':
            raise errors.DriverError('%s failed: %s' % (what, _task_error(props.get('info.error'))))
        left = deadline - time.monotonic()
        if left <= 0:
            try:
                task.CancelTask()
            except vmodl.MethodFault:
                pass  # not cancellable, or finished meanwhile: the error below says what is known
            raise errors.DriverError('%s did not finish in time (task %s, cancel requested)' % (what, plain(task)))
        time.sleep(min(pause, left))
        pause = min(pause * 2, 2.0)


class VSphereDriver(ComputeDriver):
    """One vCenter; each of its clusters (those the `clusters` filter keeps) is a node."""

    hypervisor_type = HYPERVISOR_VSPHERE

    def __init__(self, vcenter):
        self.vcenter = vcenter
        self._si = None
        self._content = None
        # The core boots instances on several threads with one driver: one login for all.
        self._login_lock = threading.Lock()
        # Deadlines of a vCenter task (clone, relocate, power...) and of a guest shutdown.
        self.work_timeout = TASK_TIMEOUT
        self.shutdown_timeout = SHUTDOWN_TIMEOUT

    def endpoint_name(self):
        return self.vcenter.name

    @property
    def endpoint(self):
        return 'vCenter %s at %s:%s' % (self.vcenter.name, self.vcenter.hostname, self.vcenter.port)

    def node_names(self):
        """Nodes the cloud file names: the clusters filter's datacenter/cluster entries. A bare
        cluster name says nothing of its datacenter, so it gives no name without asking the
        vCenter; without a filter, which clusters exist is unknown as well."""
        names = []
        for entry in self.vcenter.clusters:
            datacenter, slash, cluster = entry.rpartition('/')
            if slash and datacenter and cluster:
                names.append(self.vcenter.node_name(datacenter, cluster))
        return names

    def get_nodes(self):
        _require_pyvmomi(self.vcenter)
        return build_nodes(self.vcenter, self._with_session(retrieve_inventory))

    # -- images and instances

    def find_template(self, name, datacenter=None):
        """The template VM `name` as {name, moid, datacenter, vcpus, memory_mb, disk_gb, guest_id}:
        one retrieval of every VM's name and template flag, then the found one's devices.
        datacenter breaks a tie between templates of one name in several datacenters."""
        _require_pyvmomi(self.vcenter)
        return self._with_session(lambda content: self._find_template(content, name, datacenter), 'the lookup of template %s' % name)

    def _find_template(self, content, name, datacenter):
        template = pick_template(self.vcenter.name, by_kind(retrieve_inventory(content, TEMPLATE_PROPERTIES)), name, datacenter)
        template['disk_gb'] = disk_gb_of(self._template_hardware(content, template['moid'])[0])
        return template

    def _template_hardware(self, content, moid):
        """(devices, cores per socket) of a template VM."""
        answer = retrieve_objects(content.propertyCollector, [vim.VirtualMachine(moid, _stub(content))], 'VirtualMachine',
                                  (DEVICES, 'config.hardware.numCoresPerSocket'))
        if not answer:
            raise errors.NotFound('template VM %s of vCenter %s was deleted while it was read' % (moid, self.vcenter.name))
        return answer[0].props.get(DEVICES) or [], answer[0].props.get('config.hardware.numCoresPerSocket')

    def list_instances(self):
        """InstanceState of every managed VM on the nodes: CreateContainerView, RetrievePropertiesEx,
        DestroyView, then one RetrievePropertiesEx of the managed VMs' devices for their MACs
        and disks (skipped when there is none): a constant number of SOAP calls."""
        _require_pyvmomi(self.vcenter)
        return self._with_session(self._list_instances, 'the instance listing')

    def _list_instances(self, content):
        records = retrieve_inventory(content, LIST_PROPERTIES)
        stub = _stub(content)
        managed = [vim.VirtualMachine(moid, stub) for moid in managed_ids(records)]
        answer = retrieve_objects(content.propertyCollector, managed, 'VirtualMachine', (DEVICES,)) if managed else []
        return instance_states(self.vcenter, with_devices(records, answer))

    def spawn(self, spec):
        """Clone template spec.image into the node's resource pool onto spec.host (or the usable
        host with the most free RAM), apply what the clone lacks, power it on; InstanceState.
        A failure after the clone began destroys the half-made VM, then raises errors.DriverError
        naming the instance, cluster and host and saying what was left."""
        _require_pyvmomi(self.vcenter)
        instance = normal_uuid(spec.uuid)
        if instance is None:
            raise errors.DriverError('instance uuid %r is not a UUID; nothing was created' % (spec.uuid,))
        if spec.reuse_disk:  # vSphere HA restarts a VM on its datastore; the core never asks this of a cluster
            raise errors.DriverError('instance %s: a vSphere node clones a template, it does not adopt an existing disk; '
                                     'nothing was created' % spec.name)
        spec = dataclasses.replace(spec, uuid=instance)
        return self._with_session(lambda content: self._spawn(content, spec), 'the build of instance %s' % instance)

    def _spawn(self, content, spec):
        placement = plan_spawn(self.vcenter, retrieve_inventory(content, SPAWN_PROPERTIES), spec)
        devices, cores = self._template_hardware(content, placement.template['moid'])
        deadline = time.monotonic() + self.work_timeout
        made = []
        try:
            vm = self._clone(content, spec, placement, clone_config(spec, placement, devices, cores), deadline, made)
            props = self._complete(content, spec, placement, vm, deadline)
            if props.get('runtime.powerState') != 'poweredOn':
                self._power(content, vm, 'PowerOnVM_Task', 'poweredOn', deadline, 'PowerOnVM_Task of instance %s' % spec.uuid)
            state = self._describe(content, vm)
            if state is None:
                raise errors.DriverError('the clone does not read back as instance %s' % spec.uuid)
            return state
        except BaseException as exc:
            left = self._remove_half_made(content, spec, made)
            where = 'vCenter %s could not build instance %s (%s) on cluster %s/%s, host %s' % (
                self.vcenter.name, spec.uuid, spec.name, placement.datacenter, placement.cluster, placement.host_name)
            if isinstance(exc, (errors.Unreachable,) + _NETWORK_ERRORS):
                raise errors.Unreachable('%s: %s did not answer (%s); %s' % (where, self.endpoint, exc, left)) from exc
            if isinstance(exc, (errors.DriverError, vmodl.MethodFault)):
                text = _fault_text(exc) if isinstance(exc, vmodl.MethodFault) else str(exc)
                raise errors.DriverError('%s: %s; %s' % (where, text, left)) from exc
            raise

    def _clone(self, content, spec, placement, config, deadline, made):
        stub = _stub(content)
        template = vim.VirtualMachine(placement.template['moid'], stub)
        task = template.CloneVM_Task(folder=vim.Folder(placement.folder, stub), name=spec.name, spec=clone_spec(placement, config))
        moid = wait_task(content.propertyCollector, task, deadline, 'CloneVM_Task of template %s' % placement.template['name'])
        made.append(vim.VirtualMachine(moid, stub))
        return made[-1]

    def _complete(self, content, spec, placement, vm, deadline):
        """Move the clone to the chosen host and apply the configuration it lacks (missing_config),
        while it is still powered off; its CLONE_PATHS props."""
        pc = content.propertyCollector
        answer = retrieve_objects(pc, [vm], 'VirtualMachine', CLONE_PATHS)
        if not answer:
            raise errors.DriverError('the clone %s disappeared' % plain(vm))
        props = answer[0].props
        if props.get('runtime.host') != placement.host:
            stub = _stub(content)
            relocate = vim.vm.RelocateSpec(host=vim.HostSystem(placement.host, stub), pool=vim.ResourcePool(placement.pool, stub))
            wait_task(pc, vm.RelocateVM_Task(spec=relocate), deadline, 'RelocateVM_Task to host %s' % placement.host_name)
        config = missing_config(spec, props)
        if config is not None:
            wait_task(pc, vm.ReconfigVM_Task(spec=config), deadline, 'ReconfigVM_Task of the clone')
        return props

    def _remove_half_made(self, content, spec, made):
        """Destroy what a failed spawn created; says what was left. Without a reference from the
        clone task, a VM is looked up by the instance uuid and destroyed only if it also has the
        instance's name (spawn refused to start when another VM had the uuid)."""
        try:
            vm = made[0] if made else self._find_by_uuid(content, spec.uuid, spec.name)
            if vm is None:
                return 'no VM was left behind'
            self._power_off_and_destroy(content, vm, time.monotonic() + self.work_timeout, 'the half-made VM of instance %s' % spec.uuid)
            return 'the half-made VM %s was destroyed' % plain(vm)
        except (errors.DriverError, vmodl.MethodFault) + _NETWORK_ERRORS as exc:
            return 'the half-made VM %s (%s) could not be destroyed and is left behind: %s' % (
                spec.name, plain(made[0]) if made else 'not found', _fault_text(exc) if isinstance(exc, vmodl.MethodFault) else exc)

    def shares_storage(self, target, storage):
        """vMotion and relocation move or keep the disks themselves: the core need not know."""
        return True

    def migrate(self, uuid, node, target, mode, controls, progress=None):
        """vMotion (RelocateVM_Task) to target.host in the same cluster node, or relocation into
        another cluster node of this vCenter (its host target.host or the usable one with the
        most free RAM). live and block move a running VM as it runs (vCenter copies the disks
        when the target host does not mount their datastore); cold powers it off first and on
        again after. (InstanceState after, stats)."""
        _require_pyvmomi(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            raise errors.NotFound('instance uuid %r is not a UUID; nothing moved' % (uuid,))
        if not isinstance(target.driver, VSphereDriver) or target.driver.vcenter.name != self.vcenter.name:
            raise errors.DriverError('instance %s: the target is not a cluster of vCenter %s (moves between vCenters are not '
                                     'supported); nothing moved' % (instance, self.vcenter.name))
        return self._with_session(lambda content: self._migrate(content, instance, node, target, mode),
                                  'the migration of instance %s' % instance)

    def _migrate(self, content, instance, node, target, mode):
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); nothing moved' % (self.vcenter.name, instance, node))
        vm, state = located
        self._check_node(state, node, 'moved')
        host_id, host_name, pool = plan_relocate(self.vcenter, retrieve_inventory(content, SPAWN_PROPERTIES), target.node,
                                                 target.host, instance, state.host)
        started = time.monotonic()
        deadline = started + self.work_timeout
        what = 'RelocateVM_Task of instance %s to host %s' % (instance, host_name)
        was_running = state.power_state == 'running'
        if mode == 'cold' and was_running:
            self._power(content, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
        stub = _stub(content)
        spec = vim.vm.RelocateSpec(host=vim.HostSystem(host_id, stub), pool=vim.ResourcePool(pool, stub))
        try:
            wait_task(content.propertyCollector, vm.RelocateVM_Task(spec=spec, priority='defaultPriority'), deadline, what)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not move instance %s from host %s to %s: %s; it stays on %s' % (
                self.vcenter.name, instance, state.host, host_name, exc, state.host)) from exc
        finally:
            if mode == 'cold' and was_running:  # running again, moved or not
                self._power(content, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)
        after = self._describe(content, vm)
        if after is None:
            raise errors.DriverError('instance %s does not read back after its move to host %s' % (instance, host_name))
        return after, {'time_elapsed_ms': int((time.monotonic() - started) * 1000)}

    def _find_by_uuid(self, content, instance, name):
        """The VM with the instance uuid (as instance uuid, else as BIOS uuid) and name `name`, or None."""
        for by_instance_uuid in (True, False):
            found = content.searchIndex.FindByUuid(uuid=instance, vmSearch=True, instanceUuid=by_instance_uuid)
            if found is not None:
                answer = retrieve_objects(content.propertyCollector, [found], 'VirtualMachine', ('name',))
                if answer and vm_name(answer[0].props.get('name')) == name:
                    return found
        return None

    def destroy(self, uuid, node):
        """Power off and delete the instance's VM (and its disks); nothing to do when it is gone.
        A VM of the instance on another node than `node` is left alone (errors.DriverError)."""
        _require_pyvmomi(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            return  # no VM can have it
        self._with_session(lambda content: self._destroy(content, instance, node), 'the destruction of instance %s' % instance)

    def _destroy(self, content, instance, node):
        located = self._locate(content, instance)
        if located is None:
            return
        vm, state = located
        self._check_node(state, node, 'destroyed')
        try:
            self._power_off_and_destroy(content, vm, time.monotonic() + self.work_timeout, 'instance %s' % instance)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not destroy instance %s (VM %s on %s, host %s): %s; the VM is left in place' % (
                self.vcenter.name, instance, state.name, state.node, state.host, exc)) from exc

    def _power_off_and_destroy(self, content, vm, deadline, what):
        pc = content.propertyCollector
        if self._power_state(content, vm) not in (None, 'poweredOff'):
            self._power(content, vm, 'PowerOffVM_Task', 'poweredOff', deadline, 'PowerOffVM_Task of %s' % what)
        try:
            wait_task(pc, vm.Destroy_Task(), deadline, 'Destroy_Task of %s' % what)
        except vmodl.fault.ManagedObjectNotFound:
            pass  # destroyed meanwhile: what was asked

    def set_power(self, uuid, node, action):
        """start, stop (PowerOff, hard), shutdown (ShutdownGuest, then PowerOff when the guest is
        not off after shutdown_timeout; straight PowerOff when vCenter refuses ShutdownGuest, as
        without VMware Tools), reboot (ResetVM; PowerOn when off). Nothing is done when the VM is
        in the state asked already. Returns the InstanceState after; errors.NotFound when the
        instance has no VM."""
        _require_pyvmomi(self.vcenter)
        if action not in POWER_ACTIONS:
            raise errors.DriverError('unknown power action %s for instance %s (expected %s); nothing was changed' % (
                action, uuid, ', '.join(POWER_ACTIONS)))
        instance = normal_uuid(uuid) or str(uuid)
        return self._with_session(lambda content: self._set_power(content, instance, node, action), '%s of instance %s' % (action, instance))

    def _set_power(self, content, instance, node, action):
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); nothing was changed' % (self.vcenter.name, instance, node))
        vm, state = located
        self._check_node(state, node, 'changed')
        deadline = time.monotonic() + self.work_timeout
        what = '%s of instance %s' % (action, instance)
        try:
            self._power_action(content, vm, state.power_state, action, deadline, what)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not %s instance %s (VM %s on %s, host %s): %s; it is left %s' % (
                self.vcenter.name, action, instance, state.name, state.node, state.host, exc,
                power_state(self._power_state(content, vm)))) from exc
        return self._describe(content, vm) or state

    def _power_action(self, content, vm, current, action, deadline, what):
        if action == 'start' and current != 'running':
            self._power(content, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)
        elif action == 'stop' and current != 'stopped':
            self._power(content, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
        elif action == 'shutdown' and current == 'running':
            self._shutdown(content, vm, deadline, what)
        elif action == 'shutdown' and current != 'stopped':  # suspended: no guest runs to ask
            self._power(content, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
        elif action == 'reboot':
            if current == 'running':
                wait_task(content.propertyCollector, vm.ResetVM_Task(), deadline, what)
            else:
                self._power(content, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)

    def _shutdown(self, content, vm, deadline, what):
        try:
            vm.ShutdownGuest()
        except vim.fault.NotAuthenticated:
            raise
        except vmodl.MethodFault:
            # ToolsUnavailable, InvalidState, NotSupported, or a vCenter (simulator) without the
            # method: no guest can be asked, so it is powered off, as Nova does after its timeout.
            self._power(content, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
            return
        # ShutdownGuest only asks the guest: wait for it, then force it.
        if not self._wait_power(content, vm, 'poweredOff', min(deadline, time.monotonic() + self.shutdown_timeout)):
            self._power(content, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)

    def _power(self, content, vm, method, wanted, deadline, what):
        """Run a power task; its failure is no error when the VM is in the state wanted anyway
        (another client or vCenter HA changed it meanwhile: InvalidPowerState)."""
        try:
            wait_task(content.propertyCollector, getattr(vm, method)(), deadline, what)
        except (errors.DriverError, vim.fault.InvalidPowerState):
            if self._power_state(content, vm) != wanted:
                raise

    def _power_state(self, content, vm):
        """runtime.powerState of a VM; None when it is gone."""
        answer = retrieve_objects(content.propertyCollector, [vm], 'VirtualMachine', ('runtime.powerState',))
        return str(answer[0].props.get('runtime.powerState')) if answer else None

    def _wait_power(self, content, vm, wanted, deadline):
        pause = 0.1
        while self._power_state(content, vm) != wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 2.0)
        return True

    def _locate(self, content, instance):
        """(VM reference, InstanceState) of the instance's managed VM, or None: searchIndex by
        instance uuid (spawn sets it), then by BIOS uuid, each checked for the marker."""
        for by_instance_uuid in (True, False):
            found = content.searchIndex.FindByUuid(uuid=instance, vmSearch=True, instanceUuid=by_instance_uuid)
            state = self._describe(content, found) if found is not None else None
            if state is not None and state.uuid == instance:
                return found, state
        return None

    def _describe(self, content, vm):
        """InstanceState of one VM (one RetrievePropertiesEx, describe_spec); None when it is gone,
        not managed, or not in a cluster."""
        try:
            records = retrieve_pages(content.propertyCollector, describe_spec(vm))
        except vmodl.fault.ManagedObjectNotFound:
            return None
        states = instance_states(self.vcenter, records, strict=False)
        return states[0] if states else None

    def _check_node(self, state, node, verb):
        if node and state.node != node:
            raise errors.DriverError('instance %s is on node %s (host %s), not on node %s; it was not %s' % (
                state.uuid, state.node, state.host, node, verb))

    def close(self):
        """Log out (frees the vCenter session now, not at its idle timeout) and drop the sockets."""
        si, content = self._si, self._content
        self._si = self._content = None
        if si is None:
            return
        try:
            content.sessionManager.Logout()
        except (vmodl.MethodFault,) + _NETWORK_ERRORS:
            pass  # the session or the vCenter is gone already: nothing left to free
        finally:
            si._stub.DropConnections()  # pylint: disable=protected-access
            if pyvim_connect.GetSi() is si:  # SmartConnect also keeps it as pyVim's default
                pyvim_connect.SetSi(None)

    # -- connection

    def _with_session(self, operation, what='the inventory retrieval'):
        """operation(content) on a logged-in session; logs in again once when vCenter
        dropped the session (idle sessions expire), maps failures to errors.*; `what`
        names the operation in the message of a fault nothing else explained."""
        for attempt in (1, 2):
            content = self._connect()
            try:
                return operation(content)
            except vim.fault.NotAuthenticated:
                self._forget()
                if attempt == 2:
                    raise errors.DriverError('%s dropped the session just opened by %s' % (self.endpoint, self.vcenter.username)) from None
            except vmodl.MethodFault as exc:
                raise errors.DriverError('%s refused %s: %s' % (self.endpoint, what, _fault_text(exc))) from exc
            except _NETWORK_ERRORS as exc:
                self._forget()
                raise self._failure(exc) from exc
        raise AssertionError('unreachable')  # pragma: no cover

    def _connect(self):
        with self._login_lock:
            if self._content is None:
                self._login()
            return self._content

    def _login(self):
        _require_pyvmomi(self.vcenter)
        vc = self.vcenter
        if vc.validate_certs:
            # An explicit context: given none, pyVmomi skips verification for localhost,
            # 127.0.0.1 and ::1 whatever validate_certs says.
            tls = {'sslContext': ssl.create_default_context()}
        else:
            tls = {'disableSslCertValidation': True}

        def login():
            si = pyvim_connect.SmartConnect(
                host=vc.hostname, port=vc.port, user=vc.username, pwd=vc.password,
                # Bounds every later SOAP request (per socket operation).
                httpConnectionTimeout=vc.timeout, **tls)
            # RetrieveContent is a SOAP call each time: fetch the ServiceContent once per session.
            return si, si.RetrieveContent()

        try:
            self._si, self._content = call_within(vc.timeout, self.endpoint, login)
        except errors.Unreachable:
            raise  # the deadline passed
        except vim.fault.InvalidLogin:
            raise errors.AuthenticationFailed('%s refused the credentials of user %s' % (self.endpoint, vc.username)) from None
        except vim.fault.HostConnectFault as exc:  # pyVmomi's wrapping of a failed first SOAP call
            raise errors.Unreachable('%s did not answer: %s' % (self.endpoint, _fault_text(exc))) from exc
        except vmodl.MethodFault as exc:
            raise errors.DriverError('%s refused the login of user %s: %s' % (self.endpoint, vc.username, _fault_text(exc))) from exc
        except _NETWORK_ERRORS as exc:
            raise self._failure(exc) from exc
        except Exception as exc:  # pylint: disable=broad-exception-caught  # SmartConnect raises a bare Exception
            if type(exc) is not Exception:  # pylint: disable=unidiomatic-typecheck  # a bug, not the vCenter's answer
                raise
            # "HOST:PORT is down or is not a VIM server": something answered, but no vSphere API.
            raise errors.DriverError('%s is not a vCenter answering the vSphere API: %s' % (self.endpoint, exc)) from exc
        return self._content

    def _forget(self):
        """Drop a session that is dead or expired, without talking to vCenter."""
        si, self._si, self._content = self._si, None, None
        if si is not None:
            si._stub.DropConnections()  # pylint: disable=protected-access

    def _failure(self, exc):
        """The errors.* for a network-level failure."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return errors.DriverError('%s presented a certificate that does not verify (%s); trust its CA on the controller, '
                                      'or set validate_certs: false for a lab only' % (self.endpoint, getattr(exc, 'verify_message', None) or exc))
        if isinstance(exc, ssl.SSLError):
            return errors.DriverError('%s failed the TLS handshake: %s' % (self.endpoint, exc))
        if isinstance(exc, socket.gaierror):
            return errors.Unreachable('%s did not answer: cannot resolve %s: %s' % (self.endpoint, self.vcenter.hostname, exc.strerror or exc))
        if isinstance(exc, socket.timeout):
            return errors.Unreachable('%s did not answer: no reply within %s s' % (self.endpoint, self.vcenter.timeout))
        return errors.Unreachable('%s did not answer: %s' % (self.endpoint, getattr(exc, 'strerror', None) or str(exc) or type(exc).__name__))


def _fault_text(fault):
    return getattr(fault, 'msg', None) or type(fault).__name__


__all__ = ['VSphereDriver', 'build_nodes', 'Record', 'PROPERTIES', 'HAS_PYVMOMI', 'MARKER', 'format_annotation', 'parse_annotation',
           'instance_states', 'plan_spawn', 'clone_config', 'missing_config']
