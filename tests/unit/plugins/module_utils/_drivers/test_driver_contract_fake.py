"""The driver contract against the FakeDriver (a node that is its own host, and a cluster node of
template images), and the fake's own failure knobs that the orchestration tests rely on."""

from __future__ import annotations

import dataclasses
import uuid as uuidlib

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec, MigrationControls, MigrationTarget
from support.driver_contract import DriverContract, Harness, listed, with_guest
from support.fake_driver import FakeWorld


def spec_maker(**defaults):
    """spec(**overrides): a new InstanceSpec from defaults (node, image, ...) and overrides."""
    def spec(**overrides):
        inst_uuid = str(uuidlib.uuid4())
        fields = dict(uuid=inst_uuid, name='test-%s' % inst_uuid[:8], vcpus=1, memory_mb=64, disk_gb=1,
                      networks=[{'network': 'default', 'mac': '52:54:00:00:00:01'}], **defaults)
        fields.update(overrides)
        return InstanceSpec(**fields)
    return spec


def host_world():
    """fake1 and fake2, each its own endpoint and host, sharing one shared directory; tick uploaded to both."""
    world = FakeWorld()
    for name in ('fake1', 'fake2'):
        world.add_node(name)
        world.driver(name).ensure_image('tick', '/images/tick.qcow2', 'qcow2')
    world.add_node('gone')
    world.stop_answering('gone')
    return world, Harness(world.driver('fake1'), 'fake1', spec_maker(node='fake1', image='tick'), 'no-such-image',
                          MigrationTarget(world.driver('fake2'), 'fake2'), lambda: world.driver('gone'),
                          lambda found: world.guest_data.get(found.path) if found.path in world.disks else None)


def cluster_world():
    """A vCenter-like endpoint with a node of three hosts and template images, and one that does not answer."""
    world = FakeWorld()
    world.add_cluster('vc/c1')
    world.add_cluster('vc-gone/c1', endpoint='vc-gone', hosts=2)
    world.stop_answering('vc-gone')
    driver = world.driver('vc')
    return world, Harness(driver, 'vc/c1', spec_maker(node='vc/c1', image='tmpl', host='vc/c1-h0'), 'no-such-template',
                          MigrationTarget(driver, 'vc/c1', 'vc/c1-h1'), lambda: world.driver('vc-gone'))


@pytest.fixture(params=[host_world, cluster_world], ids=['host', 'cluster'], name='harness')
def harness_fixture(request):
    return request.param()[1]


class TestFakeDriverContract(DriverContract):
    pass


def test_a_failed_spawn_removes_what_it_made_unless_told_to_leave_it():
    world, harness = host_world()
    world.fail_spawn()
    spec = harness.spec()
    with pytest.raises(errors.DriverError, match='injected'):
        harness.driver.spawn(spec)
    assert world.vms == {} and world.disks == set()
    world.fail_spawn(name='left', error=errors.Unreachable('overstayed'), leave_behind=True)
    harness.driver.spawn(harness.spec())  # another name: not this failure's
    with pytest.raises(errors.Unreachable):
        harness.driver.spawn(harness.spec(name='left'))
    assert world.vm('left').power == 'running'


def test_a_migration_that_fails_half_way_leaves_the_instance_running_on_the_source():
    world, harness = host_world()
    spec = harness.spec(storage='shared')
    harness.driver.spawn(spec)
    world.fail_migration(spec.name)
    reports = []
    with pytest.raises(errors.DriverError, match='half way'):
        harness.driver.migrate(spec.uuid, 'fake1', harness.target, 'live', MigrationControls(), reports.append)
    assert reports and world.placed() == {spec.name: ('fake1', 'running')}
    state, stats = harness.driver.migrate(spec.uuid, 'fake1', harness.target, 'live', MigrationControls())
    assert (state.node, stats['disk_total']) == ('fake2', 0) and world.vm(spec.name).disks == ['shared/%s.disk' % spec.uuid]


def test_storage_is_shared_by_directory_and_live_needs_it():
    world, harness = host_world()
    world.add_node('alone', endpoint=world.add_endpoint('island', shared=None).name)
    world.driver('island').ensure_image('tick', '/images/tick.qcow2', 'qcow2')
    fake2, island = world.driver('fake2'), world.driver('island')
    assert harness.driver.shares_storage(fake2, 'shared') and not harness.driver.shares_storage(fake2, 'local')
    assert not harness.driver.shares_storage(island, 'shared')
    spec = harness.spec()  # local
    harness.driver.spawn(spec)
    with pytest.raises(errors.DriverError, match='needs the disk on storage both'):
        harness.driver.migrate(spec.uuid, 'fake1', MigrationTarget(island, 'alone'), 'live', MigrationControls())
    state, _stats = harness.driver.migrate(spec.uuid, 'fake1', MigrationTarget(island, 'alone'), 'block', MigrationControls())
    assert state.disk_paths == ['local-island/%s.disk' % spec.uuid] and world.disks == {'local-island/%s.disk' % spec.uuid}


