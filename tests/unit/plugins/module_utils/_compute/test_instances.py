"""Instance boot planning: candidates from node views, requests from flavors and images (pure logic)."""

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import scheduler as _scheduler
from ansible_collections.multihv.cloud.plugins.module_utils._compute.records import NodeView
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import HostResources
from ansible_collections.multihv.cloud.plugins.module_utils._errors import MultihvError

FLAVOR = {'name': 'm1', 'vcpus': 2, 'ram_mb': 2048, 'disk_gb': 10, 'extra_specs': {}}
IMAGE = {'name': 'img', 'hypervisor_type': 'kvm', 'properties': {}}


def view(name, kind='kvm', **extra):
    base = {'name': name, 'hypervisor_type': kind, 'endpoint': None, 'state': 'up', 'reason': None, 'enabled': True,
            'disabled_reason': None, 'forced_down': False, 'reserved_for_failover': False, 'availability_zone': 'az',
            'aggregates': ['a'], 'instances': 0, 'capacity': {'vcpus': 16, 'memory_mb': 8192, 'disk_gb': 100},
            'allocation_ratios': {'cpu': 4.0}, 'reserved': {}, 'physical': {}, 'used': {}, 'free': {},
            'largest_host_free': {}, 'hosts': []}
    base.update(extra)
    return NodeView(**base)


def test_stable_macs_are_per_instance_and_nic_and_local():
    mac = _instances.stable_mac('u1', 0)
    assert mac == _instances.stable_mac('u1', 0) != _instances.stable_mac('u1', 1) != _instances.stable_mac('u2', 0)
    assert mac.startswith('52:54:00:') and len(mac) == 17


def test_candidates_take_allocations_from_the_registry_and_hosts_from_clusters():
    hosts = [HostResources('h1', vcpus=8, vcpus_used=4, memory_mb_free=3000),
             HostResources('h2', connection_state='notResponding', vcpus=8, vcpus_used=0, memory_mb_free=8000)]
    found = _scheduler.candidates([view('kvm1'), view('vc/dc/c', 'vsphere', hosts=hosts)],
                                  {'kvm1': {'vcpus': 3, 'memory_mb': 1024, 'disk_gb': 5, 'instances': 2}})
    kvm, cluster = found
    assert kvm.allocated == {'vcpus': 3, 'memory_mb': 1024, 'disk_gb': 5} and kvm.instances == 2 and kvm.hosts is None
    assert [(h.name, h.usable, h.free_vcpus, h.free_memory_mb) for h in cluster.hosts] == [('h1', True, 28, 3000), ('h2', False, 32, 8000)]


def test_request_carries_flavor_image_and_placement():
    flavor = dict(FLAVOR, extra_specs={'aggregates': 'gold', 'availability_zone': 'az2'})
    req = _instances.request_for(flavor, IMAGE, {'node': None}, {'policy': 'anti-affinity'}, {'kvm1': 1},
                                 {'different_host': ['kvm2']})
    assert (req.vcpus, req.memory_mb, req.disk_gb, req.hypervisor_type) == (2, 2048, 10, 'kvm')
    assert req.aggregates == ('gold',) and req.availability_zone == 'az2'
    assert req.group_policy == 'anti-affinity' and req.group_nodes == {'kvm1': 1} and req.different_host == {'kvm2'}


@pytest.mark.parametrize('flavor, image, message', [
    (dict(FLAVOR, extra_specs={'hypervisor_type': 'vsphere'}), IMAGE, 'asks for hypervisor_type vsphere but image img is for kvm'),
    (FLAVOR, dict(IMAGE, properties={'min_ram': 4096}), 'image img needs at least 4096 MB RAM'),
    (FLAVOR, dict(IMAGE, properties={'min_disk': 20}), 'image img needs at least 20 GB disk'),
])
def test_flavor_and_image_must_agree(flavor, image, message):
    with pytest.raises(MultihvError, match=message):
        _instances.request_for(flavor, image, {})


def test_batch_items_inherit_the_task_options():
    params = dict.fromkeys(_instance_tasks.PER_INSTANCE)
    params.update(flavor='m1', image='img', state='present', instances=[{'name': 'a'}, {'name': 'b', 'flavor': 'm2'}])
    got = _instance_tasks.items(params)
    assert [(i['name'], i['flavor'], i['image']) for i in got] == [('a', 'm1', 'img'), ('b', 'm2', 'img')]
    with pytest.raises(MultihvError, match=r'instances\[0\] \(a\) has unknown options colour'):
        _instance_tasks.items(dict(params, instances=[{'name': 'a', 'colour': 'red'}]))
    with pytest.raises(MultihvError, match=r'instances\[0\] needs a name'):
        _instance_tasks.items(dict(params, instances=[{'flavor': 'm1'}]))
