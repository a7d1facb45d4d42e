"""Benchmark: the multihv.cloud.nodes inventory plugin on a large vCenter, against the vSphere inventory plugins
people use today and against the cost of the work itself.

What it measures, for each SOAP latency (0 ms and 2 ms per call by default):
  - `ansible-inventory -i SOURCE --list` for our plugin and four anchors: community.vmware.vmware_vm_inventory,
    community.vmware.vmware_host_inventory, vmware.vmware.vms and vmware.vmware.esxi_hosts. Each run's wall time
    (median over --runs), the peak RSS of the ansible-inventory process (its ru_maxrss, read by a small launcher:
    support.peak_rss), the SOAP calls the
    simulator counted during the run, and the hosts in the output.
  - The baseline: one raw pyVmomi retrieval in this process (login, ContainerView + RetrievePropertiesEx of exactly
    the property paths our driver asks for, logout), plus the start-up time of `ansible-inventory -i localhost, --list`
    in the same virtualenv. Our target is at most 2x (raw retrieval + start-up).
  - SOAP calls of our plugin on a small simulator (2 clusters x 3 hosts, 12 VMs) beside the large one: the count
    must not grow with the estate.

What it starts (and stops at the end, whatever happens):
  - its own vcsim (.lab/vcsim/vcsim, built by `make lab-up`) on 127.0.0.1 with ports picked by the system: 20
    clusters x 10 hosts, 5000 VMs (--quick: 4 x 5, 500 VMs), and later a small one; never the lab's simulator.
  - ansible-inventory processes, one at a time: ours with .venv's ansible-core and a snapshot of this checkout's
    plugins/ and meta/ taken at start (--collections-path: another build, such as
    .build/collections after `make install`); the
    anchors with a separate virtualenv (default .lab/bench-venv, created once with pip install 'ansible>=12,<13'
    pyvmomi requests plus the anchors' own requirements.txt; a few minutes the first time). It is not under .build:
    `make install` removes .build, which would remove the virtualenv under a running benchmark.
Everything else goes to a temporary directory, removed at the end (--keep keeps it).

How to read the output: one table per latency. `x ours` is the anchor's median time over ours (how many times
faster we are); `SOAP` is the calls of one run; `hosts` counts inventory hosts (ours: one per cluster; the VM
plugins: one per VM; the host plugins: one per ESXi host). A slow anchor runs fewer times than --runs (it stops
repeating after --anchor-budget seconds); at a latency above 0 an anchor whose 0 ms run predicts more than
--timeout seconds (its time plus its SOAP calls x latency) is not run, and the prediction is printed instead. The
closing lines state whether each target holds. These are facts of one run on a noisy machine, not a test.

Run: .venv/bin/python tests/benchmarks/inventory_vsphere.py [--quick] [--runs N]   (after `make install lab-up`)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import importlib
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests'))

from support import peak_rss  # noqa: E402  pylint: disable=wrong-import-position
from support.inventory_runs import child_env, snapshot_collection  # noqa: E402  pylint: disable=wrong-import-position

VCSIM = REPO / '.lab' / 'vcsim' / 'vcsim'
OUR_BIN = REPO / '.venv' / 'bin'
DEFAULT_BENCH_VENV = REPO / '.lab' / 'bench-venv'
BENCH_REQUIREMENTS = ('ansible>=12,<13', 'pyvmomi', 'requests')
ANCHOR_COLLECTIONS = ('community/vmware', 'vmware/vmware')
USERNAME = 'bench'
PASSWORD = 'benchpw'
OURS = 'multihv.cloud.nodes (ours)'
VM_ANCHOR = 'community.vmware.vmware_vm_inventory'
TARGET_VS_BASELINE = 2.0
TARGET_VS_VM_ANCHOR = 20.0


@dataclasses.dataclass(frozen=True)
class Topology:
    clusters: int
    hosts: int
    vms: int

    def __str__(self):
        return '1 datacenter x %d clusters x %d hosts, %d VMs' % (self.clusters, self.hosts, self.vms)


FULL = Topology(clusters=20, hosts=10, vms=5000)
QUICK = Topology(clusters=4, hosts=5, vms=500)
SMALL = Topology(clusters=2, hosts=3, vms=12)


@dataclasses.dataclass
class Source:
    """One inventory source: its label, the ansible-inventory to run it with, its file and environment."""
    label: str
    plugin: str
    filename: str
    bin_dir: pathlib.Path
    collections_path: str
    anchor: bool = True


@dataclasses.dataclass
class Run:
    seconds: float
    rss_mib: float = 0.0
    soap_calls: int = 0
    hosts: int = 0
    by_method: dict = dataclasses.field(default_factory=dict)
    error: str = ''
    timed_out: bool = False


@dataclasses.dataclass
class Result:
    """The runs of one source at one latency, or why it has none."""
    label: str
    runs: list = dataclasses.field(default_factory=list)
    note: str = ''

    def good(self):
        return [run for run in self.runs if not run.error and not run.timed_out]

    def median(self):
        good = self.good()
        return statistics.median(run.seconds for run in good) if good else None

    def last(self):
        return self.runs[-1] if self.runs else None


# ---------------------------------------------------------------- command line

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--quick', action='store_true', help='4 clusters x 5 hosts, 500 VMs, one run each (about a minute once the venv exists)')
    parser.add_argument('--runs', type=int, help='runs per source and latency (default 3; 1 with --quick)')
    parser.add_argument('--delays', default='0,2', help='SOAP latencies in ms, comma separated (default 0,2)')
    parser.add_argument('--timeout', type=float, help='seconds before one ansible-inventory run is killed (default 300; 40 with --quick)')
    parser.add_argument('--anchor-budget', type=float, default=60.0,
                        help='an anchor stops repeating once its runs at one latency took this many seconds (default 60)')
    parser.add_argument('--bench-venv', type=pathlib.Path, default=DEFAULT_BENCH_VENV, help='virtualenv of the anchors (created when missing)')
    parser.add_argument('--no-anchors', action='store_true', help='only ours and the baseline')
    parser.add_argument('--collections-path', type=pathlib.Path,
                        help='run the multihv.cloud of this collections path (.build/collections after `make install`, another checkout\'s '
                             'build...) rather than a snapshot of this checkout')
    parser.add_argument('--keep', action='store_true', help='keep the temporary directory (sources, outputs, logs)')
    args = parser.parse_args(argv)
    args.topology = QUICK if args.quick else FULL
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.timeout is None:
        args.timeout = 40.0 if args.quick else 300.0
    args.delays = sorted(set(int(value) for value in args.delays.split(',') if value.strip()))
    return args


# ---------------------------------------------------------------- processes

def run_child(argv, env, cwd, out_path, err_path, timeout):
    """Run argv with stdout and stderr to files; (wall seconds, peak RSS in MiB, exit code, timed out).

    The peak RSS is the command's own ru_maxrss, read by a small launcher (support.peak_rss): wait4 on a child of
    this process would start it at this process's own size. A timer kills both after `timeout` seconds."""
    report = pathlib.Path(str(out_path) + '.peak')
    with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
        start = time.perf_counter()
        proc = subprocess.Popen(peak_rss.command(argv, report), env=env, cwd=cwd, stdout=out, stderr=err,  # pylint: disable=consider-using-with
                                stdin=subprocess.DEVNULL, start_new_session=True)
        killed = threading.Event()

        def kill():
            killed.set()
            peak_rss.kill(proc)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            proc.wait()
        except BaseException:
            peak_rss.kill(proc)
            proc.wait()
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    rss = peak_rss.peak_mib(report)
    return seconds, rss if rss is not None else 0.0, proc.returncode, killed.is_set()


