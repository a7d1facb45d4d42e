# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the vSphere driver reads of a vCenter, and how: the PropertyCollector. Private to
multihv.cloud: do not import.

A retrieval costs a constant number of SOAP calls whatever the size of the inventory: one
ContainerView over the root folder, one RetrievePropertiesEx (plus one
ContinueRetrievePropertiesEx per further page of PAGE_SIZE objects) asking only for the
property paths of one of the sets below, and DestroyView. The answer is a list of Records,
joined by managed object id in Python by the pure functions of the other modules. Reading a
property of a pyVmomi managed object would be one round trip per object and per property,
so the driver never does.
"""

from __future__ import annotations

import collections
import contextlib
import re

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import NETWORK_ERRORS, vim, vmodl

# Objects per RetrievePropertiesEx / ContinueRetrievePropertiesEx page. Large, so
# that a big estate (tens of thousands of VMs) is a handful of pages; vCenter may
# still return smaller pages, the loop follows its token either way.
PAGE_SIZE = 5000

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
    # config.uuid and config.annotation: the cloud's mark, so that the VMs without it are counted apart.
    ('VirtualMachine', (
        'runtime.host', 'runtime.powerState',
        'summary.config.numCpu', 'summary.config.memorySizeMB', 'summary.config.template',
        'config.uuid', 'config.annotation',
    )),
    ('Datastore', ('summary.name', 'summary.capacity', 'summary.freeSpace', 'summary.accessible')),
])

# One object of the PropertyCollector's answer, with managed object references
# replaced by their ids: kind is the type name ('HostSystem'), moid its id,
# props {path: value} for the paths that have a value.
Record = collections.namedtuple('Record', 'kind moid props')

DEVICES = 'config.hardware.device'
# The VM's .vmx options (extra_config.py: the guest's cloud-init data among them).
EXTRA_CONFIG = 'config.extraConfig'

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
# (vcsim does keep CloneSpec.config.extraConfig: it is read back to check the guest data landed.)
CLONE_PATHS = ('runtime.host', 'runtime.powerState', 'summary.config.numCpu', 'summary.config.memorySizeMB',
               'config.uuid', 'config.instanceUuid', 'config.annotation', 'config.hardware.numCoresPerSocket', DEVICES,
               EXTRA_CONFIG)

# vCenter keeps '%', '/' and '\' of an entity name escaped.
_NAME_ESCAPES = re.compile(r'%(25|2[fF]|5[cC])')


# ---------------------------------------------------------------- values as read

def plain(value):
    """A property value with managed object references (anything with a _moId)
    turned into their ids, in lists too, so that joins are by plain strings."""
    if hasattr(value, '_moId'):
        return value._moId  # pylint: disable=protected-access
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def vm_name(stored):
    """An entity name as it was given: vCenter keeps '%', '/' and '\\' as %25, %2f and %5c."""
    return _NAME_ESCAPES.sub(lambda match: chr(int(match.group(1), 16)), stored or '')


def by_kind(records):
    """{type name: {moid: props}} of Records."""
    objects = collections.defaultdict(dict)
    for record in records:
        objects[record.kind][record.moid] = record.props
    return objects


# ---------------------------------------------------------------- vCenter I/O

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


@contextlib.contextmanager
def inventory_view(content, properties):
    """A ContainerView of every object of the types in `properties`, from the root folder down, destroyed after use.
    When the connection is gone or stuck (a network error), no DestroyView waits on it once more: the view ends with
    the session."""
    view = content.viewManager.CreateContainerView(
        container=content.rootFolder, type=[getattr(vim, kind) for kind in properties], recursive=True)
    try:
        yield view
    except NETWORK_ERRORS:
        view = None
        raise
    finally:
        if view is not None:
            try:
                view.Destroy()
            except (vmodl.MethodFault,) + NETWORK_ERRORS:
                pass  # the view ends with the session anyway; do not hide a first error


def retrieve_inventory(content, properties=None):
    """Records of every object of the types in `properties` (PROPERTIES, what get_nodes needs,
    by default): CreateContainerView, RetrievePropertiesEx and its pages, DestroyView."""
    properties = properties or PROPERTIES
    with inventory_view(content, properties) as view:
        return retrieve_pages(content.propertyCollector, filter_spec(view, properties))


def stub(content):
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


__all__ = ['CLONE_PATHS', 'DESCRIBE_PROPERTIES', 'DEVICES', 'EXTRA_CONFIG', 'LIST_PROPERTIES', 'PAGE_SIZE', 'PROPERTIES', 'Record',
           'SPAWN_PROPERTIES', 'TEMPLATE_PROPERTIES', 'by_kind', 'describe_spec', 'plain', 'retrieve_inventory',
           'retrieve_objects', 'retrieve_pages', 'stub', 'vm_name']
