"""libvirt XML of the KVM driver: domains, volumes, pools (pure logic)."""

import re
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec

UUID = '6f1c2b9e-4a55-4c1e-9a57-0d4f5f6e7a81'
NS = {'m': domxml.NAMESPACE}

CAPS_KVM = """<capabilities><host><uuid>x</uuid></host>
  <guest><os_type>hvm</os_type><arch name='i686'><domain type='qemu'/></arch></guest>
  <guest><os_type>hvm</os_type><arch name='x86_64'><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <domain type='qemu'/><domain type='kvm'/></arch></guest>
</capabilities>"""
CAPS_TCG = CAPS_KVM.replace("<domain type='kvm'/>", '')

FOREIGN = """<domain type='kvm'><name>someone-else</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory unit='KiB'>1048576</memory><vcpu placement='static'>2</vcpu>
  <metadata><other:thing xmlns:other='http://example.com/other'>x</other:thing></metadata>
  <devices>
    <disk type='file' device='cdrom'><source file='/isos/boot.iso'/><target dev='hdc' bus='ide'/></disk>
    <disk type='block' device='disk'><source dev='/dev/vg/root'/><target dev='vda' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/></interface>
    <serial type='pty'><target port='0'/></serial>
  </devices></domain>"""


def spec(**overrides):
    values = dict(uuid=UUID, name='web-1', node='kvm1', vcpus=2, memory_mb=512, disk_gb=10, image='tick',
                  storage='shared', hostname='web-1.example.com', metadata={'role': 'web'})
    values.update(overrides)
    return InstanceSpec(**values)


def build(**overrides):
    return domxml.build_domain(spec(**overrides), '/srv/instances/%s.qcow2' % UUID, '/srv/instances/%s.console.log' % UUID)


def test_domain_has_the_spec_sizes_disk_and_console():
    root = ET.fromstring(build())
    assert root.get('type') == 'kvm'
    assert (root.findtext('name'), root.findtext('uuid'), root.findtext('vcpu')) == ('web-1', UUID, '2')
    assert (root.find('memory').get('unit'), root.findtext('memory')) == ('MiB', '512')
    assert root.find('os/type').get('machine') == 'pc'
    disk = root.find('devices/disk')
    assert disk.find('target').attrib == {'dev': 'vda', 'bus': 'virtio'}
    assert disk.find('driver').attrib == {'name': 'qemu', 'type': 'qcow2', 'cache': 'none'}  # shared storage
    assert disk.find('source').get('file') == '/srv/instances/%s.qcow2' % UUID
    serial = root.find('devices/serial')
    assert serial.get('type') == 'file'
    assert serial.find('source').attrib == {'path': '/srv/instances/%s.console.log' % UUID, 'append': 'on'}
    assert root.findall('devices/interface') == []


def test_disk_cache_is_none_on_shared_storage_and_writethrough_on_local():
    # none (O_DIRECT) on shared storage: libvirt then judges a live migration safe by itself (Nova's choice).
    caches = {storage: ET.fromstring(build(storage=storage)).find('devices/disk/driver').get('cache') for storage in ('shared', 'local')}
    assert caches == {'shared': 'none', 'local': 'writethrough'}


def test_tcg_domain_and_raw_disk():
    root = ET.fromstring(domxml.build_domain(spec(), '/d.raw', '/d.log', 'qemu', 'raw'))
    assert root.get('type') == 'qemu'
    assert root.find('devices/disk/driver').get('type') == 'raw'


@pytest.mark.parametrize('kind, fmt', [('xen', 'qcow2'), ('kvm', 'vmdk')])
def test_unknown_domain_type_or_format_is_refused(kind, fmt):
    with pytest.raises(ValueError, match=kind if kind == 'xen' else fmt):
        domxml.build_domain(spec(), '/d', '/l', kind, fmt)


def test_domain_type_follows_the_host_capabilities():
    assert domxml.domain_type(CAPS_KVM) == 'kvm'
    assert domxml.domain_type(CAPS_TCG) == 'qemu'
    assert domxml.domain_type(CAPS_KVM, arch='aarch64') == 'qemu'


def test_image_virt_type_qemu_is_tcg_even_where_kvm_is_offered():
    assert domxml.domain_type(CAPS_KVM, virt_type='qemu') == 'qemu'
    assert domxml.domain_type(CAPS_TCG, virt_type='qemu') == 'qemu'


