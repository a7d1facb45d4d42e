"""Benchmark: `ansible-inventory --list` of the multihv.cloud.nodes plugin over 20 KVM hosts, one of which does not
answer. The design says a dead host is reported down within its timeout, in parallel with the others; the target is
the whole inventory in under 3 s with `timeout: 2` on each host.

What it measures: for each kind of unreachable host, the wall time until the inventory JSON is complete on stdout and
until the process exits (a process that prints its answer but stays behind, waiting for a stuck connection, is
reported as such), the peak RSS of the ansible-inventory process (its ru_maxrss, read by a small launcher:
support.peak_rss), the hosts in group
state_down and why each is down. Each scenario runs --runs times (default 3).

What it starts: a TCP listener on 127.0.0.1 that accepts connections and never answers (a stuck libvirtd; it is
closed at the end) and ansible-inventory processes, one at a time, with .venv's ansible-core and a snapshot of this
checkout's plugins/ taken at start (--collections-path: another build, such as .build/collections). It expects the lab
(`make lab-up`): 20 real libvirt daemons are too heavy for this machine, so the inventory names the lab's 2 hosts
19 times (kvm-b01..kvm-b19, alternately on each host's URI: 19 real round trips against real libvirtd) plus
kvm-b20-dead, which is one of:
  stuck    the listener above: TCP connects, the libvirt RPC never gets an answer;
  closed   a loopback port nothing listens on: the connection is refused at once;
  none     absent: the 19 answering hosts alone, the baseline the other two are compared with.
and each of those with two instance path layouts:
  shared   every name has the lab's local_instance_path, as a lab host has (names on one host share a path);
  own      every name has its own empty directory under the temporary directory (it is visible to the lab's
           libvirt daemons, whose mount namespaces share /tmp), so that no two probes of one host share a path.
The driver measures disk through a transient directory pool on instance_path, and libvirt refuses a second pool
on a path that already has one: with shared paths, names on one host collide, as two inventory runs at once
against one real host would. Comparing the two layouts shows that cost apart from the unreachable host's.

How to read the output: one line per run, then a table per scenario: `answer s` (JSON complete) and `exit s`
(process gone) as medians, and whether each is under 3 s; then each state_down host with its reason (in how many
runs). In scenario `none` state_down should be empty; in the others it should hold kvm-b20-dead only. These are
facts of one run on a noisy machine, not a test.

Run: .venv/bin/python tests/benchmarks/inventory_kvm_unreachable.py [--runs N]   (after `make install lab-up`)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tests'))

from support import peak_rss  # noqa: E402  pylint: disable=wrong-import-position
from support.inventory_runs import child_env, snapshot_collection  # noqa: E402  pylint: disable=wrong-import-position

LAB_JSON = REPO / '.lab' / 'lab.json'
OUR_BIN = REPO / '.venv' / 'bin'
REAL_NAMES = 19
DEAD = 'kvm-b20-dead'
HOST_TIMEOUT = 2
TARGET_SECONDS = 3.0
UNREACHABLE_KINDS = ('none', 'closed', 'stuck')
PATH_LAYOUTS = ('shared', 'own')


@dataclasses.dataclass
class Run:
    answer_s: float | None = None
    exit_s: float | None = None
    rss_mib: float = 0.0
    down: dict = dataclasses.field(default_factory=dict)
    hosts: int = 0
    note: str = ''


# ---------------------------------------------------------------- command line and lab

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--runs', type=int, default=3, help='runs per scenario (default 3)')
    parser.add_argument('--exit-grace', type=float, default=10.0,
                        help='seconds a run may take to exit once its answer is complete, before the stuck host lets go (default 10)')
    parser.add_argument('--timeout', type=float, default=60.0, help='seconds before a run with no answer is killed (default 60)')
    parser.add_argument('--collections-path', type=pathlib.Path,
                        help='run the multihv.cloud of this collections path (.build/collections after `make install`, another checkout\'s '
                             'build...) rather than a snapshot of this checkout')
    parser.add_argument('--keep', action='store_true', help='keep the temporary directory (sources, outputs)')
    return parser.parse_args(argv)


def load_lab():
    if not LAB_JSON.exists():
        return None
    lab = json.loads(LAB_JSON.read_text())
    return lab if len(lab.get('kvm_hosts', ())) >= 1 and lab.get('local_instance_path') else None


def probe_host(libvirt, uri, box):
    """Open uri and ask its host name; box gets 'hostname' or 'error'."""
    try:
        conn = libvirt.open(uri)
        box['hostname'] = conn.getHostname()
        conn.close()
    except libvirt.libvirtError as exc:
        box['error'] = exc.get_error_message()


def check_lab_hosts(lab):
    """(name, None or why it does not answer) of each lab host, each tried for 5 s at most."""
    import libvirt  # pylint: disable=import-outside-toplevel
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    answers = []
    for host in lab['kvm_hosts']:
        box = {}
        worker = threading.Thread(target=probe_host, args=(libvirt, host['uri'], box), daemon=True)
        worker.start()
        worker.join(5)
        answers.append((host['name'], box.get('error') or (None if 'hostname' in box else 'no answer within 5 s')))
    return answers


# ---------------------------------------------------------------- the unreachable host

class StuckServer:
    """A loopback TCP listener that accepts every connection and never sends a byte: a stuck libvirtd."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, name='stuck-libvirtd', daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.thread.join(2)
        self.release()
        self.sock.close()

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, _address = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.held.append(conn)

    def release(self):
        """Close the connections held so far (as a stuck host that finally resets them); keep listening."""
        with self.lock:
            held, self.held = self.held, []
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
        return len(held)


