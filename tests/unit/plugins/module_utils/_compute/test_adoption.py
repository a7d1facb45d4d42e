"""Adopting the VMs an estate already has (issue 17 §3) through the core on fake hypervisors and a real
registry: flavor matching, ports, claims, the lease, check mode, bad input, an interrupted adoption, and
the node views that show unmanaged VMs apart from the instances (adoption.py, nodes.py)."""

from __future__ import annotations

import re

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import adoption as _adoption
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile
from ansible_collections.multihv.cloud.plugins.module_utils._compute.context import Context
from support.fake_driver import FakeCloud, FakeDriver, FakeWorld

MAC = '52:54:00:aa:bb:01'


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path, monkeypatch):
    """fake1 and fake2 (8 vCPUs, 8 GB, 100 GB disk each); flavors small (1/1024/1), small-big-disk (1/1024/20),
    medium (2/2048/10); network lan (backing lan everywhere); file image tick."""
    monkeypatch.setattr(_leases, 'INSTANCE_LEASE_WAIT_SECONDS', 0.2)
    world = FakeWorld()
    world.add_node('fake1')
    world.add_node('fake2')
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.flavor('small-big-disk', disk_gb=20)
        made.flavor('medium', vcpus=2, ram_mb=2048, disk_gb=10)
        made.image('tick')
        made.network('lan', cidr='192.0.2.0/24')
        yield made


def run(cloud, check_mode=False, **params):
    return _adoption.run(cloud.context(), dict({'node': 'fake1'}, **params), check_mode)


def nothing_written(cloud, *vms):
    """No record, allocation or port of the VMs, and each still without the cloud's mark."""
    assert cloud.registry.list_instances() == [] or all(r.uuid not in [vm.uuid for vm in vms] for r in cloud.registry.list_instances())
    assert all(a['instance_uuid'] not in [vm.uuid for vm in vms] for a in cloud.registry.list_allocations())
    assert all(p['instance_uuid'] not in [vm.uuid for vm in vms] for p in cloud.registry.list_ports())
    assert all(not vm.marked for vm in vms)


def test_a_hand_made_vm_is_adopted_with_its_identity_a_matched_flavor_ports_and_a_claim(cloud):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy', vcpus=1, memory_mb=1024, disk_gb=3,
                                    nics=[(MAC, 'lan'), ('52:54:00:aa:bb:02', 'bridge:br9')])
    result = run(cloud, names=['legacy'])
    assert result['changed'] and not result['refused'] and not result['failures']
    record = cloud.registry.get_instance(name='legacy')
    # The smallest flavor with its vCPUs and RAM whose disk holds its 3 GB: not small (1 GB), not medium (2 vCPUs).
    assert (record.uuid, record.node, record.host, record.flavor, record.image, record.storage, record.state) == (
        vm.uuid, 'fake1', 'fake1', 'small-big-disk', '-', 'local', 'running')
    nics = record.identity['networks']
    # The NIC on lan's backing has a port of lan with the VM's own MAC; the other stays on its backing, with no port.
    assert nics[0] == {'network': 'lan', 'mac': MAC, 'address': '192.0.2.1'}
    assert nics[1] == {'network': 'bridge:br9', 'mac': '52:54:00:aa:bb:02'}
    assert [(p['network'], p['mac']) for p in cloud.registry.list_ports(instance_uuid=vm.uuid)] == [('lan', MAC)]
    assert record.identity['macs'] == [MAC, '52:54:00:aa:bb:02']
    assert cloud.allocations() == [('legacy', 'fake1')]
    assert cloud.registry.list_allocations()[0]['disk_gb'] == 20
    assert vm.marked
    # Now it is an instance like any other: listed, powered and deleted through the core.
    assert [s.name for s in cloud.world.driver('fake1').list_instances()] == ['legacy']
    changed, after = _instances.set_power(cloud.context(), record, 'stopped')
    assert changed and after.state == 'stopped' and vm.power == 'stopped'
    _instances.delete(cloud.context(), after)
    assert cloud.world.vm('legacy') is None and cloud.registry.get_instance(name='legacy') is None
    assert cloud.allocations() == [] and cloud.registry.list_ports() == []


def test_a_named_flavor_must_fit_the_vm_and_may_be_larger(cloud):
    cloud.world.add_foreign_vm('fake1', 'two', vcpus=2, memory_mb=2048, disk_gb=1)
    with pytest.raises(errors.MultihvError, match=r'two: flavor small \(1 vCPUs, 1024 MB RAM, 1 GB disk\) is smaller than VM two '
                                                  r'\(2 vCPUs, 2048 MB RAM, 1 GB disk\) in vcpus, ram_mb: a named flavor must fit the VM; '
                                                  r'nothing was changed'):
        run(cloud, names=['two'], flavor='small')
    cloud.flavor('large', vcpus=4, ram_mb=4096, disk_gb=40)
    assert run(cloud, names=['two'], flavor='large')['instances'][0]['flavor'] == 'large'


