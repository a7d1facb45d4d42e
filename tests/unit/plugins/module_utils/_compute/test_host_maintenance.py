"""ESXi host maintenance inside a cluster node (issue 18 §2 and its bad input, §4), on the fake driver's cluster nodes
with a real SQLite registry: the moves planned by host fit before any is made, each under its lease and recorded as a
migration, the host's maintenance mode, the node's capacity, check mode, refusals that move nothing, a move that fails
half way, and what a killed run leaves to the reconciler."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import host_maintenance as _hm
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import Capabilities, HostResources, NodeResources
from support.fake_driver import FakeCloud, FakeWorld
from support.reconciling import run as reconcile_run

NODE = 'vc/c1'
H0, H1, H2 = 'vc/c1-h0', 'vc/c1-h1', 'vc/c1-h2'


@pytest.fixture
def cloud(tmp_path):
    """Cluster node vc/c1 of three hosts (8 CPUs, 8192 MB each) and vc/c2 of two, a KVM-like node kvm1; flavors small
    (1 vCPU, 1024 MB) and big (2, 4096); template image tmpl."""
    world = FakeWorld()
    world.add_cluster(NODE, hosts=3)
    world.add_cluster('vc/c2', hosts=2)
    world.add_node('kvm1')
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.flavor('big', vcpus=2, ram_mb=4096)
        made.image('tmpl', hypervisor_type='fakecluster', template='tmpl')
        yield made


def boot_on(cloud, name, host, flavor='small', state=None):
    """An instance of NODE on host (booted, then put there as the cluster's own DRS would), its record saying so."""
    record = cloud.boot(name, flavor=flavor, image='tmpl', node=NODE, **({'state': state} if state else {}))
    cloud.world.vm(name).host = host
    cloud.registry.update_instance(record.uuid, host=host)
    return cloud.registry.get_instance(uuid=record.uuid)


def hosts_of(cloud):
    """{instance name: (host as the hypervisor says, host as the registry says)}."""
    return dict((i.name, (cloud.world.vm(i.name).host, i.host)) for i in cloud.registry.list_instances())


def migrations(cloud):
    return sorted((m.status, m.source_host, m.dest_host, m.source_node, m.dest_node) for m in cloud.registry.list_migrations())


def in_maintenance(cloud, host):
    return next(h for h in cloud.world.nodes[NODE].hosts if h.name == host).in_maintenance


def test_entering_moves_every_instance_by_host_fit_then_the_capacity_drops_and_leaving_brings_it_back(cloud):
    boot_on(cloud, 'big1', H0, flavor='big')
    boot_on(cloud, 'small1', H0)
    boot_on(cloud, 'off1', H0, state='stopped')
    boot_on(cloud, 'other', H1, flavor='big')  # H1 has less free RAM than H2: the big one goes to H2
    capacity = cloud.context().view(NODE).capacity

    result = _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert result['changed'] is True and result['host']['in_maintenance'] is True and result['before']['in_maintenance'] is False
    placed = hosts_of(cloud)
    # Largest first onto the most free RAM (H2: 8192), then small1 onto H2 again (4096 free vs H1's 4096: ties go by name,
    # the scheduler's pick_host takes the larger name), stopped ones last where they would fit started.
    assert placed['big1'] == (H2, H2) and placed['other'] == (H1, H1)
    assert all(vm == rec and vm != H0 for vm, rec in placed.values())
    assert cloud.world.vm('off1').power == 'stopped' and cloud.world.vm('small1').power == 'running'
    assert [(m['instance_name'], m['status'], m['migration_type'], m['source_host']) for m in result['migrations']] == [
        ('big1', 'completed', 'live', H0), ('small1', 'completed', 'live', H0), ('off1', 'completed', 'cold', H0)]
    assert all((m.source_node, m.dest_node) == (NODE, NODE) for m in cloud.registry.list_migrations())
    assert in_maintenance(cloud, H0)
    view = cloud.context().view(NODE)
    assert view.capacity['memory_mb'] == capacity['memory_mb'] - 8192 and view.capacity['vcpus'] == capacity['vcpus'] - 8 * 4
    assert [h.usable for h in view.hosts] == [False, True, True]
    # The allocations stay on the node: the moves are inside it.
    assert set(node for _name, node in cloud.allocations()) == {NODE}
    # No lease is left behind.
    assert cloud.registry.lease_holder('node:%s' % NODE) is None

    again = _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert (again['changed'], again['migrations']) == (False, []) and len(cloud.registry.list_migrations()) == 3

    back = _hm.set_host_maintenance(cloud.context(), NODE, H0, False)
    assert back['changed'] is True and back['host']['in_maintenance'] is False and not in_maintenance(cloud, H0)
    assert cloud.context().view(NODE).capacity == capacity
    assert _hm.set_host_maintenance(cloud.context(), NODE, H0, False)['changed'] is False


def test_no_new_instance_is_placed_on_a_host_in_maintenance(cloud):
    _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    for index in range(4):
        cloud.boot('new%d' % index, image='tmpl', node=NODE)
    assert H0 not in set(vm for vm, _rec in hosts_of(cloud).values())


def test_check_mode_gives_the_plan_and_changes_nothing(cloud):
    boot_on(cloud, 'big1', H0, flavor='big')
    boot_on(cloud, 'off1', H0, state='stopped')
    calls = len(cloud.world.calls)
    result = _hm.set_host_maintenance(cloud.context(), NODE, H0, True, check_mode=True)
    assert result['changed'] is True and result['host']['in_maintenance'] is True
    assert [(m['instance_name'], m['status'], m['migration_type'], m['source_host'], m['dest_host']) for m in result['migrations']] == [
        ('big1', 'would run', 'live', H0, H2), ('off1', 'would run', 'cold', H0, H1)]  # H1 has the most RAM left
    assert hosts_of(cloud) == {'big1': (H0, H0), 'off1': (H0, H0)} and not in_maintenance(cloud, H0)
    assert cloud.registry.list_migrations() == [] and cloud.registry.lease_holder('node:%s' % NODE) is None
    assert not [c for c in cloud.world.calls[calls:] if c[1] in ('migrate', 'set_host_maintenance')]
    # Leaving, in check mode: said, not done.
    cloud.world.nodes[NODE].hosts[1].in_maintenance = True
    out = _hm.set_host_maintenance(cloud.context(), NODE, H1, False, check_mode=True)
    assert out['changed'] is True and out['host']['in_maintenance'] is False and in_maintenance(cloud, H1)


def test_refused_with_nothing_moved_when_the_other_hosts_cannot_take_the_running_instances(cloud):
    for index in range(3):
        boot_on(cloud, 'h0-%d' % index, H0, flavor='big')  # 12288 MB on H0 (beyond its 8192: the fake does not care)
    boot_on(cloud, 'h1', H1, flavor='big')
    boot_on(cloud, 'h2', H2, flavor='big')  # 4096 MB free on H1 and H2: two of H0's three fit
    before = hosts_of(cloud)
    with pytest.raises(errors.MultihvError, match=r'the other hosts of node vc/c1 cannot take the running instances of host vc/c1-h0: '
                                                  r'h0-2 \(2 vCPUs, 4096 MB\) fit no host .*nothing moved and the host was left as it was'):
        _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert hosts_of(cloud) == before and cloud.registry.list_migrations() == [] and not in_maintenance(cloud, H0)


def test_the_last_host_up_is_refused(cloud):
    boot_on(cloud, 'vm1', H0)
    cloud.world.nodes[NODE].hosts[1].in_maintenance = True
    cloud.world.nodes[NODE].hosts[2].connection_state = 'notResponding'
    with pytest.raises(errors.MultihvError, match=r'host vc/c1-h0 is the last host up of node vc/c1 \(its other hosts: vc/c1-h1 in '
                                                  r'maintenance, vc/c1-h2 notResponding\).*nothing moved'):
        _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert hosts_of(cloud) == {'vm1': (H0, H0)} and not in_maintenance(cloud, H0) and cloud.registry.list_migrations() == []


@pytest.mark.parametrize('node, host, kind, message', [
    (NODE, 'esx9', errors.NotFound, r'node vc/c1 has no host esx9; its hosts: vc/c1-h0, vc/c1-h1, vc/c1-h2; nothing moved'),
    (NODE, 'vc/c2-h0', errors.NotFound, r'node vc/c1 has no host vc/c2-h0 \(it is a host of node vc/c2\)'),
    ('kvm1', 'kvm1', errors.MultihvError, r'node kvm1 is a fake host: the node is the host, it has no host kvm1 to put in maintenance; '
                                          r'take it out of scheduling with enabled false and move its instances with multihv.cloud.migrate'),
    ('vc/c9', 'x', errors.NotFound, r'node vc/c9 is not in the cloud; nothing moved'),
])
def test_bad_input_is_refused_and_nothing_moves(cloud, node, host, kind, message):
    boot_on(cloud, 'vm1', H0)
    calls = len(cloud.world.calls)
    with pytest.raises(kind, match=message):
        _hm.set_host_maintenance(cloud.context(), node, host, True)
    assert hosts_of(cloud) == {'vm1': (H0, H0)} and cloud.registry.list_migrations() == []
    assert not [c for c in cloud.world.calls[calls:] if c[1] in ('migrate', 'set_host_maintenance')]


def test_a_type_with_hosts_but_no_host_maintenance_is_refused(cloud):
    import dataclasses  # pylint: disable=import-outside-toplevel
    endpoint = cloud.world.endpoints['vc']
    endpoint.capabilities = dataclasses.replace(endpoint.capabilities, host_maintenance=False)
    with pytest.raises(errors.MultihvError, match='Fake cluster nodes cannot put one of their hosts in maintenance'):
        _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert Capabilities(hypervisor_type='x', label='x', node_noun='x').host_maintenance is False  # a driver says so, or it has none


def test_a_running_vm_that_is_not_the_cloud_s_blocks_and_a_stopped_one_stays(cloud):
    boot_on(cloud, 'vm1', H0)
    cloud.world.add_foreign_vm(NODE, 'handmade', host=H0)
    with pytest.raises(errors.MultihvError, match=r"host vc/c1-h0 of node vc/c1 cannot enter maintenance: VM handmade runs there and is "
                                                  r"not one of the cloud's instances \(move it or power it off"):
        _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert hosts_of(cloud) == {'vm1': (H0, H0)} and cloud.registry.list_migrations() == []
    cloud.world.vm('handmade').power = 'stopped'
    assert _hm.set_host_maintenance(cloud.context(), NODE, H0, True)['changed'] is True
    assert cloud.world.vm('handmade').host == H0 and cloud.world.vm('vm1').host != H0 and in_maintenance(cloud, H0)


def test_an_instance_in_the_middle_of_other_work_blocks(cloud):
    record = boot_on(cloud, 'vm1', H0)
    cloud.registry.update_instance(record.uuid, state='verify_resize')
    with pytest.raises(errors.MultihvError, match='instance vm1 is verify_resize; nothing moved'):
        _hm.set_host_maintenance(cloud.context(), NODE, H0, True)


def test_the_node_lease_of_another_run_refuses_the_request(cloud):
    boot_on(cloud, 'vm1', H0)
    other = _leases.take(cloud.registry.another(), 'node:%s' % NODE, 0, 'test')
    try:
        with pytest.raises(errors.LeaseHeld, match='another run works on node vc/c1'):
            _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    finally:
        other.registry.release_lease(other.name, other.owner)
    assert hosts_of(cloud) == {'vm1': (H0, H0)} and not in_maintenance(cloud, H0)


def test_a_move_that_fails_stops_the_run_with_the_host_out_of_maintenance_and_a_second_run_finishes(cloud):
    boot_on(cloud, 'big1', H0, flavor='big')
    boot_on(cloud, 'small1', H0)
    cloud.world.fail_migration('small1')
    with pytest.raises(errors.MultihvError, match=r'host vc/c1-h0 of node vc/c1 was not put in maintenance: migration \S+ of instance '
                                                  r'small1 .* failed: .*moved before it stopped: big1 to vc/c1-h2; still on it: small1'):
        _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert not in_maintenance(cloud, H0)
    assert hosts_of(cloud) == {'big1': (H2, H2), 'small1': (H0, H0)}
    assert sorted(m.status for m in cloud.registry.list_migrations()) == ['completed', 'failed']
    result = _hm.set_host_maintenance(cloud.context(), NODE, H0, True)
    assert [m['instance_name'] for m in result['migrations']] == ['small1'] and in_maintenance(cloud, H0)


def test_a_run_killed_between_moves_leaves_records_the_reconciler_settles(cloud):
    """The controller died after the driver moved vm1 and before the outcome was written: the migration stays running,
    then the reconciler records the instance on its new host and the migration completed; the host is still out of
    maintenance and a new run finishes the job."""
    record = boot_on(cloud, 'vm1', H0)
    cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='live', status='running', source_node=NODE,
                                    source_host=H0, dest_node=NODE, dest_host=H1)
    cloud.world.vm('vm1').host = H1  # vMotion finished; its record was never written
    result = reconcile_run(cloud)
    # (the node's HA overrides and rules are synced in the same pass: boot_on booted it below the instance task)
    assert [(a['kind'], a['name']) for a in result['actions'] if a['kind'] != 'rules'] == [('migration', 'vm1')] and not result['failures']
    assert [m.status for m in cloud.registry.list_migrations()] == ['completed']
    assert hosts_of(cloud) == {'vm1': (H1, H1)}
    assert _hm.set_host_maintenance(cloud.context(), NODE, H0, True)['migrations'] == [] and in_maintenance(cloud, H0)


