"""The vSphere driver's instance logic without a vCenter: the annotation marker, telling managed
VMs from others, placement from one PropertyCollector answer, the mapping of an InstanceSpec
to the clone's ConfigSpec (its guest data as extraConfig included) and what a clone still lacks,
the redaction of a fault that quotes the guest data. pyVmomi objects here are plain data."""

from __future__ import annotations

import base64
import gzip
import json

import pytest
from pyVmomi import vim, vmodl

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import VCenter
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config, tasks
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import (
    annotation_for, format_annotation, managed_uuid, parse_annotation,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.clone import (
    clone_config, clone_spec, cores_per_socket, missing_config, nic_changes,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.instances import (
    disk_gb_of, instance_states, managed_ids, power_state, with_devices,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import build_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.placement import (
    NetworkChoice, Placement, choose_host, pick_template, plan_relocate, plan_spawn,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import DEVICES, EXTRA_CONFIG, Record, by_kind, vm_name
from ansible_collections.multihv.cloud.plugins.module_utils._guest import bootstrap, guestinfo
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestConfig, GuestNic

GIB = 1024 ** 3
MIB = 1024 ** 2
DEVICE = vim.vm.device
UUID = '6f1c1d0e-3c57-4a4b-9f55-2b0e0f1d2c3a'
OTHER = '0b1e6f52-8d0e-4c39-a3c8-5a1f7e5b9d10'
SWITCH_UUID = '50 1a 2b 3c 4d 5e 6f 70-81 92 a3 b4 c5 d6 e7 f8'


def vcenter(**kwargs):
    return VCenter(name='vc1', hostname='vc1.example.com', username='svc@vsphere.local', password='s3cret', **kwargs)


def spec(**overrides):
    fields = dict(uuid=UUID, name='web-1', node='vc1/DC0/C0', vcpus=2, memory_mb=2048, disk_gb=20, image='tmpl', host='C0_H1',
                  networks=[], hostname='web-1.example.com', metadata={'tier': 'web'},
                  guest=GuestConfig(uuid=UUID, hostname='web-1.example.com', user_data='#cloud-config\npassword: secret'))
    fields.update(overrides)
    return InstanceSpec(**fields)


def nic(key, mac, network='VM Network', kind=DEVICE.VirtualVmxnet3):
    return kind(key=key, macAddress=mac, addressType='assigned',
                backing=DEVICE.VirtualEthernetCard.NetworkBackingInfo(deviceName=network, network=vim.Network('network-1')),
                deviceInfo=vim.Description(label='Network adapter', summary=network))


def disk(key, gib, path='[ds1] vm/vm.vmdk'):
    return DEVICE.VirtualDisk(key=key, capacityInKB=gib * GIB // 1024, capacityInBytes=gib * GIB,
                              backing=DEVICE.VirtualDisk.FlatVer2BackingInfo(fileName=path, diskMode='persistent'))


def managed_vm(moid, host, instance=UUID, name='web-1', power='poweredOn', template=False, devices=None, annotation=None):
    props = {'name': name, 'config.uuid': instance, 'summary.config.template': template, 'runtime.host': host,
             'runtime.powerState': power, 'summary.config.numCpu': 2, 'summary.config.memorySizeMB': 2048,
             'config.annotation': format_annotation(instance, {'name': name}) if annotation is None else annotation}
    if devices is not None:
        props[DEVICES] = devices
    return Record('VirtualMachine', moid, props)


def listing():
    """DC0 with clusters C0 (in a nested host folder) and C1, a standalone host; managed VMs and others."""
    return [
        Record('Datacenter', 'datacenter-1', {'name': 'DC0'}),
        Record('Folder', 'group-h1', {'parent': 'datacenter-1'}),
        Record('Folder', 'group-nested', {'parent': 'group-h1'}),
        Record('ClusterComputeResource', 'domain-c1', {'name': 'C0', 'parent': 'group-nested'}),
        Record('ClusterComputeResource', 'domain-c2', {'name': 'C1', 'parent': 'group-h1'}),
        Record('HostSystem', 'host-1', {'name': 'C0_H0', 'parent': 'domain-c1'}),
        Record('HostSystem', 'host-2', {'name': 'C1_H0', 'parent': 'domain-c2'}),
        Record('HostSystem', 'host-9', {'name': 'standalone', 'parent': 'domain-s1'}),
        managed_vm('vm-1', 'host-1', devices=[nic(4000, '00:50:56:AA:00:01'), disk(2000, 20, '[ds1] web-1/web-1.vmdk')]),
        managed_vm('vm-2', 'host-2', instance=OTHER, name='db-1', power='poweredOff'),
        Record('VirtualMachine', 'vm-3', {'name': 'unmanaged', 'config.uuid': '11111111-2222-3333-4444-555555555555',
                                          'config.annotation': 'owned by the DBA team', 'runtime.host': 'host-1'}),
        managed_vm('vm-4', 'host-1', instance='22222222-3333-4444-5555-666666666666', name='web-1 (copy)',
                   annotation=format_annotation(UUID, {})),  # a copy of vm-1: its own BIOS uuid, vm-1's marker
        managed_vm('vm-5', 'host-1', instance='33333333-4444-5555-6666-777777777777', name='golden', template=True),
        managed_vm('vm-6', 'host-9', instance='44444444-5555-6666-7777-888888888888', name='on-standalone'),
    ]


# ------------------------------------------------------------------ the annotation marker

def test_annotation_round_trip():
    text = format_annotation(UUID, {'name': 'web-1', 'metadata': {'tier': 'web'}})
    assert text.splitlines() == ['multihv.cloud instance %s' % UUID, '{"metadata":{"tier":"web"},"name":"web-1"}']
    assert parse_annotation(text) == (UUID, {'name': 'web-1', 'metadata': {'tier': 'web'}})


@pytest.mark.parametrize('text, expected', [
    (None, (None, {})),
    ('', (None, {})),
    ('a note by a human', (None, {})),
    ('multihv.cloud instance not-a-uuid\n{}', (None, {})),
    ('xmultihv.cloud instance %s' % UUID, (None, {})),  # not at the start of a line
    ('multihv.cloud instance %s' % UUID.upper(), (UUID, {})),  # no JSON line: still marked, uuid normalised
    ('multihv.cloud instance %s\r\n{"name": "a"}\r\n' % UUID, (UUID, {'name': 'a'})),
    ('multihv.cloud instance %s\n{damaged' % UUID, (UUID, {})),
    ('multihv.cloud instance %s\n[1, 2]' % UUID, (UUID, {})),
    ('Owner: ops\nmultihv.cloud instance %s\n{"name": "b"}\nmore notes' % UUID, (UUID, {'name': 'b'})),
])
def test_parse_annotation(text, expected):
    assert parse_annotation(text) == expected


def test_annotation_carries_what_a_node_needs_but_not_user_data():
    text = annotation_for(spec())
    assert parse_annotation(text) == (UUID, {'name': 'web-1', 'hostname': 'web-1.example.com', 'image': 'tmpl',
                                             'node': 'vc1/DC0/C0', 'metadata': {'tier': 'web'}})
    assert 'secret' not in text and len(text.splitlines()) == 2


def test_vm_names_are_unescaped():
    assert vm_name('a%2fb%5Cc%25d %41') == 'a/b\\c%d %41'
    assert vm_name(None) == ''


# ------------------------------------------------------------------ managed VMs

def test_list_keeps_managed_vms_on_nodes_only():
    states = instance_states(vcenter(), listing())
    assert [(s.uuid, s.name, s.node, s.host, s.power_state) for s in states] == [
        (UUID, 'web-1', 'vc1/DC0/C0', 'C0_H0', 'running'),
        (OTHER, 'db-1', 'vc1/DC0/C1', 'C1_H0', 'stopped'),
    ]
    web = states[0]
    assert (web.vcpus, web.memory_mb, web.macs, web.disk_paths) == (2, 2048, ['00:50:56:aa:00:01'], ['[ds1] web-1/web-1.vmdk'])
    assert (states[1].macs, states[1].disk_paths) == ([], [])  # no devices in the records: left empty


def test_list_applies_the_clusters_filter():
    states = instance_states(vcenter(clusters=['DC0/C1']), listing())
    assert [s.name for s in states] == ['db-1']
    with pytest.raises(errors.NotFound, match='has no cluster C9'):
        instance_states(vcenter(clusters=['C9']), listing())
    assert len(instance_states(vcenter(clusters=['C9']), listing(), strict=False)) == 2


def test_managed_uuid_needs_the_marker_of_the_vm_own_uuid():
    props = managed_vm('vm-1', 'host-1').props
    assert managed_uuid(props) == UUID
    assert managed_uuid(dict(props, **{'config.uuid': UUID.upper()})) == UUID
    assert managed_uuid(dict(props, **{'config.uuid': OTHER})) is None  # a copy
    assert managed_uuid(dict(props, **{'summary.config.template': True})) is None
    assert managed_uuid(dict(props, **{'config.annotation': None})) is None
    assert managed_ids(listing()) == ['vm-1', 'vm-2', 'vm-6']


def test_devices_from_a_second_retrieval_and_vms_gone_meanwhile():
    records = with_devices(listing(), [Record('VirtualMachine', 'vm-2', {DEVICES: [nic(4000, '00:50:56:00:00:09')]})])
    states = instance_states(vcenter(), records)
    assert [(s.name, s.macs) for s in states] == [('db-1', ['00:50:56:00:00:09'])]  # vm-1 was not in the answer: destroyed
    kept = with_devices(listing(), [Record('VirtualMachine', 'vm-1', {}), Record('VirtualMachine', 'vm-2', {})])
    assert [s.macs for s in instance_states(vcenter(), kept)] == [[], []]  # answered without devices: listed
    assert len(kept) == len(listing()) - 1  # vm-6 (managed, not answered) dropped, the others untouched


# ------------------------------------------------------------------ templates

def template_records():
    return [
        Record('Datacenter', 'datacenter-1', {'name': 'DC0'}),
        Record('Datacenter', 'datacenter-2', {'name': 'DC1'}),
        Record('Folder', 'group-v1', {'parent': 'datacenter-1'}),
        Record('Folder', 'group-v1-images', {'parent': 'group-v1'}),
        Record('Folder', 'group-v2', {'parent': 'datacenter-2'}),
        Record('VirtualMachine', 'vm-10', {'name': 'tmpl', 'parent': 'group-v1-images', 'summary.config.template': True,
                                           'summary.config.numCpu': 1, 'summary.config.memorySizeMB': 512,
                                           'summary.config.guestId': 'otherGuest64'}),
        Record('VirtualMachine', 'vm-20', {'name': 'tmpl', 'parent': 'group-v2', 'summary.config.template': True}),
        Record('VirtualMachine', 'vm-30', {'name': 'not-a-template', 'parent': 'group-v1', 'summary.config.template': False}),
    ]


def test_pick_template():
    objects = by_kind(template_records())
    assert pick_template('vc1', objects, 'tmpl', 'DC0') == {
        'name': 'tmpl', 'moid': 'vm-10', 'datacenter': 'DC0', 'vcpus': 1, 'memory_mb': 512, 'guest_id': 'otherGuest64'}
    assert pick_template('vc1', objects, 'tmpl', 'DC1')['moid'] == 'vm-20'
    with pytest.raises(errors.DriverError, match=r'vCenter vc1 has 2 template VMs named tmpl \(vm-10 in datacenter DC0, '
                                                 r'vm-20 in datacenter DC1\); rename all but one'):
        pick_template('vc1', objects, 'tmpl')
    with pytest.raises(errors.NotFound) as caught:
        pick_template('vc1', objects, 'missing', untouched='; nothing was created')
    assert str(caught.value) == ('vCenter vc1 has no template VM missing; a vSphere image is a template VM, cloned for each instance; '
                                 'nothing was created')
    with pytest.raises(errors.NotFound, match=r'\(VM vm-30 has that name but is not marked as a template\)'):
        pick_template('vc1', objects, 'not-a-template')


def test_template_disk_is_the_sum_of_its_disks_rounded_up():
    assert disk_gb_of([disk(1, 1), nic(2, 'x')]) == 1
    half = DEVICE.VirtualDisk(key=3, capacityInKB=GIB // 2048)  # 0.5 GiB, no capacityInBytes (older vCenters)
    assert disk_gb_of([disk(1, 1), half]) == 2
    assert disk_gb_of([]) == 0


# ------------------------------------------------------------------ placement

def spawn_records(**vm_props):
    """DC0: cluster C0 (hosts C0_H0, C0_H1, C0_H2 in maintenance), cluster C1; datastores, networks, a template."""
    def host(moid, name, cluster, datastores, usage_mb=1000, maintenance=False):
        return Record('HostSystem', moid, {
            'name': name, 'parent': cluster, 'runtime.connectionState': 'connected', 'runtime.inMaintenanceMode': maintenance,
            'summary.hardware.numCpuThreads': 16, 'summary.hardware.memorySize': 64 * 1024 * MIB,
            'summary.quickStats.overallMemoryUsage': usage_mb, 'datastore': datastores})

    def datastore(moid, name, free_gb, accessible=True):
        return Record('Datastore', moid, {'summary.name': name, 'summary.capacity': 1000 * GIB, 'summary.freeSpace': free_gb * GIB,
                                          'summary.accessible': accessible})

    return [
        Record('Datacenter', 'datacenter-1', {'name': 'DC0', 'vmFolder': 'group-v1'}),
        Record('Folder', 'group-h1', {'parent': 'datacenter-1'}),
        Record('Folder', 'group-v1', {'parent': 'datacenter-1'}),
        Record('Folder', 'group-n1', {'parent': 'datacenter-1'}),
        Record('ClusterComputeResource', 'domain-c1', {'name': 'C0', 'parent': 'group-h1', 'resourcePool': 'resgroup-1',
                                                       'datastore': ['ds-1', 'ds-2', 'ds-3']}),
        Record('ClusterComputeResource', 'domain-c2', {'name': 'C1', 'parent': 'group-h1', 'resourcePool': 'resgroup-2',
                                                       'datastore': ['ds-1']}),
        host('host-1', 'C0_H0', 'domain-c1', ['ds-1', 'ds-2', 'ds-3'], usage_mb=20000),
        host('host-2', 'C0_H1', 'domain-c1', ['ds-1', 'ds-3', 'ds-9'], usage_mb=5000),
        host('host-3', 'C0_H2', 'domain-c1', ['ds-1'], usage_mb=0, maintenance=True),
        host('host-4', 'C1_H0', 'domain-c2', ['ds-1']),
        datastore('ds-1', 'shared', 100),
        datastore('ds-2', 'big-but-not-on-H1', 900),
        datastore('ds-3', 'dead', 800, accessible=False),
        datastore('ds-9', 'local-to-H1', 700),  # not a datastore of the cluster
        Record('VirtualMachine', 'vm-10', dict({'name': 'tmpl', 'parent': 'group-v1', 'summary.config.template': True,
                                                'summary.config.numCpu': 1, 'summary.config.memorySizeMB': 512,
                                                'summary.config.uuid': '42000000-0000-0000-0000-000000000010',
                                                'runtime.host': 'host-1', 'runtime.powerState': 'poweredOff'}, **vm_props)),
        Record('Network', 'network-1', {'name': 'VM Network', 'parent': 'group-n1'}),
        Record('DistributedVirtualPortgroup', 'dvportgroup-1', {'name': 'PG', 'parent': 'group-n1', 'key': 'dvportgroup-1',
                                                                'config.distributedVirtualSwitch': 'dvs-1'}),
        Record('VmwareDistributedVirtualSwitch', 'dvs-1', {'uuid': SWITCH_UUID}),
    ]


def test_plan_spawn():
    networks = [{'network': 'VM Network', 'mac': '00:50:56:00:00:01'}, {'network': 'PG', 'mac': None}]
    placement = plan_spawn(vcenter(), spawn_records(), spec(networks=networks))
    assert placement._replace(template=None, networks=None) == Placement(
        node='vc1/DC0/C0', cluster='C0', datacenter='DC0', folder='group-v1', pool='resgroup-1', host='host-2', host_name='C0_H1',
        datastore='ds-1',  # ds-2 has more room but C0_H1 does not mount it; ds-3 is inaccessible; ds-9 is not the cluster's
        template=None, networks=None)
    assert placement.template['moid'] == 'vm-10'
    assert placement.networks == [
        NetworkChoice('VM Network', 'Network', 'network-1', None, None, '00:50:56:00:00:01'),
        NetworkChoice('PG', 'DistributedVirtualPortgroup', 'dvportgroup-1', SWITCH_UUID, 'dvportgroup-1', None)]


def test_plan_spawn_without_a_host_takes_the_usable_one_with_most_free_ram():
    placement = plan_spawn(vcenter(), spawn_records(), spec(host=None))
    assert (placement.host_name, placement.datastore) == ('C0_H1', 'ds-1')  # H2 (all free) is in maintenance; H0 uses more


@pytest.mark.parametrize('overrides, error, message', [
    ({'node': 'vc1/DC0/C9'}, errors.NotFound, 'vCenter vc1 has no node vc1/DC0/C9 for instance %s; nothing was created' % UUID),
    ({'host': 'C1_H0'}, errors.NotFound,
     'node vc1/DC0/C0 has no host C1_H0 (its hosts: C0_H0, C0_H1, C0_H2) for instance %s; nothing was created' % UUID),
    ({'host': 'C0_H2'}, errors.DriverError,
     'host C0_H2 of node vc1/DC0/C0 cannot take instance %s: it is in maintenance; nothing was created' % UUID),
    ({'image': 'missing'}, errors.NotFound,
     'vCenter vc1 has no template VM missing; a vSphere image is a template VM, cloned for each instance '
     '(instance %s on node vc1/DC0/C0); nothing was created' % UUID),
    ({'networks': [{'network': 'nowhere', 'mac': None}]}, errors.NotFound,
     'instance %s on node vc1/DC0/C0: datacenter DC0 has no port group nowhere; nothing was created' % UUID),
    ({'name': 'tmpl'}, errors.DriverError,
     'instance %s on node vc1/DC0/C0: the VM folder already has a VM named tmpl (vm-10); nothing was created' % UUID),
])
def test_plan_spawn_refuses(overrides, error, message):
    with pytest.raises(error) as caught:
        plan_spawn(vcenter(), spawn_records(), spec(**overrides))
    assert str(caught.value) == message


def test_plan_spawn_refuses_a_uuid_in_use():
    for path in ('summary.config.uuid', 'summary.config.instanceUuid'):
        with pytest.raises(errors.DriverError, match=r'VM tmpl \(vm-10\) already has the uuid of instance %s; nothing was created' % UUID):
            plan_spawn(vcenter(), spawn_records(**{path: UUID.upper()}), spec())


def test_plan_spawn_refuses_an_ambiguous_port_group():
    records = spawn_records() + [Record('Network', 'network-2', {'name': 'PG', 'parent': 'group-n1'})]
    with pytest.raises(errors.DriverError, match=r'port group name PG is ambiguous in datacenter DC0 \(network-2, dvportgroup-1\)'):
        plan_spawn(vcenter(), records, spec(networks=[{'network': 'PG', 'mac': None}]))


def test_choose_host_prefers_the_first_by_name_among_equals():
    node = build_nodes(vcenter(), spawn_records())[0]
    for host in node.hosts:
        host.memory_mb_free = 1000
    assert choose_host(node, None, UUID).name == 'C0_H0'
    for host in node.hosts:
        host.in_maintenance = True
    with pytest.raises(errors.DriverError, match='node vc1/DC0/C0 has no connected host out of maintenance for instance'):
        choose_host(node, None, UUID)


def test_plan_relocate_inside_the_cluster_and_to_another():
    records = spawn_records()
    # C0_H1 runs it: without a wanted host, the usable other one (C0_H2 is in maintenance).
    assert plan_relocate(vcenter(), records, 'vc1/DC0/C0', None, UUID, 'C0_H1') == ('host-1', 'C0_H0', 'resgroup-1')
    assert plan_relocate(vcenter(), records, 'vc1/DC0/C1', None, UUID, 'C0_H1') == ('host-4', 'C1_H0', 'resgroup-2')
    assert plan_relocate(vcenter(), records, 'vc1/DC0/C0', 'C0_H0', UUID, 'C0_H1')[1] == 'C0_H0'


@pytest.mark.parametrize('node, wanted, current, message', [
    ('vc1/DC0/C0', 'C0_H1', 'C0_H1', 'instance %s already runs on host C0_H1 of node vc1/DC0/C0; nothing moved' % UUID),
    ('vc1/DC0/C0', 'C0_H2', 'C0_H1', 'host C0_H2 of node vc1/DC0/C0 cannot take instance %s: it is in maintenance; nothing moved' % UUID),
    ('vc1/DC0/C9', None, 'C0_H1', 'vCenter vc1 has no node vc1/DC0/C9 for instance %s; nothing moved' % UUID),
    ('vc1/DC0/C1', None, 'C1_H0', 'node vc1/DC0/C1 has no connected host out of maintenance other than C1_H0 for instance %s; '
     'nothing moved' % UUID),
])
def test_plan_relocate_refuses(node, wanted, current, message):
    with pytest.raises(errors.MultihvError) as caught:
        plan_relocate(vcenter(), spawn_records(), node, wanted, UUID, current)
    assert str(caught.value) == message


# ------------------------------------------------------------------ spec -> ConfigSpec

def placement(networks=()):
    return Placement(node='vc1/DC0/C0', cluster='C0', datacenter='DC0', folder='group-v1', pool='resgroup-1', host='host-2',
                     host_name='C0_H1', datastore='ds-1', template={'moid': 'vm-10', 'name': 'tmpl'}, networks=list(networks))


def test_clone_config_maps_the_spec():
    config = clone_config(spec(vcpus=4), placement(), [disk(2000, 10), nic(4000, '00:0c:29:00:00:01')], template_cores=2)
    assert (config.numCPUs, config.numCoresPerSocket, config.memoryMB, config.uuid, config.instanceUuid) == (4, 2, 2048, UUID, UUID)
    assert parse_annotation(config.annotation)[0] == UUID
    assert config.deviceChange == []  # no networks asked: the template's NICs stay


def test_cores_per_socket():
    assert [cores_per_socket(vcpus, 2) for vcpus in (1, 2, 3, 4)] == [1, 2, 1, 2]
    assert cores_per_socket(3, None) == 1 and cores_per_socket(3, 0) == 1


def test_nics_reuse_the_template_adapters_then_add_and_remove():
    template_nics = [nic(4000, '00:0c:29:00:00:01', kind=DEVICE.VirtualE1000), nic(4001, '00:0c:29:00:00:02')]
    standard = NetworkChoice('VM Network', 'Network', 'network-1', None, None, '00:50:56:00:00:01')
    dvpg = NetworkChoice('PG', 'DistributedVirtualPortgroup', 'dvportgroup-1', SWITCH_UUID, 'dvportgroup-1', '00:50:56:00:00:02')
    three = nic_changes([standard, dvpg, dvpg._replace(mac=None)], template_nics)
    assert [(c.operation, type(c.device), c.device.key, c.device.addressType, c.device.macAddress) for c in three] == [
        ('edit', DEVICE.VirtualE1000, 4000, 'manual', '00:50:56:00:00:01'),
        ('edit', DEVICE.VirtualVmxnet3, 4001, 'manual', '00:50:56:00:00:02'),
        ('add', DEVICE.VirtualE1000, -3, 'generated', None),  # the adapter type of the template's first NIC
    ]
    assert (three[0].device.backing.deviceName, three[0].device.backing.network._moId) == ('VM Network', 'network-1')  # pylint: disable=protected-access
    assert (three[1].device.backing.port.switchUuid, three[1].device.backing.port.portgroupKey) == (SWITCH_UUID, 'dvportgroup-1')
    assert all(c.device.connectable.startConnected for c in three)
    assert template_nics[0].macAddress == '00:0c:29:00:00:01'  # the template's devices are not changed

    one = nic_changes([standard], template_nics)
    assert [(c.operation, c.device.key) for c in one] == [('edit', 4000), ('remove', 4001)]
    assert [type(c.device) for c in nic_changes([standard], [])] == [DEVICE.VirtualVmxnet3]
    assert nic_changes([], template_nics) == []


def test_clone_spec_places_without_powering_on():
    clone = clone_spec(placement(), vim.vm.ConfigSpec())
    location = clone.location
    assert [location.pool._moId, location.host._moId, location.datastore._moId] == ['resgroup-1', 'host-2', 'ds-1']  # pylint: disable=protected-access
    assert (clone.powerOn, clone.template) == (False, False)


# ------------------------------------------------------------------ what a clone lacks

def clone_props(**overrides):
    props = {'summary.config.numCpu': 2, 'summary.config.memorySizeMB': 2048, 'config.uuid': UUID, 'config.instanceUuid': UUID,
             'config.annotation': annotation_for(spec()), 'config.hardware.numCoresPerSocket': 1,
             DEVICES: [disk(2000, 20), nic(4000, '00:50:56:00:00:01')]}
    props.update(overrides)
    return props


def test_a_complete_clone_lacks_nothing():
    assert missing_config(spec(), clone_props()) is None
    assert missing_config(spec(), clone_props(**{'config.uuid': UUID.upper()})) is None
    assert missing_config(spec(disk_gb=10), clone_props()) is None  # a disk is never shrunk


def test_what_vcsim_leaves_out_is_applied_again():
    vcsim_clone = clone_props(**{'summary.config.numCpu': 1, 'summary.config.memorySizeMB': 64, 'config.hardware.numCoresPerSocket': 2,
                                 'config.uuid': OTHER, 'config.annotation': '', DEVICES: [disk(2000, 1)]})
    config = missing_config(spec(vcpus=3), vcsim_clone)
    assert (config.numCPUs, config.numCoresPerSocket, config.memoryMB, config.uuid, config.instanceUuid) == (3, 1, 2048, UUID, None)
    assert json.loads(config.annotation.splitlines()[1])['name'] == 'web-1'
    (grow,) = config.deviceChange
    assert (grow.operation, grow.device.key, grow.device.capacityInKB, grow.device.capacityInBytes) == ('edit', 2000, 20 * GIB // 1024, 20 * GIB)
    assert grow.device.backing.fileName == '[ds1] vm/vm.vmdk'  # the same disk, grown in place
    assert vcsim_clone[DEVICES][0].capacityInKB == GIB // 1024  # the read devices are not changed


# ------------------------------------------------------------------ guest data as extraConfig

PASSWORD = 'Adm1n-Pa55-only-here'
USER_DATA = '#cloud-config\nruncmd:\n  - echo user-data-secret > /root/marker\n'


def guest(**overrides):
    fields = dict(uuid=UUID, hostname='web-1', public_keys=['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0 alice@example'],
                  nics=[GuestNic('00:50:56:01:02:03', '192.0.2.10/24', '192.0.2.1')], admin_password=PASSWORD, user_data=USER_DATA)
    fields.update(overrides)
    return GuestConfig(**fields)


def opt(key, value):
    return vim.option.OptionValue(key=key, value=value)


def as_keys(options):
    return [(o.key, o.value) for o in options]


def decode(value):
    return gzip.decompress(base64.b64decode(value)).decode('utf-8')


def test_clone_config_carries_the_guestinfo_of_the_guest():
    cfg = guest()
    keys = extra_config.wanted(cfg, [opt('govcsim', 'TRUE')])
    config = clone_config(spec(guest=cfg), placement(), [disk(2000, 10)], template_cores=1, guest_keys=keys)
    assert as_keys(config.extraConfig) == list(guestinfo.guestinfo(cfg).items())
    values = dict(as_keys(config.extraConfig))
    assert decode(values['guestinfo.userdata']) == bootstrap.user_data(cfg) and PASSWORD in bootstrap.user_data(cfg)
    assert decode(values['guestinfo.metadata']).startswith('instance-id: %s\n' % UUID)
    # Only the gzip+base64 form leaves the controller: neither secret is readable in the spec as sent.
    assert not any(PASSWORD in str(v) or 'user-data-secret' in str(v) for _k, v in as_keys(config.extraConfig))


def test_no_guest_and_a_clean_template_add_no_key():
    assert extra_config.wanted(None, [opt('govcsim', 'TRUE'), opt('guestinfo.afterburn.initrd.network-kargs', 'ip=dhcp')]) == {}
    assert extra_config.wanted(None, None) == {}
    assert clone_config(spec(), placement(), [], template_cores=1, guest_keys={}).extraConfig == []
    assert clone_config(spec(), placement(), [], template_cores=1).extraConfig == []


def template_with_old_data():
    """A template left with cloud-init data of its own (one key spelt in another case), an
    agent's guestinfo key and an empty key."""
    return [opt('govcsim', 'TRUE'), opt('guestinfo.userdata', 'b2xkIHVzZXItZGF0YQ=='), opt('guestinfo.userdata.encoding', 'base64'),
            opt('guestinfo.VendorData', 'b2xkIHZlbmRvcg=='), opt('guestinfo.metadata', ''),
            opt('guestinfo.afterburn.initrd.network-kargs', 'ip=dhcp')]


def test_the_templates_cloud_init_keys_are_cleared_and_others_kept():
    assert extra_config.wanted(None, template_with_old_data()) == {
        'guestinfo.userdata': '', 'guestinfo.userdata.encoding': '', 'guestinfo.VendorData': ''}
    cfg = guest(user_data=None, admin_password=None)  # no user-data: the template's must not stand in for it
    keys = extra_config.wanted(cfg, template_with_old_data())
    assert keys == dict(guestinfo.guestinfo(cfg), **{'guestinfo.userdata': '', 'guestinfo.userdata.encoding': '', 'guestinfo.VendorData': ''})
    given = extra_config.wanted(guest(), template_with_old_data())  # the instance's user-data replaces the template's
    assert given == dict(guestinfo.guestinfo(guest()), **{'guestinfo.VendorData': ''})
    assert extra_config.CLOUD_INIT_KEYS == ('guestinfo.metadata', 'guestinfo.metadata.encoding', 'guestinfo.userdata',
                                            'guestinfo.userdata.encoding', 'guestinfo.vendordata', 'guestinfo.vendordata.encoding')


def test_a_clone_lacking_its_guest_data_is_given_it_again():
    keys = extra_config.wanted(guest(), template_with_old_data())
    config = missing_config(spec(), clone_props(**{EXTRA_CONFIG: [opt('govcsim', 'TRUE')]}), keys)
    # A cleared key the clone does not hold is no lack: only the instance's own keys are given again.
    assert as_keys(config.extraConfig) == list(guestinfo.guestinfo(guest()).items())
    assert (config.numCPUs, config.annotation, config.deviceChange) == (None, None, [])  # nothing else was lacking


def test_a_clone_with_its_guest_data_lacks_nothing():
    keys = extra_config.wanted(guest(), template_with_old_data())
    # vcsim 0.24.2 appends a reconfigured key: the last entry of a key is the one in force.
    held = [opt('govcsim', 'TRUE'), opt('guestinfo.vendordata', 'b2xk')] + extra_config.options(keys)
    assert missing_config(spec(), clone_props(**{EXTRA_CONFIG: held}), keys) is None
    assert missing_config(spec(), clone_props(), {}) is None  # no guest data: the clone's extraConfig is not looked at
    stale = missing_config(spec(), clone_props(**{EXTRA_CONFIG: extra_config.options(keys) + [opt('guestinfo.vendordata', 'b2xk')]}), keys)
    assert as_keys(stale.extraConfig) == [('guestinfo.VendorData', '')]  # a template key still held is cleared again


def test_redact_takes_out_any_quote_of_the_guest_data_sent():
    keys = extra_config.wanted(guest(), [])
    userdata = keys['guestinfo.userdata']
    for quote in (userdata, userdata[:40], userdata[5:60], 'x' + userdata[3:50] + 'Q', userdata[len(userdata) - 20:]):
        text = 'A specified parameter was not correct: value %s in spec.config.extraConfig' % quote
        redacted = extra_config.redact(text, keys)
        assert redacted == 'A specified parameter was not correct: value <redacted> in spec.config.extraConfig', quote
    plain = 'Insufficient disk space on datastore LocalDS_0 for VM test-6f1c1d0e (vm-42, 0123456789abcdefABCDEF)'
    assert extra_config.redact(plain, keys) == plain
    assert extra_config.redact(plain + ' ' + userdata, {}) == plain + ' ' + userdata  # nothing sent, nothing to redact


def test_a_failed_clone_quoting_the_guest_data_says_so_without_it(monkeypatch):
    """The spawn path up to the clone with the vCenter replaced: its fault quotes the userdata sent."""
    cfg = guest()
    sent = {}

    def clone(_self, _content, _spec, _plan, config, _deadline, _made):
        sent.update(as_keys(config.extraConfig))
        raise vmodl.fault.InvalidArgument(msg='A specified parameter was not correct: %s' % sent['guestinfo.userdata'],
                                          invalidProperty='spec.config.extraConfig')

    monkeypatch.setattr('ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver.retrieve_inventory',
                        lambda _content, _paths: spawn_records())
    monkeypatch.setattr(VSphereDriver, '_template_props', lambda *_args: {DEVICES: [disk(2000, 1)], EXTRA_CONFIG: []})
    monkeypatch.setattr(VSphereDriver, '_clone', clone)
    monkeypatch.setattr(VSphereDriver, '_remove_half_made', lambda *_args: 'no VM was left behind')
    with pytest.raises(errors.DriverError) as caught:
        VSphereDriver(vcenter())._spawn(None, spec(guest=cfg))  # pylint: disable=protected-access
    message = str(caught.value)
    assert message == ('vCenter vc1 could not build instance %s (web-1) on cluster DC0/C0, host C0_H1: '
                       'A specified parameter was not correct: <redacted>; no VM was left behind' % UUID)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # the fault, which holds the quote, is not chained
    assert sent['guestinfo.userdata'] and sent['guestinfo.userdata'][:16] not in message


def test_power_states():
    assert [power_state(s) for s in ('poweredOn', 'poweredOff', 'suspended', None)] == ['running', 'stopped', 'suspended', 'unknown']


def test_task_error_text():
    fault = vim.fault.InvalidPowerState(msg='The attempted operation cannot be performed in the current state (Powered on).')
    assert tasks._task_error(fault) == (  # pylint: disable=protected-access
        'vim.fault.InvalidPowerState: The attempted operation cannot be performed in the current state (Powered on).')
    assert tasks._task_error(vmodl.fault.InvalidArgument(invalidProperty='spec.location.pool')) == (  # pylint: disable=protected-access
        'vmodl.fault.InvalidArgument (spec.location.pool)')
    assert tasks._task_error(None) == 'no error detail'  # pylint: disable=protected-access
