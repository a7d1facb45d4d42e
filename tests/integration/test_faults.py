"""The fault suite: inject a fault into a running operation, run the reconciler, check the invariants
(support/invariants). The README's fault table says what each of these shows."""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import signal
import subprocess
import time

import pytest

from support import invariants
from support.cloud import boot, console_log, registry_rows, vcsim_vm, wait_ticks
from support.faults import LEASE_SECONDS, SETTLED_AFTER, Controller, freeze_incoming, scrub, short_leases
from support.lab import ansible_module, qemu_processes, serial, wait_for


@pytest.fixture(autouse=True)
def scrubbed(lab, cloud, tmp_path):  # pylint: disable=unused-argument  # torn down before cloud, while the records are there
    yield
    scrub(lab, tmp_path)


@pytest.fixture(name='fast')
def fast_fixture(lab, cloud, tmp_path):
    """The cloud with leases of faults.LEASE_SECONDS: a killed run's work settles in SETTLED_AFTER."""
    return short_leases(lab, tmp_path, cloud)


@pytest.fixture(name='before')
def before_fixture(lab):
    """The lab's domains and instance files before the test (see invariants.present)."""
    return invariants.present(lab)


def reconcile(cloud, **args):
    return ansible_module('multihv.cloud.reconcile', dict(cloud, **args))


def run_lab_host(action, lab, host):
    """kvm-host ACTION for a lab host (restart: its libvirtd only), then wait until it answers."""
    subprocess.run([str(lab.dir / 'bin' / 'kvm-host'), action, lab.hosts[host]['dir']], check=True, timeout=120,
                   capture_output=True)
    wait_for(lambda: lab.answers(host), 60, f'{host} to answer')


@contextlib.contextmanager
def held_migration(lab, cloud, tmp_path, name, mode, storage='shared'):
    """Boot `name` on kvm1 and start moving it to kvm2 in `mode`, its target QEMU frozen as it starts, so that
    the move is held up mid-flight for the block; yields (the migrate Controller, the guest's serial log, its
    last tick before the move). The target is thawed after the block (unless the block's fault killed it)."""
    record = boot(cloud, name, storage=storage)
    log = console_log(lab, record)
    last_tick = wait_ticks(log)[-1]
    run = Controller(tmp_path, 'multihv.cloud.migrate', dict(cloud, instance=name, mode=mode, bandwidth=1), name=f'move-{name}')
    pid = freeze_incoming(name)
    try:
        wait_for(lambda: migration_rows(tmp_path, name) == [(mode, 'running', 'kvm1', 'kvm2')], 60, f'the migration of {name} to run')
        yield run, log, last_tick
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def url(tmp_path):
    return f'sqlite:///{tmp_path}/registry.sqlite'


def test_controller_killed_mid_boot(lab, fast, tmp_path, before):
    run = Controller(tmp_path, 'multihv.cloud.instance', dict(fast, name='kill-boot', flavor='tiny', image='tick', node='kvm1'),
                     pause='_compute.instances:spawn_in_state:after').paused()
    (inst_uuid, state), = registry_rows(tmp_path, "SELECT uuid, state FROM instances WHERE name = 'kill-boot'")
    assert state == 'building'
    run.kill()
    killed = time.monotonic()
    assert qemu_processes('kill-boot'), 'the VM was not running when the controller died'
    early = reconcile(fast)
    assert not [a for a in early['actions'] if a['uuid'] == inst_uuid], 'the reconciler acted before the work settled'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
    result = reconcile(fast)
    assert [(a['kind'], a['uuid']) for a in result['actions']] == [('build', inst_uuid)]
    assert registry_rows(tmp_path, "SELECT state FROM instances WHERE name = 'kill-boot'") == [('error',)]
    invariants.assert_hold(lab, url(tmp_path), before=before)
    assert reconcile(fast)['changed'] is False


def migration_rows(tmp_path, name):
    return registry_rows(tmp_path, 'SELECT m.migration_type, m.status, m.source_node, m.dest_node FROM migrations m '
                                   f"JOIN instances i ON i.uuid = m.instance_uuid WHERE i.name = '{name}'")


