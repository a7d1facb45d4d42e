# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An instance's disk captured into an image base on its KVM host, and copied to the controller
(issue 17, snapshots to images). Private to multihv.cloud: do not import.

The capture is one flattened qcow2 (the instance's overlay and the image below it, no backing
file), made where the base of the new image goes, `_base/<image>.qcow2` in the instance's
directory, through libvirt alone (no SSH, no qemu-img on the controller):

- a stopped instance: virStorageVolCreateXMLFrom, which has the host's qemu-img convert the
  disk's whole chain into the new volume;
- a running one: a block copy (virDomainBlockCopy, full, into the new volume) that QEMU keeps in
  step with the guest's writes once it is ready; then, the guest's filesystems frozen through its
  QEMU guest agent when one answers (Nova's quiesce), the job is cancelled without a pivot, which
  leaves the copy as the disk was at that moment while the guest runs on its own disk. Thawed
  whatever happens.

The base's checksum file is written last (image_cache.py: a base without it is never used), once
the file has been streamed to the controller, so that the base on the source host is complete and
what ensure_image places on the other hosts is the same file.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import SnapshotImage
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.image_cache import (
    IMAGE_FORMATS, sidecar_name, sidecar_text,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import (
    UPLOAD_CHUNK, aborting, create_volume_with, delete_named, find_volume, instance_dirs, instance_pool, refresh_pool,
)

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

# How often a block copy's readiness is looked at.
POLL_SECONDS = 0.2
# libvirt's answers that mean "no guest agent to freeze with" (none configured, none connected, none answering).
NO_AGENT = ('VIR_ERR_AGENT_UNRESPONSIVE', 'VIR_ERR_ARGUMENT_UNSUPPORTED', 'VIR_ERR_CONFIG_UNSUPPORTED', 'VIR_ERR_OPERATION_UNSUPPORTED',
            'VIR_ERR_NO_SUPPORT', 'VIR_ERR_OPERATION_INVALID')


def root_disk(domain_xml):
    """(target dev, source path) of the domain's first disk (device disk, a file): the instance's root disk."""
    for disk in ET.fromstring(domain_xml).findall('devices/disk'):
        source = disk.find('source')
        if disk.get('device', 'disk') == 'disk' and source is not None and source.get('file'):
            return disk.find('target').get('dev'), source.get('file')
    raise errors.DriverError('the domain has no file disk to capture')


def mirror_ready(domain_xml, target):
    """True once the block copy of disk `target` says it is in step (`<mirror ready='yes'>` in the live XML)."""
    for disk in ET.fromstring(domain_xml).findall('devices/disk'):
        node = disk.find('target')
        if node is not None and node.get('dev') == target:
            mirror = disk.find('mirror')
            return mirror is not None and mirror.get('ready') == 'yes'
    return False


def copy_xml(path):
    """The destination of a block copy: the qcow2 file the new base volume is."""
    disk = ET.Element('disk', type='file')
    ET.SubElement(disk, 'source', file=path)
    ET.SubElement(disk, 'driver', name='qemu', type='qcow2')
    return ET.tostring(disk, encoding='unicode')


def _no_agent(exc):
    return any(exc.get_error_code() == getattr(libvirt, name, None) for name in NO_AGENT)


class Capture:
    """One capture of instance `inst_uuid` (its domain and DomainInfo) on a host, into base `image`.
    base_pool(storage) is the ImageCache's pool of that storage's _base (built if missing); what: the host in messages."""

    def __init__(self, conn, host, domain, image, base_pool, what, deadline):
        self.conn, self.host, self.domain, self.image = conn, host, domain, image
        self.base_pool, self.what, self.deadline = base_pool, what, deadline
        self.volume_name = '%s.qcow2' % image

    def run(self, dest, quiesce):
        """The SnapshotImage; on failure the new base and dest are removed before raising."""
        target, disk_path = root_disk(self.domain.XMLDesc(0))
        storage = self._storage_of(disk_path)
        pool = self.base_pool(storage)
        refresh_pool(pool)
        there = [n for f in IMAGE_FORMATS for n in ('%s.%s' % (self.image, f),) if find_volume(pool, n) is not None]
        if there:
            raise errors.DriverError('image %s is on %s already (%s); nothing was changed' % (self.image, self.what, ', '.join(there)))
        disks = instance_pool(self.conn, posixpath.dirname(posixpath.normpath(disk_path)))
        refresh_pool(disks)  # instance pools are transient: a libvirtd restart forgets them and their volumes
        source = find_volume(disks, posixpath.basename(disk_path))
        if source is None:
            raise errors.DriverError('its disk %s is not on %s; nothing was changed' % (disk_path, self.what))
        xml = domxml.volume_xml(self.volume_name, source.info()[1], 'qcow2', mode='0644')
        try:
            if self.domain.isActive():
                volume = pool.createXML(xml, 0)
                quiesced = self._block_copy(target, volume.path(), quiesce)
            else:
                # qemu-img convert on the host: the whole backing chain read into one file.
                volume, quiesced = pool.createXMLFrom(xml, source, 0), None
            size, digest = download_to(self.conn, volume, dest)
            create_volume_with(self.conn, pool, sidecar_name(self.volume_name), sidecar_text(self.volume_name, digest).encode(),
                               mode='0644')
        except BaseException:
            delete_named(pool, sidecar_name(self.volume_name))
            delete_named(pool, self.volume_name)
            raise
        return SnapshotImage(disk_format='qcow2', size=size, sha256=digest, quiesced=quiesced)

    def _storage_of(self, disk_path):
        directory = posixpath.dirname(posixpath.normpath(disk_path))
        for storage, path in (('local', self.host.instance_path), ('shared', self.host.shared_instance_path)):
            if path and posixpath.normpath(path) == directory:
                return storage
        raise errors.DriverError('its disk %s is in none of the instance directories of %s (%s); nothing was changed'
                                 % (disk_path, self.what, ', '.join(sorted(instance_dirs(self.host)))))

    def _block_copy(self, target, path, quiesce):
        """Copy the running disk into path; True/False: whether the guest was frozen for the cut."""
        flags = libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
        self.domain.blockCopy(target, copy_xml(path), {}, flags)
        try:
            while not mirror_ready(self.domain.XMLDesc(0), target):
                if not self.domain.blockJobInfo(target, 0):
                    raise errors.DriverError('the block copy of disk %s ended before it was in step' % target)
                if time.monotonic() > self.deadline:
                    raise errors.DriverError('the block copy of disk %s was not in step in time' % target)
                time.sleep(POLL_SECONDS)
            frozen = self._freeze() if quiesce else False
            try:
                self.domain.blockJobAbort(target, 0)  # no pivot: the copy keeps the disk as it is now
            finally:
                if frozen:
                    self.domain.fsThaw()
            return frozen
        except BaseException:
            try:
                self.domain.blockJobAbort(target, 0)
            except libvirt.libvirtError:
                pass  # no job any more: what matters is the error being raised
            raise

    def _freeze(self):
        """True when the guest agent froze the guest's filesystems; False when no agent answers."""
        try:
            self.domain.fsFreeze()
            return True
        except libvirt.libvirtError as exc:
            if _no_agent(exc):
                return False
            raise


def download_to(conn, volume, dest, progress=None, deadline=None):
    """Stream a whole volume into the new controller file dest (never one that exists: 'x'); (bytes, sha256
    hex). A failed download removes the part of dest it wrote. progress(bytes so far) after each chunk, on
    the caller's thread; deadline (time.monotonic()): errors.DriverError once passed (a move between
    hypervisor types streams on the caller's thread, outside call_within, for its progress)."""
    digest = hashlib.sha256()
    size = 0
    with open(dest, 'xb') as handle:
        try:
            stream = conn.newStream(0)
            volume.download(stream, 0, 0, 0)
            with aborting(stream):
                while True:
                    chunk = stream.recv(UPLOAD_CHUNK)
                    if not chunk:
                        break
                    handle.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(size)
                    if deadline is not None and time.monotonic() > deadline:
                        raise errors.DriverError('the download of %s was not done in time (%d bytes so far)' % (volume.name(), size))
                stream.finish()
        except BaseException:
            os.remove(dest)
            raise
    return size, digest.hexdigest()


__all__ = ['Capture', 'copy_xml', 'download_to', 'mirror_ready', 'root_disk']
