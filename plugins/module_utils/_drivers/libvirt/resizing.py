# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resizing a KVM instance on its host: the domain redefined with new vCPUs and RAM, its disk grown,
a byte copy of the old disk kept beside it (`<uuid>.resize.qcow2`) until the resize is confirmed
(the copy deleted) or reverted (the copy put back as the disk). Private to multihv.cloud: do not import.

QEMU cannot change a running guest's vCPU or RAM maximum, nor safely copy a disk in use: the domain
is stopped (hard, as a cold migration does) for the change and started again when it ran.
"""

from __future__ import annotations

import posixpath
import time
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import migration as moving
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.domains import ignore_not_running, managed_domain
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import (
    GIB, delete_volume, find_volume, physical_size, refresh_pool,
)

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

KEPT_SUFFIX = '.resize.qcow2'


def kept_path(disk_path, inst_uuid):
    """Where the copy of the old disk of instance inst_uuid is kept: beside its disk."""
    return posixpath.join(posixpath.dirname(disk_path), inst_uuid + KEPT_SUFFIX)


def _domain(conn, inst_uuid, what):
    domain, info = managed_domain(conn, inst_uuid, what)
    if domain is None:
        raise errors.NotFound('instance %s is not defined on %s; nothing was changed' % (inst_uuid, what))
    if not info.disk_paths:
        raise errors.DriverError('instance %s on %s has no disk; nothing was changed' % (inst_uuid, what))
    return domain, info


def sized_xml(xml, vcpus, memory_mb):
    """The domain's XML with vcpus and memory_mb (and its multihv metadata's flavor saying so)."""
    root = ET.fromstring(xml)
    for tag in ('memory', 'currentMemory'):
        element = root.find(tag)
        if element is None:
            element = ET.SubElement(root, tag)
        element.text, element.attrib = str(int(memory_mb)), {'unit': 'MiB'}
    vcpu = root.find('vcpu')
    if vcpu is None:
        vcpu = ET.SubElement(root, 'vcpu')
    vcpu.text = str(int(vcpus))
    vcpu.attrib.pop('current', None)
    flavor = root.find('metadata/%s/%s' % (domxml._q('instance'), domxml._q('flavor')))  # pylint: disable=protected-access
    if flavor is not None:
        flavor.set('vcpus', str(int(vcpus)))
        flavor.set('memory_mb', str(int(memory_mb)))
    return ET.tostring(root, encoding='unicode')


def _copy(conn, volume, pool, name, deadline):
    """A byte copy of volume (qcow2 header, backing file path and all) as `name` in pool."""
    size = physical_size(volume)
    copy = pool.createXML(domxml.volume_xml(name, size, 'raw', mode='0600'), 0)
    try:
        moving._stream_copy(conn, volume, conn, copy, size, deadline)  # pylint: disable=protected-access
    except BaseException:
        delete_volume(copy)
        raise
    return copy


def _stopped(domain):
    """True when the domain ran (it is stopped now)."""
    if domain.isActive():
        ignore_not_running(domain.destroy)
        return True
    return False


def resize(conn, what, inst_uuid, vcpus, memory_mb, disk_gb, seconds):
    """Resize instance inst_uuid (see the module's docstring); the domain after. Whatever fails, the domain
    is left with its old definition, disk and power state."""
    domain, info = _domain(conn, inst_uuid, what)
    disk = conn.storageVolLookupByPath(info.disk_paths[0])
    pool = disk.storagePoolLookupByVolume()
    refresh_pool(pool)
    kept_name = posixpath.basename(kept_path(info.disk_paths[0], inst_uuid))
    old_xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    ran = _stopped(domain)
    made = None
    try:
        if find_volume(pool, kept_name) is None:  # one kept by an earlier resize not confirmed yet is the old disk already
            made = _copy(conn, disk, pool, kept_name, time.monotonic() + seconds)
        capacity = disk.info()[1]
        if int(disk_gb) * GIB > capacity:
            disk.resize(int(disk_gb) * GIB, 0)  # grown only: never shrunk
        domain = conn.defineXML(sized_xml(old_xml, vcpus, memory_mb))
        if ran:
            domain.create()
    except BaseException:
        conn.defineXML(old_xml)
        if made is not None:
            # The disk may have been grown: the kept copy is the old one, put back before it goes.
            _put_back(conn, pool, info.disk_paths[0], made, seconds)
        if ran and not domain.isActive():
            domain.create()
        raise
    return domain


def _put_back(conn, pool, disk_path, kept, seconds):
    """The kept copy made the disk again (its bytes copied over a new volume at the disk's path), then deleted."""
    name = posixpath.basename(disk_path)
    old = find_volume(pool, name)
    if old is not None:
        delete_volume(old)
    _copy(conn, kept, pool, name, time.monotonic() + seconds)
    delete_volume(kept)
    # The copy was made as raw bytes: a rescan makes libvirt read its qcow2 header (format, capacity) again.
    refresh_pool(pool)


def confirm(conn, what, inst_uuid):
    """Delete the kept copy of the old disk, if any (idempotent)."""
    _domain_, info = _domain(conn, inst_uuid, what)
    disk = conn.storageVolLookupByPath(info.disk_paths[0])
    pool = disk.storagePoolLookupByVolume()
    refresh_pool(pool)
    kept = find_volume(pool, posixpath.basename(kept_path(info.disk_paths[0], inst_uuid)))
    if kept is not None:
        delete_volume(kept)


def revert(conn, what, inst_uuid, vcpus, memory_mb, seconds):
    """The old disk back when a copy was kept, the domain given vcpus and memory_mb, in the power state it
    had; the domain after. Idempotent."""
    domain, info = _domain(conn, inst_uuid, what)
    disk = conn.storageVolLookupByPath(info.disk_paths[0])
    pool = disk.storagePoolLookupByVolume()
    refresh_pool(pool)
    kept = find_volume(pool, posixpath.basename(kept_path(info.disk_paths[0], inst_uuid)))
    xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    if kept is None and info.vcpus == int(vcpus) and info.memory_mb == int(memory_mb):
        return domain  # back already (or never resized)
    ran = _stopped(domain)
    if kept is not None:
        _put_back(conn, pool, info.disk_paths[0], kept, seconds)
    domain = conn.defineXML(sized_xml(xml, vcpus, memory_mb))
    if ran:
        domain.create()
    return domain


__all__ = ['KEPT_SUFFIX', 'confirm', 'kept_path', 'resize', 'revert', 'sized_xml']
