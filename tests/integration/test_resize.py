"""Resize through the instance module on a lab KVM host (real Ansible runs): check mode and diff, the
domain redefined with the new vCPUs and RAM and its disk grown while the guest goes on ticking, revert
(the old sizes and disk back), confirm (the kept copy gone, the new flavor's allocation), and a smaller
disk refused. The vSphere driver's resize is in the driver contract (test_driver_contract), on vcsim."""

from __future__ import annotations

import pathlib

from support.cloud import allocations, console_log, registry_rows, wait_ticks
from support.lab import ansible_module

GIB = 1 << 30


def domain_of(lab, uuid):
    """(vCPUs, MB of RAM, active, disk capacity in GiB) of the instance's domain on kvm1."""
    conn = lab.connect('kvm1')
    try:
        domain = conn.lookupByUUIDString(uuid)
        _state, max_kib, _kib, vcpus, _cpu_time = domain.info()
        disk = conn.storageVolLookupByPath(str(pathlib.Path(lab.info['shared_instance_path']) / f'{uuid}.qcow2'))
        disk.storagePoolLookupByVolume().refresh(0)  # as the next reader would see it
        disk = conn.storageVolLookupByPath(disk.path())
        return vcpus, max_kib // 1024, domain.isActive() == 1, disk.info()[1] // GIB
    finally:
        conn.close()


def kept_copy(lab, uuid):
    return (pathlib.Path(lab.info['shared_instance_path']) / f'{uuid}.resize.qcow2').exists()


def test_resize_revert_and_confirm_on_kvm(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.flavor', dict(cloud, name='tiny-wide', vcpus=2, ram_mb=48, disk_gb=2))
    args = dict(cloud, name='it-resize', image='tick', node='kvm1', storage='shared')
    record = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny'))['instance']
    uuid, log = record['uuid'], console_log(lab, record)
    before = wait_ticks(log)[-1]

    planned = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide'), check=True, diff=True)
    assert planned['changed'] is True and (planned['diff']['before']['flavor'], planned['diff']['after']['flavor']) == ('tiny', 'tiny-wide')
    assert (planned['diff']['after']['node'], planned['diff']['after']['state']) == ('kvm1', 'verify_resize')
    assert domain_of(lab, uuid) == (1, 32, True, 1) and not kept_copy(lab, uuid), 'check mode resized it'

    resized = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide'))['instance']
    assert (resized['flavor'], resized['state'], resized['node']) == ('tiny-wide', 'verify_resize', 'kvm1')
    assert domain_of(lab, uuid) == (2, 48, True, 2) and kept_copy(lab, uuid)
    assert allocations(tmp_path) == {'kvm1': 48}
    ticked = wait_ticks(log, after=before)[-1]  # started again on its own disk
    assert ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide'))['changed'] is False

    reverted = ansible_module('multihv.cloud.instance', dict(args, state='resize_reverted'))['instance']
    assert (reverted['flavor'], reverted['state']) == ('tiny', 'running')
    assert domain_of(lab, uuid) == (1, 32, True, 1) and not kept_copy(lab, uuid)
    assert allocations(tmp_path) == {'kvm1': 32}
    wait_ticks(log, after=ticked)

    ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide'))
    confirmed = ansible_module('multihv.cloud.instance', dict(args, state='resize_confirmed'))['instance']
    assert (confirmed['flavor'], confirmed['state']) == ('tiny-wide', 'running')
    assert domain_of(lab, uuid) == (2, 48, True, 2) and not kept_copy(lab, uuid)
    assert registry_rows(tmp_path, "SELECT status FROM migrations WHERE migration_type = 'resize' ORDER BY created_at") == [
        ('reverted',), ('completed',)]

    smaller = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny'), expect_failure=True)
    assert 'a disk is never shrunk' in smaller['msg'] and 'instance it-resize was not resized' in smaller['msg']
    assert domain_of(lab, uuid) == (2, 48, True, 2) and allocations(tmp_path) == {'kvm1': 48}


def sizes_on(lab, host, name):
    """(vCPUs, MB of RAM, active) of the domain called name on host, or None when it has none."""
    conn = lab.connect(host)
    try:
        if name not in [d.name() for d in conn.listAllDomains()]:
            return None
        _state, max_kib, _kib, vcpus, _cpu_time = conn.lookupByName(name).info()
        return vcpus, max_kib // 1024, conn.lookupByName(name).isActive() == 1
    finally:
        conn.close()


def test_a_resize_to_another_node_moves_cold_and_a_revert_brings_it_back(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.flavor', dict(cloud, name='tiny-wide', vcpus=2, ram_mb=48, disk_gb=2))
    args = dict(cloud, name='it-resize-move', image='tick', storage='local')
    ansible_module('multihv.cloud.instance', dict(args, flavor='tiny', node='kvm1'))
    resized = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide', node='kvm2'))['instance']
    assert (resized['node'], resized['state']) == ('kvm2', 'verify_resize')
    assert sizes_on(lab, 'kvm2', 'it-resize-move') == (2, 48, True) and sizes_on(lab, 'kvm1', 'it-resize-move') is None
    assert allocations(tmp_path) == {'kvm1': 32, 'kvm2': 48}  # the old claim waits for the confirmation
    reverted = ansible_module('multihv.cloud.instance', dict(args, state='resize_reverted'))['instance']
    assert (reverted['node'], reverted['flavor'], reverted['state']) == ('kvm1', 'tiny', 'running')
    assert sizes_on(lab, 'kvm1', 'it-resize-move') == (1, 32, True) and sizes_on(lab, 'kvm2', 'it-resize-move') is None
    assert allocations(tmp_path) == {'kvm1': 32}
    wait_ticks(console_log(lab, reverted))
