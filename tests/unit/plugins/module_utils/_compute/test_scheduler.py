"""The scheduler's filters and weighers (pure logic)."""

import dataclasses

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import (
    CLASS_FILTERS, NAME_FILTERS, STATIC_FILTERS, Candidate, Host, NoValidHost, Request, Scheduler, explain,
)


def kvm(name, vcpus=16, memory_mb=16384, disk_gb=100, **kwargs):
    return Candidate(name, 'kvm', capacity={'vcpus': vcpus, 'memory_mb': memory_mb, 'disk_gb': disk_gb}, **kwargs)


def cluster(name, hosts, **kwargs):
    """A vSphere node whose capacity is the sum of its hosts'."""
    capacity = {'vcpus': sum(h.free_vcpus for h in hosts), 'memory_mb': sum(h.free_memory_mb for h in hosts), 'disk_gb': 1000}
    return Candidate(name, 'vsphere', capacity=capacity, hosts=hosts, **kwargs)


def test_spreads_by_free_ram_and_fills_what_is_left():
    sched = Scheduler([kvm('a', memory_mb=4096), kvm('b', memory_mb=8192)])
    placed = [sched.place(Request(1, 2048))[0] for _i in range(6)]
    assert placed[0] == 'b'
    assert sorted(placed) == ['a', 'a', 'b', 'b', 'b', 'b']
    with pytest.raises(NoValidHost, match='ResourcesFilter removed a, b'):
        sched.place(Request(1, 2048))


def test_negative_ram_multiplier_stacks():
    sched = Scheduler([kvm('a', memory_mb=4096), kvm('b', memory_mb=8192)], {'ram': -1.0, 'instances': 0.0})
    assert [sched.place(Request(1, 1024))[0] for _i in range(3)] == ['a', 'a', 'a']


def test_every_filter_names_what_it_removed():
    nodes = [kvm('down', up=False), kvm('disabled', enabled=False), kvm('forced', forced_down=True),
             kvm('failover', reserved_for_failover=True), kvm('zone-b', availability_zone='b'),
             kvm('untiered', availability_zone='a'), Candidate('vc/dc/c', 'vsphere', availability_zone='a', aggregates=('gold',)),
             kvm('small', availability_zone='a', aggregates=('gold',), memory_mb=512)]
    req = Request(1, 1024, availability_zone='a', aggregates=('gold',), hypervisor_type='kvm')
    with pytest.raises(NoValidHost) as failure:
        Scheduler(nodes).place(req)
    assert failure.value.rejected == {
        'ComputeFilter': ['down', 'disabled', 'forced', 'failover'], 'AvailabilityZoneFilter': ['zone-b'],
        'AggregateFilter': ['untiered'], 'HypervisorTypeFilter': ['vc/dc/c'], 'NodeFilter': [],
        'SchedulerHintsFilter': [], 'ServerGroupFilter': [], 'NetworkFilter': [], 'ResourcesFilter': ['small'], 'ClusterHostFitFilter': []}
    assert 'ComputeFilter removed down, disabled, forced, failover' in str(failure.value)


def test_failover_requests_may_use_failover_nodes():
    assert Scheduler([kvm('spare', reserved_for_failover=True)]).place(Request(1, 1, for_failover=True))[0] == 'spare'


def test_failover_requests_go_to_reserved_failover_nodes_first():
    # The reserved node has less room than the other; a failover request takes it all the same,
    # until it is full; an ordinary request never does.
    sched = Scheduler([kvm('spare', memory_mb=2048, reserved_for_failover=True), kvm('busy', memory_mb=8192)])
    assert [sched.place(Request(1, 1024, for_failover=True))[0] for _i in range(3)] == ['spare', 'spare', 'busy']
    assert Scheduler([kvm('spare', reserved_for_failover=True), kvm('busy', memory_mb=1024)]).place(Request(1, 512))[0] == 'busy'


def test_cluster_total_fits_but_no_single_host_does():
    fragmented = cluster('vc/dc/frag', [Host('h1', True, 8, 3000), Host('h2', True, 8, 3000)])
    req = Request(2, 4096)
    with pytest.raises(NoValidHost) as failure:
        Scheduler([fragmented]).place(req)
    assert failure.value.rejected['ClusterHostFitFilter'] == ['vc/dc/frag']
    roomy = cluster('vc/dc/roomy', [Host('h1', True, 8, 3000), Host('h2', True, 8, 6000), Host('h3', False, 64, 64000)])
    assert Scheduler([fragmented, roomy]).place(req) == ('vc/dc/roomy', 'h2')


def test_a_placement_on_a_cluster_uses_the_host_it_chose():
    node = cluster('vc/dc/c', [Host('h1', True, 8, 5000), Host('h2', True, 8, 4000)])
    sched = Scheduler([node])
    assert [sched.place(Request(1, 3000))[1] for _i in range(2)] == ['h1', 'h2']
    with pytest.raises(NoValidHost, match='ClusterHostFitFilter removed vc/dc/c'):
        sched.place(Request(1, 3000))


def test_server_group_policies():
    nodes = [kvm('a'), kvm('b'), kvm('c')]
    sched = Scheduler(nodes)
    members = {}
    for _i in range(3):
        name = sched.place(Request(1, 1024, group_policy='anti-affinity', group_nodes=dict(members)))[0]
        members[name] = members.get(name, 0) + 1
    assert sorted(members) == ['a', 'b', 'c']
    with pytest.raises(NoValidHost, match='ServerGroupFilter removed a, b, c'):
        sched.place(Request(1, 1024, group_policy='anti-affinity', group_nodes=members))
    assert sched.place(Request(1, 1024, group_policy='affinity', group_nodes={'b': 1}))[0] == 'b'
    assert sched.place(Request(1, 1024, group_policy='soft-anti-affinity', group_nodes={'a': 2, 'c': 2}))[0] == 'b'
    # Soft affinity prefers the group's node but does not require it.
    full = Scheduler([kvm('x', memory_mb=1024), kvm('y')])
    full.place(Request(1, 1024, node='x'))
    assert full.place(Request(1, 512, group_policy='soft-affinity', group_nodes={'x': 1}))[0] == 'y'


