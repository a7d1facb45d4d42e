"""Issue 19, KVM to vSphere, the driver building blocks on the lab: LibvirtDriver.export_disks of a stopped tick
instance on kvm1 (one flattened qcow2 on the controller that qemu-img reads without its base, the right virtual
size, progress reported), LibvirtDriver.retire_converted (removed; or kept, renamed and unmarked), and
VSphereDriver.import_instance of that file into vcsim's DC0_C0 (the VMFS flat VMDK in the datastore's backing
directory, byte for byte the guest's disk, and a VM in the cluster with the instance's uuid, MACs and mark), and
its clean-up when a step fails. vcsim does not boot guests: that the guest runs on ESXi is not shown here.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import uuid as uuidlib

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import DiskFile, InstanceSpec
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.domains import lookup_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import parse_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
from integration.test_libvirt_instances import Made, drivers, here  # noqa: F401  pylint: disable=unused-import  # drivers: a fixture
from integration.test_vsphere_instances import (  # noqa: F401  pylint: disable=unused-import  # fixtures
    NODE_C0, TEMPLATE_HOST, all_vms, cluster, datacenter, lab_vcenter, si,
)
from support.cloud import vm_name

DATASTORE = 'LocalDS_0'


def qemu_info(path):
    return json.loads(subprocess.run(['qemu-img', 'info', '--output=json', str(path)], check=True, capture_output=True, text=True).stdout)


def datastore_dir(si_):  # pylint: disable=redefined-outer-name
    """Where vcsim keeps LocalDS_0's files on this machine (its info.url is a local directory)."""
    store = next(ds for ds in cluster(si_, 'DC0_C0').datastore if ds.name == DATASTORE)
    return pathlib.Path(store.info.url)


@pytest.fixture
def kvm(lab, drivers):  # pylint: disable=redefined-outer-name
    made = Made(drivers)
    image = made.image()
    drivers['kvm1'].ensure_image(image, lab.info['images']['tick_qcow2'], 'qcow2')
    yield made, image
    made.cleanup()


@pytest.fixture
def vsphere(lab_vcenter, si):  # pylint: disable=redefined-outer-name
    """The vSphere driver; the VMs named after the uuids a test adds to `made` and their datastore directories are
    removed after it, whatever the driver did."""
    driver = VSphereDriver(lab_vcenter)
    made = []
    yield driver, made
    driver.close()
    content = si.RetrieveContent()
    dc = datacenter(si)
    for inst_uuid in made:
        for vm in [v for v in all_vms(si) if v.config is not None and v.config.instanceUuid == inst_uuid]:
            if vm.runtime.powerState != 'poweredOff':
                WaitForTask(vm.PowerOffVM_Task())
            WaitForTask(vm.Destroy_Task())
        if (datastore_dir(si) / inst_uuid).exists():
            WaitForTask(content.fileManager.DeleteDatastoreFile_Task(name='[%s] %s' % (DATASTORE, inst_uuid), datacenter=dc))


def stopped_instance(drivers, made, image, **overrides):  # pylint: disable=redefined-outer-name
    spec = made.spec('kvm1', image, **overrides)
    state = drivers['kvm1'].spawn(spec)
    assert state.power_state == 'running'
    return spec, state


