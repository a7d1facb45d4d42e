"""Access to the running lab (`make lab-up`; `make test` starts it) for integration tests."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import time
import uuid

import pytest

from support import guest

from support import REPO
LAB_DIR = pathlib.Path(os.environ.get('MULTIHV_LAB_DIR', REPO / '.lab'))
# The lab playbook (its role in tests/lab/roles, found next to it): test equipment, not in the collection.
LAB_PLAYBOOK = REPO / 'tests' / 'lab' / 'lab.yml'
LAB_ROLES = REPO / 'tests' / 'lab' / 'roles'


def run(*cmd: str, timeout: float = 300, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command from the repo root, output captured; fail the test with it."""
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                            env=dict(os.environ, **(env or {})))
    if check and result.returncode != 0:
        pytest.fail(f'{" ".join(cmd)} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}')
    return result


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll until predicate() is truthy; return its value or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f'timed out after {timeout} s waiting for {what}')
        time.sleep(interval)


class Lab:
    """The lab as lab.json (written by the lab role) describes it."""

    def __init__(self, lab_dir: pathlib.Path):
        self.dir = lab_dir
        self.info = json.loads((lab_dir / 'lab.json').read_text())
        self.hosts = {h['name']: h for h in self.info['kvm_hosts']}

    def uri(self, host: str) -> str:
        return self.hosts[host]['uri']

    @property
    def bridge(self) -> str:
        """The Linux bridge (no uplink, no host address) guests' NICs go on: `bridge:<this>` in a network's backing."""
        return self.info['bridge']

    def connect(self, host: str):
        import libvirt  # pylint: disable=import-outside-toplevel
        return libvirt.open(self.uri(host))

    def domain_type(self) -> str:
        return domain_type(self.uri(next(iter(self.hosts))))

    def role_vars(self) -> list[str]:
        """-e options that bring the lab role back to this lab's size and ports."""
        first = self.info['kvm_hosts'][0]
        vcsim = self.info['vcsim']
        values = {'lab_kvm_hosts': len(self.hosts), 'lab_kvm_base_port': first['port'],
                  'lab_kvm_migration_base_port': first['migration_port'], 'lab_vcsim_port': vcsim['port'],
                  'lab_vcsim_control_port': vcsim['control_url'].rsplit(':', 1)[1], 'lab_vcsim_datacenters': vcsim['datacenters'],
                  'lab_vcsim_clusters': vcsim['clusters'], 'lab_vcsim_hosts_per_cluster': vcsim['hosts_per_cluster'],
                  'lab_vcsim_vms': vcsim['vms'], 'lab_vcsim_delay_ms': vcsim['delay_ms'], 'lab_bridge': self.info['bridge'],
                  'lab_debian_image': str(self.info.get('debian_image', True)).lower()}
        return [arg for key, value in values.items() for arg in ('-e', f'{key}={value}')]

    def make(self, *targets: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run('make', '--no-print-directory', *targets, f'LAB_DIR={self.dir}', timeout=timeout)

    def host_action(self, action: str, host: str):
        """Power loss (fail) or boot (restore) of a KVM lab host through the lab playbook, as `make lab-fail` and
        `make lab-restore` do (without make's own environment). Checked with kvm-host status, and after a restore
        until its libvirtd answers."""
        run('ansible-playbook', str(LAB_PLAYBOOK), '-e', f'lab_dir={self.dir}', '-e', f'lab_action={action}', '-e', f'lab_host={host}')
        status = subprocess.run([str(self.dir / 'bin' / 'kvm-host'), 'status', self.hosts[host]['dir']], capture_output=True, text=True,
                                check=False, timeout=60).stdout.strip()
        assert status == ('down' if action == 'fail' else 'running'), f'{host} is {status} after lab_action={action}'
        if action == 'restore':
            wait_for(lambda: self.answers(host), 30, f'{host} to answer')

    def answers(self, host: str) -> bool:
        """Does the host's libvirtd take connections?"""
        import libvirt  # pylint: disable=import-outside-toplevel
        try:
            self.connect(host).close()
            return True
        except libvirt.libvirtError:
            return False

    @contextlib.contextmanager
    def power_loss(self, host: str):
        """The host loses power for the block and boots again after (its guests shut off). When the block
        fails, every domain left on the host goes too, so that the next test finds it empty."""
        self.host_action('fail', host)
        try:
            yield
        except BaseException:
            self.host_action('restore', host)
            conn = self.connect(host)
            try:
                names = [d.name() for d in conn.listAllDomains()]
            finally:
                conn.close()
            remove_domains([self.uri(host)], names)
            raise
        self.host_action('restore', host)


class Guests:
    """Lab guests made by one test, destroyed and removed after it."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.made: list[tuple[str, pathlib.Path]] = []

    def start(self, host: str, storage: str = 'shared') -> tuple[str, pathlib.Path]:
        """Boot a guest on host with its disk (a qcow2 overlay on the lab image) and its
        serial log in the shared instance directory or in the host's local one.
        Returns the domain name and the serial log's path as this machine sees it."""
        name = f'test-{uuid.uuid4().hex[:8]}'
        if storage == 'shared':
            inst = pathlib.Path(self.lab.info['shared_instance_path']) / name
            seen_as = inst
        else:
            # The host sees its local directory at local_instance_path; this machine
            # reaches the same files through the host's directory.
            inst = pathlib.Path(self.lab.hosts[host]['local_dir']) / name
            seen_as = pathlib.Path(self.lab.info['local_instance_path']) / name
        inst.mkdir(parents=True)
        self.made.append((name, inst))
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2',
            '-b', self.lab.info['images']['tick_qcow2'], str(inst / 'disk.qcow2'))
        xml = guest.domain_xml(name, str(seen_as / 'disk.qcow2'), str(seen_as / 'serial.log'),
                               domain_type=self.lab.domain_type())
        conn = self.lab.connect(host)
        try:
            conn.defineXML(xml).create()
        finally:
            conn.close()
        return name, inst / 'serial.log'

    def cleanup(self):
        remove_domains([self.lab.uri(host) for host in self.lab.hosts], [name for name, _inst in self.made])
        for _name, inst in self.made:
            shutil.rmtree(inst, ignore_errors=True)


