# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on a KVM host, through libvirt's storage API: the instance directories the cloud
file gives a host, storage pools on them, volumes, and streams that upload and download
their bytes. Private to multihv.cloud: do not import.

Everything goes through libvirt, never SSH, so it works on any URI: files on the host
are volumes of storage pools, uploaded and deleted with the storage API. The driver, the
image cache and migration share these.
"""

from __future__ import annotations

import contextlib
import posixpath
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import STORAGE_MODES
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import instance_file_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

MIB = 1024 * 1024
GIB = 1024 * MIB
UPLOAD_CHUNK = MIB
# An instance's files in its instance directory, named after its uuid (base.instance_file_uuid) so that
# listing, leftover and orphan handling and destroy cover every one of them.
DISK_SUFFIX = '.qcow2'
CONSOLE_LOG_SUFFIX = '.console.log'
CONFIG_DRIVE_SUFFIX = '.config.iso'


# Instance directories ------------------------------------------------------------------

def instance_dir(host, storage):
    """The host-side directory of instance disks for storage 'local' or 'shared' (no I/O)."""
    if storage not in STORAGE_MODES:
        raise errors.DriverError('storage must be local or shared, got %r' % (storage,))
    if storage == 'local':
        return host.instance_path
    if not host.shared_instance_path:
        raise errors.DriverError('KVM host %s has no shared_instance_path: it cannot hold instances on shared storage'
                                 % host.name)
    return host.shared_instance_path


def storages(host):
    """The storage modes host has a directory for: local, then shared when the cloud file gives one."""
    return ['local', 'shared'] if host.shared_instance_path else ['local']


def instance_file_names(inst_uuid):
    """(disk, console log, config drive): the names of instance inst_uuid's files in its directory."""
    return inst_uuid + DISK_SUFFIX, inst_uuid + CONSOLE_LOG_SUFFIX, inst_uuid + CONFIG_DRIVE_SUFFIX


def instance_dirs(host):
    """Every instance directory of host, normalised."""
    return set(posixpath.normpath(instance_dir(host, s)) for s in storages(host))


def delete_instance_files(conn, host, paths):
    """Delete the files among paths that lie directly in one of host's instance directories;
    never anything else (a domain edited to use some other file keeps that file)."""
    ours = instance_dirs(host)
    pools = {}
    for path in paths:
        directory = posixpath.dirname(posixpath.normpath(path))
        if directory not in ours:
            continue
        if directory not in pools:
            pools[directory] = instance_pool(conn, directory)
            refresh_pool(pools[directory])
        delete_named(pools[directory], posixpath.basename(path))


def instance_files(conn, host):
    """[(storage, name, path)] of every file named after an instance (base.instance_file_uuid) in
    host's instance directories, each pool rescanned first (files another host or QEMU made);
    _base, heartbeats and anything else there are left out."""
    found = []
    for storage in storages(host):
        directory = posixpath.normpath(instance_dir(host, storage))
        pool = instance_pool(conn, directory)
        refresh_pool(pool)
        for name in sorted(pool.listVolumes()):
            if instance_file_uuid(name) is not None:
                found.append((storage, name, posixpath.join(directory, name)))
    return found


def delete_files_of(conn, host, storage, inst_uuid):
    """Delete the files named after instance inst_uuid in host's `storage` directory; the names deleted."""
    pool = instance_pool(conn, posixpath.normpath(instance_dir(host, storage)))
    refresh_pool(pool)
    deleted = []
    for name in sorted(pool.listVolumes()):
        if instance_file_uuid(name) == inst_uuid and delete_named(pool, name):
            deleted.append(name)
    return deleted


# Pools ---------------------------------------------------------------------------------

def _pool_at(conn, path):
    """The active storage pool whose target is `path`, if the host has one."""
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            if ET.fromstring(pool.XMLDesc(0)).findtext('target/path') == path:
                return pool
        except libvirt.libvirtError:
            continue  # gone meanwhile (someone else's probe)
    return None


def pool_name(path):
    """The name of the lab-wide transient pool multihv keeps on an instance path."""
    return 'multihv-' + uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'file://' + path).hex[:16]


def instance_pool(conn, path, build=False):
    """An active storage pool on `path`: one the host already has there, else a transient
    one multihv creates under a name derived from the path and leaves active (it holds no
    configuration on the host and is gone when libvirtd restarts). build: create the
    directory on the host if it is missing (the _base directories).

    libvirt allows one active pool per path, so concurrent callers must agree on the
    name: whoever loses the race to create it uses the winner's.
    """
    existing = _pool_at(conn, path)
    if existing is not None:
        return existing
    name = pool_name(path)
    try:
        return conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        pass
    flags = libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if build else 0
    # Built directories are readable by all, like Nova's _base: QEMU may run as another user.
    xml = domxml.pool_xml(name, path, mode='0755' if build else None)
    try:
        return conn.storagePoolCreateXML(xml, flags)
    except libvirt.libvirtError as exc:
        pool = _pool_at(conn, path)  # another caller's pool won
        if pool is None:
            raise errors.DriverError('cannot open the storage at %s: %s' % (path, exc.get_error_message()))
        return pool


