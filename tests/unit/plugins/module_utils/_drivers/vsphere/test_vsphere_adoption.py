"""The vSphere driver's adoption logic without a vCenter (issue 17 §3): a cluster's VMs as VMDetails from the
PropertyCollector's Records, shared storage from the datastores the cluster's hosts mount, the adopted annotation,
and the VMs without the cloud's marker counted apart in get_nodes. pyVmomi objects here are plain data."""

from __future__ import annotations

from pyVmomi import vim

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.adoption import adopted_annotation, node_vms, vm_details
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import managed_uuid, parse_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import build_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._config import VCenter
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import format_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import Record

DEVICE = vim.vm.device
GIB = 1024 ** 3
UUID = '6f1c1d0e-3c57-4a4b-9f55-2b0e0f1d2c3a'
OTHER = '0b1e6f52-8d0e-4c39-a3c8-5a1f7e5b9d10'
FOREIGN = '11111111-2222-3333-4444-555555555555'


def vcenter():
    return VCenter(name='vc1', hostname='vc1.example.com', username='svc@vsphere.local', password='s3cret')


def nic(key, mac, network='VM Network'):
    return DEVICE.VirtualVmxnet3(key=key, macAddress=mac, addressType='assigned',
                                 backing=DEVICE.VirtualEthernetCard.NetworkBackingInfo(deviceName=network, network=vim.Network('network-1')))


def disk(key, gib, path):
    return DEVICE.VirtualDisk(key=key, capacityInKB=gib * GIB // 1024, capacityInBytes=gib * GIB,
                              backing=DEVICE.VirtualDisk.FlatVer2BackingInfo(fileName=path, diskMode='persistent'))


def managed_vm(moid, host, instance=UUID, name='web-1', power='poweredOn', template=False, annotation=None):
    return Record('VirtualMachine', moid, {
        'name': name, 'config.uuid': instance, 'summary.config.template': template, 'runtime.host': host, 'runtime.powerState': power,
        'summary.config.numCpu': 2, 'summary.config.memorySizeMB': 2048,
        'config.annotation': format_annotation(instance, {'name': name}) if annotation is None else annotation})


def listing():
    """DC0 with clusters C0 (in a nested host folder) and C1, a standalone host; managed VMs and others (as test_vsphere_instances)."""
    return [
        Record('Datacenter', 'datacenter-1', {'name': 'DC0'}),
        Record('Folder', 'group-h1', {'parent': 'datacenter-1'}),
        Record('Folder', 'group-nested', {'parent': 'group-h1'}),
        Record('ClusterComputeResource', 'domain-c1', {'name': 'C0', 'parent': 'group-nested'}),
        Record('ClusterComputeResource', 'domain-c2', {'name': 'C1', 'parent': 'group-h1'}),
        Record('HostSystem', 'host-1', {'name': 'C0_H0', 'parent': 'domain-c1'}),
        Record('HostSystem', 'host-2', {'name': 'C1_H0', 'parent': 'domain-c2'}),
        Record('HostSystem', 'host-9', {'name': 'standalone', 'parent': 'domain-s1'}),
        managed_vm('vm-1', 'host-1'),
        managed_vm('vm-2', 'host-2', instance=OTHER, name='db-1', power='poweredOff'),
        Record('VirtualMachine', 'vm-3', {'name': 'unmanaged', 'config.uuid': FOREIGN, 'config.annotation': 'owned by the DBA team',
                                          'runtime.host': 'host-1'}),
        managed_vm('vm-4', 'host-1', instance='22222222-3333-4444-5555-666666666666', name='web-1 (copy)',
                   annotation=format_annotation(UUID, {})),  # a copy of vm-1: its own BIOS uuid, vm-1's marker
        managed_vm('vm-5', 'host-1', instance='33333333-4444-5555-6666-777777777777', name='golden', template=True),
        managed_vm('vm-6', 'host-9', instance='44444444-5555-6666-7777-888888888888', name='on-standalone'),
    ]


