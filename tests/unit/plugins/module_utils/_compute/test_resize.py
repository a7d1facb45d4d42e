"""Resize through the instance task on fake hypervisors and a real SQLite registry: the new flavor
claimed before the driver changes anything, verify_resize until confirmed or reverted, check mode and
diff, the refusals that leave everything as it was, a failed driver call undone, and the reconciler's
revert of an interrupted resize and confirmation after defaults.resize_confirm_window."""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import Capabilities, MigrationTarget
from support.fake_driver import CAPABILITIES, FakeCloud, FakeWorld, two_node_cloud
from support.reconciling import kinds, run, second_pass_does_nothing


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 and fake2 (8 vCPUs, 8192 MB each); flavors small (1/1024/1) and big (2/2048/5), image tick."""
    with two_node_cloud(tmp_path) as made:
        made.flavor('big', vcpus=2, ram_mb=2048, disk_gb=5)
        yield made


def task(cloud, check_mode=False, **params):
    """One instance task with the module's defaults."""
    options = dict.fromkeys(_instance_tasks.PER_INSTANCE + ('name', 'instances'))
    options.update(state='present', storage='local', update_password='on_create', ha=False, restart_priority=0, concurrency=4)
    options.update(params)
    return _instance_tasks.run(cloud.context(), options, check_mode)


def allocation(cloud, name):
    uuid = cloud.registry.get_instance(name=name).uuid
    return [(a['node'], a['vcpus'], a['memory_mb'], a['disk_gb']) for a in cloud.registry.list_allocations(instance_uuid=uuid)]


def resizes(cloud, name):
    uuid = cloud.registry.get_instance(name=name).uuid
    return [(m.migration_type, m.status, (m.stats or {}).get('old_flavor'), (m.stats or {}).get('new_flavor'))
            for m in cloud.registry.list_migrations(instance_uuid=uuid)]


def everything(cloud):
    """The registry's instances, allocations and migrations, and the world's VMs and files: to show nothing changed."""
    return ([i.as_dict() for i in cloud.registry.list_instances()], cloud.registry.list_allocations(),
            [m.as_dict() for m in cloud.registry.list_migrations()],
            dict((k, dataclasses.asdict(v)) for k, v in cloud.world.vms.items()), sorted(cloud.world.disks))


def test_a_new_flavor_resizes_in_place_and_waits_in_verify_resize_holding_room_for_both(cloud):
    cloud.boot('vm1', node='fake1')
    result = task(cloud, name='vm1', flavor='big')
    assert result['changed'] and result['instance']['state'] == 'verify_resize' and result['instance']['flavor'] == 'big'
    assert (result['diff']['before']['flavor'], result['diff']['after']['flavor']) == ('small', 'big')
    assert (result['diff']['after']['node'], result['diff']['after']['host']) == ('fake1', 'fake1')
    vm = cloud.world.vm('vm1')
    assert (vm.node, vm.vcpus, vm.memory_mb, vm.disk_gb, vm.power) == ('fake1', 2, 2048, 5, 'running')
    assert vm.kept is not None and vm.kept[0] in cloud.world.disks  # the old disk, for a revert
    assert allocation(cloud, 'vm1') == [('fake1', 2, 2048, 5)]  # the larger of the two, resource by resource
    assert resizes(cloud, 'vm1') == [('resize', 'done', 'small', 'big')]
    # The desired state already: the same task again changes nothing.
    assert task(cloud, name='vm1', flavor='big')['changed'] is False
    assert resizes(cloud, 'vm1') == [('resize', 'done', 'small', 'big')]


def test_confirm_drops_the_old_disk_and_keeps_the_new_flavor_s_allocation(cloud):
    cloud.boot('vm1', node='fake1', state='stopped')
    task(cloud, name='vm1', flavor='big', state='stopped')
    result = task(cloud, name='vm1', state='resize_confirmed')
    assert result['changed'] and (result['instance']['state'], result['instance']['flavor']) == ('stopped', 'big')
    vm = cloud.world.vm('vm1')
    assert vm.kept is None and not [d for d in cloud.world.disks if d.endswith('.resize')]
    assert (vm.vcpus, vm.memory_mb, vm.disk_gb, vm.power) == (2, 2048, 5, 'stopped')
    assert allocation(cloud, 'vm1') == [('fake1', 2, 2048, 5)]
    assert resizes(cloud, 'vm1') == [('resize', 'completed', 'small', 'big')]
    assert task(cloud, name='vm1', state='resize_confirmed')['changed'] is False  # nothing waits any more


