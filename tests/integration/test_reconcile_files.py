"""reconcile against the lab: instance files without a VM on real libvirt hosts. kvm1 and kvm2 see
their own local directories at one instance path (a marker test tells them apart) and one shared
directory; a guest booted on kvm1's local storage keeps its disk while a leftover of it on kvm2 and
files of no instance are found and removed."""

from __future__ import annotations

import pathlib
import sqlite3
import uuid as uuidlib

from support.cloud import boot, console_log, wait_ticks
from support.lab import ansible_module


def reconcile(cloud, check=False, **args):
    return ansible_module('multihv.cloud.reconcile', dict(cloud, **args), check=check)


def test_leftovers_and_orphan_files_are_found_and_only_they_are_removed(lab, cloud, tmp_path):
    record = boot(cloud, 'rec-files', node='kvm1', storage='local')
    log = console_log(lab, record)
    wait_ticks(log)
    local1, local2 = (pathlib.Path(lab.hosts[h]['local_dir']) for h in ('kvm1', 'kvm2'))
    shared = pathlib.Path(lab.info['shared_instance_path'])
    lost = str(uuidlib.uuid4())
    made = [local2 / ('%s.qcow2' % record['uuid']), local2 / ('%s.console.log' % record['uuid']),  # an interrupted move's
            local2 / ('%s.qcow2' % lost), shared / ('%s.qcow2' % lost)]                          # files of no instance
    for path in made:
        path.write_bytes(b'\0' * 4096)
    # The record as a pass sees it a minute later (it takes no work written less than SETTLE_SECONDS ago).
    with sqlite3.connect(tmp_path / 'registry.sqlite') as db:
        db.execute("UPDATE instances SET updated_at = '2000-01-01T00:00:00.000000Z'")
    try:
        plan = reconcile(cloud, check=True, delete_orphans=True)
        assert sorted((a['kind'], a['name'], a['node']) for a in plan['actions']) == [
            ('orphan', None, 'kvm1'), ('orphan', None, 'kvm2'), ('stale', 'rec-files', 'kvm2')]
        assert sorted((o['kind'], o['node'], o['storage'], o['name']) for o in plan['orphans']) == [
            ('file', 'kvm1', 'shared', '%s.qcow2' % lost), ('file', 'kvm2', 'local', '%s.qcow2' % lost),
            ('file', 'kvm2', 'shared', '%s.qcow2' % lost)]
        assert all(path.exists() for path in made)
        done = reconcile(cloud, delete_orphans=True)
        assert done['changed'] is True and [a for a in done['actions'] if 'error' in a] == []
        assert [path for path in made if path.exists()] == []
        assert (local1 / ('%s.qcow2' % record['uuid'])).exists()
        wait_ticks(log, after=wait_ticks(log)[-1])  # the guest runs on from its disk
        again = reconcile(cloud, delete_orphans=True)
        assert (again['changed'], again['actions'], again['orphans']) == (False, [], [])
    finally:
        for path in made:
            path.unlink(missing_ok=True)