def test_no_matching_flavor_is_a_clear_refusal(cloud):
    odd = cloud.world.add_foreign_vm('fake1', 'odd', vcpus=3, memory_mb=3000)
    with pytest.raises(errors.MultihvError, match=r'odd: no flavor has the 3 vCPUs and 3000 MB RAM of VM odd with at least its 1 GB '
                                                  r'disk: create one, or name one with flavor'):
        run(cloud, names=['odd'])
    nothing_written(cloud, odd)


def test_bad_names_refuse_the_whole_task_and_change_nothing(cloud):
    good = cloud.world.add_foreign_vm('fake1', 'good')
    big = cloud.world.add_foreign_vm('fake1', 'big', vcpus=2, memory_mb=2048, disk_gb=200)
    booted = cloud.boot('booted', flavor='small', image='tick', node='fake1')
    for names, message in (
            (['good', 'nowhere'], r'nowhere: node fake1 has no VM named nowhere; its VMs with no instance record are: big, good'),
            (['good', 'good'], r'names lists VM good twice'),
            (['good', 'booted'], r'booted: VM booted \(%s\) is instance booted already, which the cloud built' % booted.uuid),
            (['good', 'big'], r'big: no flavor has the 2 vCPUs and 2048 MB RAM of VM big with at least its 200 GB disk'),
            (['big', 'good'], r'big: VM big does not fit node fake1 with flavor huge: disk_gb 1 \+ 200 > capacity 100; nothing was changed')):
        if names[0] == 'big':
            cloud.flavor('huge', vcpus=2, ram_mb=2048, disk_gb=200)
        with pytest.raises(errors.MultihvError, match=message):
            run(cloud, names=names)
        nothing_written(cloud, good, big)
    assert [r.name for r in cloud.registry.list_instances()] == ['booted']


def test_a_vm_that_does_not_fit_the_node_is_refused_and_check_mode_lists_what_would_fit(cloud):
    cloud.flavor('huge', vcpus=2, ram_mb=2048, disk_gb=90)
    cloud.world.add_foreign_vm('fake1', 'a-huge', vcpus=2, memory_mb=2048, disk_gb=90)
    cloud.world.add_foreign_vm('fake1', 'b-huge', vcpus=2, memory_mb=2048, disk_gb=90)
    small = cloud.world.add_foreign_vm('fake1', 'c-small')
    cloud.world.add_foreign_vm('fake2', 'elsewhere')
    before = cloud.world.calls[:]
    planned = run(cloud, check_mode=True, all=True)
    assert [(a['name'], a['flavor'], a['state']) for a in planned['instances']] == [
        ('a-huge', 'huge', 'would be adopted'), ('c-small', 'small', 'would be adopted')]
    assert [r['name'] for r in planned['refused']] == ['b-huge']
    assert 'b-huge does not fit node fake1 with flavor huge: disk_gb 90 + 90 > capacity 100' in planned['refused'][0]['msg']
    assert planned['changed'] and cloud.registry.list_instances() == [] and not small.marked
    assert set(method for _endpoint, method in cloud.world.calls[len(before):]) <= {'get_nodes', 'list_vms'}  # read only
    done = run(cloud, all=True)
    assert sorted(r.name for r in cloud.registry.list_instances()) == ['a-huge', 'c-small']
    assert [r['name'] for r in done['refused']] == ['b-huge'] and not cloud.world.vm('b-huge').marked


def test_all_takes_at_most_limit_vms_and_a_second_run_the_rest(cloud):
    for index in range(5):
        cloud.world.add_foreign_vm('fake1', 'vm%d' % index)
    first = run(cloud, all=True, limit=3)
    assert [i['name'] for i in first['instances']] == ['vm0', 'vm1', 'vm2'] and first['left'] == 2
    second = run(cloud, all=True, limit=3)
    assert [i['name'] for i in second['instances']] == ['vm3', 'vm4'] and second['left'] == 0
    third = run(cloud, all=True, limit=3)
    assert not third['changed'] and third['instances'] == []


