"""Booting through the core on fake hypervisors and a real registry: what a boot leaves behind when
a spawn fails or overstays, and Nova's retry when another run takes the room between the plan and
the claim (instances.plan, boot, boot_many, claim_somewhere), rebuild and delete."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile
from ansible_collections.multihv.cloud.plugins.module_utils._compute.context import Context
from support.fake_driver import two_node_cloud

INSTANCE_UUID = '0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01'


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 and fake2 (8 vCPUs, 8 GB each), flavor small (1 vCPU, 1 GB, 1 GB disk), file image tick."""
    with two_node_cloud(tmp_path) as made:
        yield made


def nothing_left_of(cloud, name):
    """No record, no allocation, no VM and no disk of instance name."""
    assert name not in cloud.nodes_of() and name not in [n for n, _node in cloud.allocations()]
    assert cloud.world.vm(name) is None


def test_a_boot_records_claims_spawns_and_gives_stable_macs(cloud):
    cloud.network('default')
    record = cloud.boot('a', networks=[{'network': 'default'}], uuid=INSTANCE_UUID)
    mac = _instances.stable_mac(INSTANCE_UUID, 0)
    assert (record.uuid, record.node, record.host, record.state) == (INSTANCE_UUID, 'fake1', 'fake1', 'running')
    assert record.identity['macs'] == [mac]
    assert record.identity['networks'] == [{'network': 'default', 'mac': mac, 'address': '192.0.2.1'}]
    assert cloud.allocations() == [('a', 'fake1')]
    vm = cloud.world.vm('a')
    assert (vm.node, vm.power, vm.macs, vm.disks) == ('fake1', 'running', [mac], ['local-fake1/%s.disk' % INSTANCE_UUID])
    assert cloud.world.uploads == [('fake1', 'tick')]


def test_a_boot_asked_stopped_is_stopped_on_the_node_and_in_the_record(cloud):
    assert cloud.boot('a', state='stopped').state == 'stopped'
    assert cloud.world.placed() == {'a': ('fake1', 'stopped')}


def test_a_failed_spawn_leaves_no_record_no_allocation_and_no_vm(cloud):
    cloud.world.fail_spawn()
    with pytest.raises(errors.DriverError, match='injected spawn failure'):
        cloud.boot('a')
    nothing_left_of(cloud, 'a')
    assert cloud.registry.list_instances() == [] and cloud.world.disks == set()


def test_a_spawn_that_overstays_its_deadline_has_its_vm_destroyed(cloud):
    """The driver gave up waiting (Unreachable) but the VM was made: the core removes it."""
    cloud.world.fail_spawn(error=errors.Unreachable('fake1 did not answer within 600 s'), leave_behind=True)
    with pytest.raises(errors.Unreachable):
        cloud.boot('a')
    nothing_left_of(cloud, 'a')
    assert cloud.world.disks == set() and ('fake1', 'destroy') in cloud.world.calls


def test_a_spawn_cut_off_whose_vm_cannot_be_destroyed_keeps_its_record_for_the_reconciler(cloud):
    """The endpoint stopped answering mid-spawn (a vCenter that may still finish its clone): the VM cannot
    be destroyed, so the record stays 'building' with its allocation; once the endpoint answers again,
    the reconciler destroys the VM and records the instance error."""
    cloud.world.fail_spawn(error=errors.Unreachable('fake1 did not answer within 600 s'), leave_behind=True, stop_answering=True)
    with pytest.raises(errors.SpawnUnconfirmed) as caught:
        cloud.boot('a')
    (record,) = cloud.registry.list_instances()
    assert str(caught.value) == (
        'boot of instance a (%s) on node fake1 failed: fake1 did not answer within 600 s; the VM it may have left on node fake1 '
        'could not be destroyed: fake endpoint fake1 does not answer; its record stays in state building with its allocation: '
        'once node fake1 answers, multihv.cloud.reconcile destroys whatever VM of it is there and settles the record' % record.uuid)
    assert (record.name, record.state) == ('a', 'building') and cloud.allocations() == [('a', 'fake1')]
    assert cloud.world.vm('a') is not None
    cloud.world.answer_again('fake1')
    result = _reconcile.run(cloud.context(), settle_seconds=0)
    assert [(a['kind'], a['name']) for a in result['actions']] == [('build', 'a')] and not result['failures']
    assert cloud.world.vm('a') is None and cloud.world.disks == set() and cloud.allocations() == []
    assert [(r.name, r.state) for r in cloud.registry.list_instances()] == [('a', 'error')]