def test_a_power_loss_stops_the_vms_and_every_call_raises_unreachable():
    world, harness = host_world()
    spec = harness.spec()
    harness.driver.spawn(spec)
    world.power_loss('fake1')
    for call in (harness.driver.get_nodes, harness.driver.list_instances, lambda: harness.driver.spawn(harness.spec()),
                 lambda: harness.driver.destroy(spec.uuid, 'fake1')):
        with pytest.raises(errors.Unreachable, match='fake endpoint fake1 does not answer'):
            call()
    world.answer_again('fake1')
    assert listed(harness.driver, spec.uuid).power_state == 'stopped'


def test_file_images_upload_once_per_endpoint_and_again_when_changed():
    world, harness = host_world()
    assert harness.driver.ensure_image('tick', '/images/tick.qcow2', 'qcow2') is False
    assert harness.driver.ensure_image('tick', '/images/tick2.qcow2', 'qcow2') is True
    assert world.uploads == [('fake1', 'tick'), ('fake2', 'tick'), ('fake1', 'tick')]
    with pytest.raises(errors.DriverError, match='not templates'):
        harness.driver.find_template('tick')


def test_the_guest_receives_what_spawn_got_and_a_reused_drive_keeps_the_old_data():
    world, harness = host_world()
    spec = with_guest(harness.spec(storage='shared'), 'first')
    harness.driver.spawn(spec)
    vm, drive = world.vm(spec.name), 'shared/%s.config' % spec.uuid
    assert vm.guest is spec.guest and vm.drive == drive and world.disks == {'shared/%s.disk' % spec.uuid, drive}
    received = (vm.guest.hostname, vm.guest.admin_password, [n.mac for n in vm.guest.nics])
    assert received == (spec.hostname or spec.name, 'first', ['52:54:00:00:00:01'])
    assert listed(harness.driver, spec.uuid).disk_paths == ['shared/%s.disk' % spec.uuid]  # the drive is no disk
    harness.driver.destroy(spec.uuid, 'fake1', destroy_disks=False)
    assert drive in world.disks
    fake2 = world.driver('fake2')
    fake2.spawn(dataclasses.replace(with_guest(spec, 'second'), node='fake2', reuse_disk=True))  # a shared-storage evacuation
    assert world.vm(spec.name).guest.admin_password == 'first'  # the drive was kept: so was the password
    fake2.destroy(spec.uuid, 'fake2')
    assert world.disks == set()


def test_a_failed_spawn_removes_the_drive_it_made_but_not_a_reused_one():
    world, harness = host_world()
    world.fail_spawn()
    with pytest.raises(errors.DriverError, match='injected'):
        harness.driver.spawn(with_guest(harness.spec(), 'pw'))
    assert world.disks == set() and world.vms == {}
    spec = with_guest(harness.spec(storage='shared'), 'pw')
    harness.driver.spawn(spec)
    harness.driver.destroy(spec.uuid, 'fake1', destroy_disks=False)
    kept = set(world.disks)
    world.fail_spawn()
    with pytest.raises(errors.DriverError, match='injected'):
        harness.driver.spawn(dataclasses.replace(spec, reuse_disk=True))
    assert world.disks == kept and len(kept) == 2


def test_no_guest_data_no_drive_and_a_block_migration_moves_the_drive():
    world, harness = host_world()
    plain = harness.spec()
    harness.driver.spawn(plain)
    assert world.vm(plain.name).guest is None and world.disks == {'local-fake1/%s.disk' % plain.uuid}
    spec = with_guest(harness.spec(), 'pw')
    harness.driver.spawn(spec)
    harness.driver.migrate(spec.uuid, 'fake1', harness.target, 'block', MigrationControls())
    moved = 'local-fake2/%s.config' % spec.uuid
    assert world.vm(spec.name).drive == moved and world.guest_data[moved] is spec.guest
    assert {p for p in world.disks if spec.uuid in p} == {'local-fake2/%s.disk' % spec.uuid, moved}


def test_set_admin_password_is_recorded_in_a_running_guest_with_an_agent_only():
    world, harness = host_world()
    spec = harness.spec()
    harness.driver.spawn(spec)
    assert harness.driver.set_admin_password(spec.uuid, 'fake1', 'root', 'pw-1') is None
    assert world.vm(spec.name).passwords == {'root': 'pw-1'}
    world.vm(spec.name).agent = False
    with pytest.raises(errors.DriverError, match='no guest agent') as raised:
        harness.driver.set_admin_password(spec.uuid, 'fake1', 'root', 'pw-2')
    assert 'pw-2' not in str(raised.value) and world.vm(spec.name).passwords == {'root': 'pw-1'}
    cluster = cluster_world()[1]
    with pytest.raises(errors.DriverError, match='cannot set a password inside a guest'):
        cluster.driver.set_admin_password(str(uuidlib.uuid4()), 'vc/c1', 'root', 'pw')
