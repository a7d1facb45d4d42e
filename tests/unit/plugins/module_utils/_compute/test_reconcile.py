"""The reconciler (reconcile.run) on fake hypervisors and a real SQLite registry: each kind of
interrupted work it finishes or undoes, power states, stale copies, orphans, a node it cannot
reach, check mode that writes nothing, and a second pass that finds nothing to do."""

from __future__ import annotations

import copy
import dataclasses
import sqlite3

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile
from support.fake_driver import two_node_cloud
from support.reconciling import kinds, run, second_pass_does_nothing


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 (fenceable) and fake2, sharing the directory 'shared'; flavor small, image tick."""
    with two_node_cloud(tmp_path) as made:
        yield made


def rows(cloud):
    """Every row of every table of the registry, read past the Registry (so nothing is hidden)."""
    conn = sqlite3.connect(str(cloud.path))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return dict((t, sorted(map(repr, conn.execute('SELECT * FROM %s' % t)))) for t in tables)
    finally:
        conn.close()


def world_of(cloud):
    return (dict((k, dataclasses.asdict(v)) for k, v in cloud.world.vms.items()), sorted(cloud.world.disks))


def copy_vm(cloud, name, node, power='running'):
    """A second VM of instance `name` on node (what an interrupted move leaves), sharing its disks."""
    vm = copy.deepcopy(cloud.world.vm(name))
    vm.node, vm.host, vm.power = node, node, power
    cloud.world.vms[(node, vm.uuid)] = vm
    return vm


def move_vm(cloud, name, node):
    vm = cloud.world.vm(name)
    del cloud.world.vms[(vm.node, vm.uuid)]
    vm.node = vm.host = node
    cloud.world.vms[(node, vm.uuid)] = vm


def interrupted_migration(cloud, name, storage='shared', migration_type='live', status='running'):
    """An instance on fake1 whose move to fake2 was claimed and recorded, then its controller died."""
    record = cloud.boot(name, node='fake1', storage=storage)
    view = cloud.context().view('fake2')
    assert cloud.registry.claim(record.uuid, 'fake2', 'fake', {'vcpus': 1, 'memory_mb': 1024, 'disk_gb': 1}, view.capacity)
    migration = cloud.registry.create_migration(instance_uuid=record.uuid, migration_type=migration_type, status=status,
                                                source_node='fake1', source_host='fake1', dest_node='fake2', dest_host='fake2')
    return record, migration


def test_a_build_interrupted_after_its_vm_was_made_loses_the_vm_and_is_recorded_error(cloud):
    record = cloud.boot('vm1', node='fake1', storage='local')
    cloud.registry.update_instance(record.uuid, state='building')
    result = run(cloud)
    assert kinds(result) == [('build', 'vm1', 'fake1')]
    assert 'destroy its VM and disks on fake1' in result['actions'][0]['does']
    assert cloud.world.vm('vm1') is None and cloud.world.disks == set()
    assert cloud.registry.get_instance(name='vm1').state == 'error'
    assert cloud.allocations() == []
    second_pass_does_nothing(cloud)


def test_a_build_that_never_got_a_vm_is_removed_and_one_with_a_live_lease_is_left_alone(cloud):
    room = {'vcpus': 1, 'memory_mb': 1024, 'disk_gb': 1}
    capacity = cloud.context().view('fake1').capacity
    for name in ('lost', 'busy'):
        made = cloud.registry.create_instance(name=name, node='fake1', host='fake1', flavor='small', image='tick', storage='local')
        assert cloud.registry.claim(made.uuid, 'fake1', 'fake', room, capacity)
    busy = cloud.registry.get_instance(name='busy')
    assert cloud.registry.acquire_lease('instance:%s' % busy.uuid, 'a live boot', 60)
    result = run(cloud)
    assert kinds(result) == [('build', 'lost', 'fake1')]
    assert 'never got a VM' in result['actions'][0]['does']
    assert cloud.nodes_of() == {'busy': 'fake1'} and cloud.allocations() == [('busy', 'fake1')]


def test_work_written_less_than_settle_seconds_ago_is_left_alone_even_without_a_lease(cloud):
    record = cloud.boot('vm1', node='fake1')
    cloud.registry.update_instance(record.uuid, state='building')  # a boot takes no lease yet
    interrupted_migration(cloud, 'vm2')  # a move's lease is not renewed while it runs
    result = reconcile.run(cloud.context())
    assert result['actions'] == [] and cloud.world.vm('vm1') is not None
    assert [m.status for m in cloud.registry.list_migrations()] == ['running']


def test_an_evacuation_interrupted_while_its_source_is_forced_down_is_judged_from_its_target(cloud):
    record, evacuation = interrupted_migration(cloud, 'vm1', storage='shared', migration_type='evacuation')
    copy_vm(cloud, 'vm1', 'fake2')
    cloud.world.power_loss('fake1')
    cloud.registry.set_node('fake1', 'fake', forced_down=True)
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake2')] and result['unknown'] == []
    assert cloud.registry.get_migration(evacuation.id).status == 'done'  # its stale copy waits on fake1
    assert cloud.nodes_of() == {'vm1': 'fake2'} and cloud.allocations() == [('vm1', 'fake2')]
    cloud.world.answer_again('fake1')
    back = run(cloud)
    assert kinds(back) == [('stale', None, 'fake1')]
    assert cloud.world.vm('vm1', 'fake1') is None and cloud.world.disks == {'shared/%s.disk' % record.uuid, 'shared/%s.config' % record.uuid}
    assert cloud.registry.get_migration(evacuation.id).status == 'completed'
    second_pass_does_nothing(cloud)


def test_a_migration_interrupted_with_the_vm_still_on_the_source_fails_and_frees_the_target(cloud):
    record, migration = interrupted_migration(cloud, 'vm1')
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake1')]
    after = cloud.registry.get_migration(migration.id)
    assert after.status == 'failed' and 'the reconciler kept the VM on fake1' in after.error and after.finished_at
    assert cloud.nodes_of() == {'vm1': 'fake1'} and cloud.allocations() == [('vm1', 'fake1')]
    assert cloud.world.vm('vm1', 'fake1') is not None and cloud.registry.get_instance(uuid=record.uuid).state == 'running'
    second_pass_does_nothing(cloud)


def test_a_migration_interrupted_after_the_vm_moved_is_completed_and_frees_the_source(cloud):
    _record, migration = interrupted_migration(cloud, 'vm1')
    move_vm(cloud, 'vm1', 'fake2')
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake2')]
    assert cloud.registry.get_migration(migration.id).status == 'completed'
    assert cloud.nodes_of() == {'vm1': 'fake2'} and cloud.allocations() == [('vm1', 'fake2')]
    assert cloud.registry.get_instance(name='vm1').host == 'fake2'
    second_pass_does_nothing(cloud)


def test_a_migration_interrupted_with_the_vm_on_both_keeps_the_running_one_and_the_shared_disk(cloud):
    record, migration = interrupted_migration(cloud, 'vm1', storage='shared')
    copy_vm(cloud, 'vm1', 'fake2', power='running')
    cloud.world.vm('vm1', 'fake1').power = 'paused'
    disks = set(cloud.world.disks)
    result = run(cloud)
    assert 'undefine the copy on fake1 (its shared disk kept)' in result['actions'][0]['does']
    assert cloud.world.vm('vm1', 'fake1') is None and cloud.world.vm('vm1', 'fake2').power == 'running'
    assert cloud.world.disks == disks == {'shared/%s.disk' % record.uuid, 'shared/%s.config' % record.uuid}
    assert cloud.registry.get_migration(migration.id).status == 'completed'
    assert cloud.nodes_of() == {'vm1': 'fake2'} and cloud.allocations() == [('vm1', 'fake2')]
    second_pass_does_nothing(cloud)


def test_a_migration_interrupted_with_the_vm_on_both_keeps_the_source_when_it_is_the_running_one(cloud):
    _record, migration = interrupted_migration(cloud, 'vm1', storage='local')
    copy_vm(cloud, 'vm1', 'fake2', power='paused').disks = ['local-fake2/x.disk']
    cloud.world.disks.add('local-fake2/x.disk')
    result = run(cloud)
    assert 'undefine the copy on fake2 (its local disk removed)' in result['actions'][0]['does']
    assert cloud.world.vm('vm1', 'fake2') is None and 'local-fake2/x.disk' not in cloud.world.disks
    assert cloud.world.vm('vm1', 'fake1').disks[0] in cloud.world.disks
    assert cloud.registry.get_migration(migration.id).status == 'failed'
    assert cloud.allocations() == [('vm1', 'fake1')]
    second_pass_does_nothing(cloud)


def test_a_migration_interrupted_with_the_vm_nowhere_fails_and_the_instance_is_error(cloud):
    record, migration = interrupted_migration(cloud, 'vm1', status='accepted')
    del cloud.world.vms[('fake1', record.uuid)]
    result = run(cloud)
    assert 'the instance error (it has no VM)' in result['actions'][0]['does']
    assert cloud.registry.get_migration(migration.id).status == 'failed'
    assert 'found no VM on fake1 or fake2' in cloud.registry.get_migration(migration.id).error
    assert cloud.registry.get_instance(name='vm1').state == 'error' and cloud.allocations() == [('vm1', 'fake1')]
    second_pass_does_nothing(cloud)


def test_power_states_are_recorded_as_the_hypervisor_reports_them(cloud):
    cloud.boot('off', node='fake1')
    cloud.boot('on', node='fake2', state='stopped')
    cloud.world.vm('off').power = 'stopped'
    cloud.world.vm('on').power = 'running'
    result = run(cloud)
    assert kinds(result) == [('power', 'off', 'fake1'), ('power', 'on', 'fake2')]
    assert dict((i.name, i.state) for i in cloud.registry.list_instances()) == {'off': 'stopped', 'on': 'running'}
    assert result['actions'][0]['found'] == 'recorded running, its VM is stopped'
    second_pass_does_nothing(cloud)


def test_the_power_of_an_instance_a_run_works_on_is_left_to_that_run(cloud):
    """A cold move stops the VM first: its record says running until the move ends, and a pass meanwhile
    must neither record it stopped nor fail on the lease the move holds."""
    _record, _migration = interrupted_migration(cloud, 'moving', migration_type='cold', status='running')
    cloud.world.vm('moving').power = 'stopped'
    busy = cloud.boot('busy', node='fake2')
    cloud.world.vm('busy').power = 'stopped'
    assert cloud.registry.acquire_lease('instance:%s' % busy.uuid, 'a live reboot', 60)
    result = reconcile.run(cloud.context())  # settle_seconds as shipped: the move is not left yet
    assert (result['actions'], result['failures']) == ([], [])
    assert dict((i.name, i.state) for i in cloud.registry.list_instances()) == {'moving': 'running', 'busy': 'running'}


def test_a_stale_copy_of_a_failed_evacuation_on_the_returned_host_is_destroyed_with_its_shared_disk_kept(cloud):
    record = cloud.boot('vm1', node='fake1', storage='shared')
    cloud.world.power_loss('fake1')
    _evacuation.evacuate(cloud.context(), 'fake1')
    cloud.world.answer_again('fake1')
    evacuation = cloud.registry.list_migrations(migration_type='evacuation')[0]
    cloud.registry.update_migration(evacuation.id, status='failed')  # a status clean_stale does not look at
    result = run(cloud)
    assert kinds(result) == [('stale', 'vm1', 'fake1')]
    assert result['actions'][0]['does'] == 'destroy it (its shared disk kept)'
    assert cloud.world.vm('vm1', 'fake1') is None and cloud.world.vm('vm1', 'fake2').power == 'running'
    assert cloud.world.disks == {'shared/%s.disk' % record.uuid, 'shared/%s.config' % record.uuid}
    second_pass_does_nothing(cloud)


def test_a_second_copy_of_an_instance_no_run_works_on_is_destroyed_and_its_shared_disk_kept(cloud):
    record = cloud.boot('vm1', node='fake1', storage='shared')
    copy_vm(cloud, 'vm1', 'fake2', power='running')  # a move whose source's undefine failed, say
    busy = cloud.boot('busy', node='fake1', storage='shared')
    copy_vm(cloud, 'busy', 'fake2', power='stopped')
    assert cloud.registry.acquire_lease('instance:%s' % busy.uuid, 'a live migration', 60)
    result = run(cloud)
    assert kinds(result) == [('stale', 'vm1', 'fake2')]
    assert result['actions'][0]['found'] == 'a second copy (running) on fake2; the record says fake1 (running) and no migration of it is unfinished'
    assert result['actions'][0]['does'] == 'destroy it (its disk kept)'
    assert cloud.world.vm('vm1', 'fake2') is None and cloud.world.vm('vm1', 'fake1').power == 'running'
    assert 'shared/%s.disk' % record.uuid in cloud.world.disks
    assert cloud.world.vm('busy', 'fake2') is not None  # a run works on it: left to that run


def test_stale_copies_of_done_evacuations_go_through_clean_stale(cloud):
    cloud.boot('vm1', node='fake1', storage='local')
    cloud.world.power_loss('fake1')
    _evacuation.evacuate(cloud.context(), 'fake1')
    cloud.world.answer_again('fake1')
    result = run(cloud)
    assert kinds(result) == [('stale', None, 'fake1')]
    assert cloud.world.vm('vm1', 'fake1') is None
    assert [m.status for m in cloud.registry.list_migrations()] == ['completed']
    second_pass_does_nothing(cloud)


def test_orphans_are_reported_and_deleted_only_when_asked(cloud):
    gone = cloud.boot('gone', node='fake1')
    cloud.registry.delete_instance(gone.uuid)  # its VM stays: an orphan
    kept = cloud.boot('kept', node='fake1')
    capacity = cloud.context().view('fake2').capacity
    assert cloud.registry.claim(kept.uuid, 'fake2', 'fake', {'vcpus': 1, 'memory_mb': 1024, 'disk_gb': 1}, capacity)
    result = run(cloud)
    assert (result['changed'], result['actions']) == (False, [])
    assert sorted((o['kind'], o['uuid'], o['node']) for o in result['orphans']) == [
        ('allocation', kept.uuid, 'fake2'), ('vm', gone.uuid, 'fake1')]
    assert cloud.world.vm('gone') is not None
    deleted = run(cloud, delete_orphans=True)
    assert kinds(deleted) == [('orphan', 'gone', 'fake1'), ('orphan', 'kept', 'fake2')]
    assert cloud.world.vm('gone') is None and cloud.allocations() == [('kept', 'fake1')]
    second_pass_does_nothing(cloud)


def test_instances_of_a_node_that_cannot_be_reached_are_unknown_and_unchanged(cloud):
    lost = cloud.boot('lost', node='fake1')
    cloud.registry.update_instance(lost.uuid, state='building')
    cloud.boot('far', node='fake1')
    cloud.world.vm('far').power = 'stopped'
    cloud.world.stop_answering('fake1')
    before = rows(cloud), world_of(cloud)
    result = run(cloud)
    assert (result['changed'], result['actions']) == (False, [])
    assert sorted((u['name'], u['node']) for u in result['unknown']) == [('far', 'fake1'), ('lost', 'fake1')]
    assert 'node fake1 cannot be reached' in result['unknown'][0]['reason']
    assert (rows(cloud), world_of(cloud)) == before


def test_check_mode_returns_the_plan_and_writes_nothing(cloud):
    building = cloud.boot('building', node='fake1')
    cloud.registry.update_instance(building.uuid, state='building')
    interrupted_migration(cloud, 'moving')
    cloud.boot('off', node='fake2')
    cloud.world.vm('off').power = 'stopped'
    orphan = cloud.boot('orphan', node='fake2')
    cloud.registry.delete_instance(orphan.uuid)
    before = rows(cloud), world_of(cloud)
    planned = run(cloud, delete_orphans=True, check_mode=True)
    assert planned['changed'] is True
    assert kinds(planned) == [('build', 'building', 'fake1'), ('migration', 'moving', 'fake1'), ('orphan', 'orphan', 'fake2'),
                              ('power', 'off', 'fake2')]
    assert all(a['found'] and a['does'] for a in planned['actions'])
    assert (rows(cloud), world_of(cloud)) == before
    done = run(cloud, delete_orphans=True)
    assert [a['kind'] for a in done['actions']] == [a['kind'] for a in planned['actions']] and done['failures'] == []
    second_pass_does_nothing(cloud)


def test_an_action_whose_records_changed_since_the_plan_is_left_for_the_next_pass(cloud, monkeypatch):
    record = cloud.boot('vm1', node='fake1')
    cloud.world.vm('vm1').power = 'stopped'
    plan = reconcile.survey_and_plan

    def racing(ctx, *args):
        made = plan(ctx, *args)
        cloud.registry.update_instance(record.uuid, state='running', host='fake1-moved')  # another run wrote meanwhile
        return made
    monkeypatch.setattr(reconcile, 'survey_and_plan', racing)
    result = run(cloud)
    assert result['changed'] is False and 'records changed since the pass read them' in result['failures'][0]['error']
    assert cloud.registry.get_instance(name='vm1').state == 'running'


def test_the_ha_steps_leave_orphans_and_stale_copies_alone(cloud):
    gone = cloud.boot('gone', node='fake1')
    cloud.registry.delete_instance(gone.uuid)
    cloud.boot('off', node='fake2')
    cloud.world.vm('off').power = 'stopped'
    result = reconcile.run_for_ha(cloud.context(), settle_seconds=0)
    assert kinds(result) == [('power', 'off', 'fake2')] and result['orphans'] == []
