# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image cache of one KVM host: base images that instance disks are overlays on.
Private to multihv.cloud: do not import.

Layout on a host, after Nova's (a shared path is the same directory on every host of
KvmHost.shared_with):

    <instance_path or shared_instance_path>/_base/<image>.<qcow2|raw>   the image
    <same>/_base/<image>.<format>.sha256      its sha256 (`sha256sum -c` format), written
                                              last: a base without it is incomplete
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import struct
import threading
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import NAME
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import (
    MIB, UPLOAD_CHUNK, BytesSource, delete_named, download, find_volume, instance_dir, instance_pool, physical_size,
    refresh_pool, storages, upload,
)

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

BASE_DIR = '_base'
IMAGE_FORMATS = ('qcow2', 'raw')
# An upload gets one more second than other work per UPLOAD_RATE bytes.
UPLOAD_RATE = 16 * MIB
QCOW2_MAGIC = b'QFI\xfb'

# ensure_image from several threads of one process (boot_many) must not upload the same
# base at once; keyed by the host-side path, per URI unless the path is shared storage.
# Two processes are not serialised: the core's registry locks are for that.
_IMAGE_LOCKS = {}
_IMAGE_LOCKS_GUARD = threading.Lock()


def _image_lock(key):
    with _IMAGE_LOCKS_GUARD:
        return _IMAGE_LOCKS.setdefault(key, threading.Lock())


def _locked(key, work, conn):
    # Taken on the worker thread: a caller that gave up waiting must not release it.
    with _image_lock(key):
        return work(conn)


# (size, sha256) of image files this process has read, by file identity and modification time: a boot checks an
# image's base once per host it uses, and a check then an upload would read a large file twice.
_DIGESTS = {}


