"""Faults for the fault suite: a controller (ansible-playbook running one module task) that is killed
with SIGKILL, with its whole process group, as AWX loses a job's pod; optionally paused first at an
exact step by the test-only hook in support/fault_hook (see its sitecustomize)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import time

from support.lab import REPO, wait_for

HOOK = pathlib.Path(__file__).resolve().parent / 'fault_hook'
MODULE_UTILS = 'ansible_collections.multihv.cloud.plugins.module_utils.'


def descendants(pid: int) -> list[int]:
    """Every process below pid, children before their parents' siblings' children."""
    children: dict[int, list[int]] = {}
    for stat in pathlib.Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Still a live process (not gone, not a zombie waiting for its parent)?"""
    try:
        state = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


def freeze_incoming(name: str, timeout: float = 120) -> int:
    """SIGSTOP the QEMU that waits for an incoming migration of guest `name` the moment it appears, and
    return its pid (the caller thaws it with SIGCONT whatever happens). Only processes started after the
    call are read (pids wrap: by set, not by number), so that each look costs about a millisecond: a small
    block migration can end within a tenth of a second of its target starting."""
    existing = set(os.listdir('/proc'))
    marker = f'guest={name},'.encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir('/proc'):
            if entry in existing or not entry.isdigit():
                continue
            try:
                args = pathlib.Path(f'/proc/{entry}/cmdline').read_bytes()
            except OSError:
                continue
            if marker in args and b'-incoming' in args and b'qemu-system' in args:
                os.kill(int(entry), signal.SIGSTOP)
                return int(entry)
        time.sleep(0.001)
    raise AssertionError(f'no target QEMU of {name} appeared within {timeout} s')


# Controllers not yet ended: scrub kills what a failed test left running.
STARTED: list = []


class Controller:
    """One ansible-playbook run of `module` with `args`, started in a session of its own. pause: a step
    where the hook pauses it (see fault_hook), for pause_seconds when given (a slow step), else until
    resume() or kill(). record: its result, failed or not, is saved for result()."""

    def __init__(self, tmp_path: pathlib.Path, module: str, args: dict, pause: str | None = None, name: str = 'run',
                 pause_seconds: float | None = None, record: bool = False):
        self.mark = tmp_path / f'{name}.paused'
        self.saved = tmp_path / f'{name}.json'
        tasks = [{module: args}]
        if record:
            tasks = [{'name': 'the run', module: args, 'register': 'outcome', 'ignore_errors': True},
                     {'ansible.builtin.copy': {'content': '{{ outcome | to_json }}', 'dest': str(self.saved), 'mode': '0600'}}]
        playbook = tmp_path / f'{name}.yml'
        playbook.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]))
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='default')
        if pause:
            env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(HOOK), env.get('PYTHONPATH')])),
                       MULTIHV_TEST_PAUSE=MODULE_UTILS + pause, MULTIHV_TEST_PAUSE_MARK=str(self.mark))
            if pause_seconds is not None:
                env['MULTIHV_TEST_PAUSE_SECONDS'] = str(pause_seconds)
        self.log = tmp_path / f'{name}.log'
        with open(self.log, 'w', encoding='utf-8') as out:
            self.process = subprocess.Popen(['ansible-playbook', str(playbook)], cwd=REPO,
                                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.started = time.monotonic()
        STARTED.append(self)

    def paused(self, timeout: float = 120):
        """Wait until the hook paused the module at its step (fail if the run ended first)."""
        def there():
            if self.process.poll() is not None:
                raise AssertionError(f'the run ended before it reached its pause:\n{self.output()}')
            return self.mark.exists()
        wait_for(there, timeout, f'the controller to pause ({self.mark.name})')
        return self

    def resume(self):
        """Let a paused run go on (the hook waits for its mark's .go file)."""
        pathlib.Path(str(self.mark) + '.go').touch()

    def kill(self):
        """SIGKILL the controller and every process it started, as a lost pod ends them all: ansible's
        workers start sessions of their own, so the module's Python is found as a descendant, not a group.
        A run that already ended is left alone (its pid may be another process's by now)."""
        if self.process.poll() is not None:
            return
        doomed = descendants(self.process.pid) + [self.process.pid]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        wait_for(lambda: not any(alive(pid) for pid in doomed), 30, 'the killed controller processes to go')

    def wait(self, timeout: float = 600) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors='replace')[-4000:]

    def result(self, timeout: float = 600) -> dict:
        """The result a run started with record=True saved, once it ended."""
        self.wait(timeout)
        assert self.saved.exists(), f'run {self.mark.stem} saved no result:\n{self.output()}'
        return json.loads(self.saved.read_text())


