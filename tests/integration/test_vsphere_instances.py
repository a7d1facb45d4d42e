"""Instances on the lab's vcsim through the vSphere driver: template lookup, spawn onto a chosen
ESXi host with its guest data (guestinfo extraConfig), listing, power, destroy, and the SOAP
calls of a listing.

The lab's vcsim is shared with other tests running at the same time: this module makes its
own template (a new VM marked as template, not a lab VM) and names every VM test-<uuid8>;
everything it makes is destroyed after, through pyVmomi directly, whatever the driver did.
What the driver did is checked the slow, independent way: object by object, attribute by
attribute."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid

import pytest
import yaml
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import MARKER, parse_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
from ansible_collections.multihv.cloud.plugins.module_utils._guest import bootstrap
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestConfig, GuestNic
from support import vsphere_guestinfo
from support.cloud import vm_name

GIB = 1024 ** 3
DEVICE = vim.vm.device
NODE_C0 = 'vcsim/DC0/DC0_C0'
NODE_C1 = 'vcsim/DC0/DC0_C1'
TEMPLATE_HOST = 'DC0_C0_H0'
LAB_VM = re.compile(r'^DC\d+_C\d+_H\d+_VM\d+$')
# A connected driver's list_instances: the view retrieval, then the devices of the managed VMs.
LIST_CALLS = {'CreateContainerView': 1, 'RetrievePropertiesEx': 2, 'DestroyView': 1}
# cloud-init data the template was left with (base64 of 'old user-data', 'old vendor-data'): no clone may receive it.
TEMPLATE_GUESTINFO = {'guestinfo.userdata': 'b2xkIHVzZXItZGF0YQ==', 'guestinfo.userdata.encoding': 'base64',
                      'guestinfo.vendordata': 'b2xkIHZlbmRvci1kYXRh', 'guestinfo.vendordata.encoding': 'base64'}


@pytest.fixture(scope='module')
def lab_vcenter(lab):
    return _config.load(str(lab.dir / 'multihv-cloud.yml')).vcenters[0]


@pytest.fixture(scope='module')
def si(lab_vcenter):
    made = SmartConnect(host=lab_vcenter.hostname, port=lab_vcenter.port, user=lab_vcenter.username, pwd=lab_vcenter.password,
                        disableSslCertValidation=True)
    yield made
    Disconnect(made)


@pytest.fixture
def driver(lab_vcenter):
    made = VSphereDriver(lab_vcenter)
    yield made
    made.close()


def all_vms(si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def vm_named(si, name):
    found = [vm for vm in all_vms(si) if vm_name(vm) == name]
    assert len(found) <= 1, found
    return found[0] if found else None


def send_home(si, name):
    """Move a clone back to its template's host before it is destroyed. vcsim 0.24.2's
    RelocateVM_Task changes runtime.host but leaves the VM in the vm list of the host it was
    created on (its template's); Destroy_Task then clears the new host's list only, and the
    dead reference left behind breaks every ContainerView reader of the shared lab (vcsim
    lists host.vm entries in views). A vCenter needs none of this."""
    vm = vm_named(si, name)
    home = next(h for h in cluster(si, 'DC0_C0').host if h.name == TEMPLATE_HOST)
    if vm is not None and vm.runtime.host != home:
        WaitForTask(vm.RelocateVM_Task(spec=vim.vm.RelocateSpec(host=home)))


def destroy_named(si, name):
    send_home(si, name)
    vm = vm_named(si, name)
    if vm is not None:
        if vm.runtime.powerState != 'poweredOff':
            WaitForTask(vm.PowerOffVM_Task())
        WaitForTask(vm.Destroy_Task())


def datacenter(si):
    return next(e for e in si.RetrieveContent().rootFolder.childEntity if isinstance(e, vim.Datacenter) and e.name == 'DC0')


def cluster(si, name):
    return next(c for c in datacenter(si).hostFolder.childEntity if c.name == name)


@pytest.fixture(scope='module')
def template(si):
    """A template of our own on TEMPLATE_HOST: 1 vCPU, 64 MB, a 1 GiB disk, one e1000 NIC on VM Network,
    and cloud-init data of its own (TEMPLATE_GUESTINFO). vcsim 0.24.2 does not copy a template's
    extraConfig into a clone, a vCenter does: the clone must clear it either way."""
    name = 'test-tmpl-%s' % uuid.uuid4().hex[:8]
    owner = cluster(si, 'DC0_C0')
    scsi = DEVICE.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus='noSharing')
    disk = DEVICE.VirtualDisk(key=-101, controllerKey=-100, unitNumber=0, capacityInKB=GIB // 1024,
                              backing=DEVICE.VirtualDisk.FlatVer2BackingInfo(diskMode='persistent', thinProvisioned=True, fileName=''))
    nic = DEVICE.VirtualE1000(key=-102, addressType='generated', backing=DEVICE.VirtualEthernetCard.NetworkBackingInfo(deviceName='VM Network'))
    config = vim.vm.ConfigSpec(
        name=name, guestId='otherGuest64', numCPUs=1, memoryMB=64, files=vim.vm.FileInfo(vmPathName='[LocalDS_0]'),
        extraConfig=[vim.option.OptionValue(key=key, value=value) for key, value in TEMPLATE_GUESTINFO.items()],
        deviceChange=[DEVICE.VirtualDeviceSpec(operation='add', device=scsi),
                      DEVICE.VirtualDeviceSpec(operation='add', fileOperation='create', device=disk),
                      DEVICE.VirtualDeviceSpec(operation='add', device=nic)])
    (host,) = [h for h in owner.host if h.name == TEMPLATE_HOST]
    task = datacenter(si).vmFolder.CreateVM_Task(config=config, pool=owner.resourcePool, host=host)
    WaitForTask(task)
    made = task.info.result
    try:
        made.MarkAsTemplate()
        assert made.config.template
        assert vsphere_guestinfo.documents(si, made)['vendordata'] == 'old vendor-data'
        yield name
    finally:
        # vcsim's MarkAsTemplate drops the VM's resource pool but leaves it in the pool's vm
        # list; as a VM again it is removed from that list when destroyed.
        made.MarkAsVirtualMachine(pool=owner.resourcePool, host=host)
        WaitForTask(made.Destroy_Task())


@pytest.fixture
def instances(si):
    """spec(**overrides) -> an InstanceSpec named test-<uuid8>; every VM of those names is destroyed after."""
    names = []

    def spec(**overrides):
        instance = str(uuid.uuid4())
        fields = dict(uuid=instance, name='test-%s' % instance[:8], node=NODE_C1, vcpus=2, memory_mb=128, disk_gb=2,
                      image='', host='DC0_C1_H2', networks=[], hostname='host-%s' % instance[:8], metadata={'flavor': 'm1.tiny'})
        fields.update(overrides)
        names.append(fields['name'])
        return InstanceSpec(**fields)

    yield spec
    for name in names:
        destroy_named(si, name)


def soap_calls(control_url, call):
    def control(method, path):
        with urllib.request.urlopen(urllib.request.Request(control_url + path, method=method), timeout=10) as resp:
            return json.loads(resp.read() or b'null')
    control('POST', '/stats/reset')
    call()
    return control('GET', '/stats')['by_method']


def test_find_template(driver, template, si):
    found = driver.find_template(template)
    assert found == {'name': template, 'moid': vm_named(si, template)._moId, 'datacenter': 'DC0', 'vcpus': 1,  # pylint: disable=protected-access
                     'memory_mb': 64, 'disk_gb': 1, 'guest_id': 'otherGuest64'}

    with pytest.raises(errors.NotFound) as caught:
        driver.find_template('no-such-template')
    assert str(caught.value) == ('vCenter vcsim has no template VM no-such-template; a vSphere image is a template VM, '
                                 'cloned for each instance')
    lab_vm = next(name for name in map(vm_name, all_vms(si)) if name and LAB_VM.match(name))
    with pytest.raises(errors.NotFound, match='has that name but is not marked as a template'):
        driver.find_template(lab_vm)


def test_spawn_onto_the_chosen_host_and_list(driver, template, instances, si, monkeypatch):
    """Onto the last host of the other cluster than the template's: the clone is placed, not left by the template.
    Its guest data is in its extraConfig, as cloud-init's VMware datasource will read it; the template's is not.
    vcsim keeps the CloneSpec's extraConfig: the data is there straight after CloneVM_Task, before any reconfiguration."""
    after_clone = []
    complete = VSphereDriver._complete  # pylint: disable=protected-access

    def seen_after_clone(self, content, spec, plan, vm, deadline, guest_keys):
        after_clone.append(vsphere_guestinfo.documents(si, vim.VirtualMachine(vm._moId, si._stub)))  # pylint: disable=protected-access
        return complete(self, content, spec, plan, vm, deadline, guest_keys)

    monkeypatch.setattr(VSphereDriver, '_complete', seen_after_clone)
    instance = str(uuid.uuid4())
    guest = GuestConfig(uuid=instance, hostname='web-%s' % instance[:8], public_keys=['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV alice@lab'],
                        nics=[GuestNic('00:50:56:01:02:03', '192.0.2.10/24', '192.0.2.1', ['192.0.2.53']), GuestNic('00:50:56:01:02:04')],
                        admin_password='lab-Adm1n-pw', user_data='#cloud-config\nruncmd:\n  - echo hello > /root/hello\n')
    spec = instances(uuid=instance, name='test-%s' % instance[:8], image=template, guest=guest,
                     networks=[{'network': 'VM Network', 'mac': '00:50:56:01:02:03'}, {'network': 'DC0_DVPG0', 'mac': '00:50:56:01:02:04'}])
    state = driver.spawn(spec)
    assert (state.uuid, state.name, state.node, state.host, state.power_state) == (spec.uuid, spec.name, NODE_C1, 'DC0_C1_H2', 'running')
    assert (state.vcpus, state.memory_mb, state.macs) == (2, 128, ['00:50:56:01:02:03', '00:50:56:01:02:04'])

    vm = vm_named(si, spec.name)
    assert vm.runtime.host.name == 'DC0_C1_H2'
    assert vm.runtime.powerState == 'poweredOn'
    assert vm.config.uuid == spec.uuid and vm.config.instanceUuid == spec.uuid
    assert (vm.config.hardware.numCPU, vm.config.hardware.memoryMB) == (2, 128)
    assert vm.parent == datacenter(si).vmFolder
    assert vm.resourcePool == cluster(si, 'DC0_C1').resourcePool
    assert vm.config.annotation.splitlines()[0] == '%s %s' % (MARKER, spec.uuid)
    assert parse_annotation(vm.config.annotation) == (spec.uuid, {
        'name': spec.name, 'hostname': spec.hostname, 'image': template, 'node': NODE_C1, 'metadata': {'flavor': 'm1.tiny'}})
    nics = [d for d in vm.config.hardware.device if isinstance(d, DEVICE.VirtualEthernetCard)]
    # The template's e1000 is reused for the first network, the second is added as an e1000 too.
    assert [(type(n), n.addressType, n.macAddress) for n in nics] == [
        (DEVICE.VirtualE1000, 'manual', '00:50:56:01:02:03'), (DEVICE.VirtualE1000, 'manual', '00:50:56:01:02:04')]
    assert nics[0].backing.deviceName == 'VM Network'
    portgroup = next(n for n in datacenter(si).network if n.name == 'DC0_DVPG0')
    assert nics[1].backing.port.portgroupKey == portgroup.key
    assert nics[1].backing.port.switchUuid == portgroup.config.distributedVirtualSwitch.uuid
    disks = [d for d in vm.config.hardware.device if isinstance(d, DEVICE.VirtualDisk)]
    assert [d.capacityInKB for d in disks] == [2 * GIB // 1024]  # grown from the template's 1 GiB to the flavor's
    assert state.disk_paths == [disks[0].backing.fileName]

    documents = vsphere_guestinfo.documents(si, vm)
    metadata = yaml.safe_load(documents['metadata'])
    assert {k: metadata[k] for k in ('instance-id', 'local-hostname', 'public-keys')} == {
        'instance-id': spec.uuid, 'local-hostname': guest.hostname, 'public-keys': list(guest.public_keys)}
    assert metadata['network']['version'] == 2
    assert metadata['network']['ethernets']['eth0'] == {
        'match': {'macaddress': '00:50:56:01:02:03'}, 'set-name': 'eth0', 'dhcp4': False, 'addresses': ['192.0.2.10/24'],
        'routes': [{'to': '0.0.0.0/0', 'via': '192.0.2.1'}], 'nameservers': {'addresses': ['192.0.2.53']}}
    assert metadata['network']['ethernets']['eth1']['match'] == {'macaddress': nics[1].macAddress}
    assert documents['userdata'] == bootstrap.user_data(guest) and 'lab-Adm1n-pw' in documents['userdata']
    assert after_clone == [documents]
    assert documents['vendordata'] is None  # the template's, cleared
    held = vsphere_guestinfo.extra_config(si, vm)
    assert (held['guestinfo.vendordata'], held['guestinfo.vendordata.encoding']) == ('', '')

    listed = driver.list_instances()
    assert [s for s in listed if s.uuid == spec.uuid] == [state]
    names = set(s.name for s in listed)
    assert template not in names and not any(LAB_VM.match(n) for n in names)
    assert all(s.node in (NODE_C0, NODE_C1) for s in listed)


def test_power_and_destroy(driver, template, instances, si):
    """No host given: the driver picks a usable one; no networks: the template's NIC stays."""
    spec = instances(image=template, node=NODE_C0, host=None)
    state = driver.spawn(spec)
    assert state.host in ('DC0_C0_H0', 'DC0_C0_H1', 'DC0_C0_H2') and state.node == NODE_C0
    vm = vm_named(si, spec.name)
    # No guest data: cloud-init finds nothing, not the template's data. The driver cleared the template's keys
    # (empty values: a vCenter removes such keys, vcsim keeps them empty; either reads as absent to cloud-init).
    assert vsphere_guestinfo.documents(si, vm) == {'metadata': None, 'userdata': None, 'vendordata': None}
    assert {k: v for k, v in vsphere_guestinfo.extra_config(si, vm).items() if k.startswith('guestinfo.')} == dict.fromkeys(TEMPLATE_GUESTINFO, '')
    assert vm.runtime.host.name == state.host
    assert len(state.macs) == 1 and [n.macAddress for n in vm.config.hardware.device if isinstance(n, DEVICE.VirtualEthernetCard)] == state.macs

    for action, power, seen in (('stop', 'stopped', 'poweredOff'), ('stop', 'stopped', 'poweredOff'), ('start', 'running', 'poweredOn'),
                                ('start', 'running', 'poweredOn'), ('shutdown', 'stopped', 'poweredOff'), ('shutdown', 'stopped', 'poweredOff'),
                                ('reboot', 'running', 'poweredOn'), ('reboot', 'running', 'poweredOn')):
        after = driver.set_power(spec.uuid, NODE_C0, action)
        assert (after.uuid, after.power_state, after.host) == (spec.uuid, power, state.host), action
        assert vm.runtime.powerState == seen, action

    with pytest.raises(errors.DriverError, match='is on node %s .*, not on node %s; it was not destroyed' % (NODE_C0, NODE_C1)):
        driver.destroy(spec.uuid, NODE_C1)
    assert vm_named(si, spec.name) is not None

    send_home(si, spec.name)
    driver.destroy(spec.uuid, NODE_C0)
    assert vm_named(si, spec.name) is None
    driver.destroy(spec.uuid, NODE_C0)  # gone already: no error
    assert spec.uuid not in [s.uuid for s in driver.list_instances()]
    with pytest.raises(errors.NotFound, match='has no instance %s' % spec.uuid):
        driver.set_power(spec.uuid, NODE_C0, 'start')


def test_spawn_of_a_missing_template_names_it(driver, instances, si):
    spec = instances(image='no-such-template-%s' % uuid.uuid4().hex[:8])
    with pytest.raises((errors.NotFound, errors.DriverError)) as caught:
        driver.spawn(spec)
    assert 'no template VM %s' % spec.image in str(caught.value) and str(caught.value).endswith('nothing was created')
    assert vm_named(si, spec.name) is None


def test_spawn_refuses_what_it_cannot_place(driver, template, instances, si):
    wrong_host = instances(image=template, host='DC0_C0_H1')  # a host of the other cluster
    with pytest.raises(errors.NotFound, match='node %s has no host DC0_C0_H1' % NODE_C1):
        driver.spawn(wrong_host)
    no_network = instances(image=template, networks=[{'network': 'no-such-portgroup', 'mac': '00:50:56:00:00:01'}])
    with pytest.raises(errors.NotFound, match='datacenter DC0 has no port group no-such-portgroup; nothing was created'):
        driver.spawn(no_network)
    first = instances(image=template)
    driver.spawn(first)
    again = instances(image=template, uuid=first.uuid)  # the same uuid, another name
    with pytest.raises(errors.DriverError, match='already has the uuid of instance %s; nothing was created' % first.uuid):
        driver.spawn(again)
    for spec in (wrong_host, no_network, again):
        assert vm_named(si, spec.name) is None


def test_failed_spawn_destroys_the_half_made_vm(driver, template, instances, si, monkeypatch):
    def fail(*_args):
        raise errors.DriverError('injected failure after the clone')

    monkeypatch.setattr(VSphereDriver, '_complete', fail)
    spec = instances(image=template, host='DC0_C1_H1')
    with pytest.raises(errors.DriverError) as caught:
        driver.spawn(spec)
    message = str(caught.value)
    assert message.startswith('vCenter vcsim could not build instance %s (%s) on cluster DC0/DC0_C1, host DC0_C1_H1: '
                              'injected failure after the clone; the half-made VM vm-' % (spec.uuid, spec.name)), message
    assert message.endswith(' was destroyed')
    assert vm_named(si, spec.name) is None


def test_soap_calls_of_list_instances_are_constant(lab, lab_vcenter, template, instances):
    """The same calls with one instance as with three. Others may use the lab at the same
    time and only ever add calls: the fewest seen counts."""
    url = lab.info['vcsim']['control_url']
    made = VSphereDriver(lab_vcenter)
    try:
        counts = []
        for _count in range(3):
            made.spawn(instances(image=template, host=None))
            seen = []
            for _attempt in range(5):
                made.list_instances()  # connected: the login is not counted
                seen.append(soap_calls(url, made.list_instances))
                if seen[-1] == LIST_CALLS:
                    break
            counts.append(seen[-1])
        assert counts == [LIST_CALLS] * 3
        assert len([s for s in made.list_instances() if s.name.startswith('test-')]) >= 3
    finally:
        made.close()
