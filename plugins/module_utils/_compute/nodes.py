# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compute nodes: live resources from the drivers joined with admin state from the
registry and placement from the cloud file. Private to multihv.cloud: do not import.
"""

from __future__ import annotations

import concurrent.futures

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute.records import NodeView
from ansible_collections.multihv.cloud.plugins.module_utils._constants import RESOURCES
from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import NodePlacement, NodeResources

# Bounded: each KVM host is a thread blocked on the network for up to its timeout.
MAX_PARALLEL_ENDPOINTS = 32
# How many times more work that decides on nodes (a Context: scheduling, evacuation) asks an endpoint whose
# probe gave no answer in time before it counts its nodes down: on a loaded controller a probe of a live host can
# overstay its short timeout (issue 20). A refusal is an answer and is not asked again. Reports (info modules,
# the inventory) ask once: a stuck host costs them one timeout, not two.
PROBE_RETRIES = 1
RATIO_OF = {'vcpus': 'cpu', 'memory_mb': 'ram', 'disk_gb': 'disk'}
ADMIN_FIELDS = ('enabled', 'disabled_reason', 'forced_down', 'availability_zone', 'aggregates',
                'allocation_ratios', 'reserved', 'reserved_for_failover')


def _endpoint_nodes(driver, known, retries=0):
    """Live nodes of one endpoint. One that does not answer gives its nodes down: those its
    configuration names and those the registry knows; with neither, one node named after
    the endpoint, so that the failure is visible. One that gave no answer in time is asked
    again up to `retries` times first. Refused credentials are the caller's to fix, not a
    node being down: errors.AuthenticationFailed is raised.
    """
    try:
        for attempt in range(retries + 1):
            try:
                return driver.get_nodes()
            except errors.AuthenticationFailed:
                raise
            except errors.NoAnswer as exc:
                if attempt < retries:
                    continue  # the first probe may still be under way: the second finds its connection open
                why = str(exc) if not retries else '%s (asked %d times)' % (exc, retries + 1)
                return _down(driver, known, why)
            except errors.DriverError as exc:
                return _down(driver, known, str(exc))
    finally:
        driver.close()


def _down(driver, known, why):
    names = sorted(set(driver.node_names()) | set(known)) or [driver.endpoint_name()]
    return [NodeResources.down(name, driver.hypervisor_type, why) for name in names]


def collect(drivers, known=None, retries=0):
    """Live NodeResources of every endpoint, queried in parallel, in endpoint order.

    known: {endpoint name: node names the registry has for it}. retries: how many times more an
    endpoint that gave no answer in time is asked. Configuration errors (a cluster filter naming no
    cluster, a missing library) are raised.
    """
    if not drivers:
        return []
    known = known or {}
    workers = min(MAX_PARALLEL_ENDPOINTS, len(drivers))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda d: _endpoint_nodes(d, known.get(d.endpoint_name(), ()), retries), drivers))
    return [node for nodes in results for node in nodes]


def serving(drivers, name):
    """The driver whose endpoint would serve a node of that name (by its name alone), or None."""
    return next((d for d in drivers if d.serves(name)), None)


def hypervisor_type_of(drivers, name):
    """The hypervisor type a node name implies from the cloud file alone, or None."""
    driver = serving(drivers, name)
    return driver.hypervisor_type if driver else None


def type_in_cloud(drivers, name, untouched):
    """hypervisor_type_of a node a user named (a boot's node, a migration's target); errors.NotFound
    when the cloud file has no such node, worded alike everywhere, with what was left untouched."""
    kind = hypervisor_type_of(drivers, name)
    if kind is None:
        raise errors.NotFound('node %s is not in the cloud file; %s' % (name, untouched))
    return kind


def view(config, live, admin_rows, drivers, allocations=None):
    """What a node is, as users see it: one NodeView per live node (down ones included).

    capacity = (physical - reserved) * allocation ratio, as Nova's placement counts it;
    used = what the hypervisor's VMs hold; free = capacity - used. allocations: the registry's
    allocations_by_node(), which the views show as allocated, beside the unmanaged VMs' usage.
    """
    admin = dict((row['name'], row) for row in admin_rows)
    allocations = allocations or {}
    return [node_view(config, node, admin.get(node.name), placement_of(drivers, node.name), allocations.get(node.name)) for node in live]


def placement_of(drivers, name):
    """The NodePlacement the cloud file gives a node (an empty one for a node no endpoint serves)."""
    driver = serving(drivers, name)
    return driver.placement(name) if driver else NodePlacement()


def node_view(config, node, row, placement, allocated=None):
    row = row or {}
    allocated = allocated or {}
    zone, aggregates, endpoint = placement.availability_zone, list(placement.aggregates), placement.endpoint
    ratios = dict(config.defaults.allocation_ratios)
    ratios.update(row.get('allocation_ratios') or {})
    reserved = {'vcpus': 0, 'memory_mb': config.defaults.reserved_host_memory_mb.get(node.hypervisor_type, 0), 'disk_gb': 0}
    reserved.update(row.get('reserved') or {})
    physical = {'vcpus': node.vcpus, 'memory_mb': node.memory_mb, 'disk_gb': node.disk_gb}
    used = {'vcpus': node.vcpus_used, 'memory_mb': node.memory_mb_used, 'disk_gb': max(node.disk_gb - node.disk_gb_free, 0)}
    capacity = dict((r, int(max(physical[r] - reserved[r], 0) * ratios[RATIO_OF[r]])) for r in RESOURCES)
    return NodeView(
        name=node.name,
        hypervisor_type=node.hypervisor_type,
        endpoint=endpoint,
        state=node.state,
        reason=node.reason,
        enabled=row.get('enabled', True),
        disabled_reason=row.get('disabled_reason'),
        forced_down=row.get('forced_down', False),
        availability_zone=row.get('availability_zone') or zone,
        aggregates=row['aggregates'] if row.get('aggregates') is not None else aggregates,
        allocation_ratios=ratios,
        reserved=reserved,
        reserved_for_failover=row.get('reserved_for_failover', False),
        physical=physical,
        capacity=capacity,
        used=used,
        free=dict((r, capacity[r] - used[r]) for r in RESOURCES),
        instances=node.instances,
        # As the scheduler counts a host's room: vCPUs with the node's ratio (the driver's figure has none).
        largest_host_free={'memory_mb': node.largest_host_free_memory_mb,
                           'vcpus': max([max(h.free_vcpus(ratios['cpu']), 0) for h in node.hosts if h.usable] or [0])},
        hosts=list(node.hosts),
        extra=dict(node.extra),
        # Adoption (issue 17 §3): what the cloud's instances hold apart from what other VMs do.
        allocated=dict((key, int(allocated.get(key, 0))) for key in RESOURCES + ('instances',)),
        unmanaged=node.unmanaged,
    )


def list_nodes(config, registry, drivers=None, retries=0):
    """Every node of the cloud with live resources and admin state (none without a registry: registry None);
    retries: see collect."""
    drivers = drivers if drivers is not None else kinds.drivers_for(config)
    rows = registry.list_nodes() if registry is not None else []
    known = {}
    for row in rows:  # nodes the registry knows are reported down with their endpoint
        driver = serving(drivers, row['name'])
        if driver is not None:
            known.setdefault(driver.endpoint_name(), []).append(row['name'])
    live = collect(drivers, known, retries)
    return view(config, live, rows, drivers, registry.allocations_by_node() if registry is not None else None)


def find_node(config, registry, name, drivers=None):
    """One node's view; errors.NotFound naming the known nodes when there is none by that name."""
    nodes = list_nodes(config, registry, drivers)
    for node in nodes:
        if node.name == name:
            return node
    known = sorted(n.name for n in nodes)
    raise errors.NotFound('no compute node named %s; the cloud has %s' % (name, ', '.join(known) or 'none'))


