# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compute nodes: live resources from the drivers joined with admin state from the
registry and placement from the cloud file. Private to multihv.cloud: do not import.
"""

from __future__ import annotations

import concurrent.futures

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import (
    HYPERVISOR_KVM, HYPERVISOR_VSPHERE, NodeResources,
)

# Bounded: each KVM host is a thread blocked on the network for up to its timeout.
MAX_PARALLEL_ENDPOINTS = 32
RESOURCES = ('vcpus', 'memory_mb', 'disk_gb')
RATIO_OF = {'vcpus': 'cpu', 'memory_mb': 'ram', 'disk_gb': 'disk'}
ADMIN_FIELDS = ('enabled', 'disabled_reason', 'forced_down', 'availability_zone', 'aggregates',
                'allocation_ratios', 'reserved', 'reserved_for_failover')


def drivers_for(cloud):
    """One driver per endpoint: each vCenter, each KVM host."""
    # Imported only when used: a cloud of one kind never loads the other kind's library.
    drivers = []
    if cloud.vcenters:
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
        drivers.extend(VSphereDriver(v) for v in cloud.vcenters)
    if cloud.kvm_hosts:
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
        drivers.extend(LibvirtDriver(h) for h in cloud.kvm_hosts)
    return drivers


def _endpoint_nodes(driver, known):
    """Live nodes of one endpoint. One that does not answer gives its nodes down: those its
    configuration names and those the registry knows; with neither, one node named after
    the endpoint, so that the failure is visible. Refused credentials are the caller's to
    fix, not a node being down: errors.AuthenticationFailed is raised.
    """
    try:
        return driver.get_nodes()
    except errors.AuthenticationFailed:
        raise
    except errors.DriverError as exc:
        names = sorted(set(driver.node_names()) | set(known)) or [driver.endpoint_name()]
        return [NodeResources.down(name, driver.hypervisor_type, str(exc)) for name in names]
    finally:
        driver.close()


def collect(drivers, known=None):
    """Live NodeResources of every endpoint, queried in parallel, in endpoint order.

    known: {endpoint name: node names the registry has for it}. Configuration
    errors (a cluster filter naming no cluster, a missing library) are raised.
    """
    if not drivers:
        return []
    known = known or {}
    workers = min(MAX_PARALLEL_ENDPOINTS, len(drivers))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda d: _endpoint_nodes(d, known.get(d.endpoint_name(), ())), drivers))
    return [node for nodes in results for node in nodes]


def _placement(cloud, node):
    """(availability_zone, aggregates, endpoint) from the cloud file."""
    for host in cloud.kvm_hosts:
        if host.name == node.name:
            return host.availability_zone, list(host.aggregates), host.uri
    for vcenter in cloud.vcenters:
        if node.name.startswith(vcenter.name + '/'):
            zone, aggregates = vcenter.placement(node.name.rsplit('/', 1)[-1])
            return zone, aggregates, 'https://%s:%d/sdk' % (vcenter.hostname, vcenter.port)
    return None, [], None


def view(cloud, live, admin_rows):
    """What a node is, as users see it: one dict per live node (down ones included).

    capacity = (physical - reserved) * allocation ratio, as Nova's placement counts it;
    used = what the hypervisor's instances hold; free = capacity - used.
    """
    admin = dict((row['name'], row) for row in admin_rows)
    return [node_view(cloud, node, admin.get(node.name)) for node in live]


def node_view(cloud, node, row):
    row = row or {}
    zone, aggregates, endpoint = _placement(cloud, node)
    ratios = dict(cloud.defaults.allocation_ratios)
    ratios.update(row.get('allocation_ratios') or {})
    reserved = {'vcpus': 0, 'memory_mb': cloud.defaults.reserved_host_memory_mb.get(node.hypervisor_type, 0), 'disk_gb': 0}
    reserved.update(row.get('reserved') or {})
    physical = {'vcpus': node.vcpus, 'memory_mb': node.memory_mb, 'disk_gb': node.disk_gb}
    used = {'vcpus': node.vcpus_used, 'memory_mb': node.memory_mb_used, 'disk_gb': max(node.disk_gb - node.disk_gb_free, 0)}
    capacity = dict((r, int(max(physical[r] - reserved[r], 0) * ratios[RATIO_OF[r]])) for r in RESOURCES)
    result = {
        'name': node.name,
        'hypervisor_type': node.hypervisor_type,
        'endpoint': endpoint,
        'state': node.state,
        'reason': node.reason,
        'enabled': row.get('enabled', True),
        'disabled_reason': row.get('disabled_reason'),
        'forced_down': row.get('forced_down', False),
        'availability_zone': row.get('availability_zone') or zone,
        'aggregates': row['aggregates'] if row.get('aggregates') is not None else aggregates,
        'allocation_ratios': ratios,
        'reserved': reserved,
        'reserved_for_failover': row.get('reserved_for_failover', False),
        'physical': physical,
        'capacity': capacity,
        'used': used,
        'free': dict((r, capacity[r] - used[r]) for r in RESOURCES),
        'instances': node.instances,
        'largest_host_free': {'memory_mb': node.largest_host_free_memory_mb, 'vcpus': node.largest_host_free_vcpus},
        'hosts': [h.as_dict() for h in node.hosts],
    }
    result.update(node.extra)
    return result


def list_nodes(cloud, registry, drivers=None):
    """Every node of the cloud with live resources and admin state."""
    rows = registry.list_nodes()
    known = {}
    for row in rows:
        if row['hypervisor_type'] == HYPERVISOR_VSPHERE:
            known.setdefault(row['name'].split('/', 1)[0], []).append(row['name'])
    live = collect(drivers if drivers is not None else drivers_for(cloud), known)
    return view(cloud, live, rows)


def find_node(cloud, registry, name):
    """One node's view; errors.NotFound naming the known nodes when there is none by that name."""
    nodes = list_nodes(cloud, registry)
    for node in nodes:
        if node['name'] == name:
            return node
    known = sorted(n['name'] for n in nodes)
    raise errors.NotFound('no compute node named %s; the cloud has %s' % (name, ', '.join(known) or 'none'))


