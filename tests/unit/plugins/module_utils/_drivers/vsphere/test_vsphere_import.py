"""Issue 19, KVM to vSphere, without a vCenter: the VMFS flat VMDK qemu-img makes on the controller (its descriptor
rewritten as ESXi writes a thick disk), the datastore file access URL, the placement of an imported instance (no
template, room on the datastore) and the CreateVM_Task ConfigSpec (uuid, marker, disks attached as they are, MACs).
qemu-img is real (the controller's); pyVmomi objects are plain data."""

from __future__ import annotations

import json
import subprocess

import pytest
from pyVmomi import vim

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import importing, vmdk
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import parse_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.datastore_files import datastore_path, folder_url
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.placement import NetworkChoice, plan_import, plan_spawn

from .test_vsphere_instances import GIB, UUID, spawn_records, spec, vcenter

QEMU_DESCRIPTOR = '''# Disk DescriptorFile
version=1
CID=a077a978
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 6144 FLAT "disk0-flat.vmdk" 0

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "0"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.adapterType = "ide"
ddb.toolsVersion = "2147483647"
'''


def test_the_descriptor_becomes_an_esxi_thick_disk():
    text = vmdk.vmfs_descriptor(QEMU_DESCRIPTOR)
    assert 'createType="vmfs"' in text and 'monolithicFlat' not in text
    assert 'RW 6144 VMFS "disk0-flat.vmdk"\n' in text  # a VMFS extent has no offset
    assert 'ddb.adapterType = "lsilogic"' in text and '"ide"' not in text
    assert text.count('ddb.geometry.cylinders') == 1 and 'ddb.geometry.cylinders = "1"' in text  # 6144 sectors < one 255x63 cylinder


def test_a_descriptor_without_one_flat_extent_is_refused():
    with pytest.raises(errors.DriverError, match='0 flat extents'):
        vmdk.vmfs_descriptor(QEMU_DESCRIPTOR.replace('RW 6144 FLAT "disk0-flat.vmdk" 0', ''))


