"""The reconciler and instance files without a VM (issue 14): files of no instance are orphans, reported
always and deleted only when asked; local files a move or an evacuation left on a node that does not hold
the instance are removed; nothing that may be an instance's only disk, or the disk it boots from, is
touched. On fake hypervisors (whose world.disks are the files in the storage directories) and a real
SQLite registry."""

from __future__ import annotations

import uuid as uuidlib

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile
from support.fake_driver import FakeCloud, FakeWorld, two_node_cloud
from support.reconciling import kinds, run, second_pass_does_nothing


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 (fenceable) and fake2, local directories local-fake1 and local-fake2, both seeing 'shared'."""
    with two_node_cloud(tmp_path) as made:
        yield made


def files_of(cloud, inst_uuid):
    return sorted(p for p in cloud.world.disks if p.rpartition('/')[2].startswith(inst_uuid + '.'))


def own(directory, inst_uuid):
    """The files a boot makes for an instance in directory: its config drive and its disk."""
    return ['%s/%s.config' % (directory, inst_uuid), '%s/%s.disk' % (directory, inst_uuid)]


NOT_INSTANCE_FILES = ['local-fake1/_base', 'shared/_base', 'shared/multihv-heartbeat-fake1', 'local-fake2/notauuid.qcow2',
                      'local-fake2/%s.qcow2' % str(uuidlib.uuid4()).upper(), 'local-fake2/%s' % uuidlib.uuid4()]


def test_files_of_no_instance_are_reported_always_and_deleted_only_when_asked(cloud):
    lost = str(uuidlib.uuid4())
    kept = cloud.boot('vm1', node='fake1', storage='local')
    left = {'local-fake2/%s.disk' % lost, 'local-fake2/%s.console.log' % lost, 'shared/%s.disk' % lost}
    cloud.world.disks.update(left | set(NOT_INSTANCE_FILES))
    result = run(cloud)
    assert result['actions'] == [] and cloud.world.disks >= left
    assert sorted((o['kind'], o['uuid'], o['node'], o['storage'], o['path']) for o in result['orphans']) == [
        ('file', lost, 'fake1', 'shared', 'shared/%s.disk' % lost),  # both nodes see the shared directory
        ('file', lost, 'fake2', 'local', 'local-fake2/%s.console.log' % lost),
        ('file', lost, 'fake2', 'local', 'local-fake2/%s.disk' % lost),
        ('file', lost, 'fake2', 'shared', 'shared/%s.disk' % lost)]
    assert result['orphans'][0]['reason'].startswith('a file of no instance in the ')
    deleted = run(cloud, delete_orphans=True)
    assert kinds(deleted) == [('orphan', None, 'fake1'), ('orphan', None, 'fake2')]  # the shared file once
    assert sorted(a['found'] for a in deleted['actions']) == [
        'files of no instance in the local directory of fake2: %s.console.log, %s.disk' % (lost, lost),
        'files of no instance in the shared directory of fake1: %s.disk' % lost]
    assert cloud.world.disks == set(own('local-fake1', kept.uuid)) | set(NOT_INSTANCE_FILES)
    second_pass_does_nothing(cloud)


def test_an_orphan_vm_s_own_disk_goes_with_the_vm_and_a_shared_file_waits_for_nodes_that_cannot_be_seen(cloud):
    cloud.boot('vm1', node='fake1', storage='shared')
    cloud.registry.delete_instance(cloud.registry.get_instance(name='vm1').uuid)  # an orphan VM with its shared disk
    lost = str(uuidlib.uuid4())
    cloud.world.disks.add('shared/%s.disk' % lost)
    cloud.world.add_node('fake3')  # sees 'shared' too, and does not answer
    cloud.world.stop_answering('fake3')
    result = run(cloud, delete_orphans=True)
    assert [(o['kind'], o['name']) for o in result['orphans']] == [('vm', 'vm1'), ('file', '%s.disk' % lost), ('file', '%s.disk' % lost)]
    assert 'not deleted while fake3, which may see that directory, cannot be seen' in result['orphans'][1]['reason']
    assert kinds(result) == [('orphan', 'vm1', 'fake1')]
    assert cloud.world.disks == {'shared/%s.disk' % lost} and cloud.world.vms == {}
    cloud.world.answer_again('fake3')
    assert kinds(run(cloud, delete_orphans=True)) == [('orphan', None, 'fake1')]
    assert cloud.world.disks == set()
    second_pass_does_nothing(cloud)


def test_local_files_left_on_a_node_that_does_not_hold_the_instance_are_removed(cloud):
    record = cloud.boot('vm1', node='fake1', storage='local')
    cloud.world.disks.update({'local-fake2/%s.disk' % record.uuid, 'local-fake2/%s.console.log' % record.uuid})
    plan = run(cloud, check_mode=True)
    assert kinds(plan) == [('stale', 'vm1', 'fake2')] and len(files_of(cloud, record.uuid)) == 4
    assert plan['actions'][0]['found'] == ('files of it in the local directory of fake2, which has no VM of it (%s.console.log, %s.disk); '
                                           'its VM is on fake1' % (record.uuid, record.uuid))
    result = run(cloud)
    assert kinds(result) == [('stale', 'vm1', 'fake2')] and result['orphans'] == []
    assert files_of(cloud, record.uuid) == own('local-fake1', record.uuid)
    assert cloud.world.vm('vm1').power == 'running'
    second_pass_does_nothing(cloud)


def test_files_that_may_be_the_instance_s_only_or_boot_disk_are_left_alone(cloud):
    # Its VM is gone from its node: the file on fake2 may hold its only disk.
    gone = cloud.boot('gone', node='fake1', storage='local')
    cloud.world.disks.add('local-fake2/%s.disk' % gone.uuid)
    del cloud.world.vms[('fake1', gone.uuid)]
    # A shared file of an instance that is on local storage: never removed by the reconciler.
    local = cloud.boot('local', node='fake1', storage='local')
    cloud.world.disks.add('shared/%s.disk' % local.uuid)
    # A run works on it (its lease is live): what is on fake2 may be its move's.
    busy = cloud.boot('busy', node='fake1', storage='local')
    cloud.world.disks.add('local-fake2/%s.disk' % busy.uuid)
    assert cloud.registry.acquire_lease('instance:%s' % busy.uuid, 'a live migration', 60)
    # Its migration is recorded and unfinished: the files on fake2 are that move's, however quiet it is.
    moving = cloud.boot('moving', node='fake1', storage='local')
    cloud.world.disks.add('local-fake2/%s.disk' % moving.uuid)
    cloud.registry.create_migration(instance_uuid=moving.uuid, migration_type='block', status='running', source_node='fake1',
                                    source_host='fake1', dest_node='fake2', dest_host='fake2')
    # Written just now, and nothing works on it: its leftover goes at once (no settling time is needed).
    fresh = cloud.boot('fresh', node='fake1', storage='local')
    cloud.world.disks.add('local-fake2/%s.disk' % fresh.uuid)
    before = set(cloud.world.disks)
    result = run(cloud, delete_orphans=True, settle_seconds=reconcile.SETTLE_SECONDS)
    assert kinds(result) == [('stale', 'fresh', 'fake2')]
    assert [m['name'] for m in result['missing']] == ['gone']
    assert cloud.world.disks == before - {'local-fake2/%s.disk' % fresh.uuid}


def test_a_local_directory_two_nodes_share_is_never_taken_for_leftovers(tmp_path):
    world = FakeWorld()
    for name in ('fake1', 'fake2'):
        world.add_endpoint(name).storage['local'] = 'local-same'  # one directory, seen by both hosts
        world.add_node(name)
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tick')
        record = cloud.boot('vm1', node='fake1', storage='local')
        result = run(cloud, delete_orphans=True)
        assert result['actions'] == [] and result['orphans'] == []
        assert world.disks == set(own('local-same', record.uuid))


def interrupted_block_migration(cloud, name):
    """An instance on fake1 (local storage) whose block migration to fake2 was recorded, then its controller died."""
    record = cloud.boot(name, node='fake1', storage='local')
    migration = cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='block', status='running',
                                                source_node='fake1', source_host='fake1', dest_node='fake2', dest_host='fake2')
    view = cloud.context().view('fake2')
    assert cloud.registry.claim(record.uuid, 'fake2', 'fake', {'vcpus': 1, 'memory_mb': 1024, 'disk_gb': 1}, view.capacity)
    return record, migration


def test_a_block_migration_interrupted_on_the_source_loses_the_target_s_partial_copy(cloud):
    record, migration = interrupted_block_migration(cloud, 'vm1')
    cloud.world.disks.add('local-fake2/%s.disk' % record.uuid)  # the copy had begun
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake1')]
    assert 'remove its files left on fake2 (%s.disk)' % record.uuid in result['actions'][0]['does']
    assert cloud.registry.get_migration(migration.id).status == 'failed'
    assert files_of(cloud, record.uuid) == own('local-fake1', record.uuid)
    assert cloud.allocations() == [('vm1', 'fake1')]
    second_pass_does_nothing(cloud)


def test_a_block_migration_interrupted_after_the_switch_loses_the_source_s_disk(cloud):
    record, migration = interrupted_block_migration(cloud, 'vm1')
    vm = cloud.world.vms.pop(('fake1', record.uuid))
    vm.node = vm.host = 'fake2'
    vm.disks = ['local-fake2/%s.disk' % record.uuid]
    cloud.world.vms[('fake2', record.uuid)] = vm
    cloud.world.disks.add('local-fake2/%s.disk' % record.uuid)
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake2')]
    assert cloud.registry.get_migration(migration.id).status == 'completed'
    assert files_of(cloud, record.uuid) == ['local-fake2/%s.disk' % record.uuid]
    second_pass_does_nothing(cloud)


def test_a_move_that_left_no_vm_keeps_every_file(cloud):
    record, migration = interrupted_block_migration(cloud, 'vm1')
    cloud.world.disks.add('local-fake2/%s.disk' % record.uuid)
    del cloud.world.vms[('fake1', record.uuid)]
    result = run(cloud, delete_orphans=True)
    assert kinds(result) == [('migration', 'vm1', 'fake1')]
    assert cloud.registry.get_migration(migration.id).status == 'failed'
    assert files_of(cloud, record.uuid) == own('local-fake1', record.uuid) + ['local-fake2/%s.disk' % record.uuid]
    assert run(cloud, delete_orphans=True)['actions'] == []


def test_drivers_without_instance_files_report_none_and_the_pass_asks_only_when_it_needs_to(tmp_path):
    world = FakeWorld()
    world.add_cluster('vc/c1')
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tmpl', hypervisor_type='fakecluster', template='tmpl')
        assert reconcile.run_for_ha(cloud.context(), settle_seconds=0)['actions'] == []
        assert ('vc', 'list_instance_files') not in world.calls  # the HA steps had no question about files
        assert run(cloud, delete_orphans=True)['actions'] == []
        assert ('vc', 'list_instance_files') in world.calls
