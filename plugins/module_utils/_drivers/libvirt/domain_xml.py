# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt XML for the KVM driver: domains, volumes, pools. Private to multihv.cloud: do not import.

Pure: strings in, strings or plain data out, no libvirt import, so that all of it
is unit-tested without a host. Documents are built with ElementTree, never by
string formatting, so that names, paths and metadata are always escaped.

A domain multihv manages carries <metadata><multihv:instance> in NAMESPACE: that
is how a host alone tells our instances from other domains (and what they are),
like Nova's <nova:instance> element.
"""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET

NAMESPACE = 'https://multihv.cloud/xmlns/instance/1'
PREFIX = 'multihv'
BRIDGE_PREFIX = 'bridge:'
# The virtio-serial port the QEMU guest agent listens on (what setUserPassword talks to).
GUEST_AGENT_CHANNEL = 'org.qemu.guest_agent.0'

# libvirt's virDomainState values (a stable ABI), mapped to InstanceState.power_state.
# BLOCKED is a running guest waiting on a resource; SHUTDOWN one that is shutting down.
POWER_STATES = {0: 'unknown', 1: 'running', 2: 'running', 3: 'paused', 4: 'running',
                5: 'stopped', 6: 'stopped', 7: 'suspended'}

_MAC = re.compile(r'^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$')
# Characters XML 1.0 cannot carry at all, even escaped: ElementTree would write them
# as they are and libvirt would reject the document with a parser error.
_NOT_XML = re.compile('[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]')


def _q(tag):
    return '{%s}%s' % (NAMESPACE, tag)


ET.register_namespace(PREFIX, NAMESPACE)  # so libvirt keeps a readable multihv: prefix


@dataclasses.dataclass
class DomainInfo:
    """What parse_domain() reads from a domain's XML. managed: the multihv metadata
    (see build_domain) as a dict, or None for a domain multihv did not create."""

    name: str
    uuid: str
    vcpus: int = 0
    memory_mb: int = 0
    macs: list = dataclasses.field(default_factory=list)
    disk_paths: list = dataclasses.field(default_factory=list)
    console_log: str | None = None
    managed: dict | None = None
    cdrom_paths: list = dataclasses.field(default_factory=list)
    # Adoption (issue 17 §3): [{mac, backing}] of its NICs in order, backing as InstanceSpec.networks names it.
    interfaces: list = dataclasses.field(default_factory=list)


def _text(field, value):
    value = '' if value is None else str(value)
    if _NOT_XML.search(value):
        raise ValueError('%s contains a control character that XML cannot hold: %r' % (field, value))
    return value


def _sub(parent, tag, text=None, **attrs):
    element = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


# The image property that picks the domain type (Nova's libvirt virt_type, per image here).
VIRT_TYPES = ('kvm', 'qemu')


def domain_type(capabilities_xml, arch='x86_64', virt_type=None):
    """The domain type of a guest of arch on the host whose capabilities (virConnectGetCapabilities)
    are given. Without virt_type: 'kvm' when the host offers KVM guests for arch, else 'qemu' (TCG:
    slower, but runs where /dev/kvm does not). virt_type, the image's property, overrides that:
    'qemu' is TCG even where KVM is offered (an image that cannot boot under a host's KVM, as Linux
    on the lab machines); 'kvm' on a host that offers no KVM is refused rather than emulated.
    ValueError for any other virt_type."""
    if virt_type is not None and virt_type not in VIRT_TYPES:
        raise ValueError('image property virt_type must be one of %s, got %r' % (', '.join(VIRT_TYPES), virt_type))
    offered = _offers_kvm(ET.fromstring(capabilities_xml), arch)
    if virt_type == 'qemu':
        return 'qemu'
    if virt_type == 'kvm' and not offered:
        raise ValueError('the image asks for virt_type kvm and this host offers no KVM for %s guests' % arch)
    return 'kvm' if offered else 'qemu'


def _offers_kvm(caps, arch):
    for guest in caps.findall('guest'):
        arch_element = guest.find('arch')
        if arch_element is None or arch_element.get('name') != arch:
            continue
        if any(d.get('type') == 'kvm' for d in arch_element.findall('domain')):
            return True
    return False


def interface_source(network):
    """(interface type, source attribute, name) for one spec.networks entry's 'network':
    'bridge:br0' is a host bridge, anything else a libvirt network."""
    network = _text('network', network)
    if network.startswith(BRIDGE_PREFIX):
        bridge = network[len(BRIDGE_PREFIX):]
        if not bridge:
            raise ValueError('network %r names no bridge (expected bridge:NAME)' % network)
        return 'bridge', 'bridge', bridge
    if not network:
        raise ValueError('a network entry has no network name')
    return 'network', 'network', network


def _metadata(parent, spec):
    instance = _sub(_sub(parent, 'metadata'), _q('instance'))
    _sub(instance, _q('uuid'), _text('uuid', spec.uuid))
    _sub(instance, _q('name'), _text('name', spec.name))
    _sub(instance, _q('flavor'), vcpus=int(spec.vcpus), memory_mb=int(spec.memory_mb), disk_gb=int(spec.disk_gb))
    _sub(instance, _q('image'), _text('image', spec.image))
    _sub(instance, _q('storage'), _text('storage', spec.storage))
    _sub(instance, _q('hostname'), _text('hostname', spec.hostname))
    _sub(instance, _q('node'), _text('node', spec.node))
    # JSON with ensure_ascii: every control or non-ASCII character becomes a \u escape,
    # so any dict of plain values fits in XML and comes back equal.
    _sub(instance, _q('metadata'), json.dumps(spec.metadata or {}, sort_keys=True))


def _interfaces(devices, networks):
    for index, entry in enumerate(networks or []):
        if not isinstance(entry, dict):
            raise ValueError('networks[%d] must be a mapping with network and mac, got %r' % (index, entry))
        kind, attr, name = interface_source(entry.get('network'))
        interface = _sub(devices, 'interface', type=kind)
        mac = entry.get('mac')
        if mac:
            if not _MAC.match(str(mac)):
                raise ValueError('networks[%d].mac must look like 52:54:00:12:34:56, got %r' % (index, mac))
            _sub(interface, 'mac', address=str(mac).lower())
        _sub(interface, 'source', **{attr: name})
        _sub(interface, 'model', type=entry.get('model') or 'virtio')


def cdrom_bus(machine):
    """The bus of a CD-ROM on a machine type: q35 has no IDE controller, only SATA (AHCI);
    pc (i440FX) has IDE and no SATA unless one is added."""
    return 'sata' if 'q35' in (machine or '') else 'ide'


def _config_drive(devices, path, machine):
    """The config drive: a read-only CD-ROM, raw ISO. Not virtio: cloud-init finds NoCloud by
    its label on any block device, and a CD-ROM is what Nova's config drive is too."""
    bus = cdrom_bus(machine)
    disk = _sub(devices, 'disk', type='file', device='cdrom')
    _sub(disk, 'driver', name='qemu', type='raw')
    _sub(disk, 'source', file=_text('config drive path', path))
    _sub(disk, 'target', dev='sda' if bus == 'sata' else 'hda', bus=bus)
    _sub(disk, 'readonly')