def rss_floor(tmp):
    """Show that the peak RSS figures are the commands' own: /bin/true after this process took 150 MiB, read by
    wait4 on a direct child (what this benchmark did before issue 20) and through the launcher."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # started with SIGCHLD ignored, wait4 would find no child
    held = bytearray(150 << 20)
    held[::4096] = b'x' * len(held[::4096])
    _pid, _status, usage = os.wait4(subprocess.Popen(['/bin/true']).pid, 0)  # pylint: disable=consider-using-with
    _seconds, launched, _code, _killed = run_child(['/bin/true'], dict(os.environ), str(tmp), tmp / 'true.out', tmp / 'true.err', 30)
    del held
    print('peak RSS of /bin/true started while this process holds 150 MiB: %.1f MiB by wait4 on a direct child, '
          '%.1f MiB through the launcher (the figures below are read through it)' % (usage.ru_maxrss / 1024.0, launched), flush=True)


def error_line(err_path):
    """The line of an ansible-inventory stderr that says what failed."""
    lines = [line.strip() for line in pathlib.Path(err_path).read_text(errors='replace').splitlines() if line.strip()]
    for line in lines:
        if line.startswith(('ERROR', '[ERROR]')):
            return line[:300]
    return (lines[-1] if lines else 'no message')[:300]


def count_hosts(out_path):
    """Hosts of an `ansible-inventory --list` answer: those with variables and those only in a group."""
    data = json.loads(pathlib.Path(out_path).read_text())
    hosts = set(data.get('_meta', {}).get('hostvars', {}))
    for name, group in data.items():
        if name != '_meta' and isinstance(group, dict):
            hosts.update(group.get('hosts', ()))
    return len(hosts)


# ---------------------------------------------------------------- vcsim

class Vcsim:
    """A vcsim of this benchmark's own on loopback; a context manager that always stops it."""

    def __init__(self, topology, workdir):
        self.topology = topology
        self.workdir = pathlib.Path(workdir)
        self.proc = None
        self.port = None
        self.control = None
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy

    def __enter__(self):
        self.workdir.mkdir(parents=True)
        (self.workdir / 'datastores').mkdir()
        state = self.workdir / 'state.json'
        argv = [str(VCSIM), '-listen', '127.0.0.1:0', '-control', '127.0.0.1:0', '-datacenters', '1',
                '-clusters', str(self.topology.clusters), '-hosts', str(self.topology.hosts), '-vms', str(self.topology.vms),
                '-username', USERNAME, '-password', PASSWORD, '-state-file', str(state),
                '-datastore-dir', str(self.workdir / 'datastores')]
        with open(self.workdir / 'vcsim.log', 'wb') as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # pylint: disable=consider-using-with
        try:
            info = self._wait_for_state(state)
        except BaseException:
            self.stop()
            raise
        self.port, self.control = info['port'], info['control']
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _wait_for_state(self, state, limit=300.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('vcsim exited with %s; see %s' % (self.proc.returncode, self.workdir / 'vcsim.log'))
            if state.exists() and state.stat().st_size:
                return json.loads(state.read_text())
            time.sleep(0.1)
        raise RuntimeError('vcsim wrote no state file within %s s; see %s' % (limit, self.workdir / 'vcsim.log'))

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def call(self, method, path):
        request = urllib.request.Request(self.control + path, method=method)
        with self.opener.open(request, timeout=30) as answer:
            return json.loads(answer.read())

    def set_delay(self, ms):
        self.call('PUT', '/delay?ms=%d' % ms)

    def reset_stats(self):
        self.call('POST', '/stats/reset')

    def stats(self):
        return self.call('GET', '/stats')


# ---------------------------------------------------------------- set-up

def site_packages(venv):
    found = sorted(venv.glob('lib/python3*/site-packages'))
    return found[0] if found else None


def bench_venv_ready(venv):
    marker = venv / '.multihv-bench-ready'
    return (venv / 'bin' / 'ansible-inventory').exists() and marker.exists() and marker.read_text() == json.dumps(BENCH_REQUIREMENTS)


def pip_install(venv, args, log):
    """pip install args into venv, its output appended to log; the exit code."""
    with open(log, 'ab') as handle:
        return subprocess.run([str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '--disable-pip-version-check', '-q'] + list(args),
                              stdout=handle, stderr=subprocess.STDOUT, check=False).returncode


def ensure_bench_venv(venv, tmp):
    """The anchors' virtualenv, created once; (bin dir or None, notes). A lock keeps two benchmarks from building it at once."""
    notes = []
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(str(venv) + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not bench_venv_ready(venv):
            log = tmp / 'bench-venv-pip.log'
            print('creating the anchors\' virtualenv %s (pip install %s; a few minutes, once)' % (venv, ' '.join(BENCH_REQUIREMENTS)), flush=True)
            created = subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=False).returncode == 0
            if not created or pip_install(venv, BENCH_REQUIREMENTS, log) != 0:
                return None, ['the anchors\' virtualenv could not be made (see %s)' % log]
            extra = anchor_requirements(venv)
            if extra and pip_install(venv, [item for path in extra for item in ('-r', str(path))], log) != 0:
                notes.append('pip install of the anchors\' requirements.txt failed (see %s); anchors run without them' % log)
            (venv / '.multihv-bench-ready').write_text(json.dumps(BENCH_REQUIREMENTS))
    return venv / 'bin', notes


def anchor_requirements(venv):
    """The requirements.txt files the anchor collections ship (pyVmomi and the vSphere Automation SDK)."""
    base = site_packages(venv)
    if base is None:
        return []
    return [path for path in (base / 'ansible_collections' / name / 'requirements.txt' for name in ANCHOR_COLLECTIONS) if path.exists()]


def bench_venv_facts(bin_dir):
    """One line on what the anchors run with."""
    script = ('import importlib.metadata as m, importlib.util as u, json\n'
              'def v(n):\n'
              '    try:\n        return m.version(n)\n'
              '    except m.PackageNotFoundError:\n        return None\n'
              'print(json.dumps({n: v(n) for n in ("ansible", "ansible-core", "pyvmomi", "requests", "vmware-vcenter")}))')
    answer = subprocess.run([str(bin_dir / 'python'), '-c', script], capture_output=True, text=True, check=False)
    if answer.returncode != 0:
        return 'could not read the anchors\' package versions: %s' % answer.stderr.strip()[-200:]
    versions = json.loads(answer.stdout)
    base = site_packages(bin_dir.parent)
    for name in ANCHOR_COLLECTIONS:
        manifest = base / 'ansible_collections' / name / 'MANIFEST.json'
        if manifest.exists():
            versions[name.replace('/', '.')] = json.loads(manifest.read_text())['collection_info']['version']
    text = ', '.join('%s %s' % (name, version or 'not installed') for name, version in versions.items())
    if not versions.get('vmware-vcenter'):
        text += ' (the vSphere Automation SDK is only needed for tags, which stay off here)'
    return text


def anchors(bin_dir, tmp):
    empty = tmp / 'no-collections'
    empty.mkdir(exist_ok=True)
    return [
        Source(VM_ANCHOR, VM_ANCHOR, 'anchor.vmware.yml', bin_dir, str(empty)),
        Source('community.vmware.vmware_host_inventory', 'community.vmware.vmware_host_inventory', 'anchor-hosts.vmware.yml', bin_dir, str(empty)),
        Source('vmware.vmware.vms', 'vmware.vmware.vms', 'anchor.vmware_vms.yml', bin_dir, str(empty)),
        Source('vmware.vmware.esxi_hosts', 'vmware.vmware.esxi_hosts', 'anchor.vmware_esxi_hosts.yml', bin_dir, str(empty)),
    ]


def write_source(source, vcsim, tmp):
    """The inventory file of `source` for this vcsim; the anchors list with their default properties."""
    if source.anchor:
        config = {'plugin': source.plugin, 'hostname': '127.0.0.1', 'port': vcsim.port, 'username': USERNAME,
                  'password': PASSWORD, 'validate_certs': False}
    else:
        config = {'plugin': source.plugin, 'cloud': {
            'vcenters': [{'name': 'bench', 'hostname': '127.0.0.1', 'port': vcsim.port, 'username': USERNAME,
                          'password': PASSWORD, 'validate_certs': False}],
            'registry': {'url': 'sqlite:///%s' % (tmp / 'r.sqlite')}}}
    path = tmp / 'sources' / ('%d-%s' % (vcsim.port, source.filename))
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


# ---------------------------------------------------------------- measurements

def inventory_run(source, path, vcsim, tmp, timeout):
    """One `ansible-inventory --list` of path, with the SOAP calls it made."""
    out, err = tmp / 'out.json', tmp / 'err.txt'
    vcsim.reset_stats()
    seconds, rss, code, timed_out = run_child([str(source.bin_dir / 'ansible-inventory'), '-i', str(path), '--list'],
                                              child_env(tmp, source.collections_path), str(tmp), out, err, timeout)
    stats = vcsim.stats()
    run = Run(seconds, rss, stats['soap_calls'], by_method=stats['by_method'], timed_out=timed_out)
    if timed_out:
        run.error = 'killed after %.0f s' % timeout
    elif code != 0:
        run.error = 'exit %d: %s' % (code, error_line(err))
    else:
        run.hosts = count_hosts(out)
    return run


def measure(source, vcsim, tmp, args, warm_up=False):
    """Result of `source`: args.runs runs; an anchor stops early past args.anchor_budget seconds or at a failure."""
    path = write_source(source, vcsim, tmp)
    result = Result(source.label)
    if warm_up:
        inventory_run(source, path, vcsim, tmp, args.timeout)
    for _index in range(args.runs):
        run = inventory_run(source, path, vcsim, tmp, args.timeout)
        result.runs.append(run)
        outcome = run.error or '%d hosts' % run.hosts
        print('  %-42s %8.2f s  %6.1f MiB  %6d SOAP  %s' % (source.label, run.seconds, run.rss_mib, run.soap_calls, outcome), flush=True)
        if run.error or (source.anchor and sum(r.seconds for r in result.runs) >= args.anchor_budget):
            break
    if result.runs and not result.good():
        result.note = result.runs[-1].error
    return result


def predicted_seconds(previous, delay_ms):
    """An anchor's time at delay_ms from its 0 ms run: each SOAP call is one round trip in sequence."""
    if previous is None or previous.median() is None:
        return None
    return previous.median() + previous.last().soap_calls * delay_ms / 1000.0


def driver_properties(collections_path):
    """PROPERTIES of our vSphere driver, imported from the collection being measured."""
    sys.path.insert(0, str(collections_path))
    try:
        return importlib.import_module('ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties').PROPERTIES
    finally:
        sys.path.remove(str(collections_path))


def raw_retrieval(vcsim, properties):
    """Seconds of one raw retrieval in this process: login, ContainerView + RetrievePropertiesEx (and its pages) of the
    driver's property paths, DestroyView, logout; and the number of objects it returned."""
    from pyVim import connect  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim, vmodl  # pylint: disable=import-outside-toplevel
    collector = vmodl.query.PropertyCollector
    start = time.perf_counter()
    si = connect.SmartConnect(host='127.0.0.1', port=vcsim.port, user=USERNAME, pwd=PASSWORD, disableSslCertValidation=True)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [getattr(vim, kind) for kind in properties], True)
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[
                collector.TraversalSpec(name='view', path='view', skip=False, type=vim.view.ContainerView)])],
            propSet=[collector.PropertySpec(type=getattr(vim, kind), pathSet=list(paths)) for kind, paths in properties.items()])
        objects = 0
        result = content.propertyCollector.RetrievePropertiesEx(specSet=[spec], options=collector.RetrieveOptions(maxObjects=5000))
        while result is not None:
            objects += len(result.objects)
            result = content.propertyCollector.ContinueRetrievePropertiesEx(token=result.token) if result.token else None
        view.Destroy()
    finally:
        connect.Disconnect(si)
    return time.perf_counter() - start, objects