def test_qemu_img_makes_a_vmfs_flat_pair_that_it_reads_back(tmp_path):
    raw = tmp_path / 'src.raw'
    raw.write_bytes(bytes(1024 * 1024) + b'\x5a' * 65536 + bytes(2 * 1024 * 1024 - 65536))
    source = tmp_path / 'src.qcow2'
    subprocess.run(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', str(raw), str(source)], check=True)
    raw.unlink()
    descriptor, extent, size = vmdk.convert(str(source), 'qcow2', str(tmp_path), 'disk0', 30)
    assert (descriptor, extent, size) == (str(tmp_path / 'disk0.vmdk'), str(tmp_path / 'disk0-flat.vmdk'), 3 * 1024 * 1024)
    assert 'createType="vmfs"' in (tmp_path / 'disk0.vmdk').read_text()
    info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', descriptor], check=True, capture_output=True, text=True).stdout)
    assert (info['format'], info['virtual-size']) == ('vmdk', 3 * 1024 * 1024)
    data = (tmp_path / 'disk0-flat.vmdk').read_bytes()  # the raw extent: the guest's bytes where they were written
    assert data[1024 * 1024:1024 * 1024 + 65536] == b'\x5a' * 65536 and data[:1024 * 1024] == bytes(1024 * 1024)


def test_a_failed_conversion_leaves_nothing(tmp_path):
    (tmp_path / 'bad.qcow2').write_bytes(b'not a disk image at all')
    with pytest.raises(errors.DriverError, match='qemu-img could not convert bad.qcow2 to VMDK'):
        vmdk.convert(str(tmp_path / 'bad.qcow2'), 'qcow2', str(tmp_path), 'disk0', 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.qcow2']
    with pytest.raises(errors.DriverError, match=r"format 'vhdx' cannot be converted"):
        vmdk.convert(str(tmp_path / 'bad.qcow2'), 'vhdx', str(tmp_path), 'disk0', 30)


def test_folder_url():
    assert folder_url('vc1.example.com', 443, 'DC0', 'LocalDS_0', '%s/disk0-flat.vmdk' % UUID) == (
        'https://vc1.example.com:443/folder/%s/disk0-flat.vmdk?dcPath=DC0&dsName=LocalDS_0' % UUID)
    # Names with spaces and reserved characters are quoted; an IPv6 literal is bracketed.
    assert folder_url('::1', 9189, 'My DC', 'ds #1&2', 'a b/c.vmdk') == (
        'https://[::1]:9189/folder/a%20b/c.vmdk?dcPath=My%20DC&dsName=ds%20%231%262')
    for bad in ('', '/etc/passwd', 'a/../b'):
        with pytest.raises(errors.DriverError, match='is not a path inside a datastore'):
            folder_url('vc', 443, 'DC0', 'ds', bad)
    assert datastore_path('LocalDS_0', 'x/y.vmdk') == '[LocalDS_0] x/y.vmdk'


def test_plan_import_places_like_spawn_without_a_template():
    wanted = spec(image='not-a-template-anywhere', networks=[{'network': 'VM Network', 'mac': '52:54:00:aa:bb:01'}])
    plan, datacenter, datastore = plan_import(vcenter(), spawn_records(), wanted, 5 * GIB)
    assert plan.template is None and (datacenter, datastore) == ('datacenter-1', 'shared')
    like_spawn = plan_spawn(vcenter(), spawn_records(), spec(networks=wanted.networks))
    assert plan._replace(template=None) == like_spawn._replace(template=None)
    assert plan.networks == [NetworkChoice('VM Network', 'Network', 'network-1', None, None, '52:54:00:aa:bb:01')]


def test_plan_import_refuses_a_datastore_without_room():
    with pytest.raises(errors.DriverError) as caught:
        plan_import(vcenter(), spawn_records(), spec(), 101 * GIB)
    assert str(caught.value) == ('instance %s on node vc1/DC0/C0: datastore shared has 102400 MiB free, its disks need 103424 MiB; '
                                 'nothing was created' % UUID)


def test_plan_import_refuses_a_uuid_in_use():
    with pytest.raises(errors.DriverError, match='already has the uuid of instance %s; nothing was created' % UUID):
        plan_import(vcenter(), spawn_records(**{'summary.config.uuid': UUID}), spec(), GIB)


def test_import_config():
    networks = [{'network': 'VM Network', 'mac': '52:54:00:aa:bb:01'}, {'network': 'VM Network', 'mac': '52:54:00:aa:bb:02'}]
    wanted = spec(networks=networks, metadata={'flavor': 'm1'})
    plan = plan_import(vcenter(), spawn_records(), wanted, GIB)[0]
    config = importing.import_config(wanted, plan, 'shared', [3 * 1024 * 1024, GIB])
    assert (config.name, config.numCPUs, config.memoryMB, config.uuid, config.instanceUuid) == ('web-1', 2, 2048, UUID, UUID)
    assert parse_annotation(config.annotation) == (UUID, {'name': 'web-1', 'hostname': 'web-1.example.com', 'image': 'tmpl',
                                                          'node': 'vc1/DC0/C0', 'metadata': {'flavor': 'm1'}})
    assert config.files.vmPathName == '[shared] %s/%s.vmx' % (UUID, UUID)
    changes = config.deviceChange
    assert all(change.operation == 'add' and change.fileOperation is None for change in changes)  # disks attached as they are
    controller = changes[0].device
    assert isinstance(controller, vim.vm.device.VirtualLsiLogicController) and controller.key == importing.CONTROLLER_KEY
    disks = [c.device for c in changes if isinstance(c.device, vim.vm.device.VirtualDisk)]
    assert [d.backing.fileName for d in disks] == ['[shared] %s/disk0.vmdk' % UUID, '[shared] %s/disk1.vmdk' % UUID]
    assert [(d.unitNumber, d.controllerKey, d.capacityInBytes, d.capacityInKB) for d in disks] == [
        (0, importing.CONTROLLER_KEY, 3 * 1024 * 1024, 3 * 1024), (1, importing.CONTROLLER_KEY, GIB, GIB // 1024)]
    nics = [c.device for c in changes if hasattr(c.device, 'macAddress')]
    assert [(n.addressType, n.macAddress) for n in nics] == [('manual', '52:54:00:aa:bb:01'), ('manual', '52:54:00:aa:bb:02')]
    assert len(set(d.key for d in [controller] + disks + nics)) == 5
    keys = dict((option.key, option.value) for option in config.extraConfig)
    assert 'guestinfo.userdata' in keys and 'secret' not in json.dumps(keys)  # spawn's guestinfo, encoded as spawn sends it


def test_powered_as_the_spec_says():
    assert importing.powered_on(spec()) is True
    assert importing.powered_on(spec(metadata={'power_state': 'stopped'})) is False


def test_at_most_fifteen_disks_on_one_controller():
    assert [importing.disk_specs('ds', UUID, [GIB] * 15)[-1].device.unitNumber] == [15]  # unit 7 is the controller's
    with pytest.raises(ValueError, match='at most 15 disks'):
        importing.disk_specs('ds', UUID, [GIB] * 16)
