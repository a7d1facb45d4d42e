"""The fault suite, infrastructure faults (issue 14 §5): the vCenter stops answering mid-clone, the SQLite
registry stays locked past its busy timeout, the PostgreSQL registry restarts mid-operation. Each test
injects the fault, checks that what the run did was safe (no second copy, nothing lost, an error naming
what was left), ends the fault, runs the reconciler and checks the invariants (support/invariants).

Some faults must strike between two steps of an operation and then let it go on: the run is paused
by the test-only hook of support/fault_hook, whose pause here waits for a file instead of for the kill
(see held_at)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import pathlib
import re
import signal
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from support import invariants
from support.cloud import console_log, registry_rows, vm_name, wait_ticks
from support.faults import SETTLED_AFTER, Controller, scrub, short_leases
from support.lab import ansible_module, qemu_processes, remove_domains, wait_for
from support.registries import PG_URL, private_url, query

# The SQLite registry's busy timeout (engine.BUSY_TIMEOUT_S) and a lock held past it.
BUSY_TIMEOUT = 30
LOCKED_FOR = BUSY_TIMEOUT + 6
VSPHERE_NODE = 'vcsim/DC0/DC0_C0'


@pytest.fixture(autouse=True)
def scrubbed(lab, cloud, tmp_path):  # pylint: disable=unused-argument  # torn down before cloud, while the records are there
    yield
    scrub(lab, tmp_path)


def reconcile(cloud, **args):
    return ansible_module('multihv.cloud.reconcile', dict(cloud, **args))


def url(tmp_path):
    return f'sqlite:///{tmp_path}/registry.sqlite'


def held_at(tmp_path, module, args, pause, name='run'):
    """A Controller paused by the hook at `pause`, let go by release(run)."""
    return Controller(tmp_path, module, args, pause=pause, name=name).paused()


def release(run):
    run.resume()


@contextlib.contextmanager
def ended_after(run):
    """Whatever happens in the block, the run is let go and does not outlive the test (a paused run
    holds its instance's lease: the clean-up could not delete what it booted)."""
    try:
        yield run
    finally:
        release(run)
        if run.process.poll() is None:
            try:
                run.wait(60)
            except subprocess.TimeoutExpired:
                run.kill()


def failed_with(run, timeout=300):
    """The run ended failed; its module's message."""
    assert run.wait(timeout) != 0, f'the run succeeded:\n{run.output()}'
    output = run.log.read_text(errors='replace')
    assert 'FAILED!' in output, output[-3000:]
    return json.loads(output.split('FAILED! => ', 1)[1].splitlines()[0])['msg']


@contextlib.contextmanager
def locked(path):
    """The SQLite registry at path with its write lock held (BEGIN IMMEDIATE), as another process
    stuck in a long transaction holds it; readers go on (WAL)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute('BEGIN IMMEDIATE')
        yield
    finally:
        conn.execute('ROLLBACK')
        conn.close()


# -- (1) the vCenter stops answering mid-clone --------------------------------------------------


def vcsim_pid(lab):
    """The pid of THIS lab's simulator, checked against its command line (other labs run theirs)."""
    pid = int((lab.dir / 'vcsim' / 'pid').read_text())
    args = pathlib.Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\0')
    assert f"127.0.0.1:{lab.info['vcsim']['port']}".encode() in args, f'pid {pid} is not the lab simulator: {args}'
    return pid


def vcsim_control(lab, method, path):
    request = urllib.request.Request(lab.info['vcsim']['control_url'] + path, method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def soap_calls(lab):
    return vcsim_control(lab, 'GET', '/stats')['by_method']


def _vcenter(lab):
    from pyVim.connect import SmartConnect  # pylint: disable=import-outside-toplevel
    vcsim = lab.info['vcsim']
    return SmartConnect(host=vcsim['host'], port=vcsim['port'], user=vcsim['username'], pwd='lab-only-secret',
                        disableSslCertValidation=True)


def _objects(si, kind):
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


@pytest.fixture
def template(lab):
    """conftest's template fixture, but with a connection of its own for the way back: this test stays
    idle past the simulator's keep-alive, and a dropped connection must not leave the lab VM a template."""
    from pyVim.connect import Disconnect  # pylint: disable=import-outside-toplevel
    from pyVim.task import WaitForTask  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim  # pylint: disable=import-outside-toplevel
    si = _vcenter(lab)
    try:
        vm = sorted((v for v in _objects(si, vim.VirtualMachine) if vm_name(v).startswith('DC0_')), key=vm_name)[-1]
        name, host = vm.name, vm.runtime.host.name
        if vm.runtime.powerState == 'poweredOn':
            WaitForTask(vm.PowerOffVM_Task())
        vm.MarkAsTemplate()
    finally:
        Disconnect(si)
    yield name
    si = _vcenter(lab)
    try:
        (vm,) = [v for v in _objects(si, vim.VirtualMachine) if vm_name(v) == name]
        (host,) = [h for h in _objects(si, vim.HostSystem) if h.name == host]
        vm.MarkAsVirtualMachine(pool=host.parent.resourcePool, host=host)
        WaitForTask(vm.PowerOnVM_Task())
    finally:
        Disconnect(si)


def test_vcenter_unreachable_mid_clone(lab, cloud, template, tmp_path):  # pylint: disable=redefined-outer-name
    """vCenter accepts the clone, then stops answering (SIGSTOP) while the build waits for it: the run
    gives up within its timeout, cannot destroy the clone and says so, and keeps the record (building)
    that the reconciler settles once vCenter answers again. Before the fix the record went and the
    clone (not yet marked as the instance) stayed in vCenter, an orphan no pass could explain."""
    # The build's lease ends soon after vCenter cut it off, and a silent vCenter is given up on in 5 s, not 30.
    cloud = short_leases(lab, tmp_path, cloud, vcenter_timeout=5)
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    pid = vcsim_pid(lab)
    vcsim_control(lab, 'PUT', '/delay?ms=700')  # each SOAP call takes a while: the test can act between two
    vcsim_control(lab, 'POST', '/stats/reset')
    stopped = False
    try:
        args = dict(cloud, name='cut-clone', flavor='tiny', image='tmpl', node=VSPHERE_NODE, timeout=5)
        run = Controller(tmp_path, 'multihv.cloud.instance', args)
        clone_seen = wait_for(lambda: soap_calls(lab).get('CloneVM_Task') and soap_calls(lab), 120, 'the clone to be asked for')
        # The next retrieval is the build's first look at the clone task: vCenter answered the clone.
        wait_for(lambda: soap_calls(lab).get('RetrievePropertiesEx', 0) > clone_seen.get('RetrievePropertiesEx', 0), 30,
                 'the build to wait for its clone task', interval=0.05)
        os.kill(pid, signal.SIGSTOP)
        stopped = True
        msg = failed_with(run, 180)
        (inst_uuid, state, node), = registry_rows(tmp_path, "SELECT uuid, state, node FROM instances WHERE name = 'cut-clone'")
        assert (state, node) == ('building', VSPHERE_NODE)
        assert msg.startswith(f'boot of instance cut-clone ({inst_uuid}) on node {VSPHERE_NODE} failed: ') and 'did not answer' in msg
        assert 'could not be destroyed' in msg and msg.endswith(
            f'its record stays in state building with its allocation: once node {VSPHERE_NODE} answers, multihv.cloud.reconcile '
            'destroys whatever VM of it is there and settles the record'), msg
        blind = reconcile(dict(cloud, timeout=5))  # vCenter still silent: nothing about it is changed
        assert not [a for a in blind['actions'] if a['uuid'] == inst_uuid], blind
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        vcsim_control(lab, 'PUT', '/delay?ms=0')
    assert invariants.simulator_vms(lab)['cut-clone'] == 1, 'the clone vCenter made is not there'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - run.started)))
    result = reconcile(cloud)
    assert [(a['kind'], a['uuid']) for a in result['actions']] == [('build', inst_uuid)], result
    assert registry_rows(tmp_path, "SELECT state FROM instances WHERE name = 'cut-clone'") == []
    invariants.assert_hold(lab, url(tmp_path), vsphere=['cut-clone'])
    assert reconcile(cloud)['changed'] is False