def measure_raw(vcsim, properties, runs):
    result = Result('raw PropertyCollector (in-process)')
    objects = 0
    for _index in range(max(runs, 3)):  # cheap: always at least 3
        vcsim.reset_stats()
        seconds, objects = raw_retrieval(vcsim, properties)
        result.runs.append(Run(seconds, soap_calls=vcsim.stats()['soap_calls'], hosts=objects))
    print('  %-42s %8.2f s  %d objects' % (result.label, result.median(), objects), flush=True)
    return result


def measure_startup(label, bin_dir, tmp, runs):
    """Median time of `ansible-inventory -i localhost, --list`: the fixed cost of any inventory run."""
    result = Result(label)
    env = child_env(tmp, str(tmp / 'no-collections'))
    for _index in range(max(runs, 3)):
        seconds, rss, code, _timed_out = run_child([str(bin_dir / 'ansible-inventory'), '-i', 'localhost,', '--list'],
                                                   env, str(tmp), tmp / 'out.json', tmp / 'err.txt', 120)
        result.runs.append(Run(seconds, rss, error='' if code == 0 else 'exit %d: %s' % (code, error_line(tmp / 'err.txt'))))
    print('  %-42s %8.2f s  %6.1f MiB' % (label, result.median() or 0.0, result.runs[-1].rss_mib), flush=True)
    return result


