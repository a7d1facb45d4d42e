"""Moves between hypervisor types (issue 19 §1), the orchestration on fake hypervisors and a real SQLite registry: a
vSphere-like cluster c1 (its drivers export VMDKs) and KVM-like nodes kvm1, kvm2 (they import). What moves (the VM
with its uuid and MACs, the record, the allocation, the migration of type convert with bytes), what is refused before
anything moves (a target of the same type, no room, a source node down, a flavor pinned to a type, a stray option),
what a failure at each step leaves (the instance where it was, powered as it was, no claim, the migration failed), and
how the reconciler settles an interrupted convert."""

from __future__ import annotations

import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import convert as _convert
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from support.fake_driver import FakeCloud, FakeWorld
from support.reconciling import run as reconcile, second_pass_does_nothing


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """c1 (a fake cluster of 2 hosts, endpoint vc), kvm1 and kvm2 (fake KVM-like hosts); flavor small, images tmpl
    (clusters) and tick (fake); network lan backed by port group pg-lan on clusters and bridge:br0 on the others."""
    world = FakeWorld()
    world.add_cluster('c1', hosts=2)
    world.add_node('kvm1')
    world.add_node('kvm2')
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.image('tmpl', hypervisor_type='fakecluster', template='tmpl')
        made.image('tick')
        made.network('lan', backings=[{'backing': 'pg-lan', 'hypervisor_type': 'fakecluster'}, {'backing': 'bridge:br0'}])
        yield made


def boot_on_c1(cloud, name='app-1', **params):
    return cloud.boot(name, image='tmpl', node='c1', networks=[{'network': 'lan'}, {'network': 'lan'}], **params)


def convert(cloud, ref='app-1', **options):
    options.setdefault('mode', 'convert')
    return _migrations.migrate(cloud.context(), ref, **options)


def migrations_of(cloud, record):
    return cloud.registry.list_migrations(instance_uuid=record.uuid)


def test_a_running_instance_moves_to_kvm_with_its_uuid_and_macs_and_its_records_follow(cloud):
    record = boot_on_c1(cloud)
    before = cloud.world.vm('app-1', 'c1')
    result = convert(cloud, target_node='kvm1', image='tick')
    vm = cloud.world.vm('app-1', 'kvm1')
    assert vm.uuid == record.uuid and vm.macs == before.macs == record.identity['macs'] and vm.power == 'running'
    assert vm.networks == [{'network': 'bridge:br0', 'mac': mac} for mac in before.macs]  # the target's backing of lan
    assert cloud.world.vm('app-1', 'c1') is None  # the source VM removed
    assert result['changed'] and result['instance']['node'] == 'kvm1' and result['instance']['image'] == 'tick'
    migration = result['migration']
    assert (migration['migration_type'], migration['status'], migration['source_node'], migration['dest_node']) == (
        'convert', 'completed', 'c1', 'kvm1')
    assert migration['stats']['virtual_size'] == 1 << 30 and migration['stats']['disk_formats'] == ['vmdk']
    assert migration['stats']['import_processed'] == migration['stats']['import_total'] == 1 << 30
    assert cloud.allocations() == [('app-1', 'kvm1')]
    # The guest was shut down before its disks were exported, then the VM exported and imported: in that order.
    calls = [method for _endpoint, method in cloud.world.calls if method in ('set_power', 'export_disks', 'import_instance',
                                                                             'retire_converted')]
    assert calls == ['set_power', 'export_disks', 'import_instance', 'retire_converted']


def test_auto_towards_a_node_of_another_type_converts_and_the_scheduler_picks_among_that_type(cloud):
    boot_on_c1(cloud)
    result = _migrations.migrate(cloud.context(), 'app-1', target_node='kvm2')
    assert result['migration']['migration_type'] == 'convert' and result['instance']['node'] == 'kvm2'
    assert result['instance']['image'] == '-'  # no image named: adoption's placeholder
    boot_on_c1(cloud, 'app-2')
    cloud.take_room('kvm1')
    assert convert(cloud, 'app-2')['instance']['node'] == 'kvm2'  # the one with room, of the only other type