def closed_port():
    """A loopback port nothing listens on (bound by the system, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- sources

def kvm_hosts(lab, dead_uri, layout, tmp):
    """The inline cloud's kvm_hosts: REAL_NAMES names alternating over the lab's hosts, then the dead one (if any)."""
    hosts = []
    for index in range(1, REAL_NAMES + 1):
        name = 'kvm-b%02d' % index
        path = lab['local_instance_path']
        if layout == 'own':
            path = str(tmp / 'instances' / name)
            os.makedirs(path, exist_ok=True)
        real = lab['kvm_hosts'][(index - 1) % len(lab['kvm_hosts'])]
        hosts.append({'name': name, 'uri': real['uri'], 'timeout': HOST_TIMEOUT, 'instance_path': path})
    if dead_uri:
        hosts.append({'name': DEAD, 'uri': dead_uri, 'timeout': HOST_TIMEOUT, 'instance_path': lab['local_instance_path']})
    return hosts


def write_source(lab, kind, layout, uris, tmp):
    cloud = {'kvm_hosts': kvm_hosts(lab, uris.get(kind), layout, tmp),
             'registry': {'url': 'sqlite:///%s' % (tmp / ('registry-%s-%s.sqlite' % (kind, layout)))}}
    path = tmp / ('%s-%s.multihv.yml' % (kind, layout))
    path.write_text(json.dumps({'plugin': 'multihv.cloud.nodes', 'cloud': cloud}, indent=2))  # JSON is YAML
    return path


# ---------------------------------------------------------------- one run

class Child:
    """An ansible-inventory process whose stdout is read as it comes (to time the complete answer) and whose exit is
    reaped on a thread (to time it), started by a small launcher that reads its own peak RSS (support.peak_rss: wait4
    on a child of this process would start the figure at this process's size)."""

    def __init__(self, argv, env, cwd, err_path):
        self.start = time.perf_counter()
        self.report = pathlib.Path(str(err_path) + '.peak')
        with open(err_path, 'wb') as err:
            self.proc = subprocess.Popen(peak_rss.command(argv, self.report), env=env, cwd=cwd, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                         stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        self.data = bytearray()
        self.answer_at = None
        self.exit_at = None
        self.status = None
        self.rss_mib = None
        self.answered = threading.Event()
        self.exited = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reaper = threading.Thread(target=self._reap, daemon=True)
        self.reader.start()
        self.reaper.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            self.data.extend(chunk)
            if self.answer_at is None and self._complete():
                self.answer_at = time.perf_counter()
                self.answered.set()
        self.answered.set()

    def _complete(self):
        try:
            json.loads(bytes(self.data))
        except ValueError:
            return False
        return True

    def _reap(self):
        _pid, self.status, _usage = os.wait4(self.proc.pid, 0)
        self.exit_at = time.perf_counter()
        self.proc.returncode = os.waitstatus_to_exitcode(self.status)
        self.rss_mib = peak_rss.peak_mib(self.report)
        self.exited.set()

    def kill(self):
        if not self.exited.is_set():
            peak_rss.kill(self.proc)
        self.exited.wait(10)
        self.reader.join(5)
        self.proc.stdout.close()


def wait_for_exit(child, stuck, args):
    """Wait for the child to answer and exit; a note when it needs the stuck host to let go, or killing."""
    if not child.answered.wait(args.timeout):
        child.kill()
        return 'no answer within %.0f s: killed' % args.timeout
    if child.exited.wait(args.exit_grace):
        return ''
    if stuck is not None:
        released = stuck.release()
        if child.exited.wait(10):
            return 'answered, then did not exit until the stuck host closed its %d connection(s), %.1f s after start' % (
                released, child.exit_at - child.start)
    child.kill()
    return 'answered but had not exited %.0f s later: killed' % args.exit_grace


def reasons_of(data):
    """{down host: why} from an `ansible-inventory --list` answer."""
    hostvars = data.get('_meta', {}).get('hostvars', {})
    down = {}
    for name in data.get('state_down', {}).get('hosts', ()):
        reason = hostvars.get(name, {}).get('multihv_reason')
        if isinstance(reason, dict):  # ansible-inventory writes an unsafe string as {"__ansible_unsafe": "..."}
            reason = reason.get('__ansible_unsafe')
        down[name] = str(reason or 'no reason given')
    return down


def host_count(data):
    hosts = set(data.get('_meta', {}).get('hostvars', {}))
    for name, group in data.items():
        if name != '_meta' and isinstance(group, dict):
            hosts.update(group.get('hosts', ()))
    return len(hosts)


def run_once(path, env, tmp, stuck, args):
    child = Child([str(OUR_BIN / 'ansible-inventory'), '-i', str(path), '--list'], env, str(tmp), tmp / 'err.txt')
    note = wait_for_exit(child, stuck, args)
    child.reader.join(5)
    run = Run(note=note)
    if child.answer_at is not None:
        run.answer_s = child.answer_at - child.start
        (tmp / 'out.json').write_bytes(bytes(child.data))
        data = json.loads(bytes(child.data))
        run.down, run.hosts = reasons_of(data), host_count(data)
    if child.exited.is_set() and not note:
        run.exit_s = child.exit_at - child.start
    if child.rss_mib is not None:
        run.rss_mib = child.rss_mib
    if child.proc.returncode and not note:
        run.note = 'exit %d: %s' % (child.proc.returncode, last_line(tmp / 'err.txt'))
    with contextlib.suppress(OSError):
        child.proc.stdout.close()
    return run


def last_line(path):
    lines = [line.strip() for line in pathlib.Path(path).read_text(errors='replace').splitlines() if line.strip()]
    return (lines[-1] if lines else 'no message')[:300]


# ---------------------------------------------------------------- report

def short_reason(name, reason):
    """A reason without the host's name and URI or a probe pool's random name, so that equal failures group together."""
    return re.sub(r'multihv-probe-[0-9a-f]+', 'multihv-probe-*', re.sub(r'^KVM host %s at \S+ ' % re.escape(name), '', reason))


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value):
    return '-' if value is None else '%.2f' % value


def under(value):
    return '-' if value is None else ('yes' if value < TARGET_SECONDS else 'NO')


def print_report(results):
    print('\n== 20 KVM hosts (19 answering names on the lab\'s hosts + %s), timeout %d s each ==' % (DEAD, HOST_TIMEOUT))
    print('%-11s %-7s %4s  %9s  %7s  %7s  %6s  %8s  %5s  %s' % (
        'unreachable', 'paths', 'runs', 'answer s', '< 3 s', 'exit s', '< 3 s', 'peak MiB', 'hosts', 'state_down (runs)'))
    for (kind, layout), runs in results.items():
        answer, exit_s = median(r.answer_s for r in runs), median(r.exit_s for r in runs)
        exit_under = 'NO' if any(r.exit_s is None for r in runs) else under(exit_s)
        counts = collections.Counter(name for run in runs for name in run.down)
        down = ', '.join('%s (%d)' % (name, count) for name, count in sorted(counts.items())) or 'none'
        print('%-11s %-7s %4d  %9s  %7s  %7s  %6s  %8.1f  %5s  %s' % (
            kind, layout, len(runs), fmt(answer), under(answer), fmt(exit_s), exit_under,
            max(r.rss_mib for r in runs), max(r.hosts for r in runs), down))
    print('\n== why hosts are down (scenario: reason: hosts) ==')
    for (kind, layout), runs in results.items():
        grouped = collections.defaultdict(set)
        for run in runs:
            for name, reason in run.down.items():
                grouped[short_reason(name, reason)].add(name)
        for reason, names in sorted(grouped.items()):
            print('%s/%s: %s: %s' % (kind, layout, reason[:220], ', '.join(sorted(names))))
        for run in runs:
            if run.note:
                print('%s/%s: %s' % (kind, layout, run.note))


def print_targets(results):
    print('\n== target: the whole inventory under %.0f s with one host unreachable ==' % TARGET_SECONDS)
    for (kind, layout), runs in results.items():
        if kind == 'none':
            continue
        exits = [r.exit_s for r in runs]
        worst = None if None in exits else max(exits)
        expected = all(set(run.down) == {DEAD} for run in runs)
        slowest = 'did not exit on its own in every run' if worst is None else 'slowest exit %.2f s' % worst
        print('%s/%s: %s: %s; state_down is exactly %s in every run: %s' % (
            kind, layout, slowest, 'holds' if worst is not None and worst < TARGET_SECONDS else 'DOES NOT HOLD', DEAD,
            'yes' if expected else 'NO'))


# ---------------------------------------------------------------- main

def run_scenarios(lab, collections_path, tmp, stuck, args):
    uris = {'stuck': 'qemu+tcp://127.0.0.1:%d/system' % stuck.port, 'closed': 'qemu+tcp://127.0.0.1:%d/system' % closed_port()}
    env = child_env(tmp, collections_path)
    results = {}
    for layout in PATH_LAYOUTS:
        for kind in UNREACHABLE_KINDS:
            path = write_source(lab, kind, layout, uris, tmp)
            runs = results.setdefault((kind, layout), [])
            for _index in range(args.runs):
                run = run_once(path, env, tmp, stuck if kind == 'stuck' else None, args)
                runs.append(run)
                print('  %-6s %-6s answer %6s s  exit %6s s  %6.1f MiB  down: %s%s' % (
                    kind, layout, fmt(run.answer_s), fmt(run.exit_s), run.rss_mib, ', '.join(sorted(run.down)) or 'none',
                    '  (%s)' % run.note if run.note else ''), flush=True)
    return results


def main(argv=None):
    args = parse_args(argv)
    lab = load_lab()
    if lab is None:
        print('%s is missing or has no KVM hosts: run `make lab-up`' % LAB_JSON, file=sys.stderr)
        return 2
    for name, problem in check_lab_hosts(lab):
        if problem:
            print('warning: lab host %s does not answer (%s): its names will be down; run `make lab-up`' % (name, problem))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix='multihv-bench-kvm-'))
    try:
        collections_path = args.collections_path or snapshot_collection(tmp)
        with StuckServer() as stuck:
            print('lab hosts: %s; stuck libvirtd on 127.0.0.1:%d' % (', '.join(h['uri'] for h in lab['kvm_hosts']), stuck.port), flush=True)
            results = run_scenarios(lab, collections_path, tmp, stuck, args)
        print_report(results)
        print_targets(results)
    finally:
        if args.keep:
            print('\nkept %s' % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
