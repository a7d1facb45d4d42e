"""A move between hypervisor types on the lab (issue 19 §1, §3: vSphere to KVM), through real Ansible runs. vcsim's VMs
have no real disks, so the test makes one that has: the tick guest converted to a VMDK (qemu-img, flattened) in the
directory behind vcsim's datastore LocalDS_0, a clone of a lab VM whose disk is that file, adopted with instance_import
on cluster node DC0_C0 (its NIC on registry network lan, backed by its port group on vSphere and the lab bridge on KVM).
A target of the same type is refused and check mode plans a convert for a KVM target, nothing moved; migrate with mode
convert then takes it to kvm1: the disk copied out through vcsim's datastore file access, converted
and uploaded, the domain made with the same uuid and MAC, the VM gone from vcsim, and the same guest boots (its serial
console prints boot and counts ticks); and back, running (powered off hard after shutdown_timeout: the tick guest ignores
ACPI), its VMDK in the datastore and its VM powered on in the cluster. Small on purpose (the suite's time): refusals, failures at each step and the
reconciler are proven on the fake driver (unit tests)."""

from __future__ import annotations

import pathlib
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET

from support.cloud import _vcsim_vm, allocations, console_log, vcsim, vcsim_vm, wait_ticks
from support.lab import ansible_module

NODE_C0 = 'vcsim/DC0/DC0_C0'
DATASTORE = 'LocalDS_0'


def _vmdk_vm(lab, name, bios):
    """A vcsim VM called name with BIOS uuid bios whose only disk is a VMDK of the tick guest on LocalDS_0, powered on."""
    from pyVim.task import WaitForTask  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim  # pylint: disable=import-outside-toplevel
    with vcsim(lab) as si:
        source, _props = _vcsim_vm(si, 'DC0_C0_H0_VM0')
        location = vim.vm.RelocateSpec(pool=source.resourcePool, host=source.runtime.host)
        WaitForTask(source.CloneVM_Task(folder=source.parent, name=name, spec=vim.vm.CloneSpec(location=location)), si=si)
        clone, _props = _vcsim_vm(si, name)
        datastore = next(ds for ds in clone.datastore if ds.name == DATASTORE)
        directory = pathlib.Path(datastore.info.url) / name
        directory.mkdir(exist_ok=True)
        subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'vmdk', lab.info['images']['tick_qcow2'],
                        str(directory / ('%s.vmdk' % name))], check=True, capture_output=True)
        disk = next(d for d in clone.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        disk.backing.fileName = '[%s] %s/%s.vmdk' % (DATASTORE, name, name)
        change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)
        WaitForTask(clone.ReconfigVM_Task(spec=vim.vm.ConfigSpec(uuid=bios, memoryMB=32, deviceChange=[change])), si=si)
        WaitForTask(clone.PowerOnVM_Task(), si=si)
        nic = next(d for d in clone.config.hardware.device if hasattr(d, 'macAddress'))
        return nic.macAddress.lower()


def test_a_vsphere_instance_on_a_real_vmdk_moves_to_kvm1_and_the_same_guest_boots_there(lab, cloud, tmp_path):
    from pyVim.task import WaitForTask  # pylint: disable=import-outside-toplevel
    name, bios = 'conv-%s' % uuidlib.uuid4().hex[:8], str(uuidlib.uuid4())
    mac = _vmdk_vm(lab, name, bios)
    try:
        planned = ansible_module('multihv.cloud.instance_import', dict(cloud, node=NODE_C0, names=[name]), check=True)
        port_group = planned['instances'][0]['nics'][0]['network']
        ansible_module('multihv.cloud.network', dict(cloud, name='lan', cidr='192.0.2.0/24', backings=[
            {'backing': port_group, 'hypervisor_type': 'vsphere'}, {'backing': 'bridge:%s' % lab.bridge, 'hypervisor_type': 'kvm'}]))
        [adopted] = ansible_module('multihv.cloud.instance_import', dict(cloud, node=NODE_C0, names=[name]))['instances']
        assert (adopted['uuid'], adopted['state'], adopted['identity']['macs']) == (bios, 'running', [mac])

        refused = ansible_module('multihv.cloud.migrate', dict(cloud, instance=name, mode='convert', target_node='vcsim/DC0/DC0_C1'),
                                 expect_failure=True)
        assert 'is a vsphere node like node %s' % NODE_C0 in refused['msg'] and 'was not moved' in refused['msg']
        planned = ansible_module('multihv.cloud.migrate', dict(cloud, instance=name, target_node='kvm1'), check=True)
        assert planned['migration']['migration_type'] == 'convert' and vcsim_vm(lab, name)[0] == 'poweredOn'

        moved = ansible_module('multihv.cloud.migrate', dict(cloud, instance=name, mode='convert', target_node='kvm1', image='tick'))
        migration, record = moved['migration'], moved['instance']
        assert (migration['migration_type'], migration['status'], migration['source_node'], migration['dest_node']) == (
            'convert', 'completed', NODE_C0, 'kvm1')
        assert migration['stats']['disk_formats'] == ['vmdk'] and migration['stats']['bytes_total'] > 0
        assert (record['uuid'], record['node'], record['image'], record['state']) == (bios, 'kvm1', 'tick', 'running')
        assert vcsim_vm(lab, name) is None and allocations(tmp_path) == {'kvm1': 32}

        conn = lab.connect('kvm1')
        try:
            domain = conn.lookupByUUIDString(bios)
            macs = [m.get('address') for m in ET.fromstring(domain.XMLDesc(0)).iter('mac')]
            assert domain.isActive() == 1 and macs == [mac]
        finally:
            conn.close()
        log = console_log(lab, record)
        wait_ticks(log, count=3)
        assert 'boot' in log.read_text(errors='replace')

        # And back (issue 19 §3): the guest's disk a VMDK in the datastore, the VM in the cluster with its uuid and MAC.
        # Running: the tick guest ignores the ACPI shutdown, so it is powered off hard after shutdown_timeout.
        back = ansible_module('multihv.cloud.migrate', dict(cloud, instance=name, mode='convert', target_node=NODE_C0,
                                                            shutdown_timeout=2))
        migration, record = back['migration'], back['instance']
        assert (migration['migration_type'], migration['status'], migration['source_node'], migration['dest_node']) == (
            'convert', 'completed', 'kvm1', NODE_C0)
        assert (record['uuid'], record['node'], record['state']) == (bios, NODE_C0, 'running')
        assert vcsim_vm(lab, name)[0] == 'poweredOn' and allocations(tmp_path) == {NODE_C0: 32}
        with vcsim(lab) as si:
            vm, _props = _vcsim_vm(si, name)
            assert vm.config.uuid == bios
            assert [d.macAddress for d in vm.config.hardware.device if hasattr(d, 'macAddress')] == [mac]
            store = next(ds for ds in vm.datastore if ds.name == DATASTORE)
            assert (pathlib.Path(store.info.url) / bios / 'disk0.vmdk').exists()
        conn = lab.connect('kvm1')
        try:
            assert bios not in [d.UUIDString() for d in conn.listAllDomains()]
        finally:
            conn.close()
    finally:
        with vcsim(lab) as si:
            left, props = _vcsim_vm(si, name)
            if left is not None:  # the move failed: the clone goes, so that the lab stays as it was
                if str(props['runtime.powerState']) == 'poweredOn':
                    WaitForTask(left.PowerOffVM_Task(), si=si)
                WaitForTask(left.Destroy_Task(), si=si)