# ---------------------------------------------------------------- report

def fmt(value, pattern):
    return '-' if value is None else pattern % value


def table_row(result, ours_median):
    median = result.median()
    last = result.last()
    if result.note and median is None:
        return '%-42s %4d  %s' % (result.label, len(result.runs), result.note)
    ratio = median / ours_median if median is not None and ours_median and result.label != OURS else None
    return '%-42s %4d  %9s  %8s  %9s  %10s  %6s' % (
        result.label, len(result.runs), fmt(median, '%.2f'), fmt(ratio, '%.1f') if result.label != OURS else '1.0',
        fmt(last.rss_mib if last else None, '%.1f'), fmt(last.soap_calls if last else None, '%d'), fmt(last.hosts if last else None, '%d'))


def print_table(delay, topology, results, raw, startup):
    ours = results[0]
    print('\n== SOAP latency %d ms; vcsim %s ==' % (delay, topology))
    print('%-42s %4s  %9s  %8s  %9s  %10s  %6s' % ('source', 'runs', 'median s', 'x ours', 'peak MiB', 'SOAP calls', 'hosts'))
    for result in results:
        print(table_row(result, ours.median()))
    print('%-42s %4d  %9s  %8s  %9s  %10s  %6s' % (raw.label, len(raw.runs), fmt(raw.median(), '%.2f'), '-', '-',
                                                   fmt(raw.last().soap_calls, '%d'), '-'))
    for result in startup:
        print('%-42s %4d  %9s  %8s  %9s  %10s  %6s' % (result.label, len(result.runs), fmt(result.median(), '%.2f'), '-',
                                                       fmt(result.last().rss_mib, '%.1f'), '-', '-'))
    if ours.median() is not None:
        base = raw.median() + startup[0].median()
        print('ours / (raw + start-up) = %.2f / (%.2f + %.2f) = %.2f' % (ours.median(), raw.median(), startup[0].median(), ours.median() / base))


