"""Resize through the instance module on the lab's KVM hosts (real Ansible runs), in one test to keep the
suite short: check mode and diff; a resize to another node (a cold move, the old claim kept) and its revert
(back on its node with its old sizes and disk); a resize in place (the domain redefined with the new vCPUs
and RAM, its disk grown, a copy of the old disk kept) confirmed (the copy gone, the new flavor's
allocation); a smaller disk refused. The vSphere driver's resize is in the driver contract
(test_driver_contract), on vcsim."""

from __future__ import annotations

import pathlib

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from support.cloud import allocations, console_log, registry_rows, wait_ticks
from support.lab import ansible_module

GIB = 1 << 30


def domain_of(lab, host, record):
    """(vCPUs, MB of RAM, active, disk capacity in GiB, a kept copy of the old disk there) of the instance's domain
    on host, or None when host has none."""
    conn = lab.connect(host)
    try:
        if record['name'] not in [d.name() for d in conn.listAllDomains()]:
            return None
        domain = conn.lookupByName(record['name'])
        _state, max_kib, _kib, vcpus, _cpu_time = domain.info()
        directory = pathlib.Path(lab.hosts[host]['local_dir'])  # as this machine sees it
        disk = conn.storageVolLookupByPath(domxml.parse_domain(domain.XMLDesc(0)).disk_paths[0])  # as the host sees it
        disk.storagePoolLookupByVolume().refresh(0)  # as the next reader would see it
        disk = conn.storageVolLookupByPath(disk.path())
        kept = (directory / f"{record['uuid']}.resize.qcow2").exists()
        return vcpus, max_kib // 1024, domain.isActive() == 1, disk.info()[1] // GIB, kept
    finally:
        conn.close()


def test_resize_moved_and_reverted_then_in_place_and_confirmed_on_kvm(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.flavor', dict(cloud, name='tiny-wide', vcpus=2, ram_mb=48, disk_gb=2))
    args = dict(cloud, name='it-resize', image='tick', storage='local')
    record = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny', node='kvm1'))['instance']

    planned = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide', node='kvm2'), check=True, diff=True)
    assert planned['changed'] is True and (planned['instance']['node'], planned['instance']['state']) == ('kvm2', 'verify_resize')
    for line in ('-    "flavor": "tiny",', '+    "flavor": "tiny-wide",', '-    "node": "kvm1",', '+    "node": "kvm2",'):
        assert line in planned['_output'], line  # the diff the user sees
    assert domain_of(lab, 'kvm1', record) == (1, 32, True, 1, False) and domain_of(lab, 'kvm2', record) is None, 'check mode resized it'

    moved = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide', node='kvm2'))['instance']
    assert (moved['node'], moved['state']) == ('kvm2', 'verify_resize')
    assert domain_of(lab, 'kvm2', record) == (2, 48, True, 2, True) and domain_of(lab, 'kvm1', record) is None
    assert allocations(tmp_path) == {'kvm1': 32, 'kvm2': 48}  # the old claim waits for the confirmation
    reverted = ansible_module('multihv.cloud.instance', dict(args, state='resize_reverted'))['instance']
    assert (reverted['node'], reverted['flavor'], reverted['state']) == ('kvm1', 'tiny', 'running')
    assert domain_of(lab, 'kvm1', record) == (1, 32, True, 1, False) and domain_of(lab, 'kvm2', record) is None
    assert allocations(tmp_path) == {'kvm1': 32}

    resized = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny-wide'))['instance']
    assert (resized['node'], resized['flavor'], resized['state']) == ('kvm1', 'tiny-wide', 'verify_resize')
    assert domain_of(lab, 'kvm1', record) == (2, 48, True, 2, True) and allocations(tmp_path) == {'kvm1': 48}
    confirmed = ansible_module('multihv.cloud.instance', dict(args, state='resize_confirmed'))['instance']
    assert (confirmed['flavor'], confirmed['state']) == ('tiny-wide', 'running')
    assert domain_of(lab, 'kvm1', record) == (2, 48, True, 2, False)
    assert registry_rows(tmp_path, "SELECT status, source_node, dest_node FROM migrations WHERE migration_type = 'resize' "
                                   "ORDER BY created_at") == [('reverted', 'kvm1', 'kvm2'), ('completed', 'kvm1', 'kvm1')]
    wait_ticks(console_log(lab, confirmed))  # the guest runs on its twice-moved, grown disk

    smaller = ansible_module('multihv.cloud.instance', dict(args, flavor='tiny'), expect_failure=True)
    assert 'a disk is never shrunk' in smaller['msg'] and 'instance it-resize was not resized' in smaller['msg']
    assert domain_of(lab, 'kvm1', record) == (2, 48, True, 2, False) and allocations(tmp_path) == {'kvm1': 48}
