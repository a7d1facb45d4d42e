"""The fault suite: inject a fault into a running operation, run the reconciler, check the invariants
(support/invariants). The README's fault table says what each of these shows."""

from __future__ import annotations

import os
import signal
import time

from support import invariants
from support.cloud import boot, console_log, registry_rows, wait_ticks
import pytest

from support.faults import Controller, scrub
from support.lab import ansible_module, incoming_qemu, qemu_processes, wait_for

# A killed controller's lease ends within its lifetime (30 s); the reconciler also waits until
# the interrupted work's records have been quiet for twice that (reconcile.SETTLE_SECONDS).
SETTLED_AFTER = 62


@pytest.fixture(autouse=True)
def scrubbed(lab, tmp_path):
    yield
    scrub(lab, tmp_path)


def reconcile(cloud, **args):
    return ansible_module('multihv.cloud.reconcile', dict(cloud, **args))


def url(tmp_path):
    return f'sqlite:///{tmp_path}/registry.sqlite'


def test_controller_killed_mid_boot(lab, cloud, tmp_path):
    run = Controller(tmp_path, 'multihv.cloud.instance', dict(cloud, name='kill-boot', flavor='tiny', image='tick', node='kvm1'),
                     pause='_compute.instances:spawn_in_state:after').paused()
    (inst_uuid, state), = registry_rows(tmp_path, "SELECT uuid, state FROM instances WHERE name = 'kill-boot'")
    assert state == 'building'
    run.kill()
    killed = time.monotonic()
    assert qemu_processes('kill-boot'), 'the VM was not running when the controller died'
    early = reconcile(cloud)
    assert not [a for a in early['actions'] if a['uuid'] == inst_uuid], 'the reconciler acted before the work settled'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
    result = reconcile(cloud)
    assert [(a['kind'], a['uuid']) for a in result['actions']] == [('build', inst_uuid)]
    assert registry_rows(tmp_path, "SELECT state FROM instances WHERE name = 'kill-boot'") == [('error',)]
    invariants.assert_hold(lab, url(tmp_path))
    assert reconcile(cloud)['changed'] is False


def migration_rows(tmp_path, name):
    return registry_rows(tmp_path, 'SELECT m.migration_type, m.status, m.source_node, m.dest_node FROM migrations m '
                                   f"JOIN instances i ON i.uuid = m.instance_uuid WHERE i.name = '{name}'")


def test_controllers_killed_mid_live_block_and_cold_migration(lab, cloud, tmp_path):
    """Three moves at once, each killed at its own step; one reconciler pass once they settled. The live
    and block moves are slowed (1 MiB/s) and killed while both QEMU processes exist; the cold one is
    paused by the hook between defining the VM on the target and removing it from the source."""
    live = boot(cloud, 'kill-live')
    block = boot(cloud, 'kill-block', storage='local')
    cold = boot(cloud, 'kill-cold', storage='local')
    live_log = console_log(lab, live)
    before = wait_ticks(live_log)[-1]
    moving = {
        'kill-live': Controller(tmp_path, 'multihv.cloud.migrate', dict(cloud, instance='kill-live', mode='live', bandwidth=1),
                                name='live'),
        'kill-block': Controller(tmp_path, 'multihv.cloud.migrate', dict(cloud, instance='kill-block', mode='block', bandwidth=1),
                                 name='block'),
        'kill-cold': Controller(tmp_path, 'multihv.cloud.migrate', dict(cloud, instance='kill-cold', mode='cold'), name='cold',
                                pause='_drivers.libvirt.migration:remove_domain:before'),
    }
    # The target QEMUs are frozen as soon as they wait for their guests: the moves are surely under way
    # when the controllers die, and thawed after.
    frozen = [wait_for(lambda name=name: incoming_qemu(name), 120, f'the target QEMU of {name}', interval=0.01)
              for name in ('kill-live', 'kill-block')]
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        moving['kill-cold'].paused()
        for name in ('kill-live', 'kill-block'):
            wait_for(lambda name=name: migration_rows(tmp_path, name) == [(name[5:], 'running', 'kvm1', 'kvm2')], 60,
                     f'{name} to be migrating')
        assert moving['kill-live'].process.poll() is None and moving['kill-block'].process.poll() is None
        for run in moving.values():
            run.kill()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    killed = time.monotonic()
    early = reconcile(cloud)
    assert early['actions'] == [], 'the reconciler acted while the leases were live'

    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
    result = reconcile(cloud)
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

    invariants.assert_hold(lab, url(tmp_path), running=['kill-live', 'kill-block', 'kill-cold'])
    invariants.ticked_on(live_log, before)
    assert reconcile(cloud)['changed'] is False