def test_a_boot_whose_outcome_cannot_be_recorded_says_what_it_left(cloud, monkeypatch):
    """The VM was made but the registry refused the last write (locked, out of reach): the error names
    the VM and the record it left in state building, which the reconciler settles later."""
    def refused(_lease, registry=None):
        raise errors.RegistryError('registry sqlite:///r.sqlite: cannot begin a transaction: database is locked')
    monkeypatch.setattr(_leases.Lease, 'guarded', refused)
    with pytest.raises(errors.RegistryError) as caught:
        cloud.boot('a')
    (record,) = cloud.registry.list_instances()
    assert str(caught.value) == (
        'instance a (%s) was built on node fake1, host fake1, but its record could not be completed: registry sqlite:///r.sqlite: '
        'cannot begin a transaction: database is locked; the record stays in state building: once the registry answers and no '
        'run holds the instance, multihv.cloud.reconcile destroys that VM and records the instance error' % record.uuid)
    assert record.state == 'building' and cloud.world.placed() == {'a': ('fake1', 'running')}
    monkeypatch.undo()
    assert [a['kind'] for a in _reconcile.run(cloud.context(), settle_seconds=0)['actions']] == ['build']
    assert cloud.world.vms == {} and [(r.name, r.state) for r in cloud.registry.list_instances()] == [('a', 'error')]


def test_boot_many_reports_the_instance_that_failed_and_boots_the_others(cloud):
    cloud.world.fail_spawn(name='b1')
    records, failures = _instances.boot_many(cloud.context(), [{'name': 'b%d' % i, 'flavor': 'small', 'image': 'tick'} for i in range(3)])
    assert sorted(r.name for r in records) == ['b0', 'b2']
    assert failures == [{'name': 'b1', 'msg': 'injected spawn failure'}]
    nothing_left_of(cloud, 'b1')
    assert sorted(cloud.world.placed()) == ['b0', 'b2'] and [n for n, _node in cloud.allocations()] == ['b0', 'b2']


def test_one_instance_boots_with_the_runs_own_drivers_and_several_with_a_worker_context_each(cloud):
    """Issue 20: a boot of one instance opens each endpoint once (the run's drivers read the node views, then
    spawn); a batch gives each worker thread drivers of its own (a pyVmomi session is not shared by threads)."""
    made = []

    def factory(config=None):
        made.append(len(made))
        return cloud.world.drivers(config)

    def run(names, failing=None):
        del made[:]
        if failing:
            cloud.world.fail_spawn(name=failing)
        ctx = Context(cloud.config, cloud.registry, driver_factory=factory)
        records, failures = _instances.boot_many(ctx, [{'name': n, 'flavor': 'small', 'image': 'tick'} for n in names])
        return len(made), sorted(r.name for r in records), failures

    assert run(['one']) == (1, ['one'], [])
    assert cloud.world.placed() == {'one': ('fake1', 'running')}
    assert run(['two', 'three']) == (3, ['three', 'two'], [])
    # The one instance's failure is reported as a batch's is, and leaves nothing behind.
    assert run(['four'], failing='four') == (1, [], [{'name': 'four', 'msg': 'injected spawn failure'}])
    nothing_left_of(cloud, 'four')


def test_a_claim_lost_between_plan_and_claim_is_scheduled_again_elsewhere(cloud):
    ctx = cloud.context()
    (placement,) = _instances.plan(ctx, [{'name': 'a', 'flavor': 'small', 'image': 'tick'}])
    assert placement.node == 'fake1' and _instances.prepare_images(ctx, [placement]) == {}
    other = cloud.take_room('fake1')
    record = _instances.boot(ctx, placement)
    assert (record.node, record.host) == ('fake2', 'fake2')
    assert cloud.allocations() == sorted([('a', 'fake2'), (other.name, 'fake1')])
    assert cloud.world.placed() == {'a': ('fake2', 'running')}
    assert cloud.world.uploads == [('fake1', 'tick'), ('fake2', 'tick')]  # the new node got the image too


