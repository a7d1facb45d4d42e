"""Benchmark: planning a rebalance of 1,000 synthetic KVM hosts running 20,000 instances (pure logic).

Starts nothing. The nodes are alike (64 CPUs, 256 GiB) in three availability zones; a tenth of them are hot (they
hold a third of the instances), and 200 anti-affinity server groups of three members are spread over them. Each
instance uses 0.05 to 2 CPUs and its flavor's RAM (1 to 16 GiB). The plan is balance.plan with the scheduler's
filters (balance.FilterCheck): every move stays in its zone, keeps its group apart and fits its target's capacity.

Prints the spread before and after, the number of moves against a lower bound, and the time to plan as a ratio to
a baseline measured in the same run on the same nodes: one scheduler pass that places the 20,000 instances
(Scheduler.place each, as a boot of the whole estate would).

The lower bound on moves is the larger of two, both valid because the nodes are alike (the mean load never
changes, and the spread is sqrt(sum((load - mean)^2) / N)). Reaching the threshold T takes bringing that sum
down to N * T^2.
- pairs: a move changes two nodes, and can at best bring each to the mean, so m moves remove at most the sum of
  the 2m largest (load - mean)^2: the least m for which that reaches what must go.
- flow: the deviations above the mean alone must end with squares summing to N * T^2 at most; the least load
  that must leave the hot nodes for that is found by lowering the largest deviations to a common level (water
  filling), and one move takes off its source at most the largest load one instance brings to a node.
Moves are whole instances, so a plan may need more than either; it may also stop above T when no move gains
enough.

Run: .venv/bin/python tests/benchmarks/rebalance.py [--nodes N --instances N --aggressiveness L --max-moves N]
"""

from __future__ import annotations

import argparse
import math
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import conftest  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position  # makes the checkout importable

from ansible_collections.multihv.cloud.plugins.module_utils._compute import balance  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import (  # noqa: E402  pylint: disable=wrong-import-position
    Candidate, Request, Scheduler,
)

CPUS, MEMORY_MB, CPU_RATIO = 64, 262144, 4
FLAVORS = [(1, 1024), (2, 4096), (4, 8192), (8, 16384)]


