"""The KVM driver's side of adoption (issue 17 §3) on libvirt's own test driver (test:///FILE, a fresh in-process
hypervisor per connection, no libvirtd): list_vms reads a hand-made domain's size, NICs, disks and storage, and
adopt gives it the cloud's metadata, after which list_instances sees it. The lab's test_adoption does it on libvirtd."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver

libvirt = pytest.importorskip('libvirt')

UUID = '6695eb01-f6a4-8304-79aa-97f2502e1931'
NODE = """<node>
  <domain type='test'>
    <name>legacy</name>
    <uuid>%s</uuid>
    <memory unit='MiB'>256</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      %s
      <interface type='network'><mac address='52:54:00:AA:00:01'/><source network='default'/></interface>
      <interface type='bridge'><mac address='52:54:00:aa:00:02'/><source bridge='br0'/></interface>
    </devices>
  </domain>
</node>
""" % (UUID, '%s')
DISK = "<disk type='file' device='disk'><source file='%s'/><target dev='vd%s' bus='virtio'/></disk>"


def host_with(tmp_path, *paths):
    """A KVM driver of a test hypervisor with domain legacy, whose disks are at paths (shared_instance_path /srv/shared)."""
    (tmp_path / 'node.xml').write_text(NODE % ''.join(DISK % (path, 'abcd'[index]) for index, path in enumerate(paths)))
    # Made directly: the cloud file admits QEMU URIs only.
    return LibvirtDriver(_config.KvmHost('kvm1', 'test://%s/node.xml' % tmp_path, shared_instance_path='/srv/shared'))


@pytest.fixture(name='driver')
def driver_fixture(tmp_path):
    made = host_with(tmp_path, '/srv/shared/legacy.qcow2', '/data/legacy-data.qcow2')
    yield made
    made.close()


def test_a_hand_made_domain_is_listed_with_what_adoption_needs_and_not_as_an_instance(driver):
    assert driver.list_instances() == []
    [vm] = driver.list_vms('kvm1')
    assert (vm.uuid, vm.name, vm.node, vm.host, vm.power_state, vm.vcpus, vm.memory_mb) == (UUID, 'legacy', 'kvm1', 'kvm1', 'running', 2, 256)
    assert vm.nics == [{'mac': '52:54:00:aa:00:01', 'backing': 'default'}, {'mac': '52:54:00:aa:00:02', 'backing': 'bridge:br0'}]
    # The test driver gives every disk 1 TiB; two disks, one outside the instance directories: local, listed as outside.
    assert vm.disk_gb == 2048 and vm.storage == 'local' and vm.outside == ['/data/legacy-data.qcow2']
    assert (vm.marked, vm.marked_uuid) == (False, None)


def test_adopt_gives_the_domain_the_clouds_metadata_once_and_nothing_else(driver):
    before = driver.connection.open().lookupByUUIDString(UUID).XMLDesc(0)
    state = driver.adopt(UUID, 'kvm1', 'legacy', {'flavor': 'm1', 'image': '-', 'storage': 'local', 'vcpus': 2, 'memory_mb': 256,
                                                  'disk_gb': 2048})
    assert (state.uuid, state.name, state.power_state) == (UUID, 'legacy', 'running')
    assert [s.uuid for s in driver.list_instances()] == [UUID]
    [vm] = driver.list_vms('kvm1')
    assert (vm.marked, vm.marked_uuid) == (True, UUID)
    after = driver.connection.open().lookupByUUIDString(UUID).XMLDesc(0)
    assert after.replace(after[after.index('<metadata>'):after.index('</metadata>') + len('</metadata>')], '').split() == before.split()
    assert driver.adopt(UUID, 'kvm1', 'legacy', {}).uuid == UUID  # idempotent
    assert driver.connection.open().lookupByUUIDString(UUID).XMLDesc(0) == after


def test_adopt_refuses_an_unknown_domain(driver):
    with pytest.raises(errors.NotFound, match=r'no domain 00000000-0000-0000-0000-000000000001 on .*; nothing was adopted'):
        driver.adopt('00000000-0000-0000-0000-000000000001', 'kvm1', 'x', {})


def test_a_domain_whose_disks_are_under_the_shared_instance_path_is_on_shared_storage(tmp_path):
    driver = host_with(tmp_path, '/srv/shared/legacy/disk.qcow2')
    try:
        [vm] = driver.list_vms('kvm1')
    finally:
        driver.close()
    # In a folder of its own there: shared, but not directly in the directory a destroy removes files from.
    assert (vm.storage, vm.outside, vm.disk_gb) == ('shared', ['/srv/shared/legacy/disk.qcow2'], 1024)
