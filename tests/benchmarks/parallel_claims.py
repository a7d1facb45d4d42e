"""Benchmark: 8 parallel ansible-playbook runs booting 3 instances each against one run booting 24, on SQLite and on PostgreSQL.

Needs the lab (`make install lab-up`) and, for PostgreSQL, a server (`make postgres-up`, or --postgres URL; the
benchmark makes and drops a database of its own on it). Both sides boot the same 24 instances of a 32 MB flavor
from the lab image on the lab's KVM hosts, with the same total concurrency (--runs x --concurrency): the baseline is
one `multihv.cloud.instance` task with instances=24 and concurrency 8; ours is 8 ansible-playbook processes started
at once, each one task with instances=3 and concurrency 1, sharing one registry. What the parallel runs add is what
concurrent runs pay: their registry claims and leases against each other (a claim that loses a race is scheduled
again), the image check that no longer waits for the image's lease, and each process's own start-up. So that the
last is visible apart, the same 8 processes running an `ansible.builtin.ping` task are timed against one (the
start-up's share of the difference). Each side is checked (24 instances recorded running, one allocation each, none
left after the teardown) and deleted between rounds (one task, concurrency 8). --rounds repeats each measurement
(median printed, every round shown). Prints both engines' ratios: the goal (issue 20) is 8 runs at most 1.3x one.
Run: .venv/bin/python tests/benchmarks/parallel_claims.py [--rounds 2 --postgres postgresql://postgres@127.0.0.1:55432/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from support import REPO  # noqa: E402  pylint: disable=wrong-import-position
from support.bench import LAB  # noqa: E402  pylint: disable=wrong-import-position

TOTAL = 24
GOAL = 1.3


def write_play(path, tasks):
    path.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]))
    return path


def start(path, env):
    return subprocess.Popen([str(REPO / '.venv' / 'bin' / 'ansible-playbook'), str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_all(paths, env):
    """Seconds from starting every playbook at once to the last one's end; fails naming the first that failed."""
    began = time.perf_counter()
    procs = [start(path, env) for path in paths]
    outputs = [proc.communicate()[0] for proc in procs]
    elapsed = time.perf_counter() - began
    for path, proc, output in zip(paths, procs, outputs):
        if proc.returncode != 0:
            raise SystemExit('%s failed:\n%s' % (path.name, output[-3000:]))
    return elapsed


def names(prefix, count):
    return [{'name': '%s-%02d' % (prefix, index)} for index in range(count)]


def check_booted(registry_url, count):
    """All count instances recorded running, one allocation each (read through the registry's own code)."""
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry  # pylint: disable=import-outside-toplevel
    with Registry.open(registry_url) as registry:
        records = registry.list_instances()
        allocations = registry.list_allocations()
    assert len(records) == count and all(r.state == 'running' for r in records), [(r.name, r.state) for r in records]
    assert sorted(a['instance_uuid'] for a in allocations) == sorted(r.uuid for r in records), 'allocations differ from the instances'


def check_empty(registry_url):
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry  # pylint: disable=import-outside-toplevel
    with Registry.open(registry_url) as registry:
        assert not registry.list_instances() and not registry.list_allocations(), 'the teardown left instances or allocations'