def verdicts(by_delay, raw, startup, small, topology):
    """The closing facts: each target, holds or not, with its numbers."""
    print('\n== targets ==')
    for delay, results in by_delay.items():
        ours = results[0]
        if ours.median() is None:
            print('latency %d ms: our plugin failed: %s' % (delay, ours.note))
            continue
        ratio = ours.median() / (raw[delay].median() + startup[0].median())
        print('latency %d ms: ours <= %.0fx (raw + start-up): %s (%.2fx)' % (delay, TARGET_VS_BASELINE, holds(ratio <= TARGET_VS_BASELINE), ratio))
        for result in results[1:]:
            if result.median() is not None:
                print('latency %d ms: ours %.1fx faster than %s' % (delay, result.median() / ours.median(), result.label))
        rss_vs_anchors(delay, ours, results[1:])
    zero = by_delay.get(0)
    if zero and zero[0].median() is not None:
        vm_anchor = next((r for r in zero[1:] if r.label == VM_ANCHOR), None)
        if vm_anchor is None or vm_anchor.median() is None:
            print('ours >= %.0fx faster than %s at 0 ms: not measured (%s)' % (
                TARGET_VS_VM_ANCHOR, VM_ANCHOR, vm_anchor.note if vm_anchor else 'anchors not run'))
        else:
            speedup = vm_anchor.median() / zero[0].median()
            print('ours >= %.0fx faster than %s at 0 ms on %s: %s (%.1fx)' % (
                TARGET_VS_VM_ANCHOR, VM_ANCHOR, topology, holds(speedup >= TARGET_VS_VM_ANCHOR), speedup))
    soap_constant(by_delay, small)