def test_revert_brings_back_the_old_sizes_disk_and_allocation(cloud):
    cloud.boot('vm1', node='fake1')
    task(cloud, name='vm1', flavor='big')
    result = task(cloud, name='vm1', state='resize_reverted')
    assert result['changed'] and (result['instance']['state'], result['instance']['flavor']) == ('running', 'small')
    assert (result['diff']['before']['flavor'], result['diff']['after']['flavor']) == ('big', 'small')
    vm = cloud.world.vm('vm1')
    assert (vm.vcpus, vm.memory_mb, vm.disk_gb, vm.kept, vm.power) == (1, 1024, 1, None, 'running')
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1)]
    assert resizes(cloud, 'vm1') == [('resize', 'reverted', 'small', 'big')]


def test_a_smaller_ram_flavor_keeps_the_old_ram_claimed_until_confirmed(cloud):
    cloud.flavor('lean', vcpus=4, ram_mb=512, disk_gb=1)
    cloud.boot('vm1', node='fake1')
    task(cloud, name='vm1', flavor='lean')
    assert allocation(cloud, 'vm1') == [('fake1', 4, 1024, 1)]  # a revert to 1024 MB must still fit
    task(cloud, name='vm1', state='resize_confirmed')
    assert allocation(cloud, 'vm1') == [('fake1', 4, 512, 1)]


def test_check_mode_shows_the_resize_and_writes_nothing(cloud):
    cloud.boot('vm1', node='fake1')
    before = everything(cloud)
    result = task(cloud, check_mode=True, name='vm1', flavor='big')
    assert result['changed'] and result['diff']['before']['flavor'] == 'small'
    assert (result['diff']['after']['flavor'], result['diff']['after']['state'], result['diff']['after']['node']) == ('big', 'verify_resize', 'fake1')
    assert everything(cloud) == before
    assert cloud.registry.lease_holder('instance:%s' % cloud.registry.get_instance(name='vm1').uuid) is None
    task(cloud, name='vm1', flavor='big')
    before = everything(cloud)
    for state, flavor in (('resize_confirmed', 'big'), ('resize_reverted', 'small')):
        result = task(cloud, check_mode=True, name='vm1', state=state)
        assert result['changed'] and result['instance']['flavor'] == flavor and result['instance']['state'] == 'running'
        assert everything(cloud) == before


@pytest.mark.parametrize('params, message', [
    ({'flavor': 'tinydisk'}, r'flavor tinydisk has a 0 GB disk, smaller than the 1 GB of flavor small .*a disk is never shrunk; '
                             r'instance vm1 was not resized'),
    ({'flavor': 'nosuch'}, r'flavor nosuch does not exist; instance vm1 was not resized'),
    ({'flavor': 'huge'}, r'node fake1 has no room to resize instance vm1 to flavor huge \(memory_mb: 0 held by others, 9000 needed, '
                         r'capacity \d+\), and no other node can take it: .*ResourcesFilter removed fake2; instance vm1 was not resized'),
    ({'flavor': 'big', 'state': 'stopped'}, r'instance vm1 is resized to flavor big \(running before the resize\): it keeps its power '
                                            r'.*so it cannot be stopped in the same step; nothing was changed'),
])
def test_bad_resizes_are_refused_with_everything_left_as_it_was(cloud, params, message):
    cloud.flavor('tinydisk', disk_gb=0)
    cloud.flavor('huge', ram_mb=9000)
    cloud.boot('vm1', node='fake1')
    before = everything(cloud)
    with pytest.raises(errors.MultihvError, match=message):
        task(cloud, name='vm1', **params)
    with pytest.raises(errors.MultihvError, match=message):
        task(cloud, check_mode=True, name='vm1', **params)
    assert everything(cloud) == before