def synthetic(node_count, instance_count, seed):
    """(NodeLoads, {uuid: (vcpus, memory_mb)}, {node: zone}, {group: {node: members}}): a skewed estate."""
    rng = random.Random(seed)
    names = ['kvm%04d' % index for index in range(node_count)]
    zones = dict((name, 'az%d' % (index % 3)) for index, name in enumerate(names))
    hot = names[:max(1, node_count // 10)]
    nodes = dict((name, balance.NodeLoad(name, CPUS, MEMORY_MB, zone=zones[name])) for name in names)
    flavors, groups = {}, {}
    for index in range(instance_count):
        where = rng.choice(hot) if index % 3 == 0 else rng.choice(names)
        vcpus, memory = rng.choice(FLAVORS)
        group = None
        if index < 600:  # 200 anti-affinity groups of three, each member on its own node
            group = 'g%d' % (index // 3)
            taken = groups.setdefault(group, {})
            while where in taken:
                where = rng.choice(names)
            taken[where] = 1
        uuid = 'i%05d' % index
        flavors[uuid] = (vcpus, memory)
        nodes[where].items.append(balance.Item(uuid, uuid, round(rng.uniform(0.05, 2.0), 3), memory, True, group))
    return list(nodes.values()), flavors, zones, groups


def candidates(nodes, flavors, zones):
    """Scheduler candidates with the instances' claims allocated."""
    found = {}
    for node in nodes:
        allocated = {'vcpus': sum(flavors[i.uuid][0] for i in node.items), 'memory_mb': sum(flavors[i.uuid][1] for i in node.items),
                     'disk_gb': 0}
        found[node.name] = Candidate(node.name, 'kvm', availability_zone=zones[node.name],
                                     capacity={'vcpus': CPUS * CPU_RATIO, 'memory_mb': MEMORY_MB, 'disk_gb': 100000},
                                     allocated=allocated, instances=len(node.items))
    return found


def lower_bound(nodes, threshold):
    """(pairs bound, flow bound) on the moves that bring the spread of alike nodes to threshold (see the docstring)."""
    loads = [n.load for n in nodes]
    mean = sum(loads) / len(loads)
    budget = len(loads) * threshold ** 2
    squares = sorted(((x - mean) ** 2 for x in loads), reverse=True)
    to_remove = sum(squares) - budget
    removed, pairs = 0.0, 0
    while removed < to_remove and 2 * pairs < len(squares):
        removed += sum(squares[2 * pairs:2 * pairs + 2])
        pairs += 1
    above = sorted((x - mean for x in loads if x > mean), reverse=True)
    level = _water_level(above, budget)
    moved = sum(d - level for d in above if d > level)
    largest = max(balance.load_of(i.cpu, i.memory_mb, n.cpus, n.memory_mb) for n in nodes for i in n.items if i.movable)
    return pairs, math.ceil(moved / largest - 1e-9)


def _water_level(deviations, budget):
    """The level c such that sum(min(d, c)^2) == budget over deviations (descending); the largest one when all fit."""
    if sum(d * d for d in deviations) <= budget:
        return deviations[0] if deviations else 0.0
    tail = sum(d * d for d in deviations)
    for count, d in enumerate(deviations, 1):
        tail -= d * d  # the first `count` are lowered to the level, the rest stay
        level = math.sqrt(max(budget - tail, 0.0) / count)
        following = deviations[count] if count < len(deviations) else 0.0
        if level >= following:
            return level
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--nodes', type=int, default=1000)
    parser.add_argument('--instances', type=int, default=20000)
    parser.add_argument('--aggressiveness', type=int, default=3, choices=sorted(balance.LEVELS))
    parser.add_argument('--max-moves', type=int, default=5000)
    args = parser.parse_args()
    level = balance.LEVELS[args.aggressiveness]

    nodes, flavors, zones, groups = synthetic(args.nodes, args.instances, 1)
    cands = candidates(nodes, flavors, zones)

    def request_of(item, source):
        vcpus, memory = flavors[item.uuid]
        return Request(vcpus, memory, 0, hypervisor_type='kvm', availability_zone=zones[source], exclude=frozenset([source]),
                       group_policy='anti-affinity' if item.group else None)

    before = balance.spread(n.load for n in nodes)
    start = time.perf_counter()
    check = balance.FilterCheck(cands, request_of, groups)
    moves, after = balance.plan(nodes, level, args.max_moves, check)
    planned = time.perf_counter() - start

    # The baseline: one scheduler pass placing the same instances on the same (empty) nodes.
    empty = candidates([balance.NodeLoad(n.name, CPUS, MEMORY_MB) for n in nodes], flavors, zones)
    requests = [Request(vcpus, memory, 0, hypervisor_type='kvm') for vcpus, memory in flavors.values()]
    start = time.perf_counter()
    scheduler = Scheduler(empty.values())
    for req in requests:
        scheduler.place(req)
    baseline = time.perf_counter() - start

    pairs, flow = lower_bound(nodes, level.threshold) if level.threshold is not None else (0, 0)
    bound = max(pairs, flow)
    apart = all(count <= 1 for members in check.groups.values() for count in members.values())  # where the plan leaves them
    print('%d nodes, %d instances, aggressiveness %d (threshold %s, min gain %s), at most %d moves'
          % (args.nodes, args.instances, args.aggressiveness, level.threshold, level.min_gain, args.max_moves))
    print('spread: %.4f before, %.4f after; loads %.3f-%.3f before, %.3f-%.3f after' % (
        before, after.spread(), min(n.load for n in nodes), max(n.load for n in nodes), min(after.loads.values()), max(after.loads.values())))
    print('moves: %d planned, lower bound %d (pairs %d, flow %d), planned / bound %.2f' % (
        len(moves), bound, pairs, flow, len(moves) / bound if bound else float('nan')))
    print('every move within its zone and every anti-affinity group kept apart: %s' % (
        apart and all(zones[m.source] == zones[m.target] for m in moves)))
    print('time: plan %.3f s, baseline (one scheduler pass placing the %d instances) %.3f s, plan / baseline %.2fx'
          % (planned, len(requests), baseline, planned / baseline))


if __name__ == '__main__':
    main()
