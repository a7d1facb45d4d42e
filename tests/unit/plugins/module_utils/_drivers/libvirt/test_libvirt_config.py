"""The KVM driver's answers from the cloud file alone: which nodes it serves, where they are
placed, how a host is fenced and who shares its storage. No libvirtd: the URIs lead nowhere,
and a driver connects only when it is asked something the host must answer."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import NodePlacement
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import capabilities
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver

# TEST-NET addresses: nothing answers there, so a test that connected would fail or hang.
PLAIN = {'name': 'kvm1', 'uri': 'qemu+tcp://192.0.2.1/system'}
FULL = {'name': 'kvm2', 'uri': 'qemu+tcp://192.0.2.2/system', 'availability_zone': 'az-b', 'aggregates': ['ssd', 'gold'],
        'shared_instance_path': '/srv/shared', 'shared_with': ['kvm2', 'kvm3'], 'fence_command': 'ipmi-off kvm2',
        'power_status_command': 'ipmi-status kvm2'}


@pytest.fixture
def drivers():
    cloud = _config.parse({'kvm_hosts': [PLAIN, FULL], 'registry': {'url': 'sqlite:////tmp/r.sqlite'}}, 'cloud.yml', {})
    made = {h.name: LibvirtDriver(h) for h in cloud.kvm_hosts}
    yield made
    for driver in made.values():
        driver.close()


def test_the_driver_is_the_kvm_kind(drivers):
    driver = drivers['kvm1']
    assert driver.hypervisor_type == capabilities.HYPERVISOR_TYPE == 'kvm'
    assert driver.capabilities is capabilities.CAPABILITIES
    assert (driver.endpoint_name(), driver.node_names()) == ('kvm1', ['kvm1'])


def test_a_kvm_host_serves_the_one_node_of_its_own_name(drivers):
    assert drivers['kvm1'].serves('kvm1') is True
    assert drivers['kvm1'].serves('kvm2') is False
    assert drivers['kvm2'].serves('kvm1') is False
    assert drivers['kvm1'].serves('vc1/DC0/kvm1') is False
    assert drivers['kvm1'].serves('') is False


def test_placement_is_the_hosts_zone_aggregates_and_uri(drivers):
    assert drivers['kvm2'].placement('kvm2') == NodePlacement('az-b', ('ssd', 'gold'), 'qemu+tcp://192.0.2.2/system')
    assert drivers['kvm1'].placement('kvm1') == NodePlacement('nova', (), 'qemu+tcp://192.0.2.1/system')


def test_fence_command_comes_from_the_cloud_file(drivers):
    assert drivers['kvm2'].fence_command('kvm2') == 'ipmi-off kvm2'
    assert drivers['kvm1'].fence_command('kvm1') == ''


def test_a_host_without_shared_storage_reads_no_heartbeat_and_connects_for_nothing(drivers):
    assert drivers['kvm1'].storage_heartbeat('kvm2') is None


def test_power_status_command_comes_from_the_cloud_file(drivers):
    assert drivers['kvm2'].power_status_command('kvm2') == 'ipmi-status kvm2'
    assert drivers['kvm1'].power_status_command('kvm1') == ''


def test_storage_peers_restrict_only_when_the_cloud_file_names_them(drivers):
    peers = drivers['kvm2'].storage_peers('kvm2')
    assert peers == ['kvm2', 'kvm3']
    peers.append('kvm9')  # the caller's copy: the configuration stays as it was
    assert drivers['kvm2'].storage_peers('kvm2') == ['kvm2', 'kvm3']
    assert drivers['kvm1'].storage_peers('kvm1') is None


def test_a_node_it_does_not_serve_is_refused_before_any_io(drivers):
    with pytest.raises(errors.DriverError, match='node kvm2 is not KVM host kvm1 at .*nothing was changed'):
        drivers['kvm1'].destroy('0b9a4f50-8a52-4b8e-9d33-4d1f0d2f7a11', 'kvm2')
    with pytest.raises(errors.DriverError, match='node kvm1 is not KVM host kvm2 at .*nothing was changed'):
        drivers['kvm2'].set_power('0b9a4f50-8a52-4b8e-9d33-4d1f0d2f7a11', 'kvm1', 'start')