def test_a_resize_of_an_instance_another_run_works_on_is_refused_and_changes_nothing(cloud, monkeypatch):
    monkeypatch.setattr(_leases, 'INSTANCE_LEASE_WAIT_SECONDS', 0.1)
    record = cloud.boot('vm1', node='fake1')
    assert cloud.registry.acquire_lease('instance:%s' % record.uuid, 'another-controller (migrate)', 30)
    before = everything(cloud)
    with pytest.raises(errors.LeaseHeld, match=r'held by another-controller \(migrate\).*another run works on instance .*'
                                               r'instance vm1 was not resized'):
        task(cloud, name='vm1', flavor='big')
    assert everything(cloud) == before


def test_an_instance_waiting_for_its_resize_refuses_power_changes_and_another_resize(cloud):
    cloud.boot('vm1', node='fake1')
    task(cloud, name='vm1', flavor='big')
    cloud.flavor('bigger', vcpus=4, ram_mb=4096, disk_gb=5)
    before = everything(cloud)
    with pytest.raises(errors.MultihvError, match=r'instance vm1 was resized to flavor big, which waits to be confirmed or reverted'):
        task(cloud, name='vm1', flavor='bigger')
    for state in ('stopped', 'restarted', 'rebuilt'):
        with pytest.raises(errors.MultihvError, match=r'waiting for its resize to flavor big .*cannot be %s' % state):
            task(cloud, name='vm1', state=state)
    assert task(cloud, name='vm1', state='started')['changed'] is False  # it runs, as asked
    assert everything(cloud) == before


def test_a_resize_the_driver_fails_is_undone(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.world.fail_resize('vm1')
    with pytest.raises(errors.MultihvError, match=r'resize .* of instance vm1 to flavor big failed: injected resize failure'):
        task(cloud, name='vm1', flavor='big')
    record = cloud.registry.get_instance(name='vm1')
    assert (record.flavor, record.state) == ('small', 'running')
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1)]
    assert resizes(cloud, 'vm1') == [('resize', 'failed', 'small', 'big')]
    assert (cloud.world.vm('vm1').vcpus, cloud.world.vm('vm1').kept) == (1, None)


def test_a_driver_without_resize_refuses_it(tmp_path):
    world = FakeWorld()
    world.add_endpoint('old', hypervisor_type='old', capabilities=dataclasses.replace(CAPABILITIES, resize=False))
    world.add_node('old')
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.flavor('big', vcpus=2)
        cloud.image('tick', hypervisor_type='old')
        cloud.boot('vm1')
        with pytest.raises(errors.MultihvError, match='Fake instances cannot be resized \\(instance vm1\\); instance vm1 was not resized'):
            task(cloud, name='vm1', flavor='big')
    assert Capabilities(hypervisor_type='x', label='x', node_noun='x').resize is False  # a driver says so, or it has none


def test_in_a_cluster_node_the_instance_s_host_must_have_the_ram(tmp_path):
    world = FakeWorld()
    world.add_cluster('cl', hosts=2, memory_mb=3072)
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small', ram_mb=2048)
        cloud.flavor('wide', ram_mb=3584)
        cloud.image('tmpl', hypervisor_type='fakecluster', template='tmpl')
        cloud.boot('vm1', image='tmpl', node='cl')
        host = cloud.registry.get_instance(name='vm1').host
        with pytest.raises(errors.MultihvError, match=r'host %s of node cl cannot take instance vm1 with flavor wide \(1536 MB more RAM, '
                                                      r'1024 MB free' % host):
            task(cloud, name='vm1', flavor='wide')  # the node has 6144 MB, but the instance's host has 1024 MB free
        assert cloud.registry.get_instance(name='vm1').flavor == 'small'


def interrupted_resize(cloud, name, resized):
    """vm1 on fake1 whose resize to big was recorded and claimed, then its controller died (after the
    driver resized it when resized is true)."""
    record = cloud.boot(name, node='fake1')
    view = cloud.context().view('fake1')
    migration = cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='resize', status='running',
                                                source_node='fake1', source_host='fake1', dest_node='fake1', dest_host='fake1',
                                                stats={'old_flavor': 'small', 'new_flavor': 'big', 'power': 'running'})
    assert cloud.registry.claim(record.uuid, 'fake1', 'fake', {'vcpus': 2, 'memory_mb': 2048, 'disk_gb': 5}, view.capacity)
    if resized:
        cloud.world.driver('fake1').resize(record.uuid, 'fake1', 2, 2048, 5)
    return record, migration