def disk_of(conn, path):
    """(capacity, available) bytes of the filesystem holding `path`, seen from the host
    itself through a storage pool (no SSH, works on any URI)."""
    pool = instance_pool(conn, path)
    pool.refresh(0)
    info = pool.info()  # state, capacity, allocation, available
    return info[1], info[3]


def refresh_pool(pool):
    """Rescan a pool's directory: files other hosts (shared storage) or QEMU (console
    logs) made are volumes only after this. libvirt refuses while the pool has a volume
    being built; such a job is short, so retry for a little while."""
    for attempt in range(20):
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError:
            if attempt == 19:
                raise
            time.sleep(0.25)


# Volumes -------------------------------------------------------------------------------

def found_or_none(lookup, arg, missing):
    """lookup(arg), or None when libvirt answers with the error code `missing` (no such object)."""
    try:
        return lookup(arg)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == missing:
            return None
        raise


def find_volume(pool, name):
    """The pool's volume `name`, or None."""
    return found_or_none(pool.storageVolLookupByName, name, libvirt.VIR_ERR_NO_STORAGE_VOL)


def physical_size(vol):
    """Bytes of the volume's file (not its virtual size, not its allocation)."""
    return vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]


def delete_named(pool, name):
    """Delete the pool's volume `name` if it exists; True when it did."""
    vol = find_volume(pool, name)
    if vol is None:
        return False
    delete_volume(vol)
    return True


def create_volume_with(conn, pool, name, data, mode='0600'):
    """A new raw volume `name` in pool holding the bytes `data` (uploaded through a stream); the
    volume. Removed again when the upload fails. mode 0600: data may be secret (a config drive)."""
    vol = pool.createXML(domxml.volume_xml(name, len(data), 'raw', mode=mode), 0)
    try:
        sent = upload(conn, vol, BytesSource(data), len(data))
        if sent != len(data):
            raise errors.DriverError('uploading %s stopped after %d of %d bytes' % (name, sent, len(data)))
    except BaseException:
        delete_volume(vol)
        raise
    return vol


def delete_volume(vol):
    """Delete a volume; no error when it is gone already."""
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise


# Storage heartbeats ----------------------------------------------------------------------

def heartbeat_name(node):
    """The file in a shared instance directory where node's writer (the kvm_host role) puts the
    time, in seconds since the epoch, every few seconds."""
    return 'multihv-heartbeat-%s' % node


def read_heartbeat(conn, path, node):
    """The time node's heartbeat file in directory `path` says (seconds since the epoch), or None
    when there is none or it says no time."""
    pool = instance_pool(conn, path)
    refresh_pool(pool)
    vol = find_volume(pool, heartbeat_name(node))
    if vol is None:
        return None
    words = download(conn, vol, limit=64).split()
    try:
        return float(words[0])
    except (IndexError, ValueError):
        return None


# Streams -------------------------------------------------------------------------------

@contextlib.contextmanager
def aborting(stream):
    """Abort the stream when the block fails, then let the failure through."""
    try:
        yield stream
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass  # the stream already failed; the error that matters is being raised
        raise


def upload(conn, vol, data_source, size):
    """Write `size` bytes from data_source (anything with read(n), such as a binary file) into
    vol, in chunks through a stream; return the number of bytes sent."""
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    sent = 0
    with aborting(stream):
        while True:
            chunk = memoryview(data_source.read(UPLOAD_CHUNK))
            if not chunk:
                break
            while chunk:
                count = stream.send(chunk.tobytes())
                sent += count
                chunk = chunk[count:]
        stream.finish()
    return sent


def download(conn, vol, limit=4096):
    """The first `limit` bytes of a (small) volume."""
    stream = conn.newStream(0)
    vol.download(stream, 0, limit, 0)
    data = b''
    with aborting(stream):
        while len(data) < limit:
            chunk = stream.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
        stream.finish()
    return data


class BytesSource:
    """A read(n) source over bytes, for upload."""

    def __init__(self, data):
        self.data, self.offset = data, 0

    def read(self, count):
        chunk = self.data[self.offset:self.offset + count]
        self.offset += len(chunk)
        return chunk


__all__ = ['CONFIG_DRIVE_SUFFIX', 'CONSOLE_LOG_SUFFIX', 'DISK_SUFFIX', 'GIB', 'MIB', 'UPLOAD_CHUNK', 'BytesSource', 'aborting',
           'create_volume_with', 'delete_files_of', 'delete_instance_files', 'delete_named',
           'delete_volume', 'disk_of', 'download', 'find_volume', 'found_or_none', 'instance_dir', 'instance_dirs', 'instance_file_names',
           'instance_files', 'instance_pool',
           'physical_size', 'pool_name', 'refresh_pool', 'storages', 'upload']