def test_image_virt_type_kvm_needs_a_host_that_offers_kvm():
    assert domxml.domain_type(CAPS_KVM, virt_type='kvm') == 'kvm'
    with pytest.raises(ValueError, match='asks for virt_type kvm and this host offers no KVM for x86_64 guests'):
        domxml.domain_type(CAPS_TCG, virt_type='kvm')


@pytest.mark.parametrize('virt_type', ['xen', 'KVM', 'tcg', '', 1])
def test_other_image_virt_types_are_refused(virt_type):
    with pytest.raises(ValueError, match=r'image property virt_type must be one of kvm, qemu, got %s' % re.escape(repr(virt_type))):
        domxml.domain_type(CAPS_KVM, virt_type=virt_type)


def test_networks_plain_name_bridge_and_fixed_macs():
    root = ET.fromstring(build(networks=[{'network': 'tenant-a', 'mac': '52:54:00:AA:00:01'},
                                         {'network': 'bridge:br-ext', 'mac': '52:54:00:aa:00:02'},
                                         {'network': 'plain'}]))
    interfaces = root.findall('devices/interface')
    assert [i.get('type') for i in interfaces] == ['network', 'bridge', 'network']
    assert interfaces[0].find('source').attrib == {'network': 'tenant-a'}
    assert interfaces[1].find('source').attrib == {'bridge': 'br-ext'}
    assert [i.find('mac').get('address') if i.find('mac') is not None else None for i in interfaces] == [
        '52:54:00:aa:00:01', '52:54:00:aa:00:02', None]
    assert {i.find('model').get('type') for i in interfaces} == {'virtio'}
    assert domxml.parse_domain(ET.tostring(root, encoding='unicode')).macs == ['52:54:00:aa:00:01', '52:54:00:aa:00:02']


@pytest.mark.parametrize('networks, message', [
    ([{'network': 'bridge:'}], 'names no bridge'),
    ([{'network': ''}], 'no network name'),
    ([{'network': 'n', 'mac': '52:54:00:zz:00:01'}], r'networks\[0\].mac'),
    (['tenant-a'], r'networks\[0\] must be a mapping'),
])
def test_bad_networks_are_refused(networks, message):
    with pytest.raises(ValueError, match=message):
        build(networks=networks)


def test_names_and_paths_are_escaped():
    nasty = 'a<b>&"c\'d'
    xml = domxml.build_domain(spec(name=nasty, hostname=nasty), '/srv/x & y/<d>.qcow2', "/srv/it's.log")
    info = domxml.parse_domain(xml)
    assert info.name == nasty
    assert info.disk_paths == ['/srv/x & y/<d>.qcow2']
    assert info.console_log == "/srv/it's.log"
    assert info.managed['hostname'] == nasty


def test_control_characters_are_refused_not_written():
    with pytest.raises(ValueError, match='name contains a control character'):
        build(name='bad\x01name')


def test_metadata_round_trip():
    metadata = {'role': 'web', 'text': '</multihv:metadata> & \x01 \u00e9\u4e2d', 'nested': {'list': [1, 2.5, None, True]}}
    xml = build(metadata=metadata)
    root = ET.fromstring(xml)
    instance = root.find('metadata/m:instance', NS)
    assert instance is not None and instance.findtext('m:node', namespaces=NS) == 'kvm1'
    assert 'xmlns:multihv="%s"' % domxml.NAMESPACE in xml  # a readable prefix, not ns0
    info = domxml.parse_domain(xml)
    assert info.managed == {'uuid': UUID, 'name': 'web-1', 'image': 'tick', 'storage': 'shared', 'hostname': 'web-1.example.com',
                            'node': 'kvm1', 'vcpus': 2, 'memory_mb': 512, 'disk_gb': 10, 'metadata': metadata}
    assert (info.uuid, info.vcpus, info.memory_mb) == (UUID, 2, 512)


def test_metadata_survives_any_prefix_libvirt_gives_it():
    xml = build().replace('multihv:', 'zz:').replace('xmlns:multihv=', 'xmlns:zz=')
    assert domxml.parse_domain(xml).managed['node'] == 'kvm1'


def test_foreign_domain_is_not_managed_and_parses():
    info = domxml.parse_domain(FOREIGN)
    assert info.managed is None
    assert (info.name, info.vcpus, info.memory_mb) == ('someone-else', 2, 1024)
    assert info.disk_paths == ['/dev/vg/root']  # the CD-ROM is no disk of the instance
    assert info.macs == ['52:54:00:aa:bb:cc']
    assert info.console_log is None