def test_a_guest_that_ignores_the_shutdown_is_powered_off_hard_after_the_timeout(cloud):
    record = boot_on_c1(cloud)
    cloud.world.deaf_guests.add('app-1')
    ctx = cloud.context()
    with _leases.on_instance(cloud.registry, record.uuid, 'not moved', 'migrate') as lease:
        conversion = _convert.plan(ctx, record, 'kvm1')
        result = _convert.run(ctx, conversion, lease, shutdown_timeout=0)
    assert result['migration']['status'] == 'completed'
    assert [a for name, a in cloud.world.power_actions if name == 'app-1'][-2:] == ['shutdown', 'stop']


def test_the_shutdown_timeout_option_reaches_the_power_off(cloud):
    record = boot_on_c1(cloud)
    cloud.world.deaf_guests.add('app-1')
    started = time.monotonic()
    assert convert(cloud, target_node='kvm1', shutdown_timeout=0)['migration']['status'] == 'completed'
    assert time.monotonic() - started < _convert.SHUTDOWN_TIMEOUT  # not the default's wait
    assert [a for name, a in cloud.world.power_actions if name == 'app-1'][-2:] == ['shutdown', 'stop']
    assert cloud.world.vm(record.uuid, 'kvm1').power == 'running'


def test_keep_source_leaves_the_old_vm_stopped_renamed_and_unmarked(cloud):
    record = boot_on_c1(cloud)
    convert(cloud, target_node='kvm1', keep_source=True)
    kept = cloud.world.vm(record.uuid, 'c1')
    assert (kept.power, kept.marked, kept.name) == ('stopped', False, 'app-1.moved-%s' % record.uuid.replace('-', '')[:8])
    assert cloud.world.vm(record.uuid, 'kvm1').power == 'running'
    assert reconcile(cloud)['actions'] == []  # an unmarked VM is nobody's second copy


def test_a_stopped_instance_arrives_stopped_and_is_never_started_on_the_source(cloud):
    record = boot_on_c1(cloud, state='stopped')
    calls = len(cloud.world.calls)
    result = convert(cloud, target_node='kvm1')
    assert result['instance']['state'] == 'stopped' and cloud.world.vm(record.uuid, 'kvm1').power == 'stopped'
    assert ('vc', 'set_power') not in cloud.world.calls[calls:]  # stopped already: nothing to shut down


@pytest.mark.parametrize('options, message', [
    ({'target_node': 'kvm9'}, 'node kvm9 is not in the cloud file'),
    ({'target_node': 'kvm1', 'image': 'tmpl'}, 'image tmpl is for fakecluster nodes, not fake ones'),
    ({'target_node': 'kvm1', 'image': 'nope'}, 'image nope does not exist'),
    ({'mode': 'cold', 'keep_source': True}, r'apply to a move to another hypervisor type \(mode convert\) only'),
    ({'mode': 'cold', 'image': 'tick'}, r'apply to a move to another hypervisor type \(mode convert\) only'),
    ({'mode': 'cold', 'shutdown_timeout': 5}, r'apply to a move to another hypervisor type \(mode convert\) only'),
    ({'target_node': 'kvm1', 'shutdown_timeout': -1}, 'shutdown_timeout must be 0 or more seconds, not -1'),
])
def test_bad_requests_are_refused_before_anything_moves(cloud, options, message):
    record = boot_on_c1(cloud)
    with pytest.raises(errors.MultihvError, match=message):
        convert(cloud, **options)
    assert cloud.world.vm(record.uuid, 'c1').power == 'running' and migrations_of(cloud, record) == []
    assert cloud.allocations() == [('app-1', 'c1')]


def test_a_target_of_the_same_type_with_mode_convert_is_refused(cloud):
    cloud.world.add_cluster('c2', hosts=1)
    record = boot_on_c1(cloud)
    with pytest.raises(errors.MultihvError, match='node c2 is a fakecluster node like node c1 .* use mode cold'):
        convert(cloud, target_node='c2')
    assert cloud.world.vm(record.uuid, 'c1').power == 'running' and migrations_of(cloud, record) == []


