"""Benchmark: the scheduler placing 10,000 requests on 1,000 synthetic nodes, and how it grows with the estate.

Starts nothing (pure logic). Prints the time per placement and in all (goal: all
10,000 in under 1 s), and the peak memory the run added, beside a baseline measured
in the same run: a naive scheduler that filters and weighs every node for every
request (Nova's shape), on the first 500 requests, so the ratio shows what the heap
per request shape buys (goal, issue 20: at least 50x).

Then the curve: the time per placement on 100, 1,000 and 10,000 nodes (--curve), each
with --per-node requests per node (10 by default: the estate grows and so does the
work, filling each node alike), --repeat runs each (the median is used; every run is
printed). Goal (issue 20): at 10,000 nodes at most 1.5x the time per placement at 100.
Run: .venv/bin/python tests/benchmarks/scheduler.py [--nodes N --requests N --curve 100,1000,10000]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import random
import sys
import time
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import conftest  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position  # makes the checkout importable

from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import (  # noqa: E402  pylint: disable=wrong-import-position
    FILTERS, Candidate, Host, Request, Scheduler,
)


def synthetic_nodes(count, seed):
    """KVM hosts and vSphere clusters of mixed sizes, zones and aggregates."""
    rng = random.Random(seed)
    nodes = []
    for index in range(count):
        zone = 'az%d' % (index % 3)
        aggregates = ('gold',) if index % 4 == 0 else ()
        if index % 5 == 0:
            hosts = [Host('n%d-h%d' % (index, h), True, 64, rng.choice([65536, 131072])) for h in range(8)]
            capacity = {'vcpus': 8 * 64 * 4, 'memory_mb': sum(h.free_memory_mb for h in hosts), 'disk_gb': 20000}
            nodes.append(Candidate('vc/dc/c%d' % index, 'vsphere', availability_zone=zone, aggregates=aggregates,
                                   capacity=capacity, hosts=hosts))
        else:
            nodes.append(Candidate('kvm%d' % index, 'kvm', availability_zone=zone, aggregates=aggregates,
                                   capacity={'vcpus': 256, 'memory_mb': rng.choice([131072, 262144]), 'disk_gb': 4000}))
    return nodes


def synthetic_requests(count, seed):
    rng = random.Random(seed)
    flavors = [(1, 1024, 10), (2, 4096, 20), (4, 8192, 40), (8, 16384, 80)]
    requests = []
    for _index in range(count):
        vcpus, ram, disk = rng.choice(flavors)
        requests.append(Request(vcpus, ram, disk, availability_zone=rng.choice([None, None, 'az1']),
                                aggregates=('gold',) if rng.random() < 0.2 else (),
                                hypervisor_type=rng.choice([None, 'kvm', 'vsphere'])))
    return requests


def naive_place(nodes, req, weigher):
    """Filter and weigh every node, every time."""
    fit = [n for n in nodes if all(check(req, n) for _name, check in FILTERS)]
    best = max(fit, key=lambda n: (weigher.weight(req, n), n.name))
    for resource, amount in req.needs().items():
        best.allocated[resource] += amount
    best.instances += 1
    return best.name


def per_placement(nodes, requests):
    """Seconds per placement of requests on a fresh Scheduler over nodes (the Scheduler's set-up counted)."""
    start = time.perf_counter()
    scheduler = Scheduler(nodes)
    for req in requests:
        scheduler.place(req)
    return (time.perf_counter() - start) / len(requests)


def curve(sizes, per_node, repeat):
    """The time per placement at each estate size, each the median of `repeat` runs; prints every run."""
    medians = {}
    for size in sizes:
        runs = [per_placement(synthetic_nodes(size, 1), synthetic_requests(size * per_node, 2)) for _run in range(repeat)]
        medians[size] = statistics.median(runs)
        print('  %6d nodes, %7d requests: %s us per placement (median %.1f)'
              % (size, size * per_node, ', '.join('%.1f' % (r * 1e6) for r in runs), medians[size] * 1e6))
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--nodes', type=int, default=1000)
    parser.add_argument('--requests', type=int, default=10000)
    parser.add_argument('--curve', default='100,1000,10000', help='estate sizes, comma-separated (empty: no curve)')
    parser.add_argument('--per-node', type=int, default=10, help='requests per node on the curve')
    parser.add_argument('--repeat', type=int, default=3, help='runs per point of the curve')
    args = parser.parse_args()

    nodes = synthetic_nodes(args.nodes, 1)
    requests = synthetic_requests(args.requests, 2)
    start = time.perf_counter()
    scheduler = Scheduler(nodes)
    placed = sum(1 for req in requests if scheduler.place(req))
    ours = time.perf_counter() - start

    # Memory in a second pass: tracing slows Python down several times.
    nodes, requests = synthetic_nodes(args.nodes, 1), synthetic_requests(args.requests, 2)
    tracemalloc.start()
    scheduler = Scheduler(nodes)
    for req in requests:
        scheduler.place(req)
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()

    sample = min(500, args.requests)
    naive_nodes = synthetic_nodes(args.nodes, 1)
    weigher = Scheduler(naive_nodes).weigher
    start = time.perf_counter()
    for req in synthetic_requests(args.requests, 2)[:sample]:
        naive_place(naive_nodes, req, weigher)
    naive = (time.perf_counter() - start) / sample

    print('%d requests on %d nodes: %d placed' % (args.requests, args.nodes, placed))
    print('ours:  %.3f s in all, %.1f us per placement, peak traced memory %.1f MiB' % (ours, ours / args.requests * 1e6, peak))
    print('naive: %.1f us per placement (first %d requests)' % (naive * 1e6, sample))
    print('naive / ours per placement: %.0fx' % (naive / (ours / args.requests)))
    print('goal, all %d in under 1 s: %s' % (args.requests, 'holds' if ours < 1.0 else 'DOES NOT HOLD'))
    print('goal, naive / ours at least 50x: %s' % ('holds' if naive / (ours / args.requests) >= 50 else 'DOES NOT HOLD'))
    sizes = [int(size) for size in args.curve.split(',') if size.strip()]
    if sizes:
        print('time per placement as the estate grows (%d requests per node):' % args.per_node)
        medians = curve(sizes, args.per_node, args.repeat)
        first, last = sizes[0], sizes[-1]
        for size in sizes[1:]:
            print('  %d nodes / %d nodes: %.2fx' % (size, first, medians[size] / medians[first]))
        print('goal, %d nodes at most 1.5x %d nodes per placement: %s'
              % (last, first, 'holds' if medians[last] <= 1.5 * medians[first] else 'DOES NOT HOLD'))


if __name__ == '__main__':
    main()