# -- (2) the SQLite registry locked past its busy timeout ----------------------------------------


def test_sqlite_registry_locked_at_the_start_of_a_boot_and_of_a_migration(lab, cloud, tmp_path):
    """Another process holds the registry's write lock for longer than the busy timeout as a boot and a
    migration begin (both under the one lock): neither takes its lease, so the boot makes nothing and the
    migration moves nothing (the instance runs on where it was), and each says which registry and what it
    left untouched."""
    record = ansible_module('multihv.cloud.instance', dict(cloud, name='lock-move', flavor='tiny', image='tick', node='kvm1',
                                                           storage='shared'))['instance']
    wait_ticks(console_log(lab, record))
    with locked(tmp_path / 'registry.sqlite'), concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        booting = pool.submit(ansible_module, 'multihv.cloud.instance', dict(cloud, name='lock-start', flavor='tiny', image='tick',
                                                                             node='kvm1'), expect_failure=True, timeout=BUSY_TIMEOUT * 4)
        moving = pool.submit(ansible_module, 'multihv.cloud.migrate', dict(cloud, instance='lock-move', target_node='kvm2', mode='live'),
                             expect_failure=True, timeout=BUSY_TIMEOUT * 4)
        boot, move = booting.result(), moving.result()
        waited = time.monotonic() - started
    assert waited >= BUSY_TIMEOUT, f'the runs failed after {waited:.0f} s, before the busy timeout'
    # Ansible masks the registry URL (a no_log option) wherever it appears in the message.
    assert boot['msg'].startswith('registry ') and ': cannot begin a transaction: database is locked; lease ' in boot['msg']
    # The image is in place on kvm1 already, checked without its lease (issue 20): the instance's is the first taken.
    assert re.search(r'; lease instance:[0-9a-f-]{36} could not be taken: nothing was created$', boot['msg']), boot['msg']
    assert 'database is locked' in move['msg'] and 'could not be taken: instance lock-move was ' in move['msg'], move['msg']
    assert registry_rows(tmp_path, 'SELECT name, node, state FROM instances') == [('lock-move', 'kvm1', 'running')]
    assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)] and not qemu_processes('lock-start')
    assert reconcile(cloud)['changed'] is False
    invariants.assert_hold(lab, url(tmp_path), running=['lock-move'])