def test_controllers_killed_mid_live_block_and_cold_migration(lab, cloud, tmp_path, before):
    """Three moves, each killed at its own step; one reconciler pass once they settled. The live and block
    moves are killed while both QEMU processes exist; the cold one is paused by the hook between defining
    the VM on the target and removing it from the source."""
    # The first move is killed before the other two are set up, and the reconciler's first look must still
    # find its lease live: leases of LEASE_SECONDS lapsed before it on a loaded machine (three workers).
    lease = 3 * LEASE_SECONDS
    fast = short_leases(lab, tmp_path, cloud, lease_seconds=lease)
    # One at a time. Each target QEMU is frozen as it starts, so that its move is surely under way when
    # the controller dies, and thawed once it died (a frozen QEMU also holds up its host's libvirtd, and
    # the next move's scheduler would find kvm2 down).
    with held_migration(lab, fast, tmp_path, 'kill-live', 'live') as (run, live_log, last_tick):
        run.kill()
    with held_migration(lab, fast, tmp_path, 'kill-block', 'block', storage='local') as (run, _log, _tick):
        run.kill()
    boot(fast, 'kill-cold', storage='local')
    Controller(tmp_path, 'multihv.cloud.migrate', dict(fast, instance='kill-cold', mode='cold'), name='cold',
               pause='_drivers.libvirt.migration:remove_domain:before').paused().kill()
    killed = time.monotonic()
    early = reconcile(fast)
    assert early['actions'] == [], 'the reconciler acted while the leases were live'

    time.sleep(max(0, 2 * lease + 2 - (time.monotonic() - killed)))  # SETTLED_AFTER for these leases
    result = reconcile(fast)
    acted = dict((a['name'], a) for a in result['actions'])
    assert set(acted) == {'kill-live', 'kill-block', 'kill-cold'}, result['actions']
    assert all(a['kind'] == 'migration' for a in acted.values())
    # Where each one ended: decided by where its VM was, written to the instance and its migration.
    placed = dict(registry_rows(tmp_path, "SELECT name, node FROM instances"))
    for name in ('kill-live', 'kill-block'):
        (kind, status, _source, _dest), = migration_rows(tmp_path, name)
        assert (status, placed[name]) in (('failed', 'kvm1'), ('completed', 'kvm2')), (name, status, placed[name])
    # The cold move had started the VM on the target: that copy runs, the source's is undefined.
    assert 'kvm2' in acted['kill-cold']['found'] and 'undefine the copy on kvm1' in acted['kill-cold']['does']
    assert placed['kill-cold'] == 'kvm2' and migration_rows(tmp_path, 'kill-cold') == [('cold', 'completed', 'kvm1', 'kvm2')]

    invariants.assert_hold(lab, url(tmp_path), before=before, running=['kill-live', 'kill-block', 'kill-cold'])
    invariants.ticked_on(live_log, last_tick)
    assert reconcile(fast)['changed'] is False


def test_controller_killed_mid_evacuation(lab, fast, tmp_path, before):
    """kvm2 loses power; its evacuation is killed after the instance was rebuilt on kvm1 from its shared
    disk and before the records said so. The reconciler records it on kvm1 (the source is fenced and
    forced down, so its copy cannot run unseen); once kvm2 is back, its stale copy goes, the disk kept."""
    record = boot(fast, 'kill-evac', node='kvm2')
    wait_ticks(console_log(lab, record))
    with lab.power_loss('kvm2'):
        run = Controller(tmp_path, 'multihv.cloud.evacuate', dict(fast, node='kvm2'), name='evacuate',
                         pause='_compute.instances:spawn_in_state:after').paused()
        assert migration_rows(tmp_path, 'kill-evac') == [('evacuation', 'running', 'kvm2', 'kvm1')]
        assert registry_rows(tmp_path, "SELECT node FROM instances") == [('kvm2',)]
        run.kill()
        killed = time.monotonic()
        early = reconcile(fast)
        assert early['actions'] == [], 'the reconciler acted while the evacuation\'s lease was live'
        time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
        result = reconcile(fast)
        assert [(a['kind'], a['name'], a['node']) for a in result['actions']] == [('migration', 'kill-evac', 'kvm1')]
        assert 'the source is forced down' in result['actions'][0]['found']
        assert registry_rows(tmp_path, "SELECT node, state FROM instances") == [('kvm1', 'running')]
        assert migration_rows(tmp_path, 'kill-evac') == [('evacuation', 'done', 'kvm2', 'kvm1')]
    # kvm2 boots with the instance's old domain defined (shut off): a stale copy on the shared disk.
    result = reconcile(fast)
    assert [(a['kind'], a['node']) for a in result['actions']] == [('stale', 'kvm2')], result['actions']
    assert 'shared kept' in result['actions'][0]['does']
    invariants.assert_hold(lab, url(tmp_path), before=before, running=['kill-evac'])
    assert (pathlib.Path(lab.info['shared_instance_path']) / f"{record['uuid']}.qcow2").exists()
    assert reconcile(fast)['changed'] is False