def test_hints_and_pinning():
    sched = Scheduler([kvm('a'), kvm('b'), kvm('c', memory_mb=2)])
    assert sched.place(Request(1, 1, different_host=frozenset({'b'})))[0] == 'a'
    assert sched.place(Request(1, 1, same_host=frozenset({'b'})))[0] == 'b'
    assert sched.place(Request(1, 1, node='c'))[0] == 'c'
    with pytest.raises(NoValidHost) as failure:
        sched.place(Request(1, 1024, node='c'))
    assert failure.value.rejected['NodeFilter'] == ['a', 'b'] and failure.value.rejected['ResourcesFilter'] == ['c']
    assert sched.place(Request(1, 1, exclude=frozenset({'a', 'b'})))[0] == 'c'


def test_mixed_shapes_see_each_others_placements():
    sched = Scheduler([kvm('a', memory_mb=4096), kvm('b', memory_mb=4096)], {'instances': 0.0})
    assert sched.place(Request(1, 3072))[0] == 'a'
    # The small shape's heap was built after; the big one's must notice a shrank.
    assert sched.place(Request(1, 512))[0] == 'b'
    assert sched.place(Request(1, 3072))[0] == 'b'
    with pytest.raises(NoValidHost):
        sched.place(Request(1, 3072))


def test_heap_and_full_ranking_agree():
    """Many placements through the heap land where re-ranking every node would put them."""
    nodes = [kvm('n%02d' % i, vcpus=32 + i % 5, memory_mb=8192 * (1 + i % 7)) for i in range(30)]
    fast, slow = Scheduler(nodes), Scheduler([kvm(n.name, n.capacity['vcpus'], n.capacity['memory_mb']) for n in nodes])
    for i in range(200):
        req = Request(1 + i % 3, 512 * (1 + i % 4))
        expected = slow.ranked(req)[0].name
        slow.place(Request(req.vcpus, req.memory_mb, node=expected))
        assert fast.place(req)[0] == expected, i


def test_explain_without_placing():
    rejected = explain(Request(64, 1), [kvm('a')])
    assert rejected['ResourcesFilter'] == ['a']


def test_unknown_weigher_is_refused():
    with pytest.raises(ValueError, match='unknown weighers gpu'):
        Scheduler([kvm('a')], {'gpu': 1.0})


def _mixed_estate():
    """Nodes in several classes (zones, aggregates, failover, down, networks), some small enough to fill up."""
    nodes = []
    for i in range(40):
        nodes.append(kvm('n%02d' % i, vcpus=8 + i % 5, memory_mb=2048 * (1 + i % 6), availability_zone='az%d' % (i % 3),
                         aggregates=('gold',) if i % 4 == 0 else (), reserved_for_failover=i % 13 == 0, up=i % 17 != 5,
                         networks={'lan': 'br0'} if i % 2 else {}))
    nodes.append(cluster('vc/dc/c1', [Host('h1', True, 16, 8192), Host('h2', True, 16, 4096)], availability_zone='az1'))
    return nodes


def _twin(nodes):
    return [Candidate(n.name, n.hypervisor_type, up=n.up, reserved_for_failover=n.reserved_for_failover,
                      availability_zone=n.availability_zone, aggregates=n.aggregates, capacity=dict(n.capacity),
                      hosts=[Host(h.name, h.usable, h.free_vcpus, h.free_memory_mb) for h in n.hosts] if n.hosts is not None else None,
                      networks=dict(n.networks)) for n in nodes]


@pytest.mark.parametrize('multipliers', [None, {'ram': -1.0, 'instances': 0.5}], ids=['weights-only-fall', 'weights-may-rise'])
def test_class_heaps_place_where_ranking_every_node_would_over_many_shapes(multipliers):
    """The heaps per class of nodes (lazily brought up to date when weights only fall, pushed afresh otherwise) land
    every request, of every shape, where filtering and weighing every node would, until nodes fill up and refuse."""
    nodes = _mixed_estate()
    fast, slow = Scheduler(nodes, multipliers), Scheduler(_twin(nodes), multipliers)
    placed = refused = 0
    for i in range(400):
        req = Request(1 + i % 3, 512 * (1 + i % 5), availability_zone=[None, 'az1', 'az2'][i % 3],
                      aggregates=('gold',) if i % 7 == 0 else (), hypervisor_type=[None, 'kvm', 'vsphere'][i % 5 % 3],
                      exclude=frozenset(['n%02d' % (i % 40)]) if i % 4 == 0 else frozenset(),
                      different_host=frozenset(['n%02d' % ((i + 1) % 40)]) if i % 6 == 0 else frozenset(),
                      for_failover=i % 9 == 0, networks=(('lan', None),) if i % 8 == 0 else ())
        ranked = slow.ranked(req)
        if not ranked:
            with pytest.raises(NoValidHost):
                fast.place(req)
            refused += 1
            continue
        expected = ranked[0].name
        slow.place(dataclasses.replace(req, node=expected))
        assert fast.place(req)[0] == expected, i
        placed += 1
    assert placed > 100 and refused > 10  # both paths were exercised


def test_every_static_filter_is_decided_per_class_or_per_name():
    assert sorted(STATIC_FILTERS) == sorted(CLASS_FILTERS + NAME_FILTERS)
