"""Profile: a timeline of each instance's steps in a bulk boot, a bulk delete and a drain, run in this process.

Needs the lab (`make install lab-up`). What the module process does, without Ansible around it: the cloud file is
loaded and the registry (SQLite in a temporary directory, or --registry URL) opened as a module does, then the
core runs as the `instance` and `migrate from_node` tasks run it, every call of interest timed: the scheduler
(plan, place), the registry's methods (claims, leases, writes, reads), image checks and uploads, and every call to
a driver (probes, spawn, destroy, migrate...). Each call is put down to the instance its worker thread works on.

Prints, per operation: the time in all; per step, calls, the time summed over threads, mean and max; and the
timeline of --show instances (each step's start after the operation's start, and its length, in ms). Steps that
nest (a driver's spawn inside a boot) are each counted, so the sums add up to more than the wall time.
Run: .venv/bin/python tests/benchmarks/timeline.py [--count 20 --concurrency 4 --show 3]
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from support import REPO  # noqa: E402  pylint: disable=wrong-import-position
from support.bench import LAB, playbook  # noqa: E402  pylint: disable=wrong-import-position

_LOCAL = threading.local()


class Tracer:
    """Timed calls: (instance or '-', step, start, seconds), from every thread."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.origin = time.perf_counter()

    def wrap(self, owner, name, step=None, label=None):
        """Time owner.name as `step`; label(args) names the instance the calling thread works on from then on."""
        real = getattr(owner, name)
        step = step or name

        @functools.wraps(real)
        def timed(*args, **kwargs):
            before = getattr(_LOCAL, 'instance', '-')
            if label is not None:
                _LOCAL.instance = label(args)
            began = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                with self.lock:
                    self.events.append((getattr(_LOCAL, 'instance', '-'), step, began - self.origin, time.perf_counter() - began))
                if label is not None:
                    _LOCAL.instance = before
        setattr(owner, name, timed)

    def restart(self):
        self.events, self.origin = [], time.perf_counter()

    def report(self, title, wall, show):
        print('\n%s: %.2f s in all' % (title, wall))
        steps = collections.defaultdict(list)
        for _instance, step, _start, seconds in self.events:
            steps[step].append(seconds)
        print('  %-34s %6s %9s %9s %9s' % ('step', 'calls', 'sum s', 'mean ms', 'max ms'))
        for step, times in sorted(steps.items(), key=lambda item: -sum(item[1])):
            print('  %-34s %6d %9.2f %9.1f %9.1f' % (step, len(times), sum(times), 1000 * sum(times) / len(times), 1000 * max(times)))
        per = collections.defaultdict(list)
        for instance, step, start, seconds in self.events:
            per[instance].append((start, step, seconds))
        shown = [name for name in sorted(per) if name != '-'][:show]
        for name in ['-'] + shown:
            print('  timeline of %s:' % ('the run (no instance)' if name == '-' else name))
            for start, step, seconds in sorted(per[name]):
                if seconds >= 0.002 or name != '-':
                    print('    +%7.0f ms %-34s %7.1f ms' % (1000 * start, step, 1000 * seconds))