def test_controller_killed_mid_resize(lab, fast, tmp_path, before):
    """A resize in place is killed with the guest stopped for it, the copy of its old disk made and the disk grown, the
    domain not yet redefined. The reconciler reverts it: the old disk back, the old flavor's claim, the guest running
    again (it ran before the resize), the kept copy gone."""
    ansible_module('multihv.cloud.flavor', dict(fast, name='tiny-wide', vcpus=2, ram_mb=48, disk_gb=2))
    record = boot(fast, 'kill-resize', storage='local')
    wait_ticks(console_log(lab, record), count=1)
    Controller(tmp_path, 'multihv.cloud.instance', dict(fast, name='kill-resize', flavor='tiny-wide', image='tick', storage='local'),
               name='resize', pause='_drivers.libvirt.resizing:sized_xml:before').paused().kill()
    killed = time.monotonic()
    kept = pathlib.Path(lab.hosts['kvm1']['local_dir']) / f"{record['uuid']}.resize.qcow2"
    assert migration_rows(tmp_path, 'kill-resize') == [('resize', 'running', 'kvm1', 'kvm1')]
    assert kept.exists() and not qemu_processes('kill-resize'), 'the run was not killed mid-resize'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
    result = reconcile(fast)
    assert [(a['kind'], a['name'], a['node']) for a in result['actions']] == [('migration', 'kill-resize', 'kvm1')]
    assert registry_rows(tmp_path, "SELECT flavor, state FROM instances") == [('tiny', 'running')]
    assert migration_rows(tmp_path, 'kill-resize') == [('resize', 'failed', 'kvm1', 'kvm1')]
    assert not kept.exists()
    invariants.assert_hold(lab, url(tmp_path), before=before, running=['kill-resize'])
    assert reconcile(fast)['changed'] is False


def test_controllers_killed_mid_convert(lab, fast, tmp_path, before):
    """Two moves from kvm1 to the vSphere cluster node (issue 19), each killed at its own step; one reconciler pass.
    The first is killed after the guest was powered off for it, before its disk was exported: the reconciler keeps the
    KVM domain and powers it on again (it ran before the move), frees the claim on the cluster, fails the migration.
    The second is killed once its VM was made and started on vcsim, before the records moved: the reconciler keeps the
    VM that runs, records the instance there, retires the stopped KVM domain with its local disk and completes the
    migration."""
    cluster = 'vcsim/DC0/DC0_C0'
    moves = {'kill-conv-export': '_drivers.libvirt.driver:LibvirtDriver.export_disks:before',
             'kill-conv-import': '_drivers.vsphere.driver:VSphereDriver.import_instance:after'}
    records = {name: boot(fast, name, storage='local') for name in moves}
    runs = [Controller(tmp_path, 'multihv.cloud.migrate', dict(fast, instance=name, mode='convert', target_node=cluster,
                                                               shutdown_timeout=1), name=name, pause=pause)
            for name, pause in moves.items()]
    for run in runs:
        run.paused(timeout=180).kill()
    killed = time.monotonic()
    for name in moves:
        assert migration_rows(tmp_path, name) == [('convert', 'running', 'kvm1', cluster)]
    assert not qemu_processes('kill-conv-export') and vcsim_vm(lab, 'kill-conv-export') is None
    assert vcsim_vm(lab, 'kill-conv-import')[0] == 'poweredOn', 'the run was not killed after the import'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
    result = reconcile(fast)
    assert sorted((a['kind'], a['name']) for a in result['actions']) == [('migration', name) for name in sorted(moves)]
    assert registry_rows(tmp_path, "SELECT name, node, state FROM instances ORDER BY name") == [
        ('kill-conv-export', 'kvm1', 'running'), ('kill-conv-import', cluster, 'running')]
    assert migration_rows(tmp_path, 'kill-conv-export') == [('convert', 'failed', 'kvm1', cluster)]
    assert migration_rows(tmp_path, 'kill-conv-import') == [('convert', 'completed', 'kvm1', cluster)]
    assert qemu_processes('kill-conv-export') and not qemu_processes('kill-conv-import')
    local = pathlib.Path(lab.hosts['kvm1']['local_dir'])
    assert not list(local.glob(records['kill-conv-import']['uuid'] + '*')), 'the retired domain left its files'
    invariants.assert_hold(lab, url(tmp_path), before=before, running=list(moves), vsphere=['kill-conv-import'])
    assert reconcile(fast)['changed'] is False