def set_admin_state(config, registry, name, changes, check_mode=False, drivers=None):
    """Apply the admin-state `changes` (only the keys given) to node `name`.

    Returns (changed, before, after) with before/after the admin state. The node
    must exist: one the cloud file names (a KVM host), or one its endpoint reports (a
    vCenter's cluster; one already in the registry is accepted while its vCenter is down).
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
    drivers = drivers if drivers is not None else kinds.drivers_for(config)
    driver = serving(drivers, name)
    current = registry.get_node(name)
    if driver is not None and (name in driver.node_names() or current is not None):
        kind = driver.hypervisor_type
    else:  # a name the cloud file does not list: the endpoint must report it
        kind = find_node(config, registry, name, drivers).hypervisor_type  # raises NotFound with the known names
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
    """Does a NodeView pass the info filters (each None or empty means any)?"""
    if filters.get('names') and node.name not in filters['names']:
        return False
    for key in ('hypervisor_type', 'availability_zone', 'state', 'enabled'):
        if filters.get(key) is not None and getattr(node, key) != filters[key]:
            return False
    if filters.get('aggregate') and filters['aggregate'] not in (node.aggregates or []):
        return False
    return True


__all__ = ['collect', 'find_node', 'hypervisor_type_of', 'list_nodes', 'matches', 'placement_of', 'serving', 'set_admin_state', 'type_in_cloud', 'view']