def hypervisor_type_of(cloud, name):
    """The hypervisor type a node name implies from the cloud file alone, or None."""
    if name in cloud.node_names():
        return HYPERVISOR_KVM
    if any(name.startswith(v.name + '/') and name.count('/') == 2 for v in cloud.vcenters):
        return HYPERVISOR_VSPHERE
    return None


def set_admin_state(cloud, registry, name, changes, check_mode=False):
    """Apply the admin-state `changes` (only the keys given) to node `name`.

    Returns (changed, before, after) with before/after the admin state. The node
    must exist: a KVM host of the cloud file, or a cluster its vCenter reports
    (a cluster already in the registry is accepted while its vCenter is down).
    """
    unknown = set(changes) - set(ADMIN_FIELDS)
    if unknown:
        raise errors.MultihvError('unknown compute node settings: %s' % ', '.join(sorted(unknown)))
    for key, value in (changes.get('allocation_ratios') or {}).items():
        if value <= 0:
            raise errors.MultihvError('allocation_ratios.%s must be greater than 0, got %s; node %s left unchanged' % (key, value, name))
    for key, value in (changes.get('reserved') or {}).items():
        if value < 0:
            raise errors.MultihvError('reserved.%s must not be negative, got %s; node %s left unchanged' % (key, value, name))
    kind = hypervisor_type_of(cloud, name)
    current = registry.get_node(name)
    if kind is None or (kind == HYPERVISOR_VSPHERE and current is None):
        node = find_node(cloud, registry, name)  # raises NotFound with the known names
        kind = node['hypervisor_type']
    before = admin_state(current)
    after = dict(before)
    after.update(changes)
    if after.get('enabled', True):
        after['disabled_reason'] = changes.get('disabled_reason') if 'disabled_reason' in changes else None
    if after == before:
        return False, before, after
    if not check_mode:
        registry.set_node(name, kind, **dict((k, after[k]) for k in ADMIN_FIELDS))
    return True, before, after


def admin_state(row):
    """The admin fields of a registry row; the defaults of a node never configured."""
    row = row or {}
    return {
        'enabled': row.get('enabled', True),
        'disabled_reason': row.get('disabled_reason'),
        'forced_down': row.get('forced_down', False),
        'availability_zone': row.get('availability_zone'),
        'aggregates': row.get('aggregates'),
        'allocation_ratios': row.get('allocation_ratios'),
        'reserved': row.get('reserved'),
        'reserved_for_failover': row.get('reserved_for_failover', False),
    }


def matches(node, filters):
    """Does a node view pass the info filters (each None or empty means any)?"""
    if filters.get('names') and node['name'] not in filters['names']:
        return False
    for key in ('hypervisor_type', 'availability_zone', 'state', 'enabled'):
        if filters.get(key) is not None and node[key] != filters[key]:
            return False
    if filters.get('aggregate') and filters['aggregate'] not in (node['aggregates'] or []):
        return False
    return True


__all__ = ['collect', 'drivers_for', 'find_node', 'list_nodes', 'matches', 'set_admin_state', 'view']
