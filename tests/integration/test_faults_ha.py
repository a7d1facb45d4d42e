"""The fault suite for instance HA: a host cut off from the controller that lives on, and two HA passes at
once. Each test ends with a reconcile pass and the invariants (support/invariants) checked on the lab.

- A host whose libvirtd stops answering (SIGSTOP) while the host lives on: its guests run and its storage
  heartbeat (the lab hosts run the kvm_host role's writer) advances. HA passes past the grace period report it
  isolated and fence and evacuate nothing; once libvirtd answers again (SIGCONT) all is as before, the guest
  having ticked on without a new boot.
- Two instance_ha passes started at the same moment for one host that lost its power: the node's lease lets
  one evacuate its HA instance and the other report the node skipped; one evacuation, one QEMU process.
"""

from __future__ import annotations

import time

import pytest

from support import invariants
from support.cloud import boot, console_log, registry_rows, ticks, wait_ticks
from support.faults import Controller, frozen_libvirtd, heartbeat, scrub
from support.lab import ansible_module, serial, wait_for

# The lab's writer renews each host's heartbeat every lab.info['heartbeat_interval'] (2) seconds; a pass
# takes a heartbeat younger than this for life.
HEARTBEAT_TIMEOUT = 10
GRACE_PERIOD = 12
# Seconds the pass that holds a node's lease is slowed down by in the race of two passes.
SLOW = 8


@pytest.fixture(autouse=True)
def scrubbed(lab, tmp_path):
    yield
    scrub(lab, tmp_path)


def url(tmp_path):
    return f'sqlite:///{tmp_path}/registry.sqlite'


def reconcile(cloud, **args):
    return ansible_module('multihv.cloud.reconcile', dict(cloud, **args))


def ha_pass(cloud, **args):
    return ansible_module('multihv.cloud.instance_ha', dict(cloud, **args))


def test_a_host_whose_libvirtd_stops_answering_while_it_lives_on_is_isolated_not_evacuated(lab, cloud, tmp_path):
    record = boot(cloud, 'iso-ha', node='kvm2', ha=True, restart_priority=10)
    log = console_log(lab, record)
    wait_ticks(log, count=3)
    options = {'grace_period': GRACE_PERIOD, 'min_down_probes': 2, 'heartbeat_timeout': HEARTBEAT_TIMEOUT}
    assert ha_pass(cloud, **options)['changed'] is False

    # (Nothing here opens a libvirt connection to kvm2 while it is stopped: a plain libvirt.open has no deadline.)
    with frozen_libvirtd(lab, 'kvm2'):
        first = ha_pass(cloud, **options)
        assert [w['node'] for w in first['waiting']] == ['kvm2'] and first['down'] == [] and first['withheld'] == []
        started = time.monotonic()
        passes = [first]
        while time.monotonic() - started < GRACE_PERIOD + 2 or len(passes) < 3:
            time.sleep(2)
            passes.append(ha_pass(cloud, **options))
        last = passes[-1]
        assert [(w['node'], w['why']) for w in last['withheld']] == [('kvm2', 'isolated')], last
        assert 'isolated, not dead' in last['withheld'][0]['reason'] and 'read through kvm1' in last['withheld'][0]['reason']
        for result in passes:
            assert (result['down'], result['recovered'], result['failures']) == ([], [], [])
        # Only the passes that recorded a down probe (min_down_probes of them) changed anything.
        assert [result['changed'] for result in passes] == [True, True] + [False] * (len(passes) - 2)
        # It lives on: its heartbeat advances and its guest ticks, while nothing was fenced, forced down or moved.
        beat = heartbeat(lab, 'kvm2')
        wait_for(lambda: (heartbeat(lab, 'kvm2') or 0) > beat, 3 * lab.info['heartbeat_interval'] + 2, 'the heartbeat of kvm2 to advance')
        wait_ticks(log, after=ticks(log)[-1])
        assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]
        assert registry_rows(tmp_path, "SELECT forced_down FROM nodes WHERE name = 'kvm2'") == [(0,)]
        assert registry_rows(tmp_path, "SELECT node, state FROM instances WHERE name = 'iso-ha'") == [('kvm2', 'running')]

    wait_for(lambda: lab.answers('kvm2'), 30, 'kvm2 to answer again')
    cleared = ha_pass(cloud, **options)
    assert cleared['cleared'] == ['kvm2'] and cleared['changed'] is True and cleared['withheld'] == []  # marks cleared
    # The guest ran through it all: one boot, its counter went on.
    assert len(serial(log)) == 1, log.read_text()[-600:]
    invariants.ticked_on(log, ticks(log)[-1])
    result = reconcile(cloud)
    assert result['actions'] == [] and result['changed'] is False
    invariants.assert_hold(lab, url(tmp_path), running=['iso-ha'])