def scrub(lab, tmp_path):
    """After a fault test, pass or fail: every domain and instance file of the instances its registry
    knows goes, so that a failure leaves nothing for the next test to trip over."""
    from support.cloud import registry_rows  # pylint: disable=import-outside-toplevel
    from support.invariants import instance_files  # pylint: disable=import-outside-toplevel
    from support.lab import remove_domains  # pylint: disable=import-outside-toplevel
    while STARTED:
        STARTED.pop().kill()
    if not (tmp_path / 'registry.sqlite').exists():
        return
    rows = registry_rows(tmp_path, 'SELECT uuid, name FROM instances')
    remove_domains([lab.uri(host) for host in lab.hosts], [name for _uuid, name in rows])
    known = set(inst_uuid for inst_uuid, _name in rows)
    for inst_uuid, _host, path in instance_files(lab):
        if inst_uuid in known:
            path.unlink(missing_ok=True)
    with sqlite3.connect(tmp_path / 'registry.sqlite') as db:
        db.execute('DELETE FROM locks')  # the killed runs' leases: the records' clean-up comes next


# The lease lifetime the fault tests' cloud file sets (registry.lease_seconds): a killed controller's
# lease ends within it, and the reconciler takes its work as interrupted after two of them.
LEASE_SECONDS = 10
SETTLED_AFTER = 2 * LEASE_SECONDS + 2


def short_leases(lab, tmp_path, cloud: dict, vcenter_timeout: int | None = None, lease_seconds: int = LEASE_SECONDS) -> dict:
    """The cloud fixture's options with a copy of the lab's cloud file whose leases live lease_seconds
    (and whose vCenter calls give up after vcenter_timeout seconds, when given)."""
    import yaml  # pylint: disable=import-outside-toplevel
    data = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    data.setdefault('registry', {})['lease_seconds'] = lease_seconds
    for vcenter in data.get('vcenters', []) if vcenter_timeout else []:
        vcenter['timeout'] = vcenter_timeout
    path = tmp_path / 'short-leases.yml'
    path.write_text(yaml.safe_dump(data))
    return dict(cloud, cloud_file=str(path))


# -- HA faults: a libvirtd that stops answering while its host lives on, HA passes at once -----------


@contextlib.contextmanager
def frozen_libvirtd(lab, host: str):
    """SIGSTOP the libvirtd of lab host `host` for the block (it stops answering; its guests, virtlogd and
    its storage heartbeat writer live on), SIGCONT it after, whatever happens. Only a pid that is the
    libvirtd of this lab's host (its pid file, in the host's mount namespace) is signalled."""
    host_dir = pathlib.Path(lab.hosts[host]['dir'])
    pid = int((host_dir / 'libvirtd.pid').read_text())
    namespace = (host_dir / 'mntns').read_text().strip()
    assert os.readlink(f'/proc/{pid}/ns/mnt') == namespace, f'pid {pid} is not in the namespace of lab host {host}'
    assert pathlib.Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')[0].endswith(b'libvirtd'), f'pid {pid} is not a libvirtd'
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def heartbeat(lab, host: str) -> float | None:
    """The time lab host `host`'s storage heartbeat file says, read directly (None when there is none)."""
    path = pathlib.Path(lab.info['shared_instance_path']) / f'multihv-heartbeat-{host}'
    try:
        return float(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
