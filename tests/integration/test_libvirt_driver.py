"""The KVM driver against the lab's libvirt hosts."""

import concurrent.futures
import dataclasses

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver


@pytest.fixture
def hosts(lab):
    return _config.load(str(lab.dir / 'multihv-cloud.yml'), env={}).kvm_hosts


def node_of(host):
    driver = LibvirtDriver(host)
    try:
        return driver.get_nodes()[0]
    finally:
        driver.close()


def test_probes_of_one_host_at_once_all_succeed(hosts):
    """Storage is measured through a pool on the instance path; libvirt allows one per path."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        nodes = list(pool.map(node_of, [dataclasses.replace(hosts[0], name='probe%d' % i) for i in range(12)]))
    assert {n.state for n in nodes} == {'up'}
    assert len({(n.disk_gb, n.extra['host_uuid']) for n in nodes}) == 1 and nodes[0].disk_gb > 0


def test_closed_port_is_unreachable_naming_the_host(hosts):
    with pytest.raises(errors.Unreachable, match=r'KVM host gone at qemu\+tcp://127.0.0.1:1/system did not answer'):
        node_of(dataclasses.replace(hosts[0], name='gone', uri='qemu+tcp://127.0.0.1:1/system'))


def test_missing_instance_path_is_a_driver_error(hosts):
    with pytest.raises(errors.DriverError, match='/nonexistent/instances'):
        node_of(dataclasses.replace(hosts[0], instance_path='/nonexistent/instances'))