@pytest.mark.parametrize('resized, stopped', [(False, False), (True, False), (False, True)])
def test_the_reconciler_reverts_an_interrupted_resize(cloud, resized, stopped):
    record, migration = interrupted_resize(cloud, 'vm1', resized)
    if stopped:  # the run died while the driver had the VM stopped for its resize: it runs again, as before
        cloud.world.driver('fake1').set_power(record.uuid, 'fake1', 'stop')
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake1')] and not result['failures']
    after = cloud.registry.get_migration(migration.id)
    assert after.status == 'failed' and 'the reconciler reverted it' in after.error
    vm = cloud.world.vm('vm1')
    assert (vm.vcpus, vm.memory_mb, vm.disk_gb, vm.kept, vm.power) == (1, 1024, 1, None, 'running')
    assert (cloud.registry.get_instance(uuid=record.uuid).flavor, cloud.registry.get_instance(uuid=record.uuid).state) == ('small', 'running')
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1)]
    second_pass_does_nothing(cloud)


def test_the_reconciler_confirms_a_resize_left_longer_than_the_window_and_only_then(cloud):
    cloud.boot('vm1', node='fake1')
    task(cloud, name='vm1', flavor='big')
    assert run(cloud)['actions'] == []  # window 0 (the default): never
    cloud.config.defaults.resize_confirm_window = 3600
    assert run(cloud)['actions'] == []  # resized just now
    migration = cloud.registry.list_migrations(migration_type='resize')[0]
    cloud.registry.update_migration(migration.id, finished_at='2020-01-01T00:00:00.000000Z')
    planned = run(cloud, check_mode=True)
    assert kinds(planned) == [('resize', 'vm1', 'fake1')] and cloud.world.vm('vm1').kept is not None
    result = run(cloud)
    assert kinds(result) == [('resize', 'vm1', 'fake1')] and not result['failures']
    assert cloud.registry.get_migration(migration.id).status == 'completed'
    assert cloud.registry.get_instance(name='vm1').state == 'running' and cloud.world.vm('vm1').kept is None
    assert allocation(cloud, 'vm1') == [('fake1', 2, 2048, 5)]
    second_pass_does_nothing(cloud)


def test_the_window_is_read_from_the_cloud_file():
    from ansible_collections.multihv.cloud.plugins.module_utils import _config  # pylint: disable=import-outside-toplevel
    parsed = _config.parse({'registry': {'url': 'sqlite:////tmp/x'}, 'defaults': {'resize_confirm_window': 600}}, 'f', {})
    assert parsed.defaults.resize_confirm_window == 600
    with pytest.raises(_config.ConfigError, match='defaults.resize_confirm_window must not be negative'):
        _config.parse({'registry': {'url': 'sqlite:////tmp/x'}, 'defaults': {'resize_confirm_window': -1}}, 'f', {})