def _local_image(name, source_path, disk_format):
    """(size, sha256 hex) of the image file on this machine, after checking that it is
    what disk_format says: a qcow2 with a backing file would not work once copied alone,
    and a qcow2 stored as raw would let the guest read its own header as data. Read once
    per process while the file stays as it was (same inode, size and modification time)."""
    try:
        stat = os.stat(source_path)
    except OSError as exc:
        raise errors.DriverError('image %s: cannot read %s: %s; nothing was uploaded' % (name, source_path, exc.strerror or exc))
    key = (os.path.abspath(source_path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, disk_format)
    if key not in _DIGESTS:
        _DIGESTS[key] = _read_image(name, source_path, disk_format)
    return _DIGESTS[key]


def _read_image(name, source_path, disk_format):
    try:
        with open(source_path, 'rb') as handle:
            header = handle.read(16)
            digest = hashlib.sha256(header)
            size = len(header)
            for block in iter(functools.partial(handle.read, UPLOAD_CHUNK), b''):
                digest.update(block)
                size += len(block)
    except (IOError, OSError) as exc:
        raise errors.DriverError('image %s: cannot read %s: %s; nothing was uploaded' % (name, source_path, exc.strerror or exc))
    is_qcow2 = header[:4] == QCOW2_MAGIC
    if disk_format == 'qcow2':
        if not is_qcow2:
            raise errors.DriverError('image %s: %s is not a qcow2 file; nothing was uploaded' % (name, source_path))
        if len(header) == 16 and struct.unpack('>Q', header[8:16])[0] != 0:
            raise errors.DriverError('image %s: %s has a backing file; flatten it (qemu-img convert) first; nothing was uploaded'
                                     % (name, source_path))
    elif is_qcow2:
        raise errors.DriverError('image %s: %s is a qcow2 file, not raw; nothing was uploaded' % (name, source_path))
    return size, digest.hexdigest()


def _check_image_args(name, disk_format):
    if not isinstance(name, str) or not NAME.match(name):
        raise errors.DriverError('image name %r must be letters, digits, ".", "_" or "-"' % (name,))
    if disk_format not in IMAGE_FORMATS:
        raise errors.DriverError('image %s: disk format must be one of %s, got %r' % (name, ', '.join(IMAGE_FORMATS), disk_format))


def sidecar_name(volume_name):
    """The name of a base's checksum file."""
    return volume_name + '.sha256'


def sidecar_text(volume_name, digest):
    """A base's checksum file's content (`sha256sum -c` format)."""
    return '%s  %s\n' % (digest, volume_name)


def _recorded_digest(conn, pool, volume_name):
    sidecar = find_volume(pool, sidecar_name(volume_name))
    if sidecar is None:
        return None
    text = download(conn, sidecar).decode('ascii', 'replace').split()
    return text[0] if text else None


class ImageCache:
    """The base images in every instance directory (local, and shared if any) of one host.

    connection: the host's HostConnection (its KvmHost and name in messages); run: the
    driver's run(doing, work(conn), extra_seconds), which bounds each piece of work.
    """

    def __init__(self, connection, run):
        self.connection = connection
        self.host = connection.host
        self._run = run

    def _base_dir(self, storage):
        return posixpath.join(instance_dir(self.host, storage), BASE_DIR)

    def _base_pool(self, conn, storage, build):
        return instance_pool(conn, self._base_dir(storage), build=build)

    def base_pool_of(self, conn, storage, build=False):
        """The storage pool of the _base directory for storage ('local' / 'shared'); build: make the directory if missing."""
        return self._base_pool(conn, storage, build)

    def path(self, name, disk_format, storage='local'):
        """The host-side path of an image's base volume (no I/O)."""
        _check_image_args(name, disk_format)
        return posixpath.join(self._base_dir(storage), '%s.%s' % (name, disk_format))

    def _on_each_base(self, doing, name, work, extra_seconds=0.0):
        """work(conn, storage=...) once per _base directory of the host, under that base's lock
        for image `name`; True when any of them changed."""
        changed = False
        for storage in storages(self.host):
            directory = self._base_dir(storage)
            key = (directory, name) if storage == 'shared' else (self.host.uri, directory, name)
            locked = functools.partial(_locked, key, functools.partial(work, storage=storage))
            changed = self._run(doing % (name, directory), locked, extra_seconds) or changed
        return changed

    def ensure(self, name, source_path, disk_format, check_mode=False):
        """Make the image file at source_path (on this machine) a base volume
        `<name>.<disk_format>` in every _base of the host; True when it was (check_mode:
        would be) uploaded. A base whose size and recorded sha256 match the file is left as
        it is; one that differs is replaced, unless instance disks use it as their backing
        file: rewriting it would corrupt them, so it is refused."""
        _check_image_args(name, disk_format)
        size, digest = _local_image(name, source_path, disk_format)
        work = functools.partial(self._ensure_base, name=name, source_path=source_path, disk_format=disk_format,
                                 size=size, digest=digest, check_mode=check_mode)
        return self._on_each_base('placing image %s in %s', name, work, size / UPLOAD_RATE)

    def _ensure_base(self, conn, storage, name, source_path, disk_format, size, digest, check_mode):
        try:
            pool = self._base_pool(conn, storage, build=not check_mode)
        except errors.DriverError:
            if check_mode:
                return True  # no _base directory yet: the upload would make it
            raise
        refresh_pool(pool)
        volume_name = '%s.%s' % (name, disk_format)
        volume = find_volume(pool, volume_name)
        if volume is not None and physical_size(volume) == size and _recorded_digest(conn, pool, volume_name) == digest:
            return False
        if check_mode:
            return True
        if volume is not None:
            self._refuse_if_in_use(conn, storage, name, volume.path(), 'it differs from its source, but')
        # The checksum goes first and comes back last: a base without it is never used.
        delete_named(pool, sidecar_name(volume_name))
        delete_named(pool, volume_name)
        volume = pool.createXML(domxml.volume_xml(volume_name, size, 'raw', mode='0644'), 0)
        try:
            self._upload_image(conn, volume, name, source_path, size)
            text = sidecar_text(volume_name, digest).encode()
            sidecar = pool.createXML(domxml.volume_xml(sidecar_name(volume_name), len(text), 'raw', mode='0644'), 0)
            upload(conn, sidecar, BytesSource(text), len(text))
        except BaseException:
            delete_named(pool, sidecar_name(volume_name))
            delete_named(pool, volume_name)
            raise
        return True

    def remove(self, name, check_mode=False):
        """Delete the image's base volumes (every format) and checksums from every _base of
        the host; True when there was (check_mode: is) something to delete. A base that
        instance disks use is refused, leaving everything of that image in place."""
        _check_image_args(name, IMAGE_FORMATS[0])
        work = functools.partial(self._remove_base, name=name, check_mode=check_mode)
        return self._on_each_base('removing image %s from %s', name, work)

    def _remove_base(self, conn, storage, name, check_mode):
        try:
            pool = self._base_pool(conn, storage, build=False)
        except errors.DriverError:
            return False  # no _base directory: no image either
        refresh_pool(pool)
        names = set(pool.listVolumes())
        ours = [n for f in IMAGE_FORMATS for n in ('%s.%s' % (name, f), sidecar_name('%s.%s' % (name, f))) if n in names]
        if not ours:
            return False
        for volume_name in ours:  # check mode too: it must fail the way the removal would
            if not volume_name.endswith('.sha256'):
                self._refuse_if_in_use(conn, storage, name, pool.storageVolLookupByName(volume_name).path(),
                                       'it cannot be removed')
        if check_mode:
            return True
        for volume_name in ours:  # checksums first: a half-removed base is never used
            if volume_name.endswith('.sha256'):
                delete_named(pool, volume_name)
        for volume_name in ours:
            delete_named(pool, volume_name)
        return True

    def _upload_image(self, conn, volume, name, source_path, size):
        with open(source_path, 'rb') as handle:
            sent = upload(conn, volume, handle, size)
        stored = physical_size(volume)
        if sent != size or stored != size:
            raise errors.DriverError('image %s: %s changed while it was uploaded to %s (%d bytes expected, %d sent, %d stored); '
                                     'the partial copy was removed' % (name, source_path, self.connection.what(), size, sent, stored))

    def _refuse_if_in_use(self, conn, storage, name, base_path, why):
        """errors.ImageInUse when instance disks in the instance directory have base_path as their
        backing file (on shared storage that covers every host's instances); why begins the reason."""
        pool = instance_pool(conn, instance_dir(self.host, storage))
        refresh_pool(pool)
        users = []
        for volume in pool.listAllVolumes(0):
            if not volume.name().endswith('.qcow2'):
                continue
            try:
                backing = ET.fromstring(volume.XMLDesc(0)).findtext('backingStore/path')
            except libvirt.libvirtError:
                continue  # deleted meanwhile
            if backing == base_path:
                users.append(volume.name()[:-len('.qcow2')])
        if users:
            raise errors.ImageInUse('image %s on %s: %s it is the base of the disks of instances %s; it was left untouched'
                                    % (name, self.connection.what(), why, ', '.join(sorted(users))), sorted(users))

    def base_volume(self, conn, storage, image):
        """(path, format, virtual size) of an image's complete base volume for storage;
        errors.DriverError when there is none (or more than one)."""
        where = self._base_dir(storage)
        try:
            pool = self._base_pool(conn, storage, build=False)
        except errors.DriverError:
            pool = None
        names = set()
        if pool is not None:
            refresh_pool(pool)
            names = set(pool.listVolumes())
        found = ['%s.%s' % (image, f) for f in IMAGE_FORMATS
                 if '%s.%s' % (image, f) in names and sidecar_name('%s.%s' % (image, f)) in names]
        if not found:
            raise errors.DriverError('image %s is not on %s (no complete %s.qcow2 or %s.raw in %s): place it with ensure_image'
                                     % (image, self.connection.what(), image, image, where))
        if len(found) > 1:
            raise errors.DriverError('image %s is in %s as both %s: remove the stale one' % (image, where, ' and '.join(found)))
        volume = pool.storageVolLookupByName(found[0])
        return volume.path(), found[0].rsplit('.', 1)[1], volume.info()[1]


__all__ = ['BASE_DIR', 'IMAGE_FORMATS', 'UPLOAD_RATE', 'ImageCache', 'sidecar_name', 'sidecar_text']
