# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving instances between two KVM hosts: live, block and cold migration, and the check
that two hosts really share a directory. Private to multihv.cloud: do not import.

Live and block migrations are client-managed (the controller holds a connection to each
libvirtd, as `virsh migrate` without --p2p): the controller's migrate3 call runs on a
worker thread while this thread reads the job's statistics, reports progress and applies
the completion timeout (Nova's libvirt driver does the same in _live_migration_monitor).
A failure at any point leaves the instance running on the source: libvirt resumes the
source guest when the destination fails, and what this module created on the
destination (the disks of a block migration) is removed.

An instance's config drive (a read-only CD-ROM) is not copied by libvirt's block migration
(NBD copies writable disks only) and QEMU on the target opens it at start: it is copied to
the target before the move, like a cold migration's disks, and removed from the source with
the disk after it.

Transport: when either host is reached at a qemu+tls URI, the move is a native TLS migration
(VIR_MIGRATE_TLS): QEMU encrypts the memory stream and a block migration's NBD disk copy with the
certificates in each host's qemu.conf migrate_tls_x509_cert_dir, and checks the target's
certificate against the name in its URI. A host set up for TLS never gets its guests' memory in
clear; a host that lacks those certificates refuses the move and the instance stays where it was.

Shared storage: a live migration first lets libvirt judge the disks safe (network and cluster
filesystems with cache='none', which spawn gives disks on shared storage). libvirt cannot tell
that a local filesystem is shared (the lab's one directory seen by two hosts, or any directory
that is not on NFS, Ceph, GFS2 and the like): only when it refuses for that reason, and because
the core proved the directory is one on both hosts (shares_directory), is the move repeated with
VIR_MIGRATE_UNSAFE.

The source and target are the two hosts' HostConnections (connection.py).
"""

from __future__ import annotations

import concurrent.futures
import posixpath
import threading
import time
import urllib.parse
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.domains import (
    config_drives, files_of, managed_domain, remove_domain,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import (
    aborting, delete_instance_files, delete_named, find_volume, instance_dirs, instance_pool, physical_size, refresh_pool, upload,
)

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

# How often a running migration's job statistics are read (one local RPC each). A block migration's
# disk figures are there only while its NBD mirror runs, about the last tenth of a second of a small
# instance's move in the lab: reads every 0.25 s missed them about every other time.
POLL_SECONDS = 0.05
_TLS_HINT = (" (a TLS migration: both hosts' QEMU need the CA, server and client certificates in qemu.conf's "
             "migrate_tls_x509_cert_dir, the target's naming the host of its URI)")
# The job statistics reported, as libvirt names them (typed parameters of virDomainGetJobStats).
STATS_KEYS = (('data_total', 'data_total'), ('data_processed', 'data_processed'), ('data_remaining', 'data_remaining'),
              ('memory_total', 'memory_total'), ('memory_processed', 'memory_processed'),
              ('memory_remaining', 'memory_remaining'), ('memory_dirty_rate', 'memory_dirty_rate'),
              ('disk_total', 'disk_total'), ('disk_processed', 'disk_processed'), ('disk_remaining', 'disk_remaining'),
              ('downtime_ms', 'downtime'), ('time_elapsed_ms', 'time_elapsed'), ('setup_time_ms', 'setup_time'),
              ('auto_converge_throttle', 'auto_converge_throttle'))


# What a block migration's NBD mirror copied, as the source's job reports it.
DISK_COPIED = ('disk_total', 'disk_processed')


def job_stats(params):
    """The migration statistics we report, from virDomainGetJobStats' typed parameters."""
    return dict((ours, int(params[theirs])) for ours, theirs in STATS_KEYS if theirs in params)


def most_copied(copied, current):
    """The largest disk figures (DISK_COPIED) seen so far: copied's, updated with a new poll's."""
    return dict((key, max(copied.get(key, 0), current.get(key, 0))) for key in DISK_COPIED if key in copied or key in current)


def finished_stats(last, copied, completed):
    """A completed job's statistics: the target's record of it (downtime included) over the last ones
    polled on the source, except the disk figures, the largest either saw. The source's NBD mirror
    copies a block migration's disks, and the record the target gets carries QEMU's own disk figures
    only, which are 0 then. A poll may have seen the mirror's total before it copied anything; the
    job completed, and libvirt switches over only once every mirror is in sync: all of it was copied."""
    stats = dict(last)
    stats.update(completed)
    for key, value in copied.items():
        stats[key] = max(value, completed.get(key, 0))
    if stats.get('disk_total'):
        stats['disk_processed'] = max(stats.get('disk_processed', 0), stats['disk_total'])
    return stats


def shares_directory(source, target, directory):
    """True when `directory` on the source host is the same directory on the target host:
    a marker volume made through the source's pool is looked up through the target's."""
    sconn, tconn = source.open(), target.open()
    marker = '.multihv-shared-check-%s' % uuidlib.uuid4().hex
    spool = instance_pool(sconn, directory)
    refresh_pool(spool)
    spool.createXML(domxml.volume_xml(marker, 0, 'raw', mode='0600'), 0)
    try:
        try:
            tpool = instance_pool(tconn, directory)
        except errors.DriverError:
            return False  # the target has no such directory
        refresh_pool(tpool)
        return find_volume(tpool, marker) is not None
    finally:
        refresh_pool(spool)
        delete_named(spool, marker)


def disks_shared(source, target, inst_uuid):
    """True when the instance's disks lie in one instance directory of source that target shares."""
    _domain, info = managed_domain(source.open(), inst_uuid, source.what())
    directories = set(posixpath.dirname(p) for p in (info.disk_paths if info else []))
    if len(directories) != 1 or not directories <= instance_dirs(source.host):
        return False
    return shares_directory(source, target, directories.pop())


def _both_and_domain(source, target, inst_uuid):
    """(source connection, target connection, domain, DomainInfo) of an instance to move;
    errors.NotFound when the source does not have it."""
    sconn, tconn = source.open(), target.open()
    domain, info = managed_domain(sconn, inst_uuid, source.what())
    if domain is None:
        raise errors.NotFound('instance %s is not defined on %s; nothing moved' % (inst_uuid, source.host.name))
    return sconn, tconn, domain, info


def live(source, target, inst_uuid, block, controls, deadline, progress):
    """A live (block=False: shared disks) or block (block=True: the disks' top layers copied)
    migration; (target domain, stats)."""
    sconn, tconn, domain, info = _both_and_domain(source, target, inst_uuid)
    what = 'instance %s (%s) from %s to %s' % (info.name, inst_uuid, source.host.name, target.host.name)
    if not domain.isActive():
        raise errors.DriverError('%s: a %s migration needs a running instance and it is stopped; migrate it cold; nothing moved'
                                 % (what, 'block' if block else 'live'))
    made = []
    try:
        if block:
            made = _precreate_disks(sconn, tconn, info.disk_paths)
            for path in config_drives(info):  # read-only: NBD does not copy it, QEMU on the target opens it
                made.append(_copy_file(sconn, tconn, path, deadline))
        stats = _run_live(domain, tconn, target, block, controls, deadline, progress, what, uses_tls(source.host, target.host))
    except BaseException:
        _remove_volumes(made)
        raise
    if block:
        delete_instance_files(sconn, source.host, files_of(info))
    return tconn.lookupByUUIDString(inst_uuid), stats


def uses_tls(*hosts):
    """True when any of the hosts (KvmHosts) is reached at a qemu+tls URI: the operator set up
    TLS there, and the migration stream must not then go in clear."""
    return any(urllib.parse.urlsplit(host.uri).scheme == 'qemu+tls' for host in hosts)


def _flags(block, controls, tls=False, unsafe=False):
    """migrate3 flags. unsafe: VIR_MIGRATE_UNSAFE on a live (shared storage) move, for when libvirt
    refused to believe a directory the core proved shared (see the module's docstring)."""
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if block:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC  # a qcow2 overlay: its top layer only (Nova's choice)
    elif unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if tls:
        flags |= libvirt.VIR_MIGRATE_TLS
    if controls.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if controls.post_copy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def _params(target, controls, tls=False):
    params = {}
    address = target.host.migration_address
    if address:
        # libvirt refuses loopback addresses in qemu.conf: give them per call.
        host = '[%s]' % address if ':' in address else address
        params[libvirt.VIR_MIGRATE_PARAM_URI] = 'tcp://%s' % host
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = address
    name = urllib.parse.urlsplit(target.host.uri).hostname
    if tls and name:
        # QEMU checks the target's certificate against this name, not the migration address:
        # the certificate libvirtd already shows the controller at that name serves both.
        params[libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION] = name
    if controls.bandwidth_mib:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(controls.bandwidth_mib)
    return params


def _migrate(domain, tconn, params, block, controls, tls):
    """migrate3 with libvirt's own safety check first; see the module's docstring for when
    VIR_MIGRATE_UNSAFE follows. libvirt refuses in its Begin phase, before anything moves."""
    try:
        return domain.migrate3(tconn, params, _flags(block, controls, tls))
    except libvirt.libvirtError as exc:
        if block or exc.get_error_code() != libvirt.VIR_ERR_MIGRATE_UNSAFE:
            raise
    return domain.migrate3(tconn, params, _flags(block, controls, tls, unsafe=True))


def _run_live(domain, tconn, target, block, controls, deadline, progress, what, tls=False):
    if controls.max_downtime_ms:
        domain.migrateSetMaxDowntime(int(controls.max_downtime_ms), 0)
    result = concurrent.futures.Future()

    def perform():
        try:
            result.set_result(_migrate(domain, tconn, _params(target, controls, tls), block, controls, tls))
        except Exception as exc:  # pylint: disable=broad-exception-caught  # re-raised below
            result.set_exception(exc)

    threading.Thread(target=perform, name='multihv-migrate', daemon=True).start()
    started = time.monotonic()
    last, copied, acted = {}, {}, None
    while True:
        try:
            result.result(timeout=POLL_SECONDS)
            break
        except concurrent.futures.TimeoutError:
            pass
        except libvirt.libvirtError as exc:
            if acted == 'abort':
                raise errors.MigrationCancelled('%s was aborted after its completion timeout of %s s; it runs on the source '
                                                'as before' % (what, controls.completion_timeout)) from exc
            raise errors.DriverError('%s failed: %s%s; it runs on the source as before'
                                     % (what, exc.get_error_message(), _TLS_HINT if tls else '')) from exc
        last = _poll(domain, last, progress)
        copied = most_copied(copied, last)
        elapsed = time.monotonic() - started
        if controls.completion_timeout and elapsed > controls.completion_timeout and acted is None:
            acted = _complete_or_abort(domain, controls)
        if time.monotonic() > deadline and acted != 'abort':
            acted = 'abort'
            _ignore_no_job(domain.abortJob)
    stats = finished_stats(last, copied, _completed_stats(tconn, domain.UUIDString()))
    stats.setdefault('time_elapsed_ms', int((time.monotonic() - started) * 1000))
    if acted:
        stats['completion_action'] = acted
    return stats


def _poll(domain, last, progress):
    try:
        current = job_stats(domain.jobStats(0))
    except libvirt.libvirtError:
        return last  # the job ended (or the domain left) between two polls
    if current and progress is not None:
        progress(current)
    return current or last


def _complete_or_abort(domain, controls):
    """Nova's live_migration_timeout_action: abort, or force the completion (post-copy when
    allowed, else pause the guest; libvirt resumes it on the target)."""
    if controls.completion_action == 'abort':
        _ignore_no_job(domain.abortJob)
        return 'abort'
    if controls.post_copy:
        _ignore_no_job(lambda: domain.migrateStartPostCopy(0))
        return 'post_copy'
    _ignore_no_job(domain.suspend)
    return 'pause'


def _ignore_no_job(call):
    try:
        call()
    except libvirt.libvirtError:
        pass  # the job finished meanwhile: nothing to abort or force


def _completed_stats(tconn, inst_uuid):
    """The finished job's statistics as the target keeps them (downtime included)."""
    try:
        return job_stats(tconn.lookupByUUIDString(inst_uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    except libvirt.libvirtError:
        return {}


def _precreate_disks(sconn, tconn, paths):
    """Empty copies of the instance's qcow2 overlays at the same paths on the target, on the
    same backing files (which the core placed there first): what NON_SHARED_INC copies into."""
    made = []
    try:
        for path in paths:
            volume = sconn.storageVolLookupByPath(path)
            desc = domxml.parse_volume(volume.XMLDesc(0))
            pool = instance_pool(tconn, posixpath.dirname(path))
            refresh_pool(pool)
            name = posixpath.basename(path)
            if find_volume(pool, name) is not None:
                raise errors.DriverError('the target already has a disk %s; nothing moved' % path)
            made.append(pool.createXML(domxml.volume_xml(name, desc.capacity, desc.format, backing_path=desc.backing_path,
                                                         backing_format=desc.backing_format), 0))
    except BaseException:
        _remove_volumes(made)
        raise
    return made


def _remove_volumes(volumes):
    for volume in volumes:
        try:
            volume.delete(0)
        except libvirt.libvirtError:
            pass  # a target that died keeps it; its next spawn at that path refuses, naming it


def cold(source, target, inst_uuid, shared, deadline):
    """Stop the instance, give the target its definition (and, unless its disks are on a directory
    both hosts share, copies of them), then start it there if it ran; (target domain, stats)."""
    sconn, tconn, domain, info = _both_and_domain(source, target, inst_uuid)
    started = time.monotonic()
    was_running = bool(domain.isActive())
    xml = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    files = files_of(info)
    if was_running:
        domain.destroy()  # a hard stop: the lab guest ignores ACPI; Nova tries a graceful one first
    copied, moved = [], False
    try:
        if not shared:
            for path in info.disk_paths + config_drives(info):
                copied.append(_copy_file(sconn, tconn, path, deadline))
        moved_domain = tconn.defineXML(xml)
        moved = True
        if was_running:
            moved_domain.create()
    except BaseException:
        if moved:
            _ignore_no_domain(lambda: remove_domain(tconn.lookupByUUIDString(inst_uuid)))
        _remove_volumes(copied)
        if was_running:
            domain.create()  # back as it was
        raise
    remove_domain(domain)
    if not shared:
        delete_instance_files(sconn, source.host, files)
    stats = {'time_elapsed_ms': int((time.monotonic() - started) * 1000),
             'disk_total': sum(physical_size(v) for v in copied)}
    return moved_domain, stats


def _ignore_no_domain(call):
    try:
        call()
    except libvirt.libvirtError:
        pass


def _copy_file(sconn, tconn, path, deadline):
    """The volume at path on the source copied byte for byte to the same path on the target
    (a qcow2 overlay keeps its backing file's path, which the target has too); the new volume."""
    volume = sconn.storageVolLookupByPath(path)
    size = physical_size(volume)
    pool = instance_pool(tconn, posixpath.dirname(path))
    refresh_pool(pool)
    name = posixpath.basename(path)
    if find_volume(pool, name) is not None:
        raise errors.DriverError('the target already has a file %s; nothing moved' % path)
    # Created raw: the bytes sent are the whole file, qcow2 header and all.
    copy = pool.createXML(domxml.volume_xml(name, size, 'raw', mode='0600'), 0)
    try:
        _stream_copy(sconn, volume, tconn, copy, size, deadline)
    except BaseException:
        _remove_volumes([copy])
        raise
    return copy


class _Received:
    """A read(n) source over a download stream, for storage.upload, that gives up at the deadline."""

    def __init__(self, stream, path, size, deadline):
        self.stream, self.path, self.size, self.deadline = stream, path, size, deadline
        self.received = 0

    def read(self, count):
        if time.monotonic() > self.deadline:
            raise errors.DriverError('copying %s did not finish in time (%d of %d bytes)' % (self.path, self.received, self.size))
        chunk = self.stream.recv(count)
        self.received += len(chunk)
        return chunk


def _stream_copy(sconn, volume, tconn, copy, size, deadline):
    down = sconn.newStream(0)
    volume.download(down, 0, size, 0)
    with aborting(down):
        sent = upload(tconn, copy, _Received(down, volume.path(), size, deadline), size)
        down.finish()
    if sent != size:
        raise errors.DriverError('copying %s stopped after %d of %d bytes' % (volume.path(), sent, size))


def connect_both(source, target):
    """Both hosts' connections within their probe timeouts: a dead target is named at once."""
    for connection in (source, target):
        connection.connect()


__all__ = ['cold', 'connect_both', 'disks_shared', 'job_stats', 'live', 'shares_directory', 'uses_tls']