def test_a_resize_cut_off_by_its_host_is_left_to_the_reconciler_which_reverts_it(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.world.fail_resize('vm1', errors.Unreachable('fake endpoint fake1 did not answer within 1 s'))
    with pytest.raises(errors.Unreachable, match=r'was cut off: .*once node fake1 answers and no run holds the instance, '
                                                 r'multihv.cloud.reconcile reverts it to flavor small'):
        task(cloud, name='vm1', flavor='big')
    assert resizes(cloud, 'vm1') == [('resize', 'running', 'small', 'big')]
    assert allocation(cloud, 'vm1') == [('fake1', 2, 2048, 5)]  # room for either, until it is settled
    cloud.world.driver('fake1').resize(cloud.registry.get_instance(name='vm1').uuid, 'fake1', 2, 2048, 5)  # it went on there
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake1')] and not result['failures']
    assert resizes(cloud, 'vm1') == [('resize', 'failed', 'small', 'big')]
    assert (cloud.world.vm('vm1').vcpus, cloud.world.vm('vm1').kept, allocation(cloud, 'vm1')) == (1, None, [('fake1', 1, 1024, 1)])


def test_a_waiting_resize_whose_instance_was_deleted_is_recorded_completed(cloud):
    cloud.boot('vm1', node='fake1')
    task(cloud, name='vm1', flavor='big')
    uuid = cloud.registry.get_instance(name='vm1').uuid
    task(cloud, name='vm1', state='absent')
    assert cloud.world.vm('vm1') is None and not [d for d in cloud.world.disks if d.startswith('local-fake1/%s' % uuid)]
    result = run(cloud)
    assert [(a['kind'], a['uuid']) for a in result['actions']] == [('resize', uuid)]
    assert [m.status for m in cloud.registry.list_migrations(instance_uuid=uuid)] == ['completed']
    second_pass_does_nothing(cloud)


def test_update_password_always_still_reaches_a_guest_waiting_for_its_resize(cloud):
    cloud.boot('vm1', node='fake1')
    result = task(cloud, name='vm1', flavor='big', update_password='always', admin_password='Resize-Secret-1')
    assert result['changed'] and cloud.world.vm('vm1').passwords == {'root': 'Resize-Secret-1'}
    assert 'Resize-Secret-1' not in repr(result)


def resized_away(cloud):
    """vm1 booted on fake1, whose RAM another run then takes: a resize to big must go to fake2."""
    cloud.boot('vm1', node='fake1')
    cloud.take_room('fake1')
    return task(cloud, name='vm1', flavor='big')


def test_a_node_without_room_sends_the_resize_to_another_by_a_cold_move_keeping_the_old_claim(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.take_room('fake1')
    planned = task(cloud, check_mode=True, name='vm1', flavor='big')
    assert (planned['diff']['before']['node'], planned['diff']['after']['node'], planned['diff']['after']['flavor']) == ('fake1', 'fake2', 'big')
    assert cloud.world.vm('vm1').node == 'fake1'
    result = task(cloud, name='vm1', flavor='big')
    assert (result['instance']['node'], result['instance']['host'], result['instance']['state']) == ('fake2', 'fake2', 'verify_resize')
    vm = cloud.world.vm('vm1')
    assert (vm.node, vm.vcpus, vm.memory_mb, vm.disk_gb, vm.power) == ('fake2', 2, 2048, 5, 'running') and vm.kept is not None
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1), ('fake2', 2, 2048, 5)]  # the old claim stays for a revert
    migration = cloud.registry.list_migrations(migration_type='resize')[0]
    assert (migration.status, migration.source_node, migration.dest_node, migration.dest_host) == ('done', 'fake1', 'fake2', 'fake2')
    swept = run(cloud, delete_orphans=True)  # that claim is no orphan (the other run's record is: it was never built)
    assert [a for a in swept['actions'] if a['name'] == 'vm1'] == [] and [o for o in swept['orphans'] if o['name'] == 'vm1'] == []
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1), ('fake2', 2, 2048, 5)]


def test_a_moved_resize_confirmed_frees_its_old_node(cloud):
    resized_away(cloud)
    task(cloud, name='vm1', state='resize_confirmed')
    assert allocation(cloud, 'vm1') == [('fake2', 2, 2048, 5)]
    assert (cloud.world.vm('vm1').node, cloud.world.vm('vm1').kept) == ('fake2', None)
    assert cloud.registry.get_instance(name='vm1').node == 'fake2'


def test_a_moved_resize_reverted_goes_back_to_its_node_with_its_old_disk(cloud):
    resized_away(cloud)
    planned = task(cloud, check_mode=True, name='vm1', state='resize_reverted')
    assert (planned['diff']['before']['node'], planned['diff']['after']['node'], planned['diff']['after']['flavor']) == ('fake2', 'fake1', 'small')
    assert cloud.world.vm('vm1').node == 'fake2'
    result = task(cloud, name='vm1', state='resize_reverted')
    assert (result['instance']['node'], result['instance']['flavor'], result['instance']['state']) == ('fake1', 'small', 'running')
    vm = cloud.world.vm('vm1')
    assert (vm.node, vm.vcpus, vm.memory_mb, vm.disk_gb, vm.kept, vm.power) == ('fake1', 1, 1024, 1, None, 'running')
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1)]
    assert not [d for d in cloud.world.disks if d.startswith('local-fake2/')]