def test_a_target_without_room_is_refused_and_nothing_moves(cloud):
    record = boot_on_c1(cloud)
    cloud.take_room('kvm1')
    with pytest.raises(errors.MultihvError, match='no fake node can take instance app-1: .*instance app-1 was not moved'):
        convert(cloud, target_node='kvm1')
    assert cloud.world.vm(record.uuid, 'c1').power == 'running' and migrations_of(cloud, record) == []
    assert ('vc', 'set_power') not in cloud.world.calls


def test_a_source_node_down_is_refused_and_nothing_moves(cloud):
    record = boot_on_c1(cloud)
    cloud.world.stop_answering('vc')
    with pytest.raises(errors.MultihvError, match='node c1 of instance app-1 is down .*was not moved'):
        convert(cloud, target_node='kvm1')
    assert migrations_of(cloud, record) == [] and cloud.allocations() == [('app-1', 'c1')]


def test_a_flavor_pinned_to_the_source_type_is_refused(cloud):
    cloud.registry.set_flavor('pinned', vcpus=1, ram_mb=1024, disk_gb=1, extra_specs={'hypervisor_type': 'fakecluster'})
    record = boot_on_c1(cloud, flavor='pinned')
    with pytest.raises(errors.MultihvError, match='flavor pinned of instance app-1 asks for hypervisor_type fakecluster'):
        convert(cloud, target_node='kvm1')
    assert cloud.world.vm(record.uuid, 'c1').power == 'running' and migrations_of(cloud, record) == []


def test_the_target_already_holding_the_instance_changes_nothing(cloud):
    boot_on_c1(cloud)
    assert convert(cloud, target_node='c1') == {'changed': False, 'instance': cloud.registry.get_instance(name='app-1').as_dict(),
                                                'migration': None}


def test_check_mode_plans_and_writes_nothing(cloud):
    record = boot_on_c1(cloud)
    calls = len(cloud.world.calls)
    result = convert(cloud, target_node='kvm1', check_mode=True)
    assert result['changed'] and result['migration']['status'] == 'would run' and result['migration']['migration_type'] == 'convert'
    assert migrations_of(cloud, record) == [] and cloud.allocations() == [('app-1', 'c1')]
    assert all(method in ('get_nodes', 'list_instances') for _e, method in cloud.world.calls[calls:])


@pytest.mark.parametrize('step', ['export', 'import'])
def test_a_failed_step_leaves_the_instance_running_where_it_was_and_frees_the_claim(cloud, step):
    record = boot_on_c1(cloud)
    cloud.world.fail_convert(step)
    with pytest.raises(errors.MultihvError, match='injected %s failure; the instance stays on c1 and was powered on again' % step):
        convert(cloud, target_node='kvm1')
    assert cloud.world.vm(record.uuid, 'c1').power == 'running' and cloud.world.vm(record.uuid, 'kvm1') is None
    assert cloud.allocations() == [('app-1', 'c1')] and cloud.nodes_of() == {'app-1': 'c1'}
    (migration,) = migrations_of(cloud, record)
    assert (migration.migration_type, migration.status) == ('convert', 'failed') and 'injected' in migration.error
    assert not any(path.startswith('local-kvm1/') for path in cloud.world.disks)


def test_a_failed_export_of_a_stopped_instance_leaves_it_stopped(cloud):
    record = boot_on_c1(cloud, state='stopped')
    cloud.world.fail_convert('export')
    with pytest.raises(errors.MultihvError, match='the instance stays on c1$'):  # not 'powered on again'
        convert(cloud, target_node='kvm1')
    assert cloud.world.vm(record.uuid, 'c1').power == 'stopped'


def test_a_failed_retire_is_a_warning_and_the_move_stands(cloud):
    record = boot_on_c1(cloud)
    cloud.world.fail_convert('retire')
    result = convert(cloud, target_node='kvm1')
    assert result['instance']['node'] == 'kvm1' and 'could not be removed: injected retire failure' in result['warnings'][0]
    assert cloud.world.vm(record.uuid, 'c1').power == 'stopped'