def with_datastores(records):
    """listing() with a second host in C0, datastores shared (both C0 hosts) and local (one host)."""
    records = [r for r in records if r.kind != 'HostSystem' or r.moid != 'host-1']
    return records + [
        Record('HostSystem', 'host-1', {'name': 'C0_H0', 'parent': 'domain-c1', 'datastore': ['datastore-1', 'datastore-2']}),
        Record('HostSystem', 'host-3', {'name': 'C0_H1', 'parent': 'domain-c1', 'datastore': ['datastore-1']}),
        Record('Datastore', 'datastore-1', {'summary.name': 'shared1'}),
        Record('Datastore', 'datastore-2', {'summary.name': 'local0'}),
        Record('DistributedVirtualPortgroup', 'dvportgroup-7', {'name': 'DPG-tenant', 'key': 'dvportgroup-7'}),
    ]


def dvs_nic(key, mac, portgroup):
    backing = DEVICE.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=vim.dvs.PortConnection(portgroupKey=portgroup))
    return DEVICE.VirtualVmxnet3(key=key, macAddress=mac, backing=backing)


def test_a_clusters_vms_are_listed_with_size_nics_datastores_and_marks():
    records = with_datastores(listing())
    assert node_vms(vcenter(), records, 'vc1/DC0/C0') == ['vm-1', 'vm-3', 'vm-4']  # not the template, not C1's, not standalone
    devices = {'vm-1': [nic(4000, '00:50:56:AA:00:01'), disk(2000, 20, '[shared1] web-1/web-1.vmdk')],
               'vm-3': [dvs_nic(4000, '00:50:56:aa:00:03', 'dvportgroup-7'), disk(2000, 3, '[shared1] u/u.vmdk'),
                        disk(2001, 2, '[local0] u/u_1.vmdk')]}  # vm-4 was deleted between the two retrievals
    vms = vm_details(vcenter(), records, 'vc1/DC0/C0', devices)
    assert [(vm.name, vm.uuid, vm.marked, vm.marked_uuid) for vm in vms] == [
        ('unmanaged', FOREIGN, False, None), ('web-1', UUID, True, UUID)]
    unmanaged, web = vms
    assert (unmanaged.host, unmanaged.disk_gb, unmanaged.datastores, unmanaged.storage) == ('C0_H0', 5, ['local0', 'shared1'], 'local')
    assert unmanaged.nics == [{'mac': '00:50:56:aa:00:03', 'backing': 'DPG-tenant'}]
    assert (web.storage, web.datastores, web.nics, web.vcpus, web.memory_mb) == (
        'shared', ['shared1'], [{'mac': '00:50:56:aa:00:01', 'backing': 'VM Network'}], 2, 2048)


def test_the_adopted_annotation_marks_the_vm_and_keeps_the_operators_notes():
    text = adopted_annotation(FOREIGN, 'unmanaged', 'vc1/DC0/C0', {'image': '-'}, 'owned by the DBA team')
    assert parse_annotation(text)[0] == FOREIGN and text.endswith('\nowned by the DBA team')
    assert managed_uuid({'config.uuid': FOREIGN, 'config.annotation': text}) == FOREIGN
    assert managed_uuid({'config.uuid': OTHER, 'config.annotation': text}) is None  # a copy stays unmanaged


def test_get_nodes_counts_the_vms_without_the_marker_apart():
    records = [r if r.moid != 'vm-3' else Record('VirtualMachine', 'vm-3', dict(r.props, **{
        'runtime.powerState': 'poweredOn', 'summary.config.numCpu': 4, 'summary.config.memorySizeMB': 512})) for r in listing()]
    records.append(managed_vm('vm-8', 'host-1', instance='55555555-6666-7777-8888-999999999999', name='off-foreign', power='poweredOff',
                              annotation=''))
    [c0, _c1] = build_nodes(vcenter(), records)
    # vm-1 (managed, on), vm-3 (foreign, on), vm-4 (a copy: foreign, on), vm-8 (foreign, off); the template is no VM.
    assert c0.unmanaged == {'vms': 3, 'vcpus': 4 + 2, 'memory_mb': 512 + 2048}
    assert c0.instances == 4 and c0.vcpus_used == 2 + 4 + 2
