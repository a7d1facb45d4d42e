# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The KVM compute driver: one libvirt host is one node. Private to multihv.cloud: do not import.

Every call to the host runs with a deadline: libvirt's client blocks for as long
as TCP or the RPC handshake does, and one dead host must be reported down, not
stall the whole cloud. Connecting and probing get KvmHost.timeout (short);
operations that do real work (upload an image, spawn, destroy, power) get a
longer one once the host has answered (see LibvirtDriver._run).

Everything goes through libvirt, never SSH, so it works on any URI: files on the
host are volumes of storage pools, uploaded and deleted with the storage API.

Layout on a host, after Nova's (a shared path is the same directory on every
host of KvmHost.shared_with):

    <instance_path or shared_instance_path>/_base/<image>.<qcow2|raw>   the image
    <same>/_base/<image>.<format>.sha256      its sha256 (`sha256sum -c` format), written
                                              last: a base without it is incomplete
    <same>/<uuid>.qcow2                       an instance's disk, an overlay on the base
    <same>/<uuid>.console.log                 its serial console, next to its disk
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import posixpath
import struct
import threading
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import NAME
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import (
    HYPERVISOR_KVM, ComputeDriver, HostResources, InstanceState, NodeResources, call_within,
)

try:
    import libvirt
    HAS_LIBVIRT = True
except ImportError:  # pragma: no cover - reported when used
    HAS_LIBVIRT = False


def _quiet(_ctx, _err):
    """libvirt prints every error on stderr by default; ours are raised, with context."""


if HAS_LIBVIRT:
    libvirt.registerErrorHandler(_quiet, None)

MIB = 1024 * 1024
GIB = 1024 * MIB

BASE_DIR = '_base'
IMAGE_FORMATS = ('qcow2', 'raw')
STORAGES = ('local', 'shared')
POWER_ACTIONS = ('start', 'stop', 'shutdown', 'reboot')
# Work that is not a probe (spawn, destroy, power, an upload's set-up) gets at least this
# long once the host has answered; an upload gets one more second per UPLOAD_RATE bytes.
WORK_TIMEOUT = 60.0
UPLOAD_RATE = 16 * MIB
UPLOAD_CHUNK = MIB
QCOW2_MAGIC = b'QFI\xfb'

# ensure_image from several threads of one process (boot_many) must not upload the same
# base at once; keyed by the host-side path, per URI unless the path is shared storage.
# Two processes are not serialised: the core's registry locks are for that.
_IMAGE_LOCKS = {}
_IMAGE_LOCKS_GUARD = threading.Lock()


def _image_lock(key):
    with _IMAGE_LOCKS_GUARD:
        return _IMAGE_LOCKS.setdefault(key, threading.Lock())


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


def _disk_of(conn, path):
    """(capacity, available) bytes of the filesystem holding `path`, seen from the host
    itself through a storage pool (no SSH, works on any URI)."""
    pool = instance_pool(conn, path)
    pool.refresh(0)
    info = pool.info()  # state, capacity, allocation, available
    return info[1], info[3]


def _refresh(pool):
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


def _found_or_none(lookup, arg, missing):
    """lookup(arg), or None when libvirt answers with the error code `missing` (no such object)."""
    try:
        return lookup(arg)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == missing:
            return None
        raise


def _volume(pool, name):
    """The pool's volume `name`, or None."""
    return _found_or_none(pool.storageVolLookupByName, name, libvirt.VIR_ERR_NO_STORAGE_VOL)


def _physical_size(volume):
    """Bytes of the volume's file (not its virtual size, not its allocation)."""
    return volume.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]


@contextlib.contextmanager
def _aborting(stream):
    """Abort the stream when the block fails, then let the failure through."""
    try:
        yield stream
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass  # the stream already failed; the error that matters is being raised
        raise


def _upload(conn, volume, data_source, size):
    """Write `size` bytes from data_source (anything with read(n), such as a binary file) into
    volume, in chunks through a stream; return the number of bytes sent."""
    stream = conn.newStream(0)
    volume.upload(stream, 0, size, 0)
    sent = 0
    with _aborting(stream):
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