def test_when_every_node_is_taken_after_the_plan_the_boot_fails_and_leaves_nothing(cloud):
    ctx = cloud.context()
    (placement,) = _instances.plan(ctx, [{'name': 'a', 'flavor': 'small', 'image': 'tick'}])
    others = [cloud.take_room(node).name for node in ('fake1', 'fake2')]
    with pytest.raises(errors.MultihvError, match='cannot place instance a: no node can take 1 vCPUs, 1024 MB RAM, 1 GB disk: '
                                                  'NodeFilter removed fake1; ResourcesFilter removed fake2; nothing was created'):
        _instances.boot(ctx, placement)
    nothing_left_of(cloud, 'a')
    assert cloud.allocations() == sorted(zip(others, ('fake1', 'fake2'))) and cloud.world.vms == {}


def test_a_claim_that_keeps_losing_the_race_gives_up_and_leaves_nothing(cloud, monkeypatch):
    for index in range(3, 7):
        cloud.world.add_node('fake%d' % index)
    ctx = cloud.context()
    (placement,) = _instances.plan(ctx, [{'name': 'a', 'flavor': 'small', 'image': 'tick', 'uuid': INSTANCE_UUID}])
    claim, raced = cloud.registry.claim, []

    def losing(inst_uuid, node, *args):
        if inst_uuid == INSTANCE_UUID:  # another run takes the room just before each of this boot's claims
            raced.append(node)
            cloud.take_room(node)
        return claim(inst_uuid, node, *args)

    monkeypatch.setattr(cloud.registry, 'claim', losing)
    with pytest.raises(_instances.ClaimContended) as caught:
        _instances.boot(ctx, placement)
    assert len(raced) == _instances.CLAIM_RETRIES == len(set(raced)) and raced[0] == 'fake1'
    assert str(caught.value) == ('could not claim resources for instance %s on %s: other runs kept taking them'
                                 % (INSTANCE_UUID, ', '.join(raced)))
    nothing_left_of(cloud, 'a')
    assert cloud.world.vms == {}


def test_delete_destroys_the_vm_its_disk_and_frees_the_allocation(cloud):
    record = cloud.boot('a')
    _instances.delete(cloud.context(), record)
    nothing_left_of(cloud, 'a')
    assert cloud.world.disks == set()


def test_a_rebuild_that_fails_after_the_old_vm_went_leaves_the_record_in_error(cloud):
    record = cloud.boot('a')
    rebuilt = _instances.rebuild(cloud.context(), record)
    assert rebuilt.state == 'running' and cloud.world.calls[-2:] == [('fake1', 'destroy'), ('fake1', 'spawn')]
    cloud.world.fail_spawn()
    with pytest.raises(errors.MultihvError, match='rebuild of instance a on fake1 failed after its old VM was destroyed: '
                                                  'injected spawn failure; the instance is in state error'):
        _instances.rebuild(cloud.context(), rebuilt)
    assert cloud.registry.get_instance(name='a').state == 'error'
    assert cloud.allocations() == [('a', 'fake1')] and cloud.world.vms == {}


def test_a_boot_whose_stop_fails_leaves_nothing(cloud, monkeypatch):
    def refuse(*_args):
        raise errors.DriverError('injected power failure')

    monkeypatch.setattr(type(cloud.world.driver('fake1')), 'set_power', refuse)
    with pytest.raises(errors.DriverError, match='injected power failure'):
        cloud.boot('a', state='stopped')
    nothing_left_of(cloud, 'a')


def test_a_rebuild_of_a_stopped_instance_whose_stop_fails_leaves_no_vm_and_the_record_in_error(cloud, monkeypatch):
    record = cloud.boot('a', state='stopped')

    def refuse(*_args):
        raise errors.DriverError('injected power failure')

    monkeypatch.setattr(type(cloud.world.driver('fake1')), 'set_power', refuse)
    with pytest.raises(errors.MultihvError, match='rebuild of instance a on fake1 failed after its old VM was destroyed: '
                                                  'injected power failure'):
        _instances.rebuild(cloud.context(), record)
    assert cloud.registry.get_instance(name='a').state == 'error'
    assert cloud.world.vms == {}