def test_a_moved_resize_the_target_fails_goes_back_and_frees_the_target(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.take_room('fake1')
    cloud.world.fail_resize('vm1')
    with pytest.raises(errors.MultihvError, match='injected resize failure'):
        task(cloud, name='vm1', flavor='big')
    assert (cloud.world.vm('vm1').node, cloud.registry.get_instance(name='vm1').node) == ('fake1', 'fake1')
    assert allocation(cloud, 'vm1') == [('fake1', 1, 1024, 1)]
    assert resizes(cloud, 'vm1') == [('resize', 'failed', 'small', 'big')]


def test_the_reconciler_reverts_an_interrupted_moved_resize_where_its_vm_is(cloud):
    record = cloud.boot('vm1', node='fake1')
    migration = cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='resize', status='running',
                                                source_node='fake1', source_host='fake1', dest_node='fake2', dest_host='fake2',
                                                stats={'old_flavor': 'small', 'new_flavor': 'big', 'power': 'running'})
    assert cloud.registry.claim(record.uuid, 'fake2', 'fake', {'vcpus': 2, 'memory_mb': 2048, 'disk_gb': 5}, cloud.context().view('fake2').capacity)
    cloud.world.driver('fake2').ensure_image('tick', '/images/tick.qcow2', 'qcow2')
    cloud.world.driver('fake1').migrate(record.uuid, 'fake1', MigrationTarget(cloud.world.driver('fake2'), 'fake2', None), 'cold', None)
    cloud.world.driver('fake2').resize(record.uuid, 'fake2', 2, 2048, 5)
    result = run(cloud)
    assert kinds(result) == [('migration', 'vm1', 'fake2')] and not result['failures']
    assert cloud.registry.get_migration(migration.id).status == 'failed'
    after = cloud.registry.get_instance(uuid=record.uuid)
    assert (after.node, after.flavor, after.state) == ('fake2', 'small', 'running')
    vm = cloud.world.vm('vm1')
    assert (vm.node, vm.vcpus, vm.kept) == ('fake2', 1, None)
    assert allocation(cloud, 'vm1') == [('fake2', 1, 1024, 1)]
    second_pass_does_nothing(cloud)


def test_a_node_given_with_the_flavor_is_where_the_resize_goes(cloud):
    cloud.boot('vm1', node='fake1')
    result = task(cloud, name='vm1', flavor='big', node='fake2')
    assert (result['instance']['node'], result['instance']['state']) == ('fake2', 'verify_resize')
    assert task(cloud, name='vm1', flavor='big', node='fake2')['changed'] is False
    with pytest.raises(errors.NotFound, match='node nowhere is not in the cloud file; instance vm2 was not resized'):
        cloud.boot('vm2', node='fake1')
        task(cloud, name='vm2', flavor='big', node='nowhere')
    cloud.take_room('fake1')
    with pytest.raises(errors.MultihvError, match=r'node fake1 has no room to resize instance vm2 .*; migrate it to a node or host '
                                                  r'with room first; instance vm2 was not resized'):
        task(cloud, name='vm2', flavor='big', node='fake1')  # the node asked for is kept


def test_a_drain_moves_no_instance_waiting_for_its_resize_and_says_so(cloud):
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
    cloud.boot('vm1', node='fake1')
    cloud.boot('vm2', node='fake1')
    task(cloud, name='vm1', flavor='big')
    for check_mode in (True, False):
        result = _migrations.drain(cloud.context(), 'fake1', check_mode=check_mode)
        assert [f['name'] for f in result['failures']] == ['vm1']
        assert 'waits in verify_resize: confirm or revert its resize' in result['failures'][0]['msg']
        assert [m['instance_uuid'] for m in result['migrations']] == [cloud.registry.get_instance(name='vm2').uuid]
    assert cloud.nodes_of()['vm1'] == 'fake1' and cloud.world.vm('vm1').node == 'fake1' and cloud.nodes_of()['vm2'] == 'fake2'
    assert cloud.registry.get_instance(name='vm1').state == 'verify_resize'