def _download(conn, volume, limit=4096):
    """The first `limit` bytes of a (small) volume."""
    stream = conn.newStream(0)
    volume.download(stream, 0, limit, 0)
    data = b''
    with _aborting(stream):
        while len(data) < limit:
            chunk = stream.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
        stream.finish()
    return data


class _BytesSource:
    """A read(n) source over bytes, for _upload."""

    def __init__(self, data):
        self.data, self.offset = data, 0

    def read(self, count):
        chunk = self.data[self.offset:self.offset + count]
        self.offset += len(chunk)
        return chunk


def _delete(pool, name):
    """Delete a volume if it exists; True when it did."""
    volume = _volume(pool, name)
    if volume is None:
        return False
    try:
        volume.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
    return True


def _local_image(name, source_path, disk_format):
    """(size, sha256 hex) of the image file on this machine, after checking that it is
    what disk_format says: a qcow2 with a backing file would not work once copied alone,
    and a qcow2 stored as raw would let the guest read its own header as data."""
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


def _sidecar(volume_name):
    return volume_name + '.sha256'


def _sidecar_text(volume_name, digest):
    return '%s  %s\n' % (digest, volume_name)


class LibvirtDriver(ComputeDriver):
    """One KVM host (a libvirt URI) as one node."""

    hypervisor_type = HYPERVISOR_KVM

    def __init__(self, host):
        self.host = host
        self._conn = None
        self._conn_guard = threading.Lock()
        self.work_timeout = WORK_TIMEOUT

    def node_names(self):
        return [self.host.name]

    def endpoint_name(self):
        return self.host.name

    def _what(self):
        return 'KVM host %s at %s' % (self.host.name, self.host.uri)

    def _connect(self):
        if not HAS_LIBVIRT:
            raise errors.MissingLibrary('libvirt-python', 'for KVM hosts')
        with self._conn_guard:  # threads of one driver share one connection
            if self._conn is None:
                try:
                    self._conn = libvirt.open(self.host.uri)
                except libvirt.libvirtError as exc:
                    raise errors.Unreachable('%s did not answer: %s' % (self._what(), exc.get_error_message()))
            return self._conn

    def _run(self, doing, work, extra_seconds=0.0):
        """work(conn) with deadlines: the connection within KvmHost.timeout, so that a dead
        host is reported as fast as by a probe; the work within max(timeout, work_timeout)
        plus extra_seconds. libvirt errors not handled by work become DriverErrors naming
        the host and what was being done.

        A call that overstays is left running (see call_within): the error says so, the
        next list_instances tells what it did.
        """
        conn = call_within(self.host.timeout, self._what(), self._connect)

        def guarded():
            try:
                return work(conn)
            except libvirt.libvirtError as exc:
                raise errors.DriverError('%s failed %s: %s' % (self._what(), doing, exc.get_error_message())) from exc

        deadline = max(self.host.timeout, self.work_timeout) + extra_seconds
        return call_within(deadline, '%s (%s; it may still complete)' % (self._what(), doing), guarded)

    def get_nodes(self):
        return [call_within(self.host.timeout, self._what(), self._node)]

    def _node(self):
        conn = self._connect()  # inside the deadline: a connect can block longest
        try:
            return self._read_node(conn)
        except libvirt.libvirtError as exc:
            raise errors.DriverError('%s failed to report its resources: %s' % (self._what(), exc.get_error_message()))

    def _read_node(self, conn):
        info = conn.getInfo()  # model, memory MiB, cpus, mhz, numa nodes, sockets, cores, threads
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU
                                       | libvirt.VIR_DOMAIN_STATS_BALLOON)
        running = [s for _dom, s in stats if s.get('state.state') == libvirt.VIR_DOMAIN_RUNNING]
        host = HostResources(
            name=self.host.name,
            vcpus=info[2],
            memory_mb=info[1],
            vcpus_used=sum(s.get('vcpu.current', 0) for s in running),
            memory_mb_used=sum(s.get('balloon.maximum', 0) for s in running) // 1024,
            memory_mb_free=conn.getFreeMemory() // MIB,
            instances=len(stats),
        )
        capacity, available = _disk_of(conn, self.host.instance_path)
        caps = ET.fromstring(conn.getCapabilities())
        return NodeResources(
            name=self.host.name,
            hypervisor_type=self.hypervisor_type,
            hosts=[host],
            disk_gb=capacity // GIB,
            disk_gb_free=available // GIB,
            extra={
                'uri': self.host.uri,
                'hostname': conn.getHostname(),
                'host_uuid': caps.findtext('host/uuid'),
                'cpu_model': info[0],
                'hypervisor_version': conn.getVersion(),
                'libvirt_version': conn.getLibVersion(),
            },
        )

    # Paths -----------------------------------------------------------------------------

    def instance_dir(self, storage):
        """The host-side directory of instance disks for storage 'local' or 'shared'."""
        if storage == 'local':
            return self.host.instance_path
        if storage == 'shared':
            if not self.host.shared_instance_path:
                raise errors.DriverError('KVM host %s has no shared_instance_path: it cannot hold instances on shared storage'
                                         % self.host.name)
            return self.host.shared_instance_path
        raise errors.DriverError('storage must be local or shared, got %r' % (storage,))

    def _storages(self):
        return ['local', 'shared'] if self.host.shared_instance_path else ['local']

    def image_path(self, name, disk_format, storage='local'):
        """The host-side path of an image's base volume (no I/O)."""
        _check_image_args(name, disk_format)
        return posixpath.join(self.instance_dir(storage), BASE_DIR, '%s.%s' % (name, disk_format))

    # Images ----------------------------------------------------------------------------

    def ensure_image(self, name, source_path, disk_format, check_mode=False):
        """Make the image file at source_path (on this machine) a base volume
        `<name>.<disk_format>` in _base under instance_path and, if set,
        shared_instance_path; True when it was (check_mode: would be) uploaded.

        A base whose size and recorded sha256 match the file is left as it is. One
        that differs is replaced, unless instance disks on the host use it as their
        backing file: rewriting it would corrupt them, so it is refused.
        """
        _check_image_args(name, disk_format)
        size, digest = _local_image(name, source_path, disk_format)
        changed = False
        for storage in self._storages():
            directory = posixpath.join(self.instance_dir(storage), BASE_DIR)
            key = (directory, name) if storage == 'shared' else (self.host.uri, directory, name)
            work = functools.partial(self._ensure_base, storage=storage, name=name, source_path=source_path,
                                     disk_format=disk_format, size=size, digest=digest, check_mode=check_mode)
            changed = self._run('placing image %s in %s' % (name, directory), functools.partial(self._locked, key, work),
                                size / UPLOAD_RATE) or changed
        return changed

    @staticmethod
    def _locked(key, work, conn):
        # Taken on the worker thread: a caller that gave up waiting must not release it.
        with _image_lock(key):
            return work(conn)

    def _base_pool(self, conn, storage, build):
        return instance_pool(conn, posixpath.join(self.instance_dir(storage), BASE_DIR), build=build)

    def _ensure_base(self, conn, storage, name, source_path, disk_format, size, digest, check_mode):
        try:
            pool = self._base_pool(conn, storage, build=not check_mode)
        except errors.DriverError:
            if check_mode:
                return True  # no _base directory yet: the upload would make it
            raise
        _refresh(pool)
        volume_name = '%s.%s' % (name, disk_format)
        volume = _volume(pool, volume_name)
        if volume is not None and _physical_size(volume) == size and self._recorded_digest(conn, pool, volume_name) == digest:
            return False
        if check_mode:
            return True
        if volume is not None:
            self._refuse_if_in_use(conn, storage, name, volume.path())
        # The checksum goes first and comes back last: a base without it is never used.
        _delete(pool, _sidecar(volume_name))
        _delete(pool, volume_name)
        volume = pool.createXML(domxml.volume_xml(volume_name, size, 'raw', mode='0644'), 0)
        try:
            self._upload_image(conn, volume, name, source_path, size)
            sidecar = pool.createXML(domxml.volume_xml(_sidecar(volume_name), len(_sidecar_text(volume_name, digest)), 'raw',
                                                       mode='0644'), 0)
            text = _sidecar_text(volume_name, digest).encode()
            _upload(conn, sidecar, _BytesSource(text), len(text))
        except BaseException:
            _delete(pool, _sidecar(volume_name))
            _delete(pool, volume_name)
            raise
        return True

    def remove_image(self, name, check_mode=False):
        """Delete the image's base volumes (every format) and checksums from every _base of
        this host; True when there was (check_mode: is) something to delete. A base that
        instance disks use is refused, leaving everything of that image in place."""
        _check_image_args(name, IMAGE_FORMATS[0])
        changed = False
        for storage in self._storages():
            directory = posixpath.join(self.instance_dir(storage), BASE_DIR)
            key = (directory, name) if storage == 'shared' else (self.host.uri, directory, name)
            work = functools.partial(self._remove_base, storage=storage, name=name, check_mode=check_mode)
            changed = self._run('removing image %s from %s' % (name, directory), functools.partial(self._locked, key, work)) or changed
        return changed

    def _remove_base(self, conn, storage, name, check_mode):
        try:
            pool = self._base_pool(conn, storage, build=False)
        except errors.DriverError:
            return False  # no _base directory: no image either
        _refresh(pool)
        names = set(pool.listVolumes())
        ours = [n for f in IMAGE_FORMATS for n in ('%s.%s' % (name, f), _sidecar('%s.%s' % (name, f))) if n in names]
        if not ours or check_mode:
            return bool(ours)
        for volume_name in ours:
            if not volume_name.endswith('.sha256'):
                self._refuse_if_in_use(conn, storage, name, pool.storageVolLookupByName(volume_name).path())
        for volume_name in ours:  # checksums first: a half-removed base is never used
            if volume_name.endswith('.sha256'):
                _delete(pool, volume_name)
        for volume_name in ours:
            _delete(pool, volume_name)
        return True

    def _upload_image(self, conn, volume, name, source_path, size):
        with open(source_path, 'rb') as handle:
            sent = _upload(conn, volume, handle, size)
        stored = _physical_size(volume)
        if sent != size or stored != size:
            raise errors.DriverError('image %s: %s changed while it was uploaded to %s (%d bytes expected, %d sent, %d stored); '
                                     'the partial copy was removed' % (name, source_path, self._what(), size, sent, stored))

    @staticmethod
    def _recorded_digest(conn, pool, volume_name):
        sidecar = _volume(pool, _sidecar(volume_name))
        if sidecar is None:
            return None
        text = _download(conn, sidecar).decode('ascii', 'replace').split()
        return text[0] if text else None

    def _refuse_if_in_use(self, conn, storage, name, base_path):
        """Raise when instance disks in the instance directory have base_path as their
        backing file (on shared storage that covers every host's instances)."""
        pool = instance_pool(conn, self.instance_dir(storage))
        _refresh(pool)
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
            raise errors.DriverError('image %s on %s differs from its source, but it is the base of the disks of instances %s; '
                                     'it was left untouched' % (name, self._what(), ', '.join(sorted(users))))

    def _base_volume(self, conn, storage, image):
        """(path, format, virtual size) of an image's complete base volume for storage."""
        where = posixpath.join(self.instance_dir(storage), BASE_DIR)
        try:
            pool = self._base_pool(conn, storage, build=False)
        except errors.DriverError:
            pool = None
        names = set()
        if pool is not None:
            _refresh(pool)
            names = set(pool.listVolumes())
        found = ['%s.%s' % (image, f) for f in IMAGE_FORMATS
                 if '%s.%s' % (image, f) in names and _sidecar('%s.%s' % (image, f)) in names]
        if not found:
            raise errors.DriverError('image %s is not on %s (no complete %s.qcow2 or %s.raw in %s): place it with ensure_image'
                                     % (image, self._what(), image, image, where))
        if len(found) > 1:
            raise errors.DriverError('image %s is in %s as both %s: remove the stale one' % (image, where, ' and '.join(found)))
        volume = pool.storageVolLookupByName(found[0])
        return volume.path(), found[0].rsplit('.', 1)[1], volume.info()[1]

    # Instances -------------------------------------------------------------------------

    def _check_node(self, node):
        if node is not None and node != self.host.name:
            raise errors.DriverError('node %s is not %s (a KVM host is one node of its own name); nothing was changed'
                                     % (node, self._what()))

    def spawn(self, spec):
        try:
            inst_uuid = str(uuidlib.UUID(str(spec.uuid)))
        except ValueError:
            raise errors.DriverError('instance %s: %r is not a UUID; nothing was created' % (spec.name, spec.uuid)) from None
        self._check_node(spec.node)
        self.instance_dir(spec.storage)  # a bad storage fails before any I/O
        return self._run('spawning instance %s (%s)' % (spec.name, inst_uuid), functools.partial(self._spawn, spec, inst_uuid))

    def _spawn(self, spec, inst_uuid, conn):
        failed = 'cannot spawn instance %s (%s) on %s' % (spec.name, inst_uuid, self._what())
        try:
            plan = self._spawn_plan(conn, spec, inst_uuid)
        except (errors.DriverError, ValueError, libvirt.libvirtError) as exc:
            raise errors.DriverError('%s: %s; nothing was created' % (failed, _message(exc))) from exc
        made = {}
        try:
            if plan['volume_xml'] is not None:  # None: the disk exists and is reused, never removed
                made['volume'] = plan['pool'].createXML(plan['volume_xml'], 0)
            made['domain'] = conn.defineXML(plan['domain_xml'])
            made['domain'].create()
            return self._state_of(made['domain'])
        except Exception as exc:  # pylint: disable=broad-exception-caught  # whatever failed, undo before reporting
            undone = self._undo_spawn(plan, made)
            raise errors.DriverError('%s: %s; %s' % (failed, _message(exc), undone)) from exc

    def _spawn_plan(self, conn, spec, inst_uuid):
        """Everything spawn needs, checked before anything is created on the host."""
        directory = self.instance_dir(spec.storage)
        pool = instance_pool(conn, directory)
        _refresh(pool)
        for exists in (_lookup_uuid(conn, inst_uuid), _lookup_name(conn, spec.name)):
            if exists is not None:
                raise errors.DriverError('a domain %s (%s) is already defined there' % (exists.name(), exists.UUIDString()))
        disk_name, log_name = inst_uuid + '.qcow2', inst_uuid + '.console.log'
        disk_path = posixpath.join(directory, disk_name)
        volume_xml = None
        if spec.reuse_disk:
            if _volume(pool, disk_name) is None:
                raise errors.DriverError('its disk %s is not there (is %s storage really shared with this host?)' % (disk_path, spec.storage))
        else:
            if _volume(pool, disk_name) is not None:
                raise errors.DriverError('its disk %s already exists' % disk_path)
            base_path, base_format, virtual_size = self._base_volume(conn, spec.storage, spec.image)
            capacity = max(int(spec.disk_gb or 0) * GIB, virtual_size)
            volume_xml = domxml.volume_xml(disk_name, capacity, 'qcow2', backing_path=base_path, backing_format=base_format)
        log_path = posixpath.join(directory, log_name)
        kind = domxml.domain_type(conn.getCapabilities())
        domain_spec = _with_uuid(spec, inst_uuid)
        return {
            'pool': pool,
            'log_name': log_name,
            'log_existed': _volume(pool, log_name) is not None,
            'volume_xml': volume_xml,
            'domain_xml': domxml.build_domain(domain_spec, disk_path, log_path, kind, 'qcow2'),
        }

    @staticmethod
    def _undo_spawn(plan, made):
        """Remove what a failed spawn created; a sentence saying what was removed and not."""
        removed, left = [], []
        steps = [('domain', made.get('domain'), _remove_domain), ('disk', made.get('volume'), _delete_volume)]
        for what, thing, remove in steps:
            if thing is None:
                continue
            try:
                remove(thing)
                removed.append(what)
            except libvirt.libvirtError as exc:
                left.append('%s (%s)' % (what, exc.get_error_message()))
        if not plan['log_existed']:
            try:
                _refresh(plan['pool'])
                if _delete(plan['pool'], plan['log_name']):
                    removed.append('console log')
            except libvirt.libvirtError as exc:
                left.append('console log (%s)' % exc.get_error_message())
        text = ('removed its %s' % ', '.join(removed)) if removed else 'nothing had been created'
        return text + ('; could not remove its %s' % ', '.join(left) if left else '')

    def _state_of(self, domain, state=None, info=None):
        if info is None:
            info = domxml.parse_domain(domain.XMLDesc(0))
        if state is None:
            state = domain.state()[0]
        return InstanceState(uuid=info.uuid, name=info.name, node=self.host.name, host=self.host.name,
                             power_state=domxml.power_state(state), vcpus=info.vcpus, memory_mb=info.memory_mb,
                             macs=info.macs, disk_paths=info.disk_paths)

    def list_instances(self):
        return self._run('listing instances', self._list)

    def _list(self, conn):
        # One call for every domain's state; the XML (for the metadata, MACs and disks)
        # has no bulk call.
        states = []
        for domain, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
            try:
                xml = domain.XMLDesc(0)
            except libvirt.libvirtError:
                continue  # undefined meanwhile
            info = domxml.parse_domain(xml)
            if info.managed is None:
                continue  # not ours: someone else's domain on a shared host
            states.append(self._state_of(domain, stats.get('state.state', 0), info))
        return states

    def _managed_domain(self, conn, inst_uuid):
        """(domain, DomainInfo) of our instance, or (None, None) when not defined here."""
        domain = _lookup_uuid(conn, inst_uuid)
        if domain is None:
            return None, None
        info = domxml.parse_domain(domain.XMLDesc(0))
        if info.managed is None:
            raise errors.DriverError('domain %s (%s) on %s was not created by multihv (no %s metadata); it was left untouched'
                                     % (info.name, inst_uuid, self._what(), domxml.NAMESPACE))
        return domain, info

    def destroy(self, uuid, node, destroy_disks=True):
        """Power off and undefine the instance, then delete its disk and console log.

        destroy_disks=False keeps the files: for a stale copy on a host that comes back after
        its instances were evacuated on shared storage, whose disk the rebuilt instance uses.
        When the domain is not defined here, only leftovers in the host's local instance
        path are removed: a shared disk may belong to the same instance on another host.
        """
        self._check_node(node)
        self._run('destroying instance %s' % uuid, functools.partial(self._destroy, uuid, destroy_disks))

    def _destroy(self, inst_uuid, destroy_disks, conn):
        domain, info = self._managed_domain(conn, inst_uuid)
        if domain is not None:
            _remove_domain(domain)
        if not destroy_disks:
            return
        if info is not None:
            paths = info.disk_paths + ([info.console_log] if info.console_log else [])
        else:
            local = self.host.instance_path
            paths = [posixpath.join(local, inst_uuid + '.qcow2'), posixpath.join(local, inst_uuid + '.console.log')]
        self._delete_files(conn, paths)

    def _delete_files(self, conn, paths):
        """Delete the files among paths that lie directly in an instance directory; never
        anything else (a domain edited to use some other file keeps that file)."""
        ours = set(posixpath.normpath(self.instance_dir(s)) for s in self._storages())
        pools = {}
        for path in paths:
            directory = posixpath.dirname(posixpath.normpath(path))
            if directory not in ours:
                continue
            if directory not in pools:
                pools[directory] = instance_pool(conn, directory)
                _refresh(pools[directory])
            _delete(pools[directory], posixpath.basename(path))

    def set_power(self, uuid, node, action):
        """start (also resumes a paused instance), stop (hard power off), shutdown (an ACPI
        request, returns at once; guests that ignore ACPI, such as the lab guest, keep
        running: tests use stop), reboot (a hard reset of a running instance; starts a
        stopped one). Idempotent: starting a running instance changes nothing."""
        self._check_node(node)
        if action not in POWER_ACTIONS:
            raise errors.DriverError('power action must be one of %s, got %r; instance %s was left untouched'
                                     % (', '.join(POWER_ACTIONS), action, uuid))
        return self._run('%s of instance %s' % (action, uuid), functools.partial(self._set_power, uuid, action))

    def _set_power(self, inst_uuid, action, conn):
        domain, _info = self._managed_domain(conn, inst_uuid)
        if domain is None:
            raise errors.NotFound('instance %s is not defined on %s; nothing was changed' % (inst_uuid, self._what()))
        state = domain.state()[0]
        active = state not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_NOSTATE)
        if action in ('start', 'reboot') and not active:
            domain.create()
        elif action == 'start' and state == libvirt.VIR_DOMAIN_PAUSED:
            domain.resume()
        elif action == 'stop' and active:
            _ignore_not_running(domain.destroy)
        elif action == 'shutdown' and active:
            _ignore_not_running(domain.shutdown)
        elif action == 'reboot':
            domain.reset(0)
        return self._state_of(domain)

    # Migration --------------------------------------------------------------------------

    def shares_storage(self, target, storage):
        """True when this host's instance directory for storage is target's too (a marker test)."""
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import migration as moving
        directory = self.instance_dir(storage)
        if storage not in target._storages() or target.instance_dir(storage) != directory:  # pylint: disable=protected-access
            return False
        moving.connect_both(self, target)
        return self._run('checking whether %s is shared with %s' % (directory, target.host.name),
                         lambda _conn: moving.shares_directory(self, target, directory))

    def migrate(self, uuid, node, target, mode, controls, progress=None):
        """live: memory only, the disk stays on storage both hosts share; block: live, with the
        disks' top layers copied to the target (NON_SHARED_INC; their base must be there);
        cold: stop, copy the disks unless shared, define and start on the target. The target
        driver must be a LibvirtDriver of another host; (InstanceState on it, stats)."""
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import migration as moving
        self._check_node(node)
        if not isinstance(target.driver, LibvirtDriver) or target.driver.host.uri == self.host.uri:
            raise errors.DriverError('instance %s: the target of a KVM migration must be another KVM host; nothing moved' % uuid)
        dest = target.driver
        moving.connect_both(self, dest)
        deadline = time.monotonic() + self.work_timeout
        doing = '%s migration of instance %s to %s' % (mode, uuid, dest.host.name)
        # On this thread, not under call_within: the move watches its own deadline, and progress
        # reaches the caller's registry, which may not be used from another thread.
        try:
            if mode == 'cold':
                domain, stats = moving.cold(self, dest, uuid, self._disks_shared(self._connect(), dest, uuid), deadline)
            else:
                domain, stats = moving.live(self, dest, uuid, mode == 'block', controls, deadline, progress)
            return dest._state_of(domain), stats  # pylint: disable=protected-access
        except libvirt.libvirtError as exc:
            raise errors.DriverError('%s failed %s: %s' % (self._what(), doing, exc.get_error_message())) from exc

    def _disks_shared(self, conn, target, uuid):
        """True when the instance's disks lie in one instance directory that target shares."""
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import migration as moving
        _domain, info = self._managed_domain(conn, uuid)
        directories = set(posixpath.dirname(p) for p in (info.disk_paths if info else []))
        if len(directories) != 1 or directories != set(posixpath.normpath(self.instance_dir(s)) for s in self._storages()) & directories:
            return False
        return moving.shares_directory(self, target, directories.pop())

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass  # a host that died meanwhile has nothing left to release
            self._conn = None


def _message(exc):
    if HAS_LIBVIRT and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message()
    return str(exc)


def _with_uuid(spec, inst_uuid):
    """spec with its UUID in canonical form (the one libvirt reports back)."""
    return spec if spec.uuid == inst_uuid else dataclasses.replace(spec, uuid=inst_uuid)


def _lookup_uuid(conn, inst_uuid):
    return _found_or_none(conn.lookupByUUIDString, inst_uuid, libvirt.VIR_ERR_NO_DOMAIN)


def _lookup_name(conn, name):
    return _found_or_none(conn.lookupByName, name, libvirt.VIR_ERR_NO_DOMAIN)


def _ignore_not_running(call):
    """Stopping a domain that stopped meanwhile is done, not an error."""
    try:
        call()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise


def _remove_domain(domain):
    """Power off (if running) and undefine, with whatever state libvirt keeps for it."""
    try:
        if domain.isActive():
            _ignore_not_running(domain.destroy)
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        try:
            domain.undefineFlags(flags)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            domain.undefine()  # an older libvirt that knows fewer flags
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


def _delete_volume(volume):
    try:
        volume.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