@pytest.mark.parametrize('keep_source', [False, True])
def test_the_reconciler_retires_a_source_whose_retire_failed_as_the_move_asked(cloud, keep_source):
    record = boot_on_c1(cloud)
    cloud.world.fail_convert('retire')
    convert(cloud, target_node='kvm1', keep_source=keep_source)
    assert cloud.world.vm(record.uuid, 'c1').marked  # still the cloud's: the reconciler takes it for a second copy
    actions = reconcile(cloud)['actions']
    assert [a['kind'] for a in actions] == ['stale'] and ('rename' in actions[0]['does']) == keep_source
    kept = cloud.world.vm(record.uuid, 'c1')
    if keep_source:  # the rollback path the user asked for survives: stopped, renamed, unmarked
        assert (kept.power, kept.marked, kept.name) == ('stopped', False, 'app-1.moved-%s' % record.uuid.replace('-', '')[:8])
    else:
        assert kept is None
    assert cloud.world.vm(record.uuid, 'kvm1').power == 'running' and cloud.nodes_of() == {'app-1': 'kvm1'}
    second_pass_does_nothing(cloud)


def interrupted(cloud, record, status='running'):
    """What a controller that died mid-convert leaves: a convert migration still running, claims on both nodes."""
    migration = cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='convert', status=status,
                                                source_node='c1', source_host=record.host, dest_node='kvm1',
                                                stats={'keep_source': False, 'source_power': 'running', 'image': 'tick'})
    flavor = cloud.registry.get_flavor('small')
    view = cloud.context().view('kvm1')
    assert cloud.registry.claim(record.uuid, 'kvm1', 'fake', {'vcpus': flavor['vcpus'], 'memory_mb': flavor['ram_mb'],
                                                              'disk_gb': flavor['disk_gb']}, view.capacity)
    return migration


def test_the_reconciler_keeps_the_source_of_a_convert_cut_off_before_the_import_ran_and_powers_it_on(cloud):
    record = boot_on_c1(cloud)
    cloud.world.vm(record.uuid, 'c1').power = 'stopped'  # powered off, then the controller died
    migration = interrupted(cloud, record)
    reconcile(cloud)
    assert cloud.world.vm(record.uuid, 'c1').power == 'running' and cloud.world.vm(record.uuid, 'kvm1') is None
    assert cloud.nodes_of() == {'app-1': 'c1'} and cloud.allocations() == [('app-1', 'c1')]
    assert cloud.registry.get_migration(migration.id).status == 'failed'
    second_pass_does_nothing(cloud)


def test_the_reconciler_keeps_the_imported_copy_that_runs_and_retires_the_source(cloud):
    record = boot_on_c1(cloud)
    source = cloud.world.vm(record.uuid, 'c1')
    source.power = 'stopped'
    migration = interrupted(cloud, record)
    spec_networks = [dict(n, network='bridge:br0') for n in source.networks]
    from support.fake_driver import FakeVM  # pylint: disable=import-outside-toplevel
    cloud.world.vms[('kvm1', record.uuid)] = FakeVM(record.uuid, 'app-1', 'kvm1', 'kvm1', 'running', 1, 1024, 1, 'local', '-',
                                                    ['local-kvm1/%s.disk' % record.uuid], list(source.macs), spec_networks)
    reconcile(cloud)
    assert cloud.world.vm(record.uuid, 'c1') is None and cloud.world.vm(record.uuid, 'kvm1').power == 'running'
    assert cloud.nodes_of() == {'app-1': 'kvm1'} and cloud.allocations() == [('app-1', 'kvm1')]
    assert cloud.registry.get_instance(uuid=record.uuid).image == 'tick'  # the image the run meant to record
    assert cloud.registry.get_migration(migration.id).status == 'completed'
    second_pass_does_nothing(cloud)


def test_a_drain_refuses_mode_convert(cloud):
    boot_on_c1(cloud)
    with pytest.raises(errors.MultihvError, match='mode convert moves one instance'):
        _migrations.drain(cloud.context(), 'c1', mode='convert')
    assert cloud.registry.get_node('c1') is None or cloud.registry.get_node('c1').get('enabled', True)