def measure(tmp, lab, registry_url, rounds, runs, per_run, env):
    """{'one': [s...], 'parallel': [s...], 'ping1': [...], 'ping8': [...]} for one registry."""
    options = {'cloud_file': lab['cloud_file'], 'registry_url': registry_url}
    concurrency = runs  # the baseline's concurrency: the parallel runs' total
    setup = [{'multihv.cloud.compute_node': dict(options, name=host['name'], allocation_ratios={'cpu': 32.0})} for host in lab['kvm_hosts']]
    setup += [{'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
              {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab['images']['tick_qcow2'])}]
    run_all([write_play(tmp / 'setup.yml', setup)], env)
    one = write_play(tmp / 'one.yml', [{'multihv.cloud.instance': dict(options, flavor='tiny', image='tick', concurrency=concurrency,
                                                                       instances=names('one', runs * per_run))}])
    parallel = [write_play(tmp / ('run%d.yml' % index), [{'multihv.cloud.instance': dict(
        options, flavor='tiny', image='tick', concurrency=1, instances=names('run%d' % index, per_run))}]) for index in range(runs)]
    ping = write_play(tmp / 'ping.yml', [{'ansible.builtin.ping': {}}])
    every = names('one', runs * per_run) + [n for index in range(runs) for n in names('run%d' % index, per_run)]
    teardown = write_play(tmp / 'teardown.yml', [{'multihv.cloud.instance': dict(options, state='absent', concurrency=concurrency,
                                                                                 instances=every)}])
    found = {'one': [], 'parallel': [], 'ping1': [], 'ping8': []}
    try:
        for _round in range(rounds):
            found['ping1'].append(run_all([ping], env))
            found['ping8'].append(run_all([ping] * runs, env))
            found['one'].append(run_all([one], env))
            check_booted(registry_url, runs * per_run)
            run_all([teardown], env)
            check_empty(registry_url)
            found['parallel'].append(run_all(parallel, env))
            check_booted(registry_url, runs * per_run)
            run_all([teardown], env)
            check_empty(registry_url)
    finally:
        run_all([teardown], env)
    return found


def postgres_database(url):
    """(URL of a new database on the server of url, a function that drops it)."""
    import psycopg  # pylint: disable=import-outside-toplevel
    name = 'bench_claims_%s' % uuid.uuid4().hex[:8]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('CREATE DATABASE %s' % name)

    def drop():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)
    return url.rsplit('/', 1)[0] + '/' + name, drop


def report(engine, found, runs, per_run):
    med = dict((key, statistics.median(values)) for key, values in found.items())
    ratio = med['parallel'] / med['one']
    print('%s:' % engine)
    print('  one run booting %d, concurrency %d:           %s s (median %.2f)'
          % (runs * per_run, runs, ', '.join('%.2f' % v for v in found['one']), med['one']))
    print('  %d parallel runs booting %d each, concurrency 1: %s s (median %.2f)'
          % (runs, per_run, ', '.join('%.2f' % v for v in found['parallel']), med['parallel']))
    print('  %d parallel runs / one run: %.2fx (goal at most %.1fx: %s)' % (runs, ratio, GOAL, 'holds' if ratio <= GOAL else 'DOES NOT HOLD'))
    print('  start-up alone: one ping play %.2f s, %d at once %.2f s: %.2f s of the %.2f s difference'
          % (med['ping1'], runs, med['ping8'], med['ping8'] - med['ping1'], med['parallel'] - med['one']))
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--runs', type=int, default=8, help='parallel runs (and the one run\'s concurrency)')
    parser.add_argument('--per-run', type=int, default=TOTAL // 8, help='instances each parallel run boots')
    parser.add_argument('--postgres', default=os.environ.get('MULTIHV_TEST_POSTGRES_URL', 'postgresql://postgres@127.0.0.1:55432/multihv'),
                        help='a PostgreSQL server to make a database on (empty: SQLite only)')
    args = parser.parse_args()
    if not (LAB / 'lab.json').is_file():
        print('the lab is not up: run `make install lab-up` first')
        return 2
    lab = json.loads((LAB / 'lab.json').read_text())
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(REPO / '.build' / 'collections')))
    sys.path.insert(0, env['ANSIBLE_COLLECTIONS_PATH'])
    with open('/proc/loadavg', encoding='ascii') as handle:
        print('load average at start: %s' % ' '.join(handle.read().split()[:3]))
    with tempfile.TemporaryDirectory(prefix='multihv-bench-claims-') as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / 'sqlite').mkdir()
        sqlite = measure(tmp / 'sqlite', lab, 'sqlite:///%s/r.sqlite' % (tmp / 'sqlite'), args.rounds, args.runs, args.per_run, env)
        found = {'SQLite': sqlite}
        if args.postgres:
            url, drop = postgres_database(args.postgres)
            try:
                (tmp / 'pg').mkdir()
                found['PostgreSQL'] = measure(tmp / 'pg', lab, url, args.rounds, args.runs, args.per_run, env)
            finally:
                drop()
    for engine, values in found.items():
        report(engine, values, args.runs, args.per_run)
    with open('/proc/loadavg', encoding='ascii') as handle:
        print('load average at the end: %s' % ' '.join(handle.read().split()[:3]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
