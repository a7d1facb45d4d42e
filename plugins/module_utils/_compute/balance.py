# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Balancing the load of nodes (rebalancing, issue 18 §1): the load metric, the spread, and a greedy plan of
moves. Private to multihv.cloud: do not import. Pure logic, no I/O: rebalance.py feeds it what the drivers
measured and the registry holds; tests/benchmarks/rebalance.py feeds it synthetic nodes.

The load of a node (DRS's normalised host entitlement, on the two resources it balances):

    load = CPU_WEIGHT * cpu / cpus + MEMORY_WEIGHT * memory / memory_mb

cpu: the host CPUs its VMs kept busy over the measured interval; memory: for each of the cloud's running
instances the larger of its claim (its flavor's RAM) and what it holds on the host, for any other VM what it
holds. CPU counts what is used now, since an idle vCPU costs its host nothing; memory counts at least the
claim, since a guest may touch all it was given at any moment and RAM is not taken back. cpus and memory_mb:
the node's physical resources less what is reserved for the host, without allocation ratios (real resources,
not what may be promised). A node fully busy on both is at 1.0; an overcommitted one goes above.

The spread of a set of nodes is the standard deviation of their loads (DRS's "current host load standard
deviation"). Each aggressiveness level (DRS's migration threshold, 1 conservative to 5 aggressive) is a
Level: the spread at or under which the nodes count as balanced, and the least gain a move must bring, so
that noise in what is measured never moves an instance back and forth. A move's gain is what it does to its
own two nodes: how much it lowers the spread of that pair, half the narrowing of the gap between their loads
(for a set of two nodes, the drop of the spread itself). It is not the drop of the whole set's spread, which
one move changes by O(1/nodes): a gain on that would forbid every move among a thousand nodes.

The plan is greedy: while the spread is above the level's threshold and fewer than max_moves are planned,
take the move that lowers it most among the instances on the SOURCES most loaded nodes (movable ones only)
towards the TARGETS least loaded nodes of the source's availability zone (an instance stays in its zone, see
rebalance.py), provided it lowers the spread (strictly), gains at least the level's minimum, and the
scheduler's filters let the instance onto its target with the claims and server group members where the
moves before it leave them (FilterCheck). When the SOURCES most loaded can move nothing, the next ones are
tried (SOURCE_ROUNDS times). For each source and target, only the NEIGHBOURS instances on either side of the
one that would even the two out are weighed. An instance moves once per plan at most. Every move strictly
lowers the spread, so the plan ends; a step costs O(nodes log nodes + SOURCES x (instances per node x log +
TARGETS x NEIGHBOURS)).
"""

from __future__ import annotations

import bisect
import dataclasses
import math

from ansible_collections.multihv.cloud.plugins.module_utils._compute import scheduler as _scheduler

CPU_WEIGHT = 0.5
MEMORY_WEIGHT = 0.5
# How many of the most loaded nodes give instances, and how many of the least loaded of their zone may take them,
# per step; when none of those can move anything, the next SOURCES are tried, SOURCE_ROUNDS times at most.
SOURCES = 4
TARGETS = 16
SOURCE_ROUNDS = 4
# For a source and a target, how many of the source's instances on each side of the ideal one (the one that evens
# the two out) are weighed: the plan's cost per step does not grow with the instances per node.
NEIGHBOURS = 3
# Two spreads closer than this are one (float sums over many nodes differ in their last digits).
EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class Level:
    """An aggressiveness level: threshold, the spread at or under which nodes are balanced; min_gain, the least a
    move must lower the spread of its two nodes by (see the module docstring). None for both: no move at all (level 1, DRS's "mandatory moves only": a
    rebalance has none, it only measures)."""

    threshold: float | None
    min_gain: float | None


LEVELS = {
    1: Level(None, None),
    2: Level(0.20, 0.05),
    3: Level(0.10, 0.02),
    4: Level(0.05, 0.01),
    5: Level(0.02, 0.005),
}


@dataclasses.dataclass
class Item:
    """One running VM on a node: what it uses (cpu: host CPUs; memory_mb: RAM, see the module docstring), whether a
    plan may move it (one of the cloud's running instances that no other run works on), and its server group."""

    uuid: str
    name: str
    cpu: float
    memory_mb: float
    movable: bool = False
    group: str | None = None


@dataclasses.dataclass
class NodeLoad:
    """A node to balance: its resources (cpus, memory_mb: physical less reserved), the VMs running there, and its
    availability zone (the zone its instances may move in)."""

    name: str
    cpus: float
    memory_mb: float
    items: list = dataclasses.field(default_factory=list)
    zone: str | None = None

    @property
    def cpu_used(self):
        return math.fsum(i.cpu for i in self.items)

    @property
    def memory_used(self):
        return math.fsum(i.memory_mb for i in self.items)

    @property
    def load(self):
        return load_of(self.cpu_used, self.memory_used, self.cpus, self.memory_mb)


def load_of(cpu, memory, cpus, memory_mb):
    """The load of a node whose VMs use cpu host CPUs and memory MB, out of cpus and memory_mb."""
    return CPU_WEIGHT * cpu / max(cpus, EPSILON) + MEMORY_WEIGHT * memory / max(memory_mb, EPSILON)


def spread(loads):
    """The standard deviation (population) of loads; 0 for fewer than two."""
    loads = list(loads)
    if len(loads) < 2:
        return 0.0
    mean = math.fsum(loads) / len(loads)
    return math.sqrt(math.fsum((x - mean) ** 2 for x in loads) / len(loads))


@dataclasses.dataclass
class PlannedMove:
    """One move of a plan: the instance, from where to where, both nodes' loads before and after it, and the spread
    before and after it (each move's "after" is the next one's "before")."""

    item: Item
    source: str
    target: str
    load_before: dict
    load_after: dict
    spread_before: float
    spread_after: float


class Balance:
    """The loads of a set of nodes while a plan moves instances between them. The spread is kept from the sum of the
    loads and of their squares, so that what a move would do costs O(1)."""

    def __init__(self, nodes):
        self.nodes = dict((n.name, n) for n in nodes)
        self.cpu = dict((n.name, n.cpu_used) for n in nodes)
        self.memory = dict((n.name, n.memory_used) for n in nodes)
        self.loads = dict((n.name, n.load) for n in nodes)
        self.count = len(self.loads)
        self.total = math.fsum(self.loads.values())
        self.squares = math.fsum(x * x for x in self.loads.values())

    def _load(self, name, cpu, memory):
        node = self.nodes[name]
        return load_of(cpu, memory, node.cpus, node.memory_mb)

    def _spread(self, total, squares):
        if self.count < 2:
            return 0.0
        mean = total / self.count
        return math.sqrt(max(squares / self.count - mean * mean, 0.0))

    def spread(self):
        return self._spread(self.total, self.squares)

    def after(self, item, source, target):
        """(source's load, target's load, spread) were item moved from source to target."""
        load_s = self._load(source, self.cpu[source] - item.cpu, self.memory[source] - item.memory_mb)
        load_t = self._load(target, self.cpu[target] + item.cpu, self.memory[target] + item.memory_mb)
        old_s, old_t = self.loads[source], self.loads[target]
        total = self.total - old_s - old_t + load_s + load_t
        squares = self.squares - old_s * old_s - old_t * old_t + load_s * load_s + load_t * load_t
        return load_s, load_t, self._spread(total, squares)

    def move(self, item, source, target):
        load_s, load_t, _spread = self.after(item, source, target)
        old_s, old_t = self.loads[source], self.loads[target]
        self.cpu[source] -= item.cpu
        self.memory[source] -= item.memory_mb
        self.cpu[target] += item.cpu
        self.memory[target] += item.memory_mb
        self.loads[source], self.loads[target] = load_s, load_t
        self.total += load_s + load_t - old_s - old_t
        self.squares += load_s * load_s + load_t * load_t - old_s * old_s - old_t * old_t


class FilterCheck:
    """Whether the scheduler's filters (scheduler.FILTERS: compute state, zone, aggregates, hypervisor type, server
    group, networks, capacity...) let an instance onto a node while a plan moves instances: with the claims and the
    server group members where the moves before leave them. The filters are the scheduler's own, not copies.

    candidates: {node: scheduler.Candidate}, whose allocations commit() changes; request_of(item, source): the
    scheduler Request that moves item off source (source excluded), or None when it cannot be moved (then it fits
    nowhere); groups: {server group: {node: its members there}}, every member counted, the instance too.
    """

    def __init__(self, candidates, request_of, groups=None):
        self.candidates = candidates
        self.request_of = request_of
        self.groups = dict((name, dict(counts)) for name, counts in (groups or {}).items())
        self._requests = {}

    def request(self, item, source):
        """The item's Request with its group's members where they are now, itself not counted."""
        if item.uuid not in self._requests:
            self._requests[item.uuid] = self.request_of(item, source)
        req = self._requests[item.uuid]
        if req is None or not item.group:
            return req
        members = dict(self.groups.get(item.group, {}))
        members[source] = members.get(source, 0) - 1
        return dataclasses.replace(req, group_nodes=dict((node, count) for node, count in members.items() if count > 0))

    def fits(self, item, source, target):
        node = self.candidates.get(target)
        req = self.request(item, source) if node is not None else None
        return req is not None and all(check(req, node) for _name, check in _scheduler.FILTERS)

    def commit(self, item, source, target):
        """The move is planned: its claim goes from source to target, its group member too."""
        needs = self.request(item, source).needs()
        for name, sign in ((source, -1), (target, 1)):
            node = self.candidates.get(name)
            if node is None:
                continue
            for resource, amount in needs.items():
                node.allocated[resource] += sign * amount
            node.instances += sign
        if item.group:
            members = self.groups.setdefault(item.group, {})
            members[source] = members.get(source, 0) - 1
            members[target] = members.get(target, 0) + 1


def plan(nodes, level, max_moves, check):
    """(PlannedMoves in order, the Balance after them) for NodeLoads at a Level, max_moves at most; check: a
    FilterCheck (fits, commit). See the module docstring for the rule."""
    balance = Balance(nodes)
    moves = []
    if level.threshold is None:
        return moves, balance
    movable = dict((n.name, [i for i in n.items if i.movable]) for n in nodes)
    while len(moves) < max_moves and balance.spread() > level.threshold + EPSILON:
        found = _best_move(balance, movable, level, check)
        if found is None:
            break
        item, source, target = found
        before = {source: balance.loads[source], target: balance.loads[target]}
        spread_before = balance.spread()
        balance.move(item, source, target)
        check.commit(item, source, target)
        movable[source].remove(item)  # once per plan: an instance that moved is not moved again
        moves.append(PlannedMove(item, source, target, before, {source: balance.loads[source], target: balance.loads[target]},
                                 spread_before, balance.spread()))
    return moves, balance


def _best_move(balance, movable, level, check):
    """(item, source, target) of the step's best move that the filters allow, or None."""
    order = sorted(balance.loads, key=lambda name: (balance.loads[name], name))
    targets = {}  # zone -> its TARGETS least loaded nodes, least loaded first
    for name in order:
        coldest = targets.setdefault(balance.nodes[name].zone, [])
        if len(coldest) < TARGETS:
            coldest.append(name)
    sources = [name for name in reversed(order) if movable[name]][:SOURCES * SOURCE_ROUNDS]
    for start in range(0, len(sources), SOURCES):
        found = _best_from(balance, movable, level, check, sources[start:start + SOURCES], targets)
        if found is not None:
            return found
    return None


def _best_from(balance, movable, level, check, sources, targets):
    current = balance.spread()
    options = []
    for source in sources:
        # The items by the load each takes off its source (linear in what it uses); for a target, the ones around half
        # the gap between the two nodes' loads are the ones that can even them out (exactly so between alike nodes).
        # Of instances that take the same off it, the first by name stands for them all.
        node = balance.nodes[source]
        ranked, shares = [], []
        for item in sorted(movable[source], key=lambda item: (_share(item, node), item.name, item.uuid)):
            share = _share(item, node)
            if not shares or share != shares[-1]:
                ranked.append(item)
                shares.append(share)
        for target in targets[node.zone]:
            if target == source or balance.loads[target] >= balance.loads[source]:
                continue
            middle = bisect.bisect_left(shares, (balance.loads[source] - balance.loads[target]) / 2.0)
            for item in ranked[max(middle - NEIGHBOURS, 0):middle + NEIGHBOURS]:
                load_s, load_t, after = balance.after(item, source, target)
                gain = (abs(balance.loads[source] - balance.loads[target]) - abs(load_s - load_t)) / 2.0
                if after < current - EPSILON and gain >= level.min_gain - EPSILON:
                    options.append((after, item.name, target, source, item))
    options.sort(key=lambda option: option[:4])  # the lowest spread after first; names break ties, so that a plan is repeatable
    for _after, _name, target, source, item in options:
        if check.fits(item, source, target):
            return item, source, target
    return None


def _share(item, node):
    """The load item brings to node (what it takes off it when it leaves)."""
    return load_of(item.cpu, item.memory_mb, node.cpus, node.memory_mb)


__all__ = ['CPU_WEIGHT', 'LEVELS', 'MEMORY_WEIGHT', 'Balance', 'FilterCheck', 'Item', 'Level', 'NodeLoad', 'PlannedMove', 'load_of',
           'plan', 'spread']