def domain_type(uri: str) -> str:
    """kvm where the host at uri can run KVM guests (/dev/kvm works), qemu (TCG) otherwise."""
    import libvirt  # pylint: disable=import-outside-toplevel
    conn = libvirt.open(uri)
    try:
        conn.getDomainCapabilities(None, 'x86_64', None, 'kvm')
        return 'kvm'
    except libvirt.libvirtError:
        return 'qemu'
    finally:
        conn.close()


def remove_domains(uris, names):
    """Destroy and undefine the domains called names wherever they are among the hosts at uris;
    a host that is down has nothing to remove."""
    import libvirt  # pylint: disable=import-outside-toplevel
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # lookups of domains elsewhere fail, as expected
    for uri in uris:
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            continue
        try:
            for name in names:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        finally:
            conn.close()


def serial(log: pathlib.Path) -> list[guest.Boot]:
    return guest.parse_serial(log.read_text(errors='replace')) if log.exists() else []


def last_tick(log: pathlib.Path) -> int:
    boots = serial(log)
    return boots[-1].ticks[-1] if boots and boots[-1].ticks else 0


def qemu_processes(name: str) -> dict[int, list[bytes]]:
    """{pid: arguments} of the QEMU processes of domain `name` on this machine (in any namespace):
    one, or two while it migrates between lab hosts (the target's has -incoming)."""
    found = {}
    for cmdline in pathlib.Path('/proc').glob('[0-9]*/cmdline'):
        try:
            args = cmdline.read_bytes().split(b'\0')
        except OSError:
            continue
        if args and b'qemu-system' in args[0] and f'guest={name},'.encode() in b','.join(args) + b',':
            found[int(cmdline.parent.name)] = args
    return found


def incoming_qemu(name: str) -> int | None:
    """The pid of the QEMU waiting for an incoming migration of guest `name`, or None."""
    return next((pid for pid, args in qemu_processes(name).items() if b'-incoming' in args), None)


def qemu_running(name: str) -> bool:
    """Is a QEMU process for domain `name` alive on this machine (in any namespace)?"""
    return bool(qemu_processes(name))


def ansible_module(module: str, args: dict, *, check: bool = False, diff: bool = False, env: dict | None = None,
                   expect_failure: bool = False, timeout: float = 300) -> dict:
    """Run one module with the `ansible` command (a real Ansible run) and return its result."""
    cmd = ['ansible', 'localhost', '-m', module, '-a', json.dumps(args)]
    cmd += ['--check'] if check else []
    cmd += ['--diff'] if diff else []
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
                            env=dict(os.environ, ANSIBLE_STDOUT_CALLBACK='minimal', **(env or {})))
    marker = result.stdout.rfind('localhost | ')
    if marker < 0 or ' => ' not in result.stdout[marker:]:
        pytest.fail(f'no result from {module}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    status, payload = result.stdout[marker:].split(' => ', 1)
    data = json.loads(payload)
    data['_output'] = result.stdout  # what the user saw, diffs included
    failed = 'FAILED' in status
    if failed != expect_failure:
        pytest.fail(f'{module} {"failed" if failed else "succeeded"} unexpectedly: {json.dumps(data)[:3000]}')
    return data