def test_sqlite_registry_locked_mid_boot(lab, cloud, tmp_path):
    """The lock is taken once the VM is spawned and held past the busy timeout: the boot cannot record
    its outcome and says what it left (the VM on kvm1, the record building); once the lock is gone the
    reconciler destroys that VM and records the instance error, as for any interrupted build. Short
    leases, so that the reconciler may take the build as interrupted soon after the busy timeout."""
    cloud = short_leases(lab, tmp_path, cloud)
    run = held_at(tmp_path, 'multihv.cloud.instance', dict(cloud, name='lock-boot', flavor='tiny', image='tick', node='kvm1'),
                  '_compute.instances:spawn_in_state:after')
    (inst_uuid, state), = registry_rows(tmp_path, "SELECT uuid, state FROM instances WHERE name = 'lock-boot'")
    assert state == 'building' and qemu_processes('lock-boot')
    with ended_after(run), locked(tmp_path / 'registry.sqlite'):
        release(run)
        msg = failed_with(run, BUSY_TIMEOUT * 4)
        assert time.monotonic() - run.started >= BUSY_TIMEOUT
    assert msg.startswith(f'instance lock-boot ({inst_uuid}) was built on node kvm1, host kvm1, but its record could not be completed: '), msg
    assert 'database is locked' in msg and msg.endswith(
        'the record stays in state building: once the registry answers and no run holds the instance, multihv.cloud.reconcile '
        'destroys that VM and records the instance error'), msg
    assert registry_rows(tmp_path, "SELECT state FROM instances WHERE name = 'lock-boot'") == [('building',)]
    assert len(qemu_processes('lock-boot')) == 1, 'the VM the boot left is not running (once)'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - run.started)))
    result = reconcile(cloud)
    assert [(a['kind'], a['uuid']) for a in result['actions']] == [('build', inst_uuid)], result
    assert registry_rows(tmp_path, "SELECT state FROM instances WHERE name = 'lock-boot'") == [('error',)]
    invariants.assert_hold(lab, url(tmp_path))
    assert reconcile(cloud)['changed'] is False


# -- (3) the PostgreSQL registry restarted mid-operation -------------------------------------------

needs_postgres = pytest.mark.skipif(not PG_URL, reason='MULTIHV_TEST_POSTGRES_URL unset: run through `make test`')


def restart_postgres():
    """Restart the tests' PostgreSQL server (the one MULTIHV_TEST_POSTGRES_URL names, `make test`'s or
    a helper's own): its data directory is asked of the server itself, and pg_ctl restarts it with the
    options it was started with (port, socket directory). Every client connection is cut."""
    (data,), = query(PG_URL, 'SHOW data_directory')
    datadir = pathlib.Path(data).resolve()
    pg_ctl = sorted(pathlib.Path('/usr/lib/postgresql').glob('*/bin/pg_ctl'), key=lambda p: int(p.parts[-3]))[-1]
    # With a log file, as tests/postgres.sh starts it: the server must not keep this process's pipes open.
    subprocess.run(['runuser', '-u', 'postgres', '--', str(pg_ctl), '-D', str(datadir), '-l', str(datadir.parent / 'postgres.log'),
                    '-m', 'fast', '-w', '-t', '60', 'restart'], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL, timeout=120, cwd='/')
    wait_for(lambda: _answers(PG_URL), 30, 'PostgreSQL to answer again')