def test_a_vm_moved_back_by_hand_after_a_killed_run_is_recorded_failed(cloud):
    record = boot_on(cloud, 'vm1', H0)
    cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='live', status='running', source_node=NODE,
                                    source_host=H0, dest_node=NODE, dest_host=H1)
    reconcile_run(cloud)  # the VM never left H0
    assert [m.status for m in cloud.registry.list_migrations()] == ['failed'] and hosts_of(cloud) == {'vm1': (H0, H0)}


# -- plan_moves: pure


def node_of(*hosts):
    return NodeResources('n', 'x', hosts=list(hosts))


class VM:  # what plan_moves reads of a VM
    def __init__(self, power_state, vcpus, memory_mb):
        self.power_state, self.vcpus, self.memory_mb = power_state, vcpus, memory_mb


def test_plan_moves_places_the_largest_first_and_counts_each_placement():
    source = HostResources('a', vcpus=8, memory_mb=8192)
    node = node_of(source, HostResources('b', vcpus=4, memory_mb=8192, memory_mb_free=6000),
                   HostResources('c', vcpus=4, memory_mb=8192, memory_mb_free=5000))
    movable = [('u1', 'one', VM('running', 1, 1000)), ('u2', 'two', VM('running', 1, 5000)), ('u3', 'three', VM('running', 1, 4000)),
               ('u4', 'off', VM('stopped', 1, 9000))]
    planned = _hm.plan_moves(node, source, 1.0, movable)
    assert [(m.name, m.dest_host, m.mode) for m in planned] == [
        ('two', 'b', 'live'), ('three', 'c', 'live'), ('one', 'c', 'live'), ('off', 'b', 'cold')]
    # one: b and c both have 1000 MB left, the larger name wins a tie (the scheduler's pick_host); off fits no host
    # started, so it goes where the most RAM is left (it holds nothing while stopped).


def test_plan_moves_counts_vcpus_with_the_node_s_cpu_ratio():
    source = HostResources('a', vcpus=8, memory_mb=8192)
    node = node_of(source, HostResources('b', vcpus=2, memory_mb=8192, memory_mb_free=8000, vcpus_used=2))
    with pytest.raises(errors.MultihvError, match=r'one \(1 vCPUs, 100 MB\) fit no host \(free on them: b 0 vCPUs and 8000 MB\)'):
        _hm.plan_moves(node, source, 1.0, [('u1', 'one', VM('running', 1, 100))])
    assert [m.dest_host for m in _hm.plan_moves(node, source, 2.0, [('u1', 'one', VM('running', 1, 100))])] == ['b']
