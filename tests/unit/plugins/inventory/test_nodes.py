"""Node views: capacity, usage and placement from live resources, admin state and the cloud file (pure logic)."""

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute import scheduler as _scheduler
from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import HostResources, NodeResources

CLOUD = _config.parse({
    'registry': {'url': 'sqlite:////x'},
    'vcenters': [{'name': 'vc', 'hostname': 'h', 'username': 'u', 'password': 'p', 'availability_zone': 'legacy',
                  'aggregates': ['ha'], 'cluster_settings': {'C2': {'availability_zone': 'gold'}}}],
    'kvm_hosts': [{'name': 'kvm1', 'uri': 'qemu:///system', 'availability_zone': 'cattle', 'aggregates': ['a']}],
}, 'cloud.yml', {})
DRIVERS = kinds.drivers_for(CLOUD)  # configuration only: they connect when asked something live


def node_view(node, row):
    """The node's view as modules return it (NodeView.as_dict())."""
    return _nodes.node_view(CLOUD, node, row, _nodes.placement_of(DRIVERS, node.name)).as_dict()


def kvm_node(**host):
    return NodeResources('kvm1', 'kvm', hosts=[HostResources('kvm1', **host)], disk_gb=100, disk_gb_free=60)


def test_kvm_capacity_is_physical_minus_reserved_times_ratio():
    view = node_view(kvm_node(vcpus=8, memory_mb=16384, vcpus_used=3, memory_mb_used=2048), None)
    assert view['capacity'] == {'vcpus': 32, 'memory_mb': 16384 - 512, 'disk_gb': 100}
    assert view['used'] == {'vcpus': 3, 'memory_mb': 2048, 'disk_gb': 40}
    assert view['free'] == {'vcpus': 29, 'memory_mb': 16384 - 512 - 2048, 'disk_gb': 60}
    assert (view['availability_zone'], view['aggregates'], view['endpoint']) == ('cattle', ['a'], 'qemu:///system')
    assert view['enabled'] is True and view['forced_down'] is False


def test_registry_overrides_the_cloud_file():
    row = {'enabled': False, 'disabled_reason': 'x', 'availability_zone': 'gold', 'aggregates': [],
           'allocation_ratios': {'cpu': 1.0}, 'reserved': {'vcpus': 2, 'memory_mb': 0}}
    view = node_view(kvm_node(vcpus=8, memory_mb=1000), row)
    assert view['capacity']['vcpus'] == 6 and view['capacity']['memory_mb'] == 1000
    assert (view['availability_zone'], view['aggregates'], view['enabled']) == ('gold', [], False)


def test_cluster_counts_only_usable_hosts_and_shows_the_largest_free_host():
    hosts = [HostResources('h1', vcpus=16, memory_mb=1000, memory_mb_free=100, vcpus_used=4),
             HostResources('h2', vcpus=16, memory_mb=1000, memory_mb_free=700),
             HostResources('h3', vcpus=16, memory_mb=1000, memory_mb_free=1000, in_maintenance=True),
             HostResources('h4', vcpus=16, memory_mb=1000, memory_mb_free=1000, connection_state='notResponding')]
    view = node_view(NodeResources('vc/DC/C2', 'vsphere', hosts=hosts), None)
    assert view['physical']['memory_mb'] == 2000 and view['capacity']['vcpus'] == 128
    # vCPUs as the scheduler counts a host's room: 16 threads x the cpu ratio 4.0 (the cloud's default), less those used.
    assert view['largest_host_free'] == {'memory_mb': 700, 'vcpus': 64}
    assert view['availability_zone'] == 'gold' and view['aggregates'] == ['ha']
    assert view['endpoint'] == 'https://h:443/sdk'


def test_largest_host_free_vcpus_is_what_the_scheduler_places_on_one_host():
    """largest_host_free.vcpus is the most vCPUs ClusterHostFitFilter lets one instance have: that many
    are placed, one more is refused, at the node's own cpu ratio."""
    hosts = [HostResources('h1', vcpus=8, memory_mb=4096, memory_mb_free=4096, vcpus_used=5),
             HostResources('h2', vcpus=6, memory_mb=4096, memory_mb_free=4096, vcpus_used=1)]
    node = NodeResources('vc/DC/C1', 'vsphere', hosts=hosts, disk_gb=100, disk_gb_free=100)
    view = _nodes.node_view(CLOUD, node, {'allocation_ratios': {'cpu': 2.5}}, _nodes.placement_of(DRIVERS, node.name))
    assert view.largest_host_free['vcpus'] == 15 == max(int(8 * 2.5) - 5, int(6 * 2.5) - 1)
    assert node.largest_host_free_vcpus == 5  # the driver's own figure: threads, no ratio

    def place(vcpus):
        return _scheduler.Scheduler(_scheduler.candidates([view], {})).place(_scheduler.Request(vcpus, 512, 1))

    assert place(15) == ('vc/DC/C1', 'h1')
    with pytest.raises(_scheduler.NoValidHost, match='ClusterHostFitFilter removed vc/DC/C1'):
        place(16)


def test_down_node_has_no_capacity():
    view = node_view(NodeResources.down('kvm1', 'kvm', 'did not answer'), None)
    assert view['state'] == 'down' and view['reason'] == 'did not answer'
    assert view['capacity'] == {'vcpus': 0, 'memory_mb': 0, 'disk_gb': 0}


def test_filters():
    node = kvm_node(vcpus=1, memory_mb=1)
    view = _nodes.node_view(CLOUD, node, None, _nodes.placement_of(DRIVERS, node.name))
    assert _nodes.matches(view, {'hypervisor_type': 'kvm', 'aggregate': 'a', 'state': 'up', 'enabled': True, 'names': None})
    assert not _nodes.matches(view, {'enabled': False})
    assert not _nodes.matches(view, {'aggregate': 'b'})
    assert not _nodes.matches(view, {'names': ['kvm2']})


def test_hypervisor_type_from_the_name():
    assert _nodes.hypervisor_type_of(DRIVERS, 'kvm1') == 'kvm'
    assert _nodes.hypervisor_type_of(DRIVERS, 'vc/DC/C1') == 'vsphere'
    assert _nodes.hypervisor_type_of(DRIVERS, 'vc/C1') is None
    assert _nodes.hypervisor_type_of(DRIVERS, 'kvm9') is None