def _answers(target):
    try:
        query(target, 'SELECT 1')
        return True
    except Exception:  # pylint: disable=broad-exception-caught  # not up yet
        return False


@pytest.fixture
def pg_cloud(lab, tmp_path):
    """The `cloud` options on a PostgreSQL registry of this test's own (a schema of the tests' server);
    whatever the test booted is deleted after."""
    for registry_url in private_url('postgresql', tmp_path, 'faults'):
        options = {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': registry_url}
        ansible_module('multihv.cloud.flavor', dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1))
        ansible_module('multihv.cloud.image', dict(options, name='tick', hypervisor_type='kvm', source=lab.info['images']['tick_qcow2']))
        try:
            yield options
        finally:
            left = query(registry_url, 'SELECT uuid, name FROM instances')
            for _uuid, name in left:
                try:
                    ansible_module('multihv.cloud.instance', dict(options, name=name, state='absent'))
                except pytest.fail.Exception:
                    pass  # a failed test's run may still hold the instance's lease: its VM and files go below
            remove_domains([lab.uri(host) for host in lab.hosts], [name for _uuid, name in left])
            for inst_uuid, _host, path in invariants.instance_files(lab):
                if inst_uuid in set(u for u, _name in left):
                    path.unlink(missing_ok=True)


@needs_postgres
def test_postgres_restarted_mid_boot(lab, pg_cloud, tmp_path):
    """PostgreSQL restarts while the VM is spawned: the run's connection (and its lease heartbeat's) is
    cut; the next statement connects again and the boot completes as if nothing happened. Before the fix
    the registry connection never reconnected and the boot failed with its VM left running."""
    run = held_at(tmp_path, 'multihv.cloud.instance', dict(pg_cloud, name='pg-boot', flavor='tiny', image='tick', node='kvm1'),
                  '_compute.instances:spawn_in_state:after')
    with ended_after(run):
        restart_postgres()
        release(run)
        assert run.wait(180) == 0, run.output()
    registry_url = pg_cloud['registry_url']
    assert query(registry_url, "SELECT state, node FROM instances WHERE name = 'pg-boot'") == [('running', 'kvm1')]
    assert len(qemu_processes('pg-boot')) == 1
    assert reconcile(pg_cloud)['changed'] is False
    invariants.assert_hold(lab, registry_url, running=['pg-boot'])


@needs_postgres
def test_postgres_restarted_mid_live_migration(lab, pg_cloud, tmp_path):
    """PostgreSQL restarts while a bandwidth-limited live migration runs: its progress writes fail for a
    moment (the move goes on), the outcome is written on a new connection, the guest ticks on on kvm2
    without a new boot. Before the fix a failed progress write ended the run, which recorded the
    migration failed while libvirt went on moving the VM."""
    registry_url = pg_cloud['registry_url']
    record = ansible_module('multihv.cloud.instance', dict(pg_cloud, name='pg-move', flavor='tiny', image='tick', node='kvm1',
                                                           storage='shared'))['instance']
    log = console_log(lab, record)
    before = wait_ticks(log)[-1]
    run = Controller(tmp_path, 'multihv.cloud.migrate', dict(pg_cloud, instance='pg-move', target_node='kvm2', mode='live',
                                                             bandwidth=1, max_downtime_ms=50))
    with ended_after(run):
        wait_for(lambda: query(registry_url, "SELECT status FROM migrations") == [('running',)], 120, 'the migration to run')
        # The record says running before libvirt has started the target's QEMU.
        wait_for(lambda: len(qemu_processes('pg-move')) == 2, 60, 'the migration to be under way (a QEMU on each host)')
        restart_postgres()
        assert run.wait(300) == 0, run.output()
    assert query(registry_url, "SELECT node, state FROM instances WHERE name = 'pg-move'") == [('kvm2', 'running')]
    assert query(registry_url, 'SELECT status FROM migrations') == [('completed',)]
    invariants.ticked_on(log, before)
    assert reconcile(pg_cloud)['changed'] is False
    invariants.assert_hold(lab, registry_url, running=['pg-move'])
