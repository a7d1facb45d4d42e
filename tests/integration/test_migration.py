"""migrate against the lab: live, block and cold KVM migrations between kvm1 and kvm2, vMotion
and relocation in vcsim, a target killed mid-migration, draining a node, and bad requests.

kvm1 and kvm2 each see their own local directory at the instance path and one shared
directory at the shared instance path (lab.json says where this machine sees them).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal
import time

import pytest

from support import guest
from support.cloud import allocations, boot, console_log, domain_active, domains, registry_rows, ticks, vcsim_vm, wait_ticks
from support.lab import ansible_module, incoming_qemu, serial, wait_for


def migrate(cloud, expect_failure=False, **args):
    return ansible_module('multihv.cloud.migrate', dict(cloud, **args), expect_failure=expect_failure)


def test_live_migration_keeps_the_guest_running(lab, cloud, tmp_path):
    record = boot(cloud, 'mig-live')
    log = console_log(lab, record)
    before = wait_ticks(log)[-1]
    result = migrate(cloud, instance='mig-live', mode='live', max_downtime_ms=300, auto_converge=True)
    migration, instance = result['migration'], result['instance']
    assert result['changed'] is True
    assert (migration['status'], migration['migration_type'], migration['source_node'], migration['dest_node']) == (
        'completed', 'live', 'kvm1', 'kvm2')
    assert migration['stats']['memory_total'] > 0 and migration['stats']['data_remaining'] == 0
    assert 'downtime_ms' in migration['stats'] and migration['started_at'] and migration['finished_at']
    assert (instance['node'], instance['host'], instance['uuid']) == ('kvm2', 'kvm2', record['uuid'])
    assert domain_active(lab, 'kvm2', 'mig-live') and 'mig-live' not in domains(lab, 'kvm1')
    assert allocations(tmp_path) == {'kvm2': 32}
    assert registry_rows(tmp_path, 'SELECT status FROM migrations') == [('completed',)]

    wait_ticks(log, after=ticks(log)[-1])
    boots = serial(log)
    assert len(boots) == 1, 'the guest booted again: it did not keep running'
    assert not guest.gaps(boots[0].ticks) and boots[0].ticks[-1] > before + 1


def test_auto_block_migration_keeps_what_the_disk_held(lab, cloud, tmp_path):
    record = boot(cloud, 'mig-block', storage='local')
    source_log = console_log(lab, record)
    before = wait_ticks(source_log, count=4)[-1]
    result = migrate(cloud, instance='mig-block', target_node='kvm2')  # auto: kvm1's local directory is not kvm2's
    assert (result['migration']['migration_type'], result['migration']['status']) == ('block', 'completed')
    # What the NBD mirror copied (the overlay's data), as the source's job reported it; recorded so.
    stats = result['migration']['stats']
    assert stats['disk_total'] > 0 and stats['disk_processed'] >= stats['disk_total'], stats
    assert json.loads(registry_rows(tmp_path, 'SELECT stats FROM migrations')[0][0])['disk_total'] == stats['disk_total']
    assert result['instance']['node'] == 'kvm2'
    local1 = pathlib.Path(lab.hosts['kvm1']['local_dir'])
    assert not list(local1.glob(record['uuid'] + '*')), 'the source kept the instance\'s files'

    target_log = console_log(lab, record, 'kvm2')
    assert wait_ticks(target_log, count=2)[0] > before, 'the guest did not go on where it was'
    assert serial(target_log) == [], 'the guest booted again on the target'
    # What the disk held came along: a reboot finds the last tick the guest wrote before the move.
    ansible_module('multihv.cloud.instance', dict(cloud, name='mig-block', state='restarted'))
    wait_for(lambda: serial(target_log) and serial(target_log)[-1].ticks, 30, 'the reboot on kvm2')
    assert serial(target_log)[-1].persisted >= before


def test_cold_migration_moves_a_stopped_instance_with_its_disk(lab, cloud, tmp_path):
    record = boot(cloud, 'mig-cold', storage='local')
    before = wait_ticks(console_log(lab, record), count=3)[-1]
    ansible_module('multihv.cloud.instance', dict(cloud, name='mig-cold', state='stopped'))
    live = migrate(cloud, instance='mig-cold', mode='live', expect_failure=True)
    assert 'is stopped: a live migration moves a running instance' in live['msg']

    result = migrate(cloud, instance='mig-cold')
    assert (result['migration']['migration_type'], result['migration']['status']) == ('cold', 'completed')
    assert result['migration']['stats']['disk_total'] > 0
    assert (result['instance']['node'], result['instance']['state']) == ('kvm2', 'stopped')
    assert not domain_active(lab, 'kvm2', 'mig-cold') and 'mig-cold' not in domains(lab, 'kvm1')
    assert allocations(tmp_path) == {'kvm2': 32}

    ansible_module('multihv.cloud.instance', dict(cloud, name='mig-cold', state='started'))
    log = console_log(lab, record, 'kvm2')
    wait_for(lambda: serial(log) and serial(log)[-1].ticks, 30, 'the start on kvm2')
    assert serial(log)[-1].persisted >= before - 1


def test_a_target_without_room_is_refused_before_anything_moves(lab, cloud, tmp_path):
    boot(cloud, 'mig-full')
    node = ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=['kvm2']))['nodes'][0]
    ansible_module('multihv.cloud.compute_node', dict(cloud, name='kvm2', reserved={'memory_mb': node['physical']['memory_mb'] - 16}))
    refused = migrate(cloud, instance='mig-full', target_node='kvm2', expect_failure=True)
    assert 'ResourcesFilter removed kvm2' in refused['msg'] and 'instance mig-full was not moved' in refused['msg']
    assert domain_active(lab, 'kvm1', 'mig-full') and 'mig-full' not in domains(lab, 'kvm2')
    assert allocations(tmp_path) == {'kvm1': 32}
    assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]


@pytest.mark.parametrize('args, message', [
    # A live move does not cross hypervisor types (auto and convert do, converting the disks: test_convert).
    ({'instance': 'mig-bad', 'target_node': 'vcsim/DC0/DC0_C0', 'mode': 'live'},
     'node vcsim/DC0/DC0_C0 is a vsphere node and instance mig-bad is on kvm node kvm1: '
     'a live move does not cross hypervisor types (mode convert, or auto, converts its disks)'),
    ({'instance': 'no-such-instance'}, 'instance no-such-instance does not exist; nothing moved'),
    ({'instance': 'mig-bad', 'target_node': 'kvm9'}, 'node kvm9 is not in the cloud file'),
])
def test_bad_requests_move_nothing(lab, cloud, tmp_path, args, message):
    boot(cloud, 'mig-bad')
    refused = migrate(cloud, expect_failure=True, **args)
    assert message in refused['msg']
    assert domain_active(lab, 'kvm1', 'mig-bad') and 'mig-bad' not in domains(lab, 'kvm2')
    assert registry_rows(tmp_path, 'SELECT node FROM instances') == [('kvm1',)]
    assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]


def test_check_mode_says_where_it_would_go(lab, cloud, tmp_path):
    boot(cloud, 'mig-check')
    result = ansible_module('multihv.cloud.migrate', dict(cloud, instance='mig-check'), check=True, diff=True)
    assert result['changed'] is True and result['migration']['dest_node'] == 'kvm2' and result['migration']['status'] == 'would run'
    # The diff (what the minimal callback prints of it): node and host before and after.
    assert '-    "node": "kvm1"' in result['_output'] and '+    "node": "kvm2"' in result['_output']
    assert '-    "host": "kvm1"' in result['_output'] and '+    "host": "kvm2"' in result['_output']
    assert domain_active(lab, 'kvm1', 'mig-check') and allocations(tmp_path) == {'kvm1': 32}
    # Desired state: already on the target given, nothing moves, in check mode or not.
    for check in (True, False):
        stays = ansible_module('multihv.cloud.migrate', dict(cloud, instance='mig-check', target_node='kvm1'), check=check)
        assert (stays['changed'], stays['migration'], stays['instance']['node']) == (False, None, 'kvm1')
    assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]


def test_killing_the_target_mid_migration_leaves_the_guest_on_the_source(lab, cloud, tmp_path):
    record = boot(cloud, 'mig-kill')
    log = console_log(lab, record)
    wait_ticks(log)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        moving = pool.submit(migrate, cloud, instance='mig-kill', target_node='kvm2', mode='live', bandwidth=1, expect_failure=True)
        # Freeze the target's QEMU as soon as it waits for the guest, so that the migration is
        # surely under way when the host dies.
        pid = wait_for(lambda: incoming_qemu('mig-kill'), 60, 'the target QEMU of the migration', interval=0.01)
        os.kill(pid, signal.SIGSTOP)
        assert registry_rows(tmp_path, 'SELECT status FROM migrations') == [('running',)]
        with lab.power_loss('kvm2'):
            failed = moving.result(timeout=120)
    assert 'failed' in failed['msg'] and 'instance mig-kill' in failed['msg']
    assert registry_rows(tmp_path, 'SELECT status, source_node, dest_node FROM migrations') == [('failed', 'kvm1', 'kvm2')]
    assert registry_rows(tmp_path, 'SELECT node FROM instances') == [('kvm1',)]
    assert allocations(tmp_path) == {'kvm1': 32}
    assert domain_active(lab, 'kvm1', 'mig-kill')
    wait_ticks(log, after=ticks(log)[-1])
    assert len(serial(log)) == 1, 'the guest was restarted instead of resumed'


def test_completion_timeout_aborts_and_the_guest_stays(lab, cloud, tmp_path):
    record = boot(cloud, 'mig-abort')
    log = console_log(lab, record)
    wait_ticks(log)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        moving = pool.submit(migrate, cloud, instance='mig-abort', target_node='kvm2', mode='live', bandwidth=1,
                             completion_timeout=2, completion_action='abort', expect_failure=True)
        pid = wait_for(lambda: incoming_qemu('mig-abort'), 60, 'the target QEMU of the migration', interval=0.01)
        os.kill(pid, signal.SIGSTOP)  # a migration that cannot finish
        try:
            wait_for(lambda: registry_rows(tmp_path, "SELECT count(*) FROM migrations WHERE status = 'running'") == [(1,)], 30,
                     'the migration to run')
            time.sleep(3)  # past the completion timeout: the abort was asked for
        finally:
            os.kill(pid, signal.SIGCONT)  # let the target's QEMU see the end and go
        cancelled = moving.result(timeout=120)
    assert 'cancelled' in cancelled['msg'] and 'aborted after its completion timeout of 2 s' in cancelled['msg']
    assert registry_rows(tmp_path, 'SELECT status FROM migrations') == [('cancelled',)]
    assert registry_rows(tmp_path, 'SELECT node FROM instances') == [('kvm1',)] and allocations(tmp_path) == {'kvm1': 32}
    assert domain_active(lab, 'kvm1', 'mig-abort') and 'mig-abort' not in domains(lab, 'kvm2')
    wait_ticks(log, after=ticks(log)[-1])
    assert len(serial(log)) == 1


def test_draining_a_node_moves_everything_that_can_move(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.server_group', dict(cloud, name='apart', policy='anti-affinity'))
    boot(cloud, 'drain-shared')
    boot(cloud, 'drain-local', storage='local')
    boot(cloud, 'drain-stopped', storage='local', state='stopped')
    boot(cloud, 'drain-anchor', node='kvm2', server_group='apart')
    boot(cloud, 'drain-stuck', server_group='apart')  # anti-affinity: kvm2 is no place for it

    result = migrate(cloud, from_node='kvm1', concurrency=2, disabled_reason='test drain', expect_failure=True)
    assert [f['name'] for f in result['failures']] == ['drain-stuck']
    assert 'ServerGroupFilter removed kvm2' in result['failures'][0]['msg'] and '1 instance(s) of node kvm1 did not move' in result['msg']
    moved = dict((m['instance_uuid'], (m['migration_type'], m['status'])) for m in result['migrations'])
    uuids = dict(registry_rows(tmp_path, 'SELECT name, uuid FROM instances'))
    assert moved == {uuids['drain-shared']: ('live', 'completed'), uuids['drain-local']: ('block', 'completed'),
                     uuids['drain-stopped']: ('cold', 'completed')}
    assert dict(registry_rows(tmp_path, 'SELECT name, node FROM instances')) == {
        'drain-shared': 'kvm2', 'drain-local': 'kvm2', 'drain-stopped': 'kvm2', 'drain-anchor': 'kvm2', 'drain-stuck': 'kvm1'}
    assert domain_active(lab, 'kvm1', 'drain-stuck') and domains(lab, 'kvm1') == ['drain-stuck']
    node = ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=['kvm1']))['nodes'][0]
    assert (node['enabled'], node['disabled_reason']) == (False, 'test drain')

    ansible_module('multihv.cloud.instance', dict(cloud, name='drain-stuck', state='absent'))
    again = migrate(cloud, from_node='kvm1')
    assert again['changed'] is False and again['migrations'] == [] and again['failures'] == []


def test_vmotion_and_relocation_in_vcsim(lab, cloud, template, tmp_path):
    clusters = ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere'))['nodes']
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    source = clusters[0]
    record = ansible_module('multihv.cloud.instance', dict(cloud, name='mig-vm', flavor='tiny', image='tmpl', node=source['name']))['instance']
    other_host = next(h['name'] for h in source['hosts'] if h['name'] != record['host'] and h['usable'])

    result = migrate(cloud, instance='mig-vm', target_host=other_host)
    assert (result['migration']['status'], result['migration']['dest_node'], result['migration']['dest_host']) == (
        'completed', source['name'], other_host)
    assert (result['instance']['node'], result['instance']['host']) == (source['name'], other_host)
    assert vcsim_vm(lab, 'mig-vm') == ('poweredOn', other_host)
    assert allocations(tmp_path) == {source['name']: 32}
    same = migrate(cloud, instance='mig-vm', target_host=other_host)
    assert (same['changed'], same['migration'], same['instance']['host']) == (False, None, other_host)

    target = clusters[1]
    result = migrate(cloud, instance='mig-vm', target_node=target['name'])
    assert (result['instance']['node'], result['migration']['status']) == (target['name'], 'completed')
    assert result['instance']['host'] in [h['name'] for h in target['hosts']]
    assert vcsim_vm(lab, 'mig-vm') == ('poweredOn', result['instance']['host'])
    assert allocations(tmp_path) == {target['name']: 32}
    assert [row[0] for row in registry_rows(tmp_path, 'SELECT status FROM migrations')] == ['completed', 'completed']