def test_adopting_again_changes_nothing(cloud):
    cloud.world.add_foreign_vm('fake1', 'legacy')
    assert run(cloud, names=['legacy'])['changed']
    again = run(cloud, names=['legacy'])
    assert not again['changed'] and again['already'] == [{'name': 'legacy', 'uuid': cloud.world.vm('legacy').uuid}]
    assert len(cloud.registry.list_instances()) == 1


def test_an_orphan_vm_of_the_cloud_is_adopted_back(cloud):
    """A VM with the cloud's mark whose record was lost: the reconciler's orphan, adopted again."""
    record = cloud.boot('lost', flavor='small', image='tick', node='fake2')
    cloud.registry.delete_instance(record.uuid)
    orphans = _reconcile.run(cloud.context(), check_mode=True)['orphans']
    assert [(o['kind'], o['name']) for o in orphans] == [('vm', 'lost')]
    result = run(cloud, node='fake2', all=True)
    assert [i['uuid'] for i in result['instances']] == [record.uuid]
    assert _reconcile.run(cloud.context(), check_mode=True)['orphans'] == []


def test_a_copy_of_an_instance_is_refused(cloud):
    copy = cloud.world.add_foreign_vm('fake1', 'copy')
    copy.marked, copy.marked_uuid = True, '0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01'
    result = run(cloud, all=True)
    assert result['refused'][0]['msg'] == ('VM copy carries the mark of instance 0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01, not its own '
                                           'uuid %s (a copy of an instance)' % copy.uuid)


def test_a_mac_another_instance_holds_refuses_the_vm(cloud):
    booted = cloud.boot('booted', flavor='small', image='tick', node='fake1', networks=[{'network': 'lan'}])
    mac = booted.identity['macs'][0]
    clash = cloud.world.add_foreign_vm('fake2', 'clash', nics=[(mac, 'lan')])
    with pytest.raises(errors.MultihvError, match=r'clash: the MAC %s of NIC 0 of VM clash is the MAC of a port of instance booted' % mac):
        run(cloud, node='fake2', names=['clash'])
    nothing_written(cloud, clash)


def test_room_taken_between_the_plan_and_the_claim_writes_nothing(cloud):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy')
    ctx = cloud.context()
    _survey, adoptions, _refused, _already, _left = _adoption.plan(ctx, 'fake1', ['legacy'])
    other = cloud.take_room('fake1')
    with pytest.raises(errors.MultihvError, match=r'VM legacy no longer fits node fake1 with flavor small \(another run took the room\); '
                                                  r'VM legacy on node fake1 was not adopted'):
        _adoption.adopt(ctx, adoptions[0])
    assert [r.uuid for r in cloud.registry.list_instances()] == [other.uuid]
    nothing_written(cloud, vm)


def test_the_instance_lease_is_held_from_before_the_record(cloud, monkeypatch):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy')
    held = _leases.take(cloud.registry.another(), 'instance:%s' % vm.uuid, 0, 'test', 'migrate')
    failures = run(cloud, names=['legacy'])['failures']
    assert len(failures) == 1 and re.match(r'lease instance:%s is held by .*\(migrate\) until .*VM legacy on node fake1 was not adopted'
                                           % vm.uuid, failures[0]['msg'])
    nothing_written(cloud, vm)
    held.registry.release_lease(held.name, held.owner)
    seen = []
    original = FakeDriver.adopt

    def adopt(self, uuid, node, name, metadata):
        holder = cloud.registry.lease_holder('instance:%s' % uuid)
        seen.append((holder['owner'].endswith('(adopt)'), cloud.registry.get_instance(uuid=uuid).state))
        return original(self, uuid, node, name, metadata)
    monkeypatch.setattr(FakeDriver, 'adopt', adopt)
    run(cloud, names=['legacy'])
    assert seen == [(True, 'adopting')]


def test_an_adoption_cut_off_at_the_mark_is_left_alone_by_the_reconciler_and_finished_by_the_next_run(cloud, monkeypatch):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy')

    def unreachable(self, uuid, node, name, metadata):
        raise errors.Unreachable('fake endpoint fake1 does not answer')
    monkeypatch.setattr(FakeDriver, 'adopt', unreachable)
    result = run(cloud, names=['legacy'])
    assert [f['name'] for f in result['failures']] == ['legacy'] and not result['changed']
    record = cloud.registry.get_instance(name='legacy')
    assert record.state == 'adopting' and cloud.allocations() == [('legacy', 'fake1')]
    monkeypatch.undo()
    monkeypatch.setattr(_leases, 'INSTANCE_LEASE_WAIT_SECONDS', 0.2)
    passed = _reconcile.run(cloud.context(), delete_orphans=True, settle_seconds=0)
    assert passed['actions'] == [] and cloud.world.vm('legacy') is vm and not vm.marked
    assert [(u['name'], u['node'], u['state']) for u in passed['unfinished']] == [('legacy', 'fake1', 'adopting')]
    assert 'run multihv.cloud.instance_import for VM legacy on node fake1 again' in passed['unfinished'][0]['reason']
    again = run(cloud, all=True)
    assert [i['name'] for i in again['instances']] == ['legacy'] and vm.marked
    assert cloud.registry.get_instance(name='legacy').state == 'running' and cloud.allocations() == [('legacy', 'fake1')]


