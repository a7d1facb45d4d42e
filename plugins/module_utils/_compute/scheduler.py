# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduler: filters and weighers in the manner of Nova's filter scheduler.
Private to multihv.cloud: do not import. Pure logic: no I/O.

Filters remove nodes that cannot take a request; weighers rank the rest. One
difference from Nova: on a vSphere node (a whole cluster), at least one usable
ESXi host must itself have the vCPUs and RAM free (ClusterHostFit), because a
cluster's total hides fragmentation: a VM can fit the sum and no single host.

Weights are each resource's free amount divided by the largest capacity of that
resource among all candidates, times the weigher's multiplier. The divisor is
fixed for a whole scheduling run, so a node's weight depends on that node alone:
placing N requests keeps the candidates in a heap and costs O(log nodes) per
placement, instead of re-weighing every node (Nova re-normalises each time).

Nodes that look alike to the static filters that ignore names (same state, zone, aggregates,
type and networks: a class) share a heap, so that a placement changes one heap, and a request
compares the tops of the heaps of the classes its static filters let through (the classes
passing are decided once per request signature, not once per node). Requests pinned to a node,
in a server group or with same_host hints rank every node afresh.

With the default signs of the multipliers (more free room weighs more, more instances less), a
placement only ever lowers the weight of the node it lands on. Then a heap entry's weight is an
upper bound of its node's weight now, and an entry is brought up to date only when it comes to
the top (a lazy decrease-key): a heap keeps one entry per node. With other signs a placement
pushes the node's new weight and older entries are dropped when they surface (issue 20: the
time per placement stays nearly flat from a hundred nodes to ten thousand).
"""

from __future__ import annotations

import dataclasses
import heapq

from ansible_collections.multihv.cloud.plugins.module_utils._constants import RESOURCES
from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds
# failover: a node reserved for failover comes first for a failover request (evacuation, HA):
# the other terms are fractions of 1, so 10 puts every reserved node ahead.
DEFAULT_WEIGHERS = {'ram': 1.0, 'cpu': 0.0, 'disk': 0.0, 'instances': -1.0, 'group': 1.0, 'failover': 10.0}


@dataclasses.dataclass
class Host:
    """One hypervisor host inside a node: what it has free right now."""

    name: str
    usable: bool
    free_vcpus: int
    free_memory_mb: int


@dataclasses.dataclass
class Candidate:
    """A node as the scheduler sees it. capacity is (physical - reserved) x allocation ratio;
    allocated is what the registry's allocations already hold. hosts is None for a KVM node
    (the node is its host) and the ESXi hosts of a vSphere node."""

    name: str
    hypervisor_type: str
    up: bool = True
    enabled: bool = True
    forced_down: bool = False
    reserved_for_failover: bool = False
    availability_zone: str | None = None
    aggregates: tuple = ()
    capacity: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(RESOURCES, 0))
    allocated: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(RESOURCES, 0))
    instances: int = 0
    hosts: list | None = None
    networks: dict = dataclasses.field(default_factory=dict)  # {registry network: its backing on this node}
    reason: str | None = None  # why a node that is not up is down (its endpoint's answer), for a refusal to say

    def free(self, resource):
        return self.capacity[resource] - self.allocated[resource]


@dataclasses.dataclass
class Request:
    """What one instance needs, and where it may go.

    group_nodes: {node: members of the request's server group already there}.
    different_host / same_host: node names from the scheduler hints (the nodes
    of the instances they name). exclude: nodes never to use (a migration's source).
    networks: ((network, backing or None), ...): the registry networks the instance's NICs
    are on, each with the backing the node must give it (a migration keeps the VM's NIC
    backing) or None (any backing: a boot, an evacuation spawns with the node's own).
    """

    vcpus: int
    memory_mb: int
    disk_gb: int = 0
    hypervisor_type: str | None = None
    availability_zone: str | None = None
    aggregates: tuple = ()
    node: str | None = None
    group_policy: str | None = None
    group_nodes: dict = dataclasses.field(default_factory=dict)
    different_host: frozenset = frozenset()
    same_host: frozenset = frozenset()
    exclude: frozenset = frozenset()
    for_failover: bool = False
    networks: tuple = ()

    def needs(self):
        return {'vcpus': self.vcpus, 'memory_mb': self.memory_mb, 'disk_gb': self.disk_gb}


class NoValidHost(Exception):
    """No node passes the filters. rejected: {filter name: [nodes it removed]}, in filter order."""

    def __init__(self, request, rejected, down=None):
        self.request = request
        self.rejected = rejected
        down = down or {}
        reasons = '; '.join('%s removed %s%s' % (name, ', '.join(_named(node, down) for node in nodes), _detail(name, request))
                            for name, nodes in rejected.items() if nodes)
        super().__init__('no node can take %s vCPUs, %s MB RAM, %s GB disk: %s' % (
            request.vcpus, request.memory_mb, request.disk_gb, reasons or 'the cloud has no compute node'))


def _named(node, down):
    """A removed node as a refusal names it: with why it is down, when it is (a host that did not answer in time)."""
    return '%s (down: %s)' % (node, down[node]) if down.get(node) else node


def _detail(filter_name, request):
    """What a refusal by filter_name adds to its nodes: the networks the request wanted there."""
    if filter_name != 'NetworkFilter':
        return ''
    wanted = ', '.join(name if backing is None else '%s with backing %s' % (name, backing) for name, backing in request.networks)
    return ' (network%s %s: not there)' % ('s' if len(request.networks) > 1 else '', wanted)


# ------------------------------------------------------------------ candidates

def candidates(views, allocations, capabilities=kinds.capabilities, hypervisor_free=True, networks=None):
    """Scheduler candidates from NodeViews and the registry's allocations.

    Capacity is the view's (ratios and reserved applied); what is allocated comes
    from the registry, so instances being built by another run count at once. On a node of
    several hosts (a cluster) each host offers the vCPUs and RAM it has free now.
    capabilities(hypervisor_type) -> Capabilities. networks: {node: {network: backing}},
    the registry networks there are on each node (see _compute/networks.py).
    """
    networks = networks or {}
    result = []
    for view in views:
        allocated = dict(allocations.get(view.name, {}))
        hosts = None
        if capabilities(view.hypervisor_type).hosts_in_node:
            ratio = view.allocation_ratios['cpu']
            hosts = [Host(h.name, h.usable, h.free_vcpus(ratio),
                          h.memory_mb_free if hypervisor_free else h.memory_mb - h.memory_mb_used)
                     for h in view.hosts]
        result.append(Candidate(
            name=view.name, hypervisor_type=view.hypervisor_type, up=view.up,
            enabled=view.enabled, forced_down=view.forced_down, reserved_for_failover=view.reserved_for_failover,
            availability_zone=view.availability_zone, aggregates=tuple(view.aggregates or ()),
            capacity=dict(view.capacity),
            allocated={'vcpus': allocated.get('vcpus', 0), 'memory_mb': allocated.get('memory_mb', 0),
                       'disk_gb': allocated.get('disk_gb', 0)},
            instances=allocated.get('instances', view.instances),
            hosts=hosts, networks=dict(networks.get(view.name) or {}), reason=None if view.up else view.reason))
    return result


# ------------------------------------------------------------------ filters
# Each returns True when the node may take the request. Static filters depend on
# the request's constraints and the node's settings only; resource filters also on
# what is allocated, which changes as requests are placed.

def compute_filter(req, node):
    """Up, enabled and not forced down; failover nodes only for failover requests."""
    return node.up and node.enabled and not node.forced_down and (req.for_failover or not node.reserved_for_failover)


def availability_zone_filter(req, node):
    return req.availability_zone is None or node.availability_zone == req.availability_zone


def aggregate_filter(req, node):
    """Every aggregate the flavor's extra_specs ask for (e.g. a tier) is one of the node's."""
    return set(req.aggregates) <= set(node.aggregates)


def hypervisor_type_filter(req, node):
    return req.hypervisor_type is None or node.hypervisor_type == req.hypervisor_type


def node_filter(req, node):
    """A request pinned to a node, and the nodes a request must avoid."""
    return (req.node is None or node.name == req.node) and node.name not in req.exclude


def hints_filter(req, node):
    """different_host / same_host scheduler hints."""
    if node.name in req.different_host:
        return False
    return not req.same_host or node.name in req.same_host


def group_filter(req, node):
    """Hard server group policies; the soft ones only weigh."""
    if req.group_policy == 'anti-affinity':
        return not req.group_nodes.get(node.name)
    if req.group_policy == 'affinity' and any(req.group_nodes.values()):
        return bool(req.group_nodes.get(node.name))
    return True


def network_filter(req, node):
    """Every network the instance's NICs are on exists on the node (has a backing there), with the
    backing asked for when the request keeps one."""
    return all(name in node.networks and backing in (None, node.networks[name]) for name, backing in req.networks)


def resources_filter(req, node):
    """vCPUs, RAM and disk (RESOURCES) fit what is left of the capacity (ratios and reserved applied)."""
    capacity, allocated = node.capacity, node.allocated  # spelt out: the scheduler's innermost check
    return (capacity['vcpus'] - allocated['vcpus'] >= req.vcpus and capacity['memory_mb'] - allocated['memory_mb'] >= req.memory_mb
            and capacity['disk_gb'] - allocated['disk_gb'] >= req.disk_gb)


def cluster_host_fit_filter(req, node):
    """On a cluster node, some usable ESXi host has the vCPUs and RAM free itself."""
    if node.hosts is None:
        return True
    return any(h.usable and h.free_vcpus >= req.vcpus and h.free_memory_mb >= req.memory_mb for h in node.hosts)


# Static filters that read what a node is, never which node it is: what they decide for one node holds for every
# node of the same _static_class (which must name every Candidate field they read).
CLASS_FILTERS = (
    ('ComputeFilter', compute_filter),
    ('AvailabilityZoneFilter', availability_zone_filter),
    ('AggregateFilter', aggregate_filter),
    ('HypervisorTypeFilter', hypervisor_type_filter),
    ('NetworkFilter', network_filter),
)
# Static filters that look at the node's name (pinning, exclusion, hints, the group's members on it).
NAME_FILTERS = (
    ('NodeFilter', node_filter),
    ('SchedulerHintsFilter', hints_filter),
    ('ServerGroupFilter', group_filter),
)
# Both, in the order a refusal names them.
STATIC_FILTERS = (
    ('ComputeFilter', compute_filter),
    ('AvailabilityZoneFilter', availability_zone_filter),
    ('AggregateFilter', aggregate_filter),
    ('HypervisorTypeFilter', hypervisor_type_filter),
    ('NodeFilter', node_filter),
    ('SchedulerHintsFilter', hints_filter),
    ('ServerGroupFilter', group_filter),
    ('NetworkFilter', network_filter),
)
RESOURCE_FILTERS = (
    ('ResourcesFilter', resources_filter),
    ('ClusterHostFitFilter', cluster_host_fit_filter),
)
FILTERS = STATIC_FILTERS + RESOURCE_FILTERS


def _static_class(node):
    """What the CLASS_FILTERS read of a node: nodes alike in all of it pass or fail them together."""
    return (node.up, node.enabled, node.forced_down, node.reserved_for_failover, node.availability_zone,
            tuple(node.aggregates), node.hypervisor_type, tuple(sorted(node.networks.items())))


def refusal(req, candidates):
    """NoValidHost for a request no candidate takes: which filter removed which node, and why each down node is down."""
    return NoValidHost(req, explain(req, candidates), dict((c.name, c.reason) for c in candidates if c.reason and not c.up))


def explain(req, candidates):
    """{filter: [nodes it removed]} for one request, each node named by the first filter that removes it."""
    rejected = dict((name, []) for name, _check in FILTERS)
    for node in candidates:
        for name, check in FILTERS:
            if not check(req, node):
                rejected[name].append(node.name)
                break
    return rejected


# ------------------------------------------------------------------ weighers

class Weigher:
    """Weights with divisors fixed at construction (see the module docstring)."""

    def __init__(self, candidates, multipliers=None):
        self.multipliers = dict(DEFAULT_WEIGHERS)
        unknown = set(multipliers or {}) - set(DEFAULT_WEIGHERS)
        if unknown:
            raise ValueError('unknown weighers %s (known: %s)' % (', '.join(sorted(unknown)), ', '.join(DEFAULT_WEIGHERS)))
        self.multipliers.update(multipliers or {})
        self.scale = dict((r, float(max([c.capacity[r] for c in candidates] or [1]) or 1)) for r in RESOURCES)
        self.scale['instances'] = float(max([c.instances for c in candidates] + [1]))
        m = self.multipliers
        # Each term's multiplier over its divisor, once: weight() is the scheduler's innermost call.
        self._ram, self._cpu = m['ram'] / self.scale['memory_mb'], m['cpu'] / self.scale['vcpus']
        self._disk, self._instances = m['disk'] / self.scale['disk_gb'], m['instances'] / self.scale['instances']

    def only_falls(self):
        """True when a placement can only lower the weight of the node it lands on, outside server groups (room
        weighs zero or more, instances zero or less): then a heap may be brought up to date lazily."""
        m = self.multipliers
        return m['ram'] >= 0 and m['cpu'] >= 0 and m['disk'] >= 0 and m['instances'] <= 0

    def weight(self, req, node):
        m = self.multipliers
        capacity, allocated = node.capacity, node.allocated
        weight = (self._ram * (capacity['memory_mb'] - allocated['memory_mb'])
                  + self._cpu * (capacity['vcpus'] - allocated['vcpus'])
                  + self._disk * (capacity['disk_gb'] - allocated['disk_gb'])
                  + self._instances * node.instances)
        if req.for_failover and node.reserved_for_failover:
            weight += m['failover']
        members = req.group_nodes.get(node.name, 0)
        if req.group_policy == 'soft-affinity':
            weight += m['group'] * members
        elif req.group_policy == 'soft-anti-affinity':
            weight -= m['group'] * members
        return weight


# ------------------------------------------------------------------ placing

def consume(node, req, host_name=None):
    """Record a placement on the candidate (and the ESXi host chosen) so later requests see it."""
    for resource, amount in req.needs().items():
        node.allocated[resource] += amount
    node.instances += 1
    for host in node.hosts or ():
        if host.name == host_name:
            host.free_vcpus -= req.vcpus
            host.free_memory_mb -= req.memory_mb


def pick_host(req, node):
    """The ESXi host of a cluster node to place on: the usable one with most free RAM that fits."""
    fitting = [h for h in node.hosts or () if h.usable and h.free_vcpus >= req.vcpus and h.free_memory_mb >= req.memory_mb]
    return max(fitting, key=lambda h: (h.free_memory_mb, h.free_vcpus, h.name)).name if fitting else None


def _signature(req):
    """Requests with one signature pass the same static filters on the same nodes."""
    return (req.hypervisor_type, req.availability_zone, tuple(sorted(req.aggregates)), req.node, req.group_policy,
            req.different_host, req.same_host, req.exclude, req.for_failover, req.networks)


# A request as the weighers see one outside groups and failover: the part of a weight every such request shares.
_PLAIN = Request(0, 0)


class Scheduler:
    """Places requests one after another on one set of candidates, which it updates."""

    def __init__(self, candidates, multipliers=None):
        self.candidates = list(candidates)
        self.by_name = dict((c.name, c) for c in self.candidates)
        self.weigher = Weigher(self.candidates, multipliers)
        self._lazy = self.weigher.only_falls()
        self._base = {}  # {name: its weight for a request outside groups and failover}, while its node is unchanged
        # One heap of (-base weight, name) per class of nodes (_static_class), made at the first request; the
        # class of each node; {request signature: the classes whose nodes pass its CLASS_FILTERS}.
        self._heaps = None
        self._class_of = {}
        self._passing = {}

    def ranked(self, req):
        """Every node that can take the request, best first, without placing it."""
        fit = [c for c in self.candidates if all(check(req, c) for _name, check in FILTERS)]
        return sorted(fit, key=lambda c: (-self.weigher.weight(req, c), c.name))

    def place(self, req, consume_it=True):
        """(node name, ESXi host name or None) for one request; NoValidHost with the reasons when none fits.

        Requests with a server group, a pinned node or same_host hints are weighed afresh (their
        weights depend on the group's members; few nodes may take them); the others use the class heaps.
        """
        if req.group_policy or req.node or req.same_host:
            ranked = self.ranked(req)
            if not ranked:
                raise refusal(req, self.candidates)
            node = ranked[0]
        else:
            node = self._best(req)
        host = pick_host(req, node)
        if consume_it:
            consume(node, req, host)
            self._base.pop(node.name, None)
            if not self._lazy and self._heaps is not None:  # its older entries are dropped as they surface
                heapq.heappush(self._heaps[self._class_of[node.name]], (self._key(node), node.name))
        return node.name, host

    def _key(self, node):
        """-weight of node for a request outside groups and failover (weighed once per change of the node)."""
        base = self._base.get(node.name)
        if base is None:
            base = self._base[node.name] = self.weigher.weight(_PLAIN, node)
        return -base

    def _classes(self, req):
        """The heaps of the classes whose nodes pass the request's CLASS_FILTERS."""
        if self._heaps is None:
            members = {}
            for node in self.candidates:
                members.setdefault(_static_class(node), []).append(node)
            self._heaps = []
            for nodes in members.values():
                heap = [(self._key(node), node.name) for node in nodes]
                heapq.heapify(heap)
                for node in nodes:
                    self._class_of[node.name] = len(self._heaps)
                self._heaps.append(heap)
        signature = _signature(req)
        if signature not in self._passing:
            self._passing[signature] = [index for index, heap in enumerate(self._heaps)
                                        if heap and all(check(req, self.by_name[heap[0][1]]) for _name, check in CLASS_FILTERS)]
        return [self._heaps[index] for index in self._passing[signature]]

    def _top(self, heap, req, aside):
        """The best node of one class heap that takes the request, its entry left on top; None when none does.
        Entries of nodes that do not take it (a name filter, too little room) are moved to `aside`."""
        names_matter = req.exclude or req.different_host
        while heap:
            stored, name = heap[0]
            node = self.by_name[name]
            now = self._key(node)
            if stored != now:
                if self._lazy:  # the node weighs less than its entry says: put it back where it belongs now
                    heapq.heapreplace(heap, (now, name))
                else:  # a newer entry was pushed when it changed
                    heapq.heappop(heap)
                continue
            if (names_matter and not all(check(req, node) for _name, check in NAME_FILTERS)) \
                    or not (resources_filter(req, node) and cluster_host_fit_filter(req, node)):  # RESOURCE_FILTERS
                aside.append((heap, heapq.heappop(heap)))
                continue
            return node
        return None

    def _best(self, req):
        """The node the request goes to: the best top of the classes it may use (failover nodes ahead for a
        failover request); NoValidHost when none takes it."""
        best, best_key, aside = None, None, []
        bonus = self.weigher.multipliers['failover'] if req.for_failover else 0.0
        try:
            for heap in self._classes(req):
                node = self._top(heap, req, aside)
                if node is None:
                    continue
                key = (heap[0][0] - (bonus if node.reserved_for_failover else 0.0), node.name)
                if best_key is None or key < best_key:
                    best, best_key = node, key
        finally:
            for heap, entry in aside:  # kept for other requests: another size may fit them
                heapq.heappush(heap, entry)
        if best is None:
            raise refusal(req, self.candidates)
        return best
