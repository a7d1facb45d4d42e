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
"""

from __future__ import annotations

import collections
import http.client
import socket
import ssl

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._driver import (
    HYPERVISOR_VSPHERE, ComputeDriver, HostResources, NodeResources, call_within,
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
    ('HostSystem', (
        'name', 'parent', 'runtime.connectionState', 'runtime.inMaintenanceMode',
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


def datacenter_of(moid, parents, datacenters):
    """The name of the datacenter above object `moid`, walking parent ids through folders;
    None when the chain ends elsewhere (the bound guards against a malformed answer)."""
    for _step in range(len(parents) + 2):
        if moid in datacenters:
            return datacenters[moid]
        moid = parents.get(moid)
        if moid is None:
            return None
    return None


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


def datastore_entry(props):
    return {
        'name': props.get('summary.name', ''),
        'capacity_gb': int(props.get('summary.capacity') or 0) // GIB,
        'free_gb': int(props.get('summary.freeSpace') or 0) // GIB,
        # An inaccessible datastore (NFS server gone, LUN lost) reports stale numbers.
        'accessible': props.get('summary.accessible') is not False,
    }


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
    for moid, props in objects['HostSystem'].items():
        if props.get('parent') in kept:  # standalone hosts and filtered-out clusters are no node
            hosts[moid] = host_resources(props)
            members[props['parent']].append(hosts[moid])
    for props in objects['VirtualMachine'].values():
        host = hosts.get(props.get('runtime.host'))
        if host is not None and not props.get('summary.config.template'):  # a template is an image, not an instance
            count_vm(host, props)
    for moid, host in hosts.items():
        host.memory_mb_free = memory_free(host, objects['HostSystem'][moid].get('summary.quickStats.overallMemoryUsage'))

    nodes = []
    for moid in kept:
        props = clusters[moid]
        datastores = [objects['Datastore'][ds] for ds in sorted(set(props.get('datastore') or ()))
                      if ds in objects['Datastore']]
        disk_gb, disk_gb_free = disk_totals(datastores)
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
                'datastores': sorted((datastore_entry(ds) for ds in datastores), key=lambda d: d['name']),
            },
        )
        if not any(h.usable for h in node.hosts):
            node.reason = NO_USABLE_HOST
        nodes.append(node)
    return sorted(nodes, key=lambda n: n.name)


# ---------------------------------------------------------------- vCenter I/O

def _require_pyvmomi(vcenter):
    if not HAS_PYVMOMI:
        raise errors.MissingLibrary('pyvmomi', 'for the vSphere nodes of vCenter %s' % vcenter.name)


def filter_spec(view):
    """Every object of the view, with PROPERTIES' paths of its type."""
    collector = vmodl.query.PropertyCollector
    return collector.FilterSpec(
        objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[
            collector.TraversalSpec(name='view', path='view', skip=False, type=vim.view.ContainerView)])],
        propSet=[collector.PropertySpec(type=getattr(vim, kind), pathSet=list(paths)) for kind, paths in PROPERTIES.items()])


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


def retrieve_inventory(content):
    """Records of every object get_nodes needs: CreateContainerView, RetrievePropertiesEx
    and its pages, DestroyView."""
    view = content.viewManager.CreateContainerView(
        container=content.rootFolder, type=[getattr(vim, kind) for kind in PROPERTIES], recursive=True)
    try:
        return retrieve_pages(content.propertyCollector, filter_spec(view))
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


class VSphereDriver(ComputeDriver):
    """One vCenter; each of its clusters (those the `clusters` filter keeps) is a node."""

    hypervisor_type = HYPERVISOR_VSPHERE

    def __init__(self, vcenter):
        self.vcenter = vcenter
        self._si = None
        self._content = None

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

    def _with_session(self, operation):
        """operation(content) on a logged-in session; logs in again once when vCenter
        dropped the session (idle sessions expire), maps failures to errors.*."""
        for attempt in (1, 2):
            content = self._connect()
            try:
                return operation(content)
            except vim.fault.NotAuthenticated:
                self._forget()
                if attempt == 2:
                    raise errors.DriverError('%s dropped the session just opened by %s' % (self.endpoint, self.vcenter.username)) from None
            except vmodl.MethodFault as exc:
                raise errors.DriverError('%s refused the inventory retrieval: %s' % (self.endpoint, _fault_text(exc))) from exc
            except _NETWORK_ERRORS as exc:
                self._forget()
                raise self._failure(exc) from exc
        raise AssertionError('unreachable')  # pragma: no cover

    def _connect(self):
        if self._content is not None:
            return self._content
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


__all__ = ['VSphereDriver', 'build_nodes', 'Record', 'PROPERTIES', 'HAS_PYVMOMI']