def disk_cache(storage):
    """The cache mode of an instance's disk. On shared storage 'none' (O_DIRECT, no host page
    cache), as Nova: the target of a live migration reads no stale cached page, and libvirt
    then judges a move between hosts of a network or cluster filesystem safe by itself (no
    VIR_MIGRATE_UNSAFE). The directory must accept O_DIRECT (NFS, CephFS, GFS2, ext4 and XFS do).
    On local storage 'writethrough': no other host opens the file while it runs, and a block
    migration copies it through QEMU.

    Neither loses a write when QEMU is killed (a host failure) from a guest that never flushes,
    as the lab's guest whose BIOS writes its counter: QEMU runs a virtio disk whose guest did not
    negotiate flushes write-through, whatever the mode; a guest that does flush gets the safety
    it asks for."""
    return 'none' if storage == 'shared' else 'writethrough'


def build_domain(spec, disk_path, console_log, domain_kind='kvm', disk_format='qcow2', config_drive=None):
    """Domain XML of one instance (an InstanceSpec): its disk at disk_path, its serial
    console appended to console_log, one interface per spec.networks entry, and, when
    config_drive is a path, that ISO as a read-only CD-ROM.

    The disk is virtio, its cache chosen by disk_cache(spec.storage). The console log is
    opened with append='on' so that an instance on shared storage keeps one log across hosts
    (migration, evacuation).
    """
    if domain_kind not in ('kvm', 'qemu'):
        raise ValueError('domain type must be kvm or qemu, got %r' % domain_kind)
    if disk_format not in ('qcow2', 'raw'):
        raise ValueError('disk format must be qcow2 or raw, got %r' % disk_format)
    if int(spec.vcpus) < 1 or int(spec.memory_mb) < 1:
        raise ValueError('instance %s needs at least 1 vCPU and 1 MB of RAM, got %s and %s' % (spec.name, spec.vcpus, spec.memory_mb))
    domain = ET.Element('domain', type=domain_kind)
    _sub(domain, 'name', _text('name', spec.name))
    _sub(domain, 'uuid', _text('uuid', spec.uuid))
    _metadata(domain, spec)
    _sub(domain, 'memory', str(int(spec.memory_mb)), unit='MiB')
    _sub(domain, 'currentMemory', str(int(spec.memory_mb)), unit='MiB')
    _sub(domain, 'vcpu', str(int(spec.vcpus)))
    os_element = _sub(domain, 'os')
    _sub(os_element, 'type', 'hvm', arch='x86_64', machine='pc')
    _sub(os_element, 'boot', dev='hd')
    features = _sub(domain, 'features')
    _sub(features, 'acpi')  # for `shutdown`: ACPI power button
    _sub(features, 'apic')
    _sub(domain, 'clock', offset='utc')
    _sub(domain, 'on_poweroff', 'destroy')
    _sub(domain, 'on_reboot', 'restart')
    _sub(domain, 'on_crash', 'destroy')
    devices = _sub(domain, 'devices')
    disk = _sub(devices, 'disk', type='file', device='disk')
    _sub(disk, 'driver', name='qemu', type=disk_format, cache=disk_cache(spec.storage))
    _sub(disk, 'source', file=_text('disk path', disk_path))
    _sub(disk, 'target', dev='vda', bus='virtio')
    if config_drive:
        _config_drive(devices, config_drive, os_element.find('type').get('machine'))
    _interfaces(devices, spec.networks)
    serial = _sub(devices, 'serial', type='file')
    _sub(serial, 'source', path=_text('console log', console_log), append='on')
    _sub(serial, 'target', port='0')
    # The QEMU guest agent's port (libvirt picks the socket): set_admin_password talks to it.
    channel = _sub(devices, 'channel', type='unix')
    _sub(channel, 'target', type='virtio', name=GUEST_AGENT_CHANNEL)
    return ET.tostring(domain, encoding='unicode')