def test_hand_edited_metadata_json_is_still_ours():
    xml = build().replace('{"role": "web"}', 'not json')
    assert 'not json' in xml
    assert domxml.parse_domain(xml).managed['metadata'] == {}


@pytest.mark.parametrize('state, power', [(0, 'unknown'), (1, 'running'), (2, 'running'), (3, 'paused'), (4, 'running'),
                                          (5, 'stopped'), (6, 'stopped'), (7, 'suspended'), (99, 'unknown')])
def test_power_states(state, power):
    assert domxml.power_state(state) == power


def test_overlay_volume_on_a_base():
    root = ET.fromstring(domxml.volume_xml(UUID + '.qcow2', 2 * 1024 ** 3, 'qcow2', backing_path='/srv/_base/tick.raw',
                                           backing_format='raw'))
    assert root.findtext('name') == UUID + '.qcow2'
    assert (root.findtext('capacity'), root.find('capacity').get('unit')) == (str(2 * 1024 ** 3), 'bytes')
    assert root.find('target/format').get('type') == 'qcow2'
    assert (root.findtext('backingStore/path'), root.find('backingStore/format').get('type')) == ('/srv/_base/tick.raw', 'raw')


def test_plain_volume_with_mode_and_no_backing_for_raw():
    root = ET.fromstring(domxml.volume_xml('tick.qcow2', 393216, 'raw', mode='0644'))
    assert root.findtext('target/permissions/mode') == '0644'
    assert root.find('backingStore') is None
    with pytest.raises(ValueError, match='only a qcow2'):
        domxml.volume_xml('x.raw', 1, 'raw', backing_path='/b')


def test_pool_on_a_path_with_markup():
    root = ET.fromstring(domxml.pool_xml('multihv-1', '/srv/a&b/<_base>'))
    assert (root.get('type'), root.findtext('name'), root.findtext('target/path')) == ('dir', 'multihv-1', '/srv/a&b/<_base>')


def test_pool_built_with_a_mode():
    root = ET.fromstring(domxml.pool_xml('multihv-2', '/srv/_base', mode='0755'))
    assert root.findtext('target/permissions/mode') == '0755'
    assert ET.fromstring(domxml.pool_xml('multihv-2', '/srv/_base')).find('target/permissions') is None


def test_config_drive_is_a_read_only_ide_cdrom_on_the_pc_machine():
    iso = '/srv/instances/%s.config.iso' % UUID
    root = ET.fromstring(domxml.build_domain(spec(), '/srv/instances/%s.qcow2' % UUID, '/srv/l.log', config_drive=iso))
    assert root.find('os/type').get('machine') == 'pc'
    disk, cdrom = root.findall('devices/disk')
    assert disk.get('device') == 'disk' and disk.find('target').get('dev') == 'vda'  # still the boot disk
    assert (cdrom.get('type'), cdrom.get('device')) == ('file', 'cdrom')
    assert cdrom.find('driver').attrib == {'name': 'qemu', 'type': 'raw'}
    assert cdrom.find('source').get('file') == iso
    assert cdrom.find('target').attrib == {'dev': 'hda', 'bus': 'ide'}
    assert cdrom.find('readonly') is not None
    info = domxml.parse_domain(ET.tostring(root, encoding='unicode'))
    assert (info.disk_paths, info.cdrom_paths) == (['/srv/instances/%s.qcow2' % UUID], [iso])


def test_no_config_drive_no_cdrom():
    root = ET.fromstring(build())
    assert [d.get('device') for d in root.findall('devices/disk')] == ['disk']
    assert domxml.parse_domain(build()).cdrom_paths == []


@pytest.mark.parametrize('machine, bus', [('pc', 'ide'), ('pc-i440fx-7.2', 'ide'), ('q35', 'sata'), ('pc-q35-7.2', 'sata'),
                                          (None, 'ide')])
def test_cdrom_bus_follows_the_machine_type(machine, bus):
    assert domxml.cdrom_bus(machine) == bus


def test_the_guest_agent_has_its_channel():
    channels = ET.fromstring(build()).findall('devices/channel')
    assert [(c.get('type'), c.find('target').attrib) for c in channels] == [
        ('unix', {'type': 'virtio', 'name': 'org.qemu.guest_agent.0'})]


def test_foreign_cdroms_are_parsed_apart_from_disks():
    assert domxml.parse_domain(FOREIGN).cdrom_paths == ['/isos/boot.iso']