def rss_vs_anchors(delay, ours, anchor_results):
    measured = [r for r in anchor_results if r.good()]
    if not measured:
        return
    ours_rss = max(run.rss_mib for run in ours.good())
    higher = ['%s %.1f' % (r.label, max(run.rss_mib for run in r.good())) for r in measured
              if max(run.rss_mib for run in r.good()) < ours_rss]
    print('latency %d ms: our peak RSS (%.1f MiB) <= each anchor\'s: %s%s' % (
        delay, ours_rss, holds(not higher), '' if not higher else ' (lower: %s MiB)' % ', '.join(higher)))


def soap_constant(by_delay, small):
    big = next(iter(by_delay.values()))[0].good()
    if not big or small is None or not small.good():
        print('our SOAP calls constant: not measured')
        return
    big_run, small_run = big[-1], small.good()[-1]
    print('our SOAP calls constant: %s (large estate %d: %s; small estate %d: %s)' % (
        holds(big_run.soap_calls == small_run.soap_calls), big_run.soap_calls, methods(big_run.by_method),
        small_run.soap_calls, methods(small_run.by_method)))


def methods(by_method):
    return ', '.join('%s %d' % item for item in sorted(by_method.items()))


def holds(condition):
    return 'holds' if condition else 'DOES NOT HOLD'


