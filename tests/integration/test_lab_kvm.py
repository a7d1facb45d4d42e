"""The lab's KVM hosts: distinct hosts, live migration between them, power loss and reboot, storage heartbeats."""

from __future__ import annotations

import pathlib
import time
import xml.etree.ElementTree as ET

import libvirt
import pytest

from support.faults import heartbeat
from support.lab import last_tick, qemu_running, serial, wait_for
from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import instance_pool
from support import guest


def test_hosts_are_distinct_libvirt_hosts(lab):
    assert len(lab.hosts) >= 2
    seen = {}
    for name in lab.hosts:
        conn = lab.connect(name)
        try:
            caps = ET.fromstring(conn.getCapabilities())
            seen[name] = (conn.getHostname(), caps.findtext('host/uuid'))
        finally:
            conn.close()
    assert [hostname for hostname, uuid in seen.values()] == list(lab.hosts)
    assert len({uuid for hostname, uuid in seen.values()}) == len(lab.hosts), seen


def _volumes_seen(lab, host: str, path: str) -> set[str]:
    """Files a host sees in `path`, through the storage pool the KVM driver keeps there."""
    conn = lab.connect(host)
    try:
        pool = instance_pool(conn, path)
        pool.refresh(0)
        return set(pool.listVolumes())
    finally:
        conn.close()


def test_shared_directory_is_shared_and_local_ones_are_not(lab, tmp_path):
    shared = pathlib.Path(lab.info['shared_instance_path'])
    marker = f'shared-{tmp_path.name}'
    (shared / marker).write_text('x')
    first, second = list(lab.hosts)[:2]
    local_marker = f'local-{tmp_path.name}'
    (pathlib.Path(lab.hosts[first]['local_dir']) / local_marker).write_text('x')
    try:
        for host in (first, second):
            assert marker in _volumes_seen(lab, host, str(shared))
        assert local_marker in _volumes_seen(lab, first, lab.info['local_instance_path'])
        assert local_marker not in _volumes_seen(lab, second, lab.info['local_instance_path'])
    finally:
        (shared / marker).unlink()
        (pathlib.Path(lab.hosts[first]['local_dir']) / local_marker).unlink()


def test_live_migration_keeps_the_guest_running(lab, guests):
    name, log = guests.start('kvm1', storage='shared')
    wait_for(lambda: last_tick(log) >= 3, 30, f'{name} to tick on kvm1')
    src, dst = lab.connect('kvm1'), lab.connect('kvm2')
    try:
        dom = src.lookupByName(name)
        # A plain directory is not storage libvirt recognises as shared: UNSAFE says we know it is.
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_UNSAFE)
        params = {libvirt.VIR_MIGRATE_PARAM_URI: 'tcp://127.0.0.1',
                  libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: '127.0.0.1'}
        before = last_tick(log)
        moved = dom.migrate3(dst, params, flags)
        assert moved.isActive() and moved.isPersistent()
        assert name not in [d.name() for d in src.listAllDomains()]
    finally:
        src.close()
        dst.close()
    wait_for(lambda: last_tick(log) >= before + 4, 30, f'{name} to tick on kvm2')
    boots = serial(log)
    # One boot: the guest was not restarted; its counter went on by one each tick.
    assert len(boots) == 1, boots
    assert boots[0].ticks[0] == 1
    assert not guest.gaps(boots[0].ticks[:-1]), boots[0].ticks


def test_lab_fail_is_a_power_loss_and_restore_a_reboot(lab, guests):
    survivor, survivor_log = guests.start('kvm1', storage='shared')
    victim, victim_log = guests.start('kvm2', storage='local')
    wait_for(lambda: last_tick(victim_log) >= 2 and last_tick(survivor_log) >= 2, 30, 'both guests to tick')
    assert qemu_running(victim)

    try:
        lab.make('lab-fail', 'HOST=kvm2')

        with pytest.raises(libvirt.libvirtError):
            libvirt.open(lab.uri('kvm2'))
        assert not qemu_running(victim)
        stopped_at = last_tick(victim_log)
        survivor_before = last_tick(survivor_log)
        time.sleep(2)
        assert last_tick(victim_log) == stopped_at, 'the failed host\'s guest still ticks'
        assert last_tick(survivor_log) >= survivor_before + 2, 'kvm1\'s guest stopped with kvm2'
    finally:
        lab.make('lab-restore', 'HOST=kvm2')

    conn = lab.connect('kvm2')
    try:
        dom = conn.lookupByName(victim)  # the persistent definition survived the "reboot"
        assert dom.isPersistent() and not dom.isActive()
        dom.create()
    finally:
        conn.close()
    # Booted again from its own disk: a second boot that read what the first one wrote.
    wait_for(lambda: len(serial(victim_log)) == 2 and serial(victim_log)[1].ticks, 30, f'{victim} to boot again')
    second = serial(victim_log)[1]
    assert second.number == 2
    assert second.persisted is not None and second.persisted >= stopped_at - 1


def test_each_host_writes_its_storage_heartbeat_while_it_has_power(lab):
    """The lab hosts run the kvm_host role's heartbeat writer: it advances, the KVM driver reads it through another
    host, a power loss stops it and a reboot starts it again."""
    reader, host = list(lab.hosts)[0], list(lab.hosts)[-1]
    settle = 2 * lab.info['heartbeat_interval'] + 2
    first = wait_for(lambda: heartbeat(lab, host), settle, f'a heartbeat of {host}')
    wait_for(lambda: (heartbeat(lab, host) or 0) > first, settle, f'the heartbeat of {host} to advance')
    config = _config.load(str(lab.dir / 'multihv-cloud.yml'), env={})
    driver = LibvirtDriver(next(h for h in config.kvm_hosts if h.name == reader))
    try:
        assert abs(driver.storage_heartbeat(host) - time.time()) < settle
    finally:
        driver.close()
    with lab.power_loss(host):
        last = heartbeat(lab, host)
        time.sleep(settle)
        assert heartbeat(lab, host) == last, f'the heartbeat of {host} went on after its power loss'
    wait_for(lambda: (heartbeat(lab, host) or 0) > last, settle, f'the heartbeat of {host} after its reboot')
