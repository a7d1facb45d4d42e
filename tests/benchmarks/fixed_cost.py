"""Benchmark: where the fixed time of one module run goes, by phase, against ansible.builtin.ping's module process.

Needs the lab (`make install lab-up`). One ansible-playbook run keeps the AnsiballZ files Ansible sends
(ANSIBLE_KEEP_REMOTE_FILES) of ping, instance_info, compute_node_info and instance (booting one lab
guest, then deleting it); then each is run RUNS times as Ansible runs it (a fresh interpreter, the modules
imported from the zip), under phases.py, which times imports by package, the cloud file, the registry's
opening and schema check, making drivers, opening endpoints, reading node resources, leases and the rest.
The `nodes` inventory plugin is timed the same way in `ansible-inventory --list`. Prints the median
seconds of each phase and, beside every figure, its ratio to ping's whole module process in the same run.
With --compare PATH (another build's collections path, e.g. one of an older commit), both builds run in
alternation, round by round, so that both see the same load, and a last table gives each phase's median
as this build's / the other's (each also as a ratio to its own ping).
Run: .venv/bin/python tests/benchmarks/fixed_cost.py [--runs 5] [--compare /tmp/before/collections]
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from support.bench import LAB, playbook  # noqa: E402  pylint: disable=wrong-import-position

REPO = pathlib.Path(__file__).resolve().parents[2]
PHASES = pathlib.Path(__file__).resolve().parent / 'phases.py'
PYTHON = sys.executable
BIN = REPO / '.venv' / 'bin'
GUEST = 'fixed-cost-1'


def ansible_env(tmp, keep=False, collections=None):
    collections = collections or os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(REPO / '.build' / 'collections'))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_PYTHON_INTERPRETER=PYTHON)
    if keep:
        env.update(ANSIBLE_KEEP_REMOTE_FILES='1', ANSIBLE_REMOTE_TMP=str(tmp / 'remote'))
    return env


def kept_modules(lab, tmp, collections=None):
    """{label: AnsiballZ file} of one run of each module (the boot and the delete of one guest included)."""
    tmp.mkdir(exist_ok=True)
    options = {'cloud_file': lab['cloud_file'], 'registry_url': 'sqlite:///%s/r.sqlite' % tmp}
    playbook(tmp / 'setup.yml', [
        {'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
        {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab['images']['tick_qcow2'])},
    ], ansible_env(tmp, collections=collections))
    tasks = [
        {'ansible.builtin.ping': None},
        {'multihv.cloud.instance_info': options},
        {'multihv.cloud.compute_node_info': options},
        {'multihv.cloud.instance': dict(options, name=GUEST, flavor='tiny', image='tick')},
        {'multihv.cloud.instance': dict(options, name=GUEST, state='absent')},
    ]
    playbook(tmp / 'keep.yml', tasks, ansible_env(tmp, keep=True, collections=collections))
    found = sorted((tmp / 'remote').glob('ansible-tmp-*/AnsiballZ_*.py'), key=lambda p: p.parent.name)
    labels = ['ping', 'instance_info', 'compute_node_info', 'instance (boot 1)', 'instance (delete 1)']
    return dict(zip(labels, [str(p) for p in found]))


def timed(argv, out, env):
    """Wall seconds of argv run under phases.py (its phases written to out) and the phases."""
    start = time.perf_counter()
    subprocess.run([PYTHON, str(PHASES), str(out)] + argv, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    phases = json.loads(out.read_text())
    phases['interpreter start and exit'] = wall - phases.pop('wall')
    phases['process'] = wall
    return phases


def inventory_source(lab, tmp):
    path = tmp / 'lab.multihv.yml'
    path.write_text(json.dumps({'plugin': 'multihv.cloud.nodes', 'cloud_file': lab['cloud_file'],
                                'registry_url': 'sqlite:///%s/r.sqlite' % tmp}))
    return path


class Build:
    """One build's kept modules and results (collections: its collections path, None for ANSIBLE_COLLECTIONS_PATH)."""

    def __init__(self, lab, tmp, collections=None):
        self.tmp = tmp
        self.modules = kept_modules(lab, tmp, collections)
        self.env = ansible_env(tmp, collections=collections)
        self.inventory = [str(BIN / 'ansible-inventory'), '-i', str(inventory_source(lab, tmp)), '--list']
        self.results = {label: [] for label in ('ping', 'instance_info', 'compute_node_info', 'instance (boot 1)', 'nodes inventory')}

    def one_round(self):
        tmp, env, results = self.tmp, self.env, self.results
        for label in ('ping', 'instance_info', 'compute_node_info'):
            results[label].append(timed([self.modules[label]], tmp / 'phases.json', env))
        results['instance (boot 1)'].append(timed([self.modules['instance (boot 1)']], tmp / 'phases.json', env))
        subprocess.run([PYTHON, self.modules['instance (delete 1)']], env=env, check=True, stdout=subprocess.DEVNULL)
        results['nodes inventory'].append(timed(self.inventory, tmp / 'phases.json', env))


def medians(runs):
    keys = sorted(set(k for run in runs for k in run))
    return dict((k, statistics.median(run.get(k, 0.0) for run in runs)) for k in keys)


def print_comparison(mine, other):
    """Each phase's median as this build's / the other's, for phases of at least 10 ms in either."""
    print('\nthis build / the other (same rounds, alternating; x ping: each over its own ping process)')
    for label in mine:
        a, b = medians(mine[label]), medians(other[label])
        ping_a, ping_b = medians(mine['ping'])['process'], medians(other['ping'])['process']
        print('\n%s: %.2fx ping against %.2fx ping, %.2f of the other\'s time' % (
            label, a['process'] / ping_a, b['process'] / ping_b, a['process'] / b['process']))
        for phase in sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0.0), b.get(k, 0.0))):
            if phase != 'process' and max(a.get(phase, 0.0), b.get(phase, 0.0)) >= 0.01:
                print('  %-36s %6.2fx ping  %6.2fx ping' % (phase, a.get(phase, 0.0) / ping_a, b.get(phase, 0.0) / ping_b))


def print_table(results):
    ping = medians(results['ping'])['process']
    print('median seconds over the runs (x: ratio to ping\'s whole module process, %.3f s, same run)' % ping)
    for label, runs in results.items():
        found = medians(runs)
        print('\n%s: %.3f s, %.2fx ping' % (label, found['process'], found['process'] / ping))
        for phase, seconds in sorted(found.items(), key=lambda kv: -kv[1]):
            if phase != 'process' and seconds >= 0.0005:
                print('  %-36s %7.3f s %6.2fx' % (phase, seconds, seconds / ping))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--compare', type=pathlib.Path, help='another build\'s collections path, run in alternation with this one')
    args = parser.parse_args()
    if not (LAB / 'lab.json').is_file():
        print('the lab is not up: run `make install lab-up` first')
        return 2
    lab = json.loads((LAB / 'lab.json').read_text())
    with tempfile.TemporaryDirectory(prefix='multihv-bench-fixed-') as tmp:
        builds = [Build(lab, pathlib.Path(tmp) / 'this')]
        if args.compare:
            builds.append(Build(lab, pathlib.Path(tmp) / 'other', str(args.compare)))
        for _round in range(args.runs):
            for build in builds:
                build.one_round()
    print_table(builds[0].results)
    if args.compare:
        print_comparison(builds[0].results, builds[1].results)
    print('\nload average at the end: %s' % ' '.join(open('/proc/loadavg', encoding='ascii').read().split()[:3]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