def test_export_flattens_a_stopped_instance_and_retire_keeps_or_removes_it(lab, drivers, kvm, tmp_path):  # pylint: disable=redefined-outer-name
    made, image = kvm
    driver = drivers['kvm1']
    spec, state = stopped_instance(drivers, made, image)
    with pytest.raises(errors.MultihvError, match='is not powered off'):
        driver.export_disks(spec.uuid, 'kvm1', str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    driver.set_power(spec.uuid, 'kvm1', 'stop')
    seen = []
    files = driver.export_disks(spec.uuid, 'kvm1', str(tmp_path), progress=lambda done, total: seen.append((done, total)))
    disk = here(lab, 'kvm1', state.disk_paths[0])
    overlay = qemu_info(disk)
    assert overlay.get('backing-filename')  # the instance's disk is an overlay on the image's base...
    assert [(pathlib.Path(f.path).name, f.disk_format) for f in files] == [(spec.uuid + '-disk0.qcow2', 'qcow2')]
    exported = qemu_info(files[0].path)
    assert 'backing-filename' not in exported and exported['format'] == 'qcow2'  # ...the export needs nothing else
    assert exported['virtual-size'] == files[0].virtual_size == overlay['virtual-size']
    # The guest's bytes: the image's, as the overlay (no writes of the tick guest's) over its base shows them; what
    # lies beyond the image's size reads as zeros.
    base = here(lab, 'kvm1', overlay['full-backing-filename'])
    assert subprocess.run(['qemu-img', 'compare', '-q', str(base), files[0].path], check=False).returncode == 0
    assert seen and seen[-1][0] == seen[-1][1] == os.path.getsize(files[0].path)
    assert [done for done, _total in seen] == sorted(done for done, _total in seen)
    assert not (disk.parent / (spec.uuid + '.export-0.qcow2')).exists()  # the host's temporary copy is gone

    # Kept (the rollback path): stopped, renamed, no longer the cloud's; twice is once.
    driver.retire_converted(spec.uuid, 'kvm1', keep=True)
    driver.retire_converted(spec.uuid, 'kvm1', keep=True)
    conn = lab.connect('kvm1')
    try:
        domain = lookup_uuid(conn, spec.uuid)
        info = domxml.parse_domain(domain.XMLDesc(0))
        assert (info.name, info.managed, domain.isActive()) == ('%s.moved-%s' % (spec.name, spec.uuid.replace('-', '')[:8]), None, False)
        assert spec.uuid not in [s.uuid for s in driver.list_instances()] and disk.exists()
        domain.undefine()  # what an operator does once the move is confirmed; the disk goes with made.cleanup
    finally:
        conn.close()
    driver.destroy(spec.uuid, 'kvm1')

    # Removed: the domain and its files; twice is once.
    other, other_state = stopped_instance(drivers, made, image)
    driver.set_power(other.uuid, 'kvm1', 'stop')
    driver.retire_converted(other.uuid, 'kvm1')
    driver.retire_converted(other.uuid, 'kvm1')
    assert other.uuid not in [s.uuid for s in driver.list_instances()]
    assert not here(lab, 'kvm1', other_state.disk_paths[0]).exists()


def test_a_kvm_instance_exported_and_imported_into_vcsim(lab, drivers, kvm, vsphere, si, tmp_path):  # pylint: disable=redefined-outer-name
    made, image = kvm
    driver, imported = vsphere
    # disk_gb 0: the disk keeps the tick image's 1 MiB. The VMFS flat extent is the whole virtual size, and vcsim
    # keeps its datastore in /dev/shm: a 1 GiB disk would cost 1 GiB of RAM and 10 s of upload for nothing.
    spec, state = stopped_instance(drivers, made, image, disk_gb=0)
    drivers['kvm1'].set_power(spec.uuid, 'kvm1', 'stop')
    files = drivers['kvm1'].export_disks(spec.uuid, 'kvm1', str(tmp_path))
    assert files[0].virtual_size == 1024 * 1024
    macs = ['52:54:00:19:%s:%s' % (spec.uuid[:2], spec.uuid[2:4])]
    target = InstanceSpec(uuid=spec.uuid, name=spec.name, node=NODE_C0, host=TEMPLATE_HOST, vcpus=1, memory_mb=32, disk_gb=1,
                          image=image, networks=[{'network': 'VM Network', 'mac': macs[0]}], hostname=spec.hostname,
                          metadata={'moved_from': 'kvm1'})
    imported.append(spec.uuid)
    seen = []
    after = driver.import_instance(target, files, progress=lambda done, total: seen.append((done, total)))
    assert (after.uuid, after.node, after.host, after.macs, after.power_state) == (spec.uuid, NODE_C0, TEMPLATE_HOST, macs, 'running')
    assert [s for s in driver.list_instances() if s.uuid == spec.uuid] == [after]
    assert seen[-1] == (files[0].virtual_size, files[0].virtual_size)
    # vcsim takes any PUT; a vCenter wants the SOAP session's cookie, which the upload sends.
    assert driver.session.http_cookie().startswith('vmware_soap_session=')

    # In the cluster, with the uuid as BIOS and instance uuid, the mark, the MAC as a manual address.
    vm = next(v for v in all_vms(si) if vm_name(v) == spec.name)
    assert vm.runtime.host.parent.name == 'DC0_C0' and vm.runtime.host.name == TEMPLATE_HOST
    assert (vm.config.uuid, vm.config.instanceUuid) == (spec.uuid, spec.uuid)
    assert parse_annotation(vm.config.annotation)[0] == spec.uuid
    nics = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert [(n.macAddress, n.addressType) for n in nics] == [(macs[0], 'manual')]
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert [d.backing.fileName for d in disks] == ['[%s] %s/disk0.vmdk' % (DATASTORE, spec.uuid)]
    assert disks[0].capacityInBytes == 2 ** 30  # grown to the flavor's disk once the VM existed, as a clone is

    # In the datastore's backing directory: the VMFS flat pair, the guest's bytes.
    directory = datastore_dir(si) / spec.uuid
    assert {'disk0.vmdk', 'disk0-flat.vmdk'} <= {p.name for p in directory.iterdir()}
    assert 'createType="vmfs"' in (directory / 'disk0.vmdk').read_text()
    assert (directory / 'disk0-flat.vmdk').stat().st_size == files[0].virtual_size
    assert subprocess.run(['qemu-img', 'compare', '-q', '-f', 'qcow2', '-F', 'raw', files[0].path, str(directory / 'disk0-flat.vmdk')],
                          check=False).returncode == 0
    assert not any(p.name.startswith('multihv-import-') for p in tmp_path.iterdir())  # the controller's converted copies are gone


def test_a_failed_import_leaves_nothing_on_the_target(vsphere, si, tmp_path):  # pylint: disable=redefined-outer-name
    driver, imported = vsphere
    good = tmp_path / 'good.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(good), '2M'], check=True)
    bad = tmp_path / 'bad.qcow2'
    bad.write_bytes(b'this is no qcow2')
    inst_uuid = str(uuidlib.uuid4())
    spec = InstanceSpec(uuid=inst_uuid, name='test-%s' % inst_uuid[:8], node=NODE_C0, host=TEMPLATE_HOST, vcpus=1, memory_mb=32,
                        disk_gb=1, image='none', networks=[{'network': 'VM Network', 'mac': '52:54:00:19:00:01'}])
    imported.append(spec.uuid)
    # The first disk is uploaded, the second cannot be converted: the directory with the first goes.
    with pytest.raises(errors.DriverError) as caught:
        driver.import_instance(spec, [DiskFile(str(good), 'qcow2', 2 * 1024 * 1024), DiskFile(str(bad), 'qcow2', 2 * 1024 * 1024)])
    assert 'qemu-img could not convert bad.qcow2' in str(caught.value)
    assert 'its directory [%s] %s was deleted' % (DATASTORE, spec.uuid) in str(caught.value)
    assert not (datastore_dir(si) / spec.uuid).exists()
    assert spec.name not in [vm_name(v) for v in all_vms(si)]
    # A datastore without room, a format qemu-img does not read: refused before anything is made.
    with pytest.raises(errors.DriverError, match='its disks need .* MiB; nothing was created'):
        driver.import_instance(spec, [DiskFile(str(good), 'qcow2', 1 << 50)])
    with pytest.raises(errors.DriverError, match="format 'vhdx', which cannot be converted"):
        driver.import_instance(spec, [DiskFile(str(good), 'vhdx', 2 * 1024 * 1024)])
    assert not (datastore_dir(si) / spec.uuid).exists()