def _managed(root):
    instance = root.find('metadata/' + _q('instance'))
    if instance is None:
        return None
    flavor = instance.find(_q('flavor'))
    flavor_attrs = flavor.attrib if flavor is not None else {}
    result = {tag: instance.findtext(_q(tag)) or '' for tag in ('uuid', 'name', 'image', 'storage', 'hostname', 'node')}
    for key in ('vcpus', 'memory_mb', 'disk_gb'):
        result[key] = _int(flavor_attrs.get(key))
    try:
        result['metadata'] = json.loads(instance.findtext(_q('metadata')) or '{}')
    except ValueError:
        result['metadata'] = {}  # edited by hand: still ours, its metadata unreadable
    return result


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _memory_mb(element):
    if element is None:
        return 0
    scale = {'b': 1, 'bytes': 1, 'k': 1024, 'kib': 1024, 'kb': 1000, 'm': 1024 ** 2, 'mib': 1024 ** 2, 'mb': 1000 ** 2,
             'g': 1024 ** 3, 'gib': 1024 ** 3, 'gb': 1000 ** 3}.get((element.get('unit') or 'KiB').lower(), 1024)
    return _int(element.text) * scale // (1024 ** 2)


def parse_domain(xml):
    """DomainInfo of a domain's XML (virDomainGetXMLDesc)."""
    root = ET.fromstring(xml)
    disks, cdroms = [], []
    for disk in root.findall('devices/disk'):
        source = disk.find('source')
        path = (source.get('file') or source.get('dev')) if source is not None else None
        if path and disk.get('device', 'disk') == 'disk':
            disks.append(path)
        elif path and disk.get('device') == 'cdrom':
            cdroms.append(path)
    console_log = None
    for serial in root.findall('devices/serial'):
        source = serial.find('source')
        if serial.get('type') == 'file' and source is not None and source.get('path'):
            console_log = source.get('path')
            break
    return DomainInfo(
        name=root.findtext('name') or '',
        uuid=root.findtext('uuid') or '',
        vcpus=_int(root.findtext('vcpu')),
        memory_mb=_memory_mb(root.find('memory')),
        macs=[m.get('address') for m in root.findall('devices/interface/mac') if m.get('address')],
        disk_paths=disks,
        console_log=console_log,
        managed=_managed(root),
        cdrom_paths=cdroms,
        interfaces=[_interface(element) for element in root.findall('devices/interface')],
    )