# ---------------------------------------------------------------- main

def measure_delay(delay, vcsim, sources, properties, tmp, args, previous):
    """Results of every source at one latency (ours first), and the raw baseline's."""
    vcsim.set_delay(delay)
    print('\n-- SOAP latency %d ms --' % delay, flush=True)
    raw = measure_raw(vcsim, properties, args.runs)
    results = [measure(sources[0], vcsim, tmp, args, warm_up=True)]
    for source in sources[1:]:
        predicted = predicted_seconds(previous.get(source.label), delay)
        if delay and predicted is not None and predicted > args.timeout:
            results.append(Result(source.label, note='not run: its 0 ms run predicts %.0f s here (%d SOAP calls x %d ms), over --timeout %.0f' % (
                predicted, previous[source.label].last().soap_calls, delay, args.timeout)))
            continue
        results.append(measure(source, vcsim, tmp, args))
    return results, raw


def prepare(args, tmp):
    """(sources, startup results, notes): ours, then the anchors that can run."""
    collections = args.collections_path or snapshot_collection(tmp)
    if not (collections / 'ansible_collections' / 'multihv' / 'cloud').is_dir():
        raise SystemExit('%s has no multihv.cloud: run `make install`' % collections)
    sources = [Source(OURS, 'multihv.cloud.nodes', 'bench.multihv.yml', OUR_BIN, str(collections), anchor=False)]
    notes = []
    print('measuring ansible-inventory start-up', flush=True)
    startup = [measure_startup('ansible-inventory start-up (.venv)', OUR_BIN, tmp, args.runs)]
    if not args.no_anchors:
        bin_dir, venv_notes = ensure_bench_venv(args.bench_venv, tmp)
        notes.extend(venv_notes)
        if bin_dir is None:
            notes.append('every anchor is unavailable: no virtualenv for them')
        else:
            notes.append('anchors run with ' + bench_venv_facts(bin_dir))
            sources.extend(anchors(bin_dir, tmp))
            startup.append(measure_startup('ansible-inventory start-up (bench venv)', bin_dir, tmp, args.runs))
    return sources, startup, notes, collections


def main(argv=None):
    args = parse_args(argv)
    if not VCSIM.exists():
        print('%s is missing: run `make lab-up` (it builds the simulator)' % VCSIM, file=sys.stderr)
        return 2
    started = time.monotonic()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix='multihv-bench-vsphere-'))
    try:
        rss_floor(tmp)
        sources, startup, notes, collections = prepare(args, tmp)
        properties = driver_properties(collections)
        by_delay, raw, previous = {}, {}, {}
        print('\nstarting vcsim: %s' % args.topology, flush=True)
        with Vcsim(args.topology, tmp / 'vcsim-large') as vcsim:
            for delay in args.delays:
                by_delay[delay], raw[delay] = measure_delay(delay, vcsim, sources, properties, tmp, args, previous)
                previous = dict((result.label, result) for result in by_delay[delay])
        print('\nstarting vcsim: %s' % SMALL, flush=True)
        with Vcsim(SMALL, tmp / 'vcsim-small') as vcsim:
            small = measure(sources[0], vcsim, tmp, args, warm_up=True)
        print('\n'.join([''] + notes))
        for delay, results in by_delay.items():
            print_table(delay, args.topology, results, raw[delay], startup)
        verdicts(by_delay, raw, startup, small, args.topology)
        print('\nthe benchmark took %.0f s' % (time.monotonic() - started))
    finally:
        if args.keep:
            print('\nkept %s' % tmp)
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    return 0


if __name__ == '__main__':
    sys.exit(main())