def test_a_second_migrate_during_a_long_migration_is_refused_and_the_first_completes(lab, fast, tmp_path, before):
    """A live migration held up (its target QEMU frozen) for longer than two lifetimes of its lease (the
    short leases of faults.LEASE_SECONDS): the lease outlives them because the heartbeat renews it, so a
    second migrate of the instance is refused naming the holder, and the reconciler, which takes work as
    interrupted after two lifetimes of a lease not renewed, leaves it alone. Thawed, the first completes."""
    cloud = fast
    with held_migration(lab, cloud, tmp_path, 'slow-move', 'live') as (first, log, last_tick):
        time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - first.started)))
        assert first.process.poll() is None
        second = ansible_module('multihv.cloud.migrate', dict(cloud, instance='slow-move', mode='live'), expect_failure=True)
        assert re.search(r'lease instance:\S+ is held by \S+ \(migrate\) until \S+Z; another run works on instance', second['msg']), second['msg']
        assert reconcile(cloud)['actions'] == []
        assert migration_rows(tmp_path, 'slow-move') == [('live', 'running', 'kvm1', 'kvm2')]
    assert first.wait(timeout=300) == 0, first.output()
    assert migration_rows(tmp_path, 'slow-move') == [('live', 'completed', 'kvm1', 'kvm2')]
    invariants.assert_hold(lab, url(tmp_path), before=before, running=['slow-move'])
    invariants.ticked_on(log, last_tick)
    assert reconcile(cloud)['changed'] is False


def test_the_destination_losing_power_mid_block_migration(lab, cloud, tmp_path, before):
    """The move fails and says so; the guest runs on at the source. When kvm2 boots again it holds the
    half-copied local disk: the reconciler removes it."""
    with held_migration(lab, cloud, tmp_path, 'lost-dest', 'block', storage='local') as (moving, log, last_tick):
        with lab.power_loss('kvm2'):  # the frozen target QEMU goes with its host
            assert moving.wait(timeout=300) != 0
            assert 'failed' in moving.output()
    assert migration_rows(tmp_path, 'lost-dest') == [('block', 'failed', 'kvm1', 'kvm2')]
    reconcile(cloud)
    invariants.assert_hold(lab, url(tmp_path), before=before, running=['lost-dest'])
    wait_ticks(log, after=last_tick)
    assert len(serial(log)) == 1, 'the guest booted again'
    assert reconcile(cloud)['changed'] is False


def test_libvirtd_restarted_mid_live_migration(lab, cloud, tmp_path, before):
    """The source's libvirtd restarts while the move runs (its guests live on): the move fails or
    completes, and says which; the guest keeps running on exactly one host."""
    with held_migration(lab, cloud, tmp_path, 'restarted', 'live') as (moving, log, last_tick):
        run_lab_host('restart', lab, 'kvm1')
    moving.wait(timeout=300)
    (_kind, status, _source, _dest), = migration_rows(tmp_path, 'restarted')
    assert status in ('failed', 'completed'), moving.output()
    reconcile(cloud)
    invariants.assert_hold(lab, url(tmp_path), before=before, running=['restarted'])
    invariants.ticked_on(log, last_tick)
    assert reconcile(cloud)['changed'] is False