def _interface(element):
    """{mac, backing} of one <interface>: a libvirt network's name, bridge:NAME, or the interface type for others."""
    source = element.find('source')
    mac = element.find('mac')
    kind = element.get('type') or ''
    if kind == 'network' and source is not None:
        backing = source.get('network') or ''
    elif kind == 'bridge' and source is not None:
        backing = BRIDGE_PREFIX + (source.get('bridge') or '')
    else:
        backing = kind
    return {'mac': (mac.get('address') or '').lower() if mac is not None else '', 'backing': backing}


def adoption_metadata(spec):
    """The <instance> element build_domain puts in a domain's metadata, for spec (uuid, name, vcpus,
    memory_mb, disk_gb, image, storage, hostname, node, metadata), as virDomainSetMetadata takes it: its
    elements without a namespace, which libvirt gives them (NAMESPACE, prefix PREFIX)."""
    holder = ET.Element('holder')
    _metadata(holder, spec)
    instance = holder.find('metadata/' + _q('instance'))
    for element in instance.iter():
        element.tag = element.tag.rpartition('}')[2]
    return ET.tostring(instance, encoding='unicode')


def power_state(state):
    """InstanceState.power_state of a virDomainState number."""
    return POWER_STATES.get(state, 'unknown')


def pool_xml(name, path, mode=None):
    """A directory storage pool on path; mode: the permissions libvirt gives the
    directory when it builds it (octal string such as '0755')."""
    pool = ET.Element('pool', type='dir')
    _sub(pool, 'name', _text('pool name', name))
    target = _sub(pool, 'target')
    _sub(target, 'path', _text('pool path', path))
    if mode:
        _sub(_sub(target, 'permissions'), 'mode', mode)
    return ET.tostring(pool, encoding='unicode')


def volume_xml(name, capacity, disk_format='raw', mode=None, backing_path=None, backing_format=None):
    """A file volume: capacity bytes in disk_format; with backing_path, a copy-on-write
    overlay on that file (qcow2 only). mode: octal permissions as a string, e.g. '0644'."""
    if backing_path and disk_format != 'qcow2':
        raise ValueError('only a qcow2 volume can have a backing file, not %s' % disk_format)
    volume = ET.Element('volume', type='file')
    _sub(volume, 'name', _text('volume name', name))
    _sub(volume, 'capacity', str(int(capacity)), unit='bytes')
    target = _sub(volume, 'target')
    _sub(target, 'format', type=disk_format)
    if mode:
        _sub(_sub(target, 'permissions'), 'mode', mode)
    if backing_path:
        backing = _sub(volume, 'backingStore')
        _sub(backing, 'path', _text('backing file', backing_path))
        _sub(backing, 'format', type=backing_format or 'raw')
    return ET.tostring(volume, encoding='unicode')


@dataclasses.dataclass
class VolumeInfo:
    """What a volume's XML says of its size, format and backing file."""

    capacity: int
    format: str
    backing_path: str | None = None
    backing_format: str | None = None


def parse_volume(xml):
    """VolumeInfo from a storage volume's XML (virStorageVolGetXMLDesc)."""
    root = ET.fromstring(xml)
    backing = root.find('backingStore')
    return VolumeInfo(
        capacity=int(root.findtext('capacity') or 0),
        format=(root.find('target/format').get('type') if root.find('target/format') is not None else 'raw'),
        backing_path=backing.findtext('path') if backing is not None else None,
        backing_format=(backing.find('format').get('type') if backing is not None and backing.find('format') is not None else None))