def instrument(tracer):
    """Wrap what the profile times (imported from the installed collection, as a module run imports it)."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import images, instance_tasks, instances, leases, migrations
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes, scheduler
    from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import driver as libvirt_driver
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
    tracer.wrap(instances, '_boot_apart', 'boot (one instance)', label=lambda args: args[1].name)
    tracer.wrap(instance_tasks, '_delete_apart', 'delete (one instance)', label=lambda args: args[1].name)
    tracer.wrap(migrations, '_migrate_apart', 'migrate (one instance)', label=lambda args: str(args[1]))
    tracer.wrap(instances, 'plan', 'scheduler: plan the batch')
    tracer.wrap(scheduler.Scheduler, 'place', 'scheduler: place')
    tracer.wrap(instances, 'prepare_images', 'images: ready on each node')
    tracer.wrap(images, 'upload', 'images: check or upload')
    tracer.wrap(leases, 'take', 'lease: take')
    tracer.wrap(nodes, 'list_nodes', 'nodes: probe every endpoint')
    for name in dir(Registry):
        if not name.startswith('_') and callable(getattr(Registry, name)) and name not in ('open', 'another', 'transaction', 'close'):
            tracer.wrap(Registry, name, 'registry: %s' % name)
    for name in ('get_nodes', 'ensure_image', 'list_instances', 'spawn', 'destroy', 'set_power', 'migrate', 'shares_storage'):
        tracer.wrap(libvirt_driver.LibvirtDriver, name, 'libvirt: %s' % name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--count', type=int, default=20)
    parser.add_argument('--concurrency', type=int, default=4)
    parser.add_argument('--show', type=int, default=2, help='instances whose timeline is printed')
    parser.add_argument('--registry', help='registry URL (default: SQLite in a temporary directory)')
    args = parser.parse_args()
    if not (LAB / 'lab.json').is_file():
        print('the lab is not up: run `make install lab-up` first')
        return 2
    lab = json.loads((LAB / 'lab.json').read_text())
    collections_path = os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(REPO / '.build' / 'collections'))
    sys.path.insert(0, collections_path)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path)
    # pylint: disable=import-outside-toplevel
    from ansible_collections.multihv.cloud.plugins.module_utils import _config
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks, migrations
    from ansible_collections.multihv.cloud.plugins.module_utils._compute.context import Context
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

    with open('/proc/loadavg', encoding='ascii') as handle:
        print('load average at start: %s' % ' '.join(handle.read().split()[:3]))
    with tempfile.TemporaryDirectory(prefix='multihv-timeline-') as tmp:
        tmp = pathlib.Path(tmp)
        url = args.registry or 'sqlite:///%s/r.sqlite' % tmp
        options = {'cloud_file': lab['cloud_file'], 'registry_url': url}
        setup = [{'multihv.cloud.compute_node': dict(options, name=host['name'], allocation_ratios={'cpu': 32.0})} for host in lab['kvm_hosts']]
        setup += [{'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
                  {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab['images']['tick_qcow2'])}]
        playbook(tmp / 'setup.yml', setup, env)
        tracer = Tracer()
        instrument(tracer)
        config = _config.load(lab['cloud_file'])

        def operation(title, work):
            registry = Registry.open(url, lease_seconds=config.lease_seconds)
            ctx = Context(config, registry, timeout=600)
            tracer.restart()
            began = time.perf_counter()
            try:
                work(ctx)
            finally:
                wall = time.perf_counter() - began
                ctx.close()
                registry.close()
            tracer.report(title, wall, args.show)

        names = [{'name': 'tl-%02d' % index} for index in range(args.count)]
        boot = {'instances': names, 'flavor': 'tiny', 'image': 'tick', 'concurrency': args.concurrency, 'state': 'present', 'storage': 'shared',
                'node': 'kvm1'}
        absent = {'instances': names, 'state': 'absent', 'concurrency': args.concurrency}
        try:
            operation('boot %d on kvm1, concurrency %d' % (args.count, args.concurrency),
                      lambda ctx: _check(instance_tasks.run(ctx, boot, False)))
            operation('drain kvm1 (%d live migrations), concurrency %d' % (args.count, args.concurrency),
                      lambda ctx: migrations.drain(ctx, 'kvm1', concurrency=args.concurrency))
            operation('delete %d, concurrency %d' % (args.count, args.concurrency),
                      lambda ctx: _check(instance_tasks.run(ctx, absent, False)))
        finally:
            playbook(tmp / 'teardown.yml', [{'multihv.cloud.instance': dict(options, **absent)}], env)
            playbook(tmp / 'enable.yml', [{'multihv.cloud.compute_node': dict(options, name='kvm1', enabled=True)}], env)
    return 0


def _check(result):
    if result.get('failures'):
        raise SystemExit('failures: %s' % result['failures'])
    return result


if __name__ == '__main__':
    sys.exit(main())