def test_a_refused_mark_removes_the_record(cloud, monkeypatch):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy')

    def refused(self, uuid, node, name, metadata):
        raise errors.DriverError('injected refusal')
    monkeypatch.setattr(FakeDriver, 'adopt', refused)
    result = run(cloud, names=['legacy'])
    assert result['failures'] == [{'name': 'legacy', 'msg': 'VM legacy on node fake1 could not be adopted: injected refusal; '
                                                            'VM legacy on node fake1 was not adopted'}]
    nothing_written(cloud, vm)


def test_a_down_or_unknown_node_is_refused(cloud):
    with pytest.raises(errors.NotFound, match=r'node nowhere is not in the cloud file; nothing was changed'):
        run(cloud, node='nowhere', all=True)
    cloud.world.stop_answering('fake1')
    with pytest.raises(errors.MultihvError, match=r'node fake1 cannot be reached \(fake endpoint fake1 does not answer\); nothing was changed'):
        run(cloud, all=True)


def test_node_views_show_the_instances_claims_apart_from_unmanaged_vms(cloud):
    cloud.boot('booted', flavor='medium', image='tick', node='fake1')
    cloud.world.add_foreign_vm('fake1', 'on', vcpus=1, memory_mb=512)
    cloud.world.add_foreign_vm('fake1', 'off', vcpus=4, memory_mb=4096, power='stopped')
    view = cloud.context().view('fake1').as_dict()
    assert view['allocated'] == {'vcpus': 2, 'memory_mb': 2048, 'disk_gb': 10, 'instances': 1}
    assert view['unmanaged'] == {'vms': 2, 'vcpus': 1, 'memory_mb': 512}
    assert view['used']['memory_mb'] == 2048 + 512  # the hypervisor's figure: every running VM
    run(cloud, names=['on'], flavor='small')  # no flavor has its 512 MB: a named one that fits
    view = cloud.context().view('fake1').as_dict()
    assert view['allocated'] == {'vcpus': 3, 'memory_mb': 3072, 'disk_gb': 11, 'instances': 2}
    assert view['unmanaged'] == {'vms': 1, 'vcpus': 0, 'memory_mb': 0}


def test_a_context_without_registry_allocations_shows_none(cloud):
    assert Context(cloud.config, cloud.registry, drivers=cloud.world.drivers()).view('fake2').allocated == {
        'vcpus': 0, 'memory_mb': 0, 'disk_gb': 0, 'instances': 0}


@pytest.mark.parametrize('params, message', [
    ({'all': True, 'limit': 0}, r'^limit must be at least 1, got 0; nothing was changed$'),
    ({}, r'^give names \(the VMs to adopt\) or all=true \(the node\'s VMs with no record\); nothing was changed$'),
    ({'names': ['legacy'], 'all': True}, r'^names and all=true are mutually exclusive; nothing was changed$'),
    ({'names': ['legacy'], 'flavor': 'nope'}, r'^flavor nope does not exist; nothing was changed$'),
    ({'names': ['legacy'], 'image': 'nope'}, r'^image nope does not exist; nothing was changed$'),
])
def test_bad_options_are_refused_before_any_vm_is_looked_at(cloud, params, message):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy')
    calls = len(cloud.world.calls)
    with pytest.raises(errors.MultihvError, match=message):
        run(cloud, **params)
    nothing_written(cloud, vm)
    assert 'list_vms' not in [method for _endpoint, method in cloud.world.calls[calls:]]


def test_an_image_of_another_hypervisor_type_is_refused(cloud):
    vm = cloud.world.add_foreign_vm('fake1', 'legacy')
    cloud.image('esx-tmpl', hypervisor_type='vsphere', template='t')
    with pytest.raises(errors.MultihvError, match=r'^image esx-tmpl is for vsphere nodes; node fake1 is fake; nothing was changed$'):
        run(cloud, names=['legacy'], image='esx-tmpl')
    nothing_written(cloud, vm)
    assert run(cloud, names=['legacy'], image='tick')['instances'][0]['image'] == 'tick'