def test_two_ha_passes_at_once_evacuate_a_failed_host_once(lab, cloud, tmp_path):
    record = boot(cloud, 'race-ha', node='kvm2', ha=True, restart_priority=10)
    log = console_log(lab, record)
    wait_ticks(log, count=3)
    # One pass is enough to act (no grace period, one probe), so that both passes reach the node's lease.
    options = dict(cloud, grace_period=0, min_down_probes=1, heartbeat_timeout=HEARTBEAT_TIMEOUT)

    with lab.power_loss('kvm2'):
        # Its last heartbeat, from before the passes see it down, keeps them waiting until it is HEARTBEAT_TIMEOUT old.
        wait_for(lambda: time.time() - (heartbeat(lab, 'kvm2') or 0) > HEARTBEAT_TIMEOUT + 1, 30, 'the heartbeat of kvm2 to age')
        # A tiny guest is evacuated in about a second: each pass takes SLOW seconds more once it holds the node's
        # lease, so that the other, started at the same moment, finds it held, whichever pass gets there first.
        runs = [Controller(tmp_path, 'multihv.cloud.instance_ha', options, name=name, record=True,
                           pause='_compute.instance_ha:_recover_held:before', pause_seconds=SLOW) for name in ('pass-a', 'pass-b')]
        results = dict((run.mark.stem, run.result()) for run in runs)
        for name, result in results.items():
            assert not result.get('failed'), (name, result)
        acted = [name for name, result in results.items() if result['down']]
        assert len(acted) == 1, results
        assert sorted(p.name for p in tmp_path.glob('*.paused')) == [f'{acted[0]}.paused']  # only the holder got that far
        winner, other = results[acted[0]], results[({'pass-a', 'pass-b'} - set(acted)).pop()]
        assert [(d['node'], d['fencing']) for d in winner['down']] == [('kvm2', 'fenced')]
        assert [(r['name'], r['dest_node']) for r in winner['recovered']] == [('race-ha', 'kvm1')]
        assert [s['node'] for s in other['skipped']] == ['kvm2'] and 'another run works on node kvm2' in other['skipped'][0]['msg']
        # (Its changed depends on which pass recorded the down probe first.)
        assert (other['down'], other['recovered'], other['failures']) == ([], [], [])
        assert registry_rows(tmp_path, f"SELECT migration_type, source_node, dest_node FROM migrations WHERE instance_uuid = '{record['uuid']}'") \
            == [('evacuation', 'kvm2', 'kvm1')]
        assert invariants.qemu_uuids()[record['uuid']] == 1
        wait_for(lambda: len(serial(log)) == 2 and serial(log)[-1].ticks, 60, 'the restart of race-ha on kvm1')

    # kvm2 is back with its stale copy of race-ha (defined, shut off): the reconciler destroys it.
    result = reconcile(cloud)
    assert [(a['kind'], a['node']) for a in result['actions']] == [('stale', 'kvm2')], result['actions']
    assert invariants.qemu_uuids()[record['uuid']] == 1
    invariants.assert_hold(lab, url(tmp_path), running=['race-ha'])
    assert reconcile(cloud)['changed'] is False
