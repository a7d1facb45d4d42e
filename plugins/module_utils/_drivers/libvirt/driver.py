# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The KVM compute driver: one libvirt host is one node. Private to multihv.cloud: do not import.

Every call to the host runs with a deadline (connection.py): connecting and probing get
KvmHost.timeout (short); operations that do real work (upload an image, spawn, destroy,
power) get a longer one once the host has answered (see LibvirtDriver._run).

Files on the host are volumes of storage pools (storage.py); images are base volumes in
the instance directories (image_cache.py); an instance's files sit next to them:

    <instance_path or shared_instance_path>/<uuid>.qcow2        its disk, an overlay on the base
    <same>/<uuid>.console.log                                   its serial console, next to its disk
    <same>/<uuid>.config.iso                                    its config drive (NoCloud ISO), when it has guest data

The config drive is built on the controller (_guest/config_drive.py) and uploaded through a
storage stream; the domain has it as a read-only CD-ROM. Being a read-only disk, a block
migration does not copy it: migration.py copies it to the target first.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import posixpath
import tempfile
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import POWER_ACTIONS
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import (
    ComputeDriver, HostResources, InstanceFile, InstanceSpec, NodePlacement, NodeResources, VMDetails, call_within, instance_file_uuid,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import capabilities as libvirt_capabilities
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import importing
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import migration as moving
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import resizing
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import snapshot
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import usage as host_usage
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.connection import HostConnection
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.domains import (
    files_of, ignore_not_running, instance_state, lookup_name, lookup_uuid, managed_domain, remove_domain,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.image_cache import UPLOAD_RATE, ImageCache
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import (
    GIB, MIB, create_volume_with, delete_files_of, delete_instance_files, delete_named, delete_volume, disk_of, find_volume, instance_dir,
    instance_dirs, instance_file_names, instance_files, instance_pool, read_heartbeat, refresh_pool, storages, upload,
)
from ansible_collections.multihv.cloud.plugins.module_utils._guest import config_drive

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

# Work that is not a probe (spawn, destroy, power, an upload's set-up) gets at least this
# long once the host has answered; an upload gets more (image_cache.UPLOAD_RATE).
WORK_TIMEOUT = 60.0
# Seconds a read of another host's storage heartbeat may take (see storage_heartbeat).
HEARTBEAT_READ_SECONDS = 10.0


class LibvirtDriver(ComputeDriver):
    """One KVM host (a libvirt URI) as one node."""

    capabilities = libvirt_capabilities.CAPABILITIES

    def __init__(self, host):
        self.host = host
        self.connection = HostConnection(host)
        self.images = ImageCache(self.connection, self._run)
        self.work_timeout = WORK_TIMEOUT

    # Configuration (no I/O) ------------------------------------------------------------

    def endpoint_name(self):
        return self.host.name

    def node_names(self):
        return [self.host.name]

    def serves(self, node):
        """A KVM host is the one node of its own name."""
        return node == self.host.name

    def placement(self, node):
        """The host's availability zone and aggregates, and its URI as the endpoint."""
        return NodePlacement(self.host.availability_zone, tuple(self.host.aggregates), self.host.uri)

    def fence_command(self, node):
        """The host's fence_command from the cloud file ('' when it gives none)."""
        return self.host.fence_command

    def power_status_command(self, node):
        """The host's power_status_command from the cloud file ('' when it gives none)."""
        return self.host.power_status_command

    def fence_environment(self, node):
        """The host's fence_environment from the cloud file: variable names both commands get."""
        return tuple(self.host.fence_environment)

    def storage_peers(self, node):
        """The host's shared_with; None when the cloud file leaves it empty (no restriction)."""
        return list(self.host.shared_with) or None

    # Calls to the host -----------------------------------------------------------------

    def _what(self):
        return self.connection.what()

    def _run(self, doing, work, extra_seconds=0.0):
        """work(conn) with deadlines (HostConnection.run): the connection within
        KvmHost.timeout, the work within max(timeout, work_timeout) plus extra_seconds."""
        return self.connection.run(doing, work, max(self.host.timeout, self.work_timeout) + extra_seconds)

    def storage_heartbeat(self, node):
        """node's heartbeat file in this host's shared_instance_path, read through this host's libvirt."""
        if not self.host.shared_instance_path:
            return None
        # A bounded read: a hung shared filesystem gives no evidence either way, and the HA pass goes on.
        return self.connection.run('reading the storage heartbeat of %s' % node,
                                   lambda conn: read_heartbeat(conn, self.host.shared_instance_path, node),
                                   max(self.host.timeout, HEARTBEAT_READ_SECONDS))

    # Nodes -----------------------------------------------------------------------------

    def get_nodes(self):
        return [call_within(self.host.timeout, self._what(), self._node)]

    def _node(self):
        conn = self.connection.open()  # inside the deadline: a connect can block longest
        try:
            return self._read_node(conn)
        except libvirt.libvirtError as exc:
            raise errors.DriverError('%s failed to report its resources: %s' % (self._what(), exc.get_error_message()))

    def _read_node(self, conn):
        info = conn.getInfo()  # model, memory MiB, cpus, mhz, numa nodes, sockets, cores, threads
        # The state alone: the VCPU and BALLOON groups ask each running QEMU's monitor, one domain after another,
        # and wait for a domain's job (a migration) to end: seconds on a loaded host with tens of guests, past
        # the probe's timeout (issue 20). What a running domain is given comes from virDomainGetInfo instead,
        # which reads its definition (vCPUs, maximum memory) and asks no monitor.
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
        sizes = dict((dom.UUIDString(), _size(dom)) for dom, s in stats if s.get('state.state') == libvirt.VIR_DOMAIN_RUNNING)
        # Adoption (issue 17 §3): the domains without the cloud's metadata, apart (one metadata read per domain).
        foreign = [dom.UUIDString() for dom, _s in stats if not _marked(dom)]
        foreign_running = [sizes[u] for u in foreign if u in sizes]
        host = HostResources(
            name=self.host.name,
            vcpus=info[2],
            memory_mb=info[1],
            vcpus_used=sum(vcpus for vcpus, _kib in sizes.values()),
            memory_mb_used=sum(kib for _vcpus, kib in sizes.values()) // 1024,
            memory_mb_free=conn.getFreeMemory() // MIB,
            instances=len(stats),
            unmanaged_vms=len(foreign),
            unmanaged_vcpus_used=sum(vcpus for vcpus, _kib in foreign_running),
            unmanaged_memory_mb_used=sum(kib for _vcpus, kib in foreign_running) // 1024,
        )
        capacity, available = disk_of(conn, self.host.instance_path)
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

    # Images ----------------------------------------------------------------------------

    def image_path(self, name, disk_format, storage='local'):
        """The host-side path of an image's base volume (no I/O)."""
        return self.images.path(name, disk_format, storage)

    def ensure_image(self, name, source, disk_format, check_mode=False):
        """Make image `name` (the controller's file `source`, qcow2 or raw) the base that
        instance disks of this host are made from: a base volume `<name>.<disk_format>` in
        the _base of instance_path and, if set, shared_instance_path. Idempotent: a base
        whose size and recorded sha256 match the file is left alone, one that differs is
        replaced, unless instance disks use it as their backing file (rewriting it would
        corrupt them: refused). True when it uploaded (check_mode: would upload)."""
        return self.images.ensure(name, source, disk_format, check_mode)

    def remove_image(self, name, check_mode=False):
        """Delete the image's base volumes (every format) and checksums from every _base of
        this host; True when there was (check_mode: is) something to delete. A base that
        instance disks use is refused (errors.ImageInUse, check mode too), leaving everything of that image in place."""
        return self.images.remove(name, check_mode)

    # Instances -------------------------------------------------------------------------

    def _check_node(self, node):
        if node is not None and not self.serves(node):
            raise errors.DriverError('node %s is not %s (a KVM host is one node of its own name); nothing was changed'
                                     % (node, self._what()))

    def spawn(self, spec):
        try:
            inst_uuid = str(uuidlib.UUID(str(spec.uuid)))
        except ValueError:
            raise errors.DriverError('instance %s: %r is not a UUID; nothing was created' % (spec.name, spec.uuid)) from None
        self._check_node(spec.node)
        instance_dir(self.host, spec.storage)  # a bad storage fails before any I/O
        drive = self._config_drive_image(spec, inst_uuid)  # so does guest data that cannot be delivered
        return self._run('spawning instance %s (%s)' % (spec.name, inst_uuid), functools.partial(self._spawn, spec, inst_uuid, drive))

    @staticmethod
    def _config_drive_image(spec, inst_uuid):
        """The bytes of the config drive for spec.guest (a NoCloud ISO), None without guest data.
        Built before the host is touched: it holds the password, so nothing here may show it."""
        if spec.guest is None:
            return None
        try:
            for_uuid = str(uuidlib.UUID(str(spec.guest.uuid)))
        except ValueError:
            for_uuid = None
        if for_uuid != inst_uuid:
            # The drive's instance-id is what cloud-init keys its per-instance work on: another
            # instance's would make the guest skip or redo it.
            raise errors.DriverError('instance %s (%s): its guest data is for instance %s; nothing was created'
                                     % (spec.name, inst_uuid, spec.guest.uuid))
        return config_drive.nocloud_iso(spec.guest)

    def _spawn(self, spec, inst_uuid, drive, conn):
        failed = 'cannot spawn instance %s (%s) on %s' % (spec.name, inst_uuid, self._what())
        try:
            plan = self._spawn_plan(conn, spec, inst_uuid, drive)
        except (errors.DriverError, ValueError, libvirt.libvirtError) as exc:
            raise errors.DriverError('%s: %s; nothing was created' % (failed, _message(exc))) from exc
        made = {}
        try:
            if plan['volume_xml'] is not None:  # None: the disk exists and is reused, never removed
                made['volume'] = plan['pool'].createXML(plan['volume_xml'], 0)
            if plan['drive_data'] is not None:  # None: no drive, or one kept (reused), never removed
                made['config_drive'] = create_volume_with(conn, plan['pool'], plan['drive_name'], plan['drive_data'])
            made['domain'] = conn.defineXML(plan['domain_xml'])
            made['domain'].create()
            return instance_state(made['domain'], self.host.name)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # whatever failed, undo before reporting
            undone = self._undo_spawn(plan, made)
            raise errors.DriverError('%s: %s; %s' % (failed, _message(exc), undone)) from exc

    def _spawn_plan(self, conn, spec, inst_uuid, drive):
        """Everything spawn needs, checked before anything is created on the host. drive: the
        config drive's bytes, or None."""
        directory = instance_dir(self.host, spec.storage)
        pool = instance_pool(conn, directory)
        refresh_pool(pool)
        for exists in (lookup_uuid(conn, inst_uuid), lookup_name(conn, spec.name)):
            if exists is not None:
                raise errors.DriverError('a domain %s (%s) is already defined there' % (exists.name(), exists.UUIDString()))
        disk_name, log_name, drive_name = instance_file_names(inst_uuid)
        disk_path = posixpath.join(directory, disk_name)
        volume_xml = None
        if spec.reuse_disk:
            if find_volume(pool, disk_name) is None:
                raise errors.DriverError('its disk %s is not there (is %s storage really shared with this host?)' % (disk_path, spec.storage))
        else:
            if find_volume(pool, disk_name) is not None:
                raise errors.DriverError('its disk %s already exists' % disk_path)
            base_path, base_format, virtual_size = self.images.base_volume(conn, spec.storage, spec.image)
            capacity = max(int(spec.disk_gb or 0) * GIB, virtual_size)
            volume_xml = domxml.volume_xml(disk_name, capacity, 'qcow2', backing_path=base_path, backing_format=base_format)
        drive_path = posixpath.join(directory, drive_name)
        drive_there = find_volume(pool, drive_name) is not None
        if spec.reuse_disk and drive_there:
            # Evacuation on shared storage: the guest keeps its drive as it is (same password, and
            # cloud-init sees the same instance), as it keeps its disk.
            attach, drive = True, None
        elif drive is not None:
            if drive_there:
                raise errors.DriverError('its config drive %s already exists' % drive_path)
            attach = True
        else:
            attach = False
        log_path = posixpath.join(directory, log_name)
        kind = domxml.domain_type(conn.getCapabilities(), virt_type=(spec.image_properties or {}).get('virt_type'))
        domain_spec = _with_uuid(spec, inst_uuid)
        return {
            'pool': pool,
            'log_name': log_name,
            'log_existed': find_volume(pool, log_name) is not None,
            'volume_xml': volume_xml,
            'drive_name': drive_name,
            'drive_data': drive,
            'domain_xml': domxml.build_domain(domain_spec, disk_path, log_path, kind, 'qcow2',
                                              config_drive=drive_path if attach else None),
        }

    @staticmethod
    def _undo_spawn(plan, made):
        """Remove what a failed spawn created; a sentence saying what was removed and not."""
        removed, left = [], []
        steps = [('domain', made.get('domain'), remove_domain), ('disk', made.get('volume'), delete_volume),
                 ('config drive', made.get('config_drive'), delete_volume)]
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
                refresh_pool(plan['pool'])
                if delete_named(plan['pool'], plan['log_name']):
                    removed.append('console log')
            except libvirt.libvirtError as exc:
                left.append('console log (%s)' % exc.get_error_message())
        text = ('removed its %s' % ', '.join(removed)) if removed else 'nothing had been created'
        return text + ('; could not remove its %s' % ', '.join(left) if left else '')

    # Moves between hypervisor types (issue 19) ---------------------------------------------

    def import_instance(self, spec, disks, progress=None):
        """The DiskFiles converted to one flattened qcow2 on the controller (importing.py says why there), uploaded as the
        instance's disk `<uuid>.qcow2` in spec.storage's directory, then the domain defined from spec around it (as
        spawn does with a disk it reuses: the config drive from spec.guest, the console log) and started. progress(bytes
        sent, bytes total) before and after the upload, from the caller's thread (the upload runs on a worker's, where
        the caller's registry connection may not be used). Whatever fails, the domain and every file made are removed."""
        try:
            inst_uuid = str(uuidlib.UUID(str(spec.uuid)))
        except ValueError:
            raise errors.DriverError('instance %s: %r is not a UUID; nothing was created' % (spec.name, spec.uuid)) from None
        what = 'cannot import instance %s (%s) on %s' % (spec.name, inst_uuid, self._what())
        self._check_node(spec.node)
        instance_dir(self.host, spec.storage)
        if len(disks) != 1:
            # domain_xml builds a domain of one disk (and the config drive): more would be dropped silently.
            raise errors.DriverError('%s: it has %d disks; a KVM instance is made with one; nothing was created' % (what, len(disks)))
        drive = self._config_drive_image(spec, inst_uuid)
        with tempfile.TemporaryDirectory(prefix='multihv-import-', dir=os.path.dirname(disks[0].path) or None) as workdir:
            qcow2 = os.path.join(workdir, '%s.qcow2' % inst_uuid)
            size, _virtual = importing.to_qcow2(disks[0], qcow2, int(spec.disk_gb or 0) * GIB, max(self.work_timeout, 60.0),
                                                '%s; nothing was created' % what)
            work = functools.partial(self._import, spec, inst_uuid, drive, qcow2, size, what)
            if progress is not None:
                progress(0, size)
            state = self._run('importing instance %s (%s)' % (spec.name, inst_uuid), work, size / UPLOAD_RATE)
            if progress is not None:
                progress(size, size)
            return state

    def _import(self, spec, inst_uuid, drive, qcow2, size, what, conn):
        pool = instance_pool(conn, instance_dir(self.host, spec.storage))
        refresh_pool(pool)
        disk_name = instance_file_names(inst_uuid)[0]
        for exists in (lookup_uuid(conn, inst_uuid), lookup_name(conn, spec.name)):
            if exists is not None:
                raise errors.DriverError('%s: a domain %s (%s) is already defined there; nothing was created'
                                         % (what, exists.name(), exists.UUIDString()))
        if find_volume(pool, disk_name) is not None:
            raise errors.DriverError('%s: its disk %s already exists; nothing was created' % (what, disk_name))
        volume = pool.createXML(domxml.volume_xml(disk_name, size, 'raw', mode='0600'), 0)
        try:
            with open(qcow2, 'rb') as handle:
                sent = upload(conn, volume, handle, size)
            if sent != size:
                raise errors.DriverError('%s: the upload of its disk stopped after %d of %d bytes' % (what, sent, size))
            # The disk is there now: spawn's own path for a disk it reuses defines and starts the domain, and removes
            # what it made when that fails; the disk is this import's to remove.
            return self._spawn(dataclasses.replace(spec, uuid=inst_uuid, reuse_disk=True), inst_uuid, drive, conn)
        except BaseException:
            delete_volume(volume)
            raise

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
            states.append(instance_state(domain, self.host.name, stats.get('state.state', 0), info))
        return states

    def destroy(self, uuid, node, destroy_disks=True):
        """Power off and undefine the instance, and delete its disks, config drive and console log unless
        destroy_disks is False (a stale copy on a host that comes back after its instances
        were evacuated on shared storage: the rebuilt instance uses that disk). Idempotent:
        no error when it is already gone. When the domain is not defined here, only leftovers
        in the host's local instance path are removed: a shared disk may belong to the same
        instance on another host."""
        self._check_node(node)
        self._run('destroying instance %s' % uuid, functools.partial(self._destroy, uuid, destroy_disks))

    def _destroy(self, inst_uuid, destroy_disks, conn):
        domain, info = managed_domain(conn, inst_uuid, self._what())
        if domain is not None:
            remove_domain(domain)
        if not destroy_disks:
            return
        if info is not None:
            # A resize waiting to be confirmed keeps a copy of the old disk beside the disk: it goes with it.
            paths = files_of(info) + [resizing.kept_path(path, inst_uuid) for path in info.disk_paths[:1]]
        else:
            paths = [posixpath.join(self.host.instance_path, name) for name in instance_file_names(inst_uuid)]
        delete_instance_files(conn, self.host, paths)

    def list_instance_files(self):
        """The `<uuid>.*` volumes (disks, console logs, config drives) of the pools on this host's instance_path and,
        when set, shared_instance_path, each rescanned first; _base and heartbeat files are not reported.
        A file in the shared directory is reported as this host's: every host that sees it reports it."""
        return self._run('listing instance files', lambda conn: [
            InstanceFile(instance_file_uuid(name), self.host.name, storage, name, path) for storage, name, path in instance_files(conn, self.host)])

    def remove_instance_files(self, uuid, node, storage):
        """Delete the `<uuid>.*` volumes of the instance in this host's local or shared instance directory;
        refused while a domain of that uuid is defined here (whether or not it is one of ours)."""
        self._check_node(node)
        instance_dir(self.host, storage)  # a bad storage fails before any I/O
        return self._run('removing the %s files of instance %s' % (storage, uuid), functools.partial(self._remove_files, uuid, storage))

    def _remove_files(self, inst_uuid, storage, conn):
        domain = lookup_uuid(conn, inst_uuid)
        if domain is not None:
            raise errors.DriverError('instance %s is defined on %s (domain %s): its files are in use; nothing was deleted'
                                     % (inst_uuid, self._what(), domain.name()))
        return delete_files_of(conn, self.host, storage, inst_uuid)

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
        domain, _info = managed_domain(conn, inst_uuid, self._what())
        if domain is None:
            raise errors.NotFound('instance %s is not defined on %s; nothing was changed' % (inst_uuid, self._what()))
        state = domain.state()[0]
        active = state not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_NOSTATE)
        if action in ('start', 'reboot') and not active:
            domain.create()
        elif action == 'start' and state == libvirt.VIR_DOMAIN_PAUSED:
            domain.resume()
        elif action == 'stop' and active:
            ignore_not_running(domain.destroy)
        elif action == 'shutdown' and active:
            ignore_not_running(domain.shutdown)
        elif action == 'reboot':
            domain.reset(0)
        return instance_state(domain, self.host.name)

    def set_admin_password(self, uuid, node, user, password):
        """user's password in the running guest, through its QEMU guest agent (virDomainSetUserPassword,
        as Nova's set-password). DriverError naming the instance and why (not running, no agent); the
        password is in no message."""
        self._check_node(node)
        self._run('setting a password in instance %s' % uuid, functools.partial(self._set_password, uuid, user, password))

    def _set_password(self, inst_uuid, user, password, conn):
        domain, _info = managed_domain(conn, inst_uuid, self._what())
        if domain is None:
            raise errors.NotFound('instance %s is not defined on %s; no password was set' % (inst_uuid, self._what()))
        failed = 'cannot set the password of %s in instance %s on %s' % (user, inst_uuid, self._what())
        if not domain.isActive():
            raise errors.DriverError('%s: it is not running (the guest agent sets it in a running guest); nothing was changed' % failed)
        try:
            domain.setUserPassword(user, password, 0)
        except libvirt.libvirtError as exc:
            # from None: the libvirt error stays out of tracebacks, whatever it might echo.
            raise errors.DriverError('%s: %s; nothing was changed' % (failed, _agent_failure(exc, password))) from None

    # Migration --------------------------------------------------------------------------

    def shares_storage(self, target, storage):
        """True when this host's instance directory for storage ('local' / 'shared') is
        target's too: checked by writing a marker through this host and looking for it
        through target's, never assumed from paths. Leaves nothing behind."""
        directory = instance_dir(self.host, storage)
        if storage not in storages(target.host) or instance_dir(target.host, storage) != directory:
            return False
        moving.connect_both(self.connection, target.connection)
        return self._run('checking whether %s is shared with %s' % (directory, target.host.name),
                         lambda _conn: moving.shares_directory(self.connection, target.connection, directory))

    def migrate(self, uuid, node, target, mode, controls, progress=None):
        """live: memory only, the disk stays on storage both hosts share; block: live, with the
        disks' top layers copied to the target (NON_SHARED_INC; their base must be there);
        cold: stop, copy the disks unless shared, define and start on the target. The target
        driver must be a LibvirtDriver of another host; (InstanceState on it, stats)."""
        self._check_node(node)
        if not isinstance(target.driver, LibvirtDriver) or target.driver.host.uri == self.host.uri:
            raise errors.DriverError('instance %s: the target of a KVM migration must be another KVM host; nothing moved' % uuid)
        source, dest = self.connection, target.driver.connection
        moving.connect_both(source, dest)
        deadline = time.monotonic() + self.work_timeout
        doing = '%s migration of instance %s to %s' % (mode, uuid, dest.host.name)
        # On this thread, not under call_within: the move watches its own deadline, and progress
        # reaches the caller's registry, which may not be used from another thread.
        try:
            if mode == 'cold':
                domain, stats = moving.cold(source, dest, uuid, moving.disks_shared(source, dest, uuid), deadline)
            else:
                domain, stats = moving.live(source, dest, uuid, mode == 'block', controls, deadline, progress)
            return instance_state(domain, dest.host.name), stats
        except libvirt.libvirtError as exc:
            raise errors.DriverError('%s failed %s: %s' % (self._what(), doing, exc.get_error_message())) from exc

    # Snapshots to images (issue 17) ------------------------------------------------------

    def snapshot_instance(self, uuid, node, image, dest, quiesce=True):
        """The instance's root disk flattened into the complete base `<image>.qcow2` in the _base of its
        instance directory, and streamed to the controller's new file dest (snapshot.py): a stopped
        instance through the host's qemu-img convert, a running one through a block copy cut while its
        guest is frozen by its QEMU guest agent (when one answers; thawed whatever happens). Refused,
        nothing changed, when that base exists; on failure the new base and dest are removed."""
        self._check_node(node)
        self.images.path(image, 'qcow2')  # a bad name fails before any I/O
        if not dest:
            raise errors.DriverError('image %s: a KVM capture needs a file on the controller to write; nothing was changed' % image)
        deadline = time.monotonic() + max(self.host.timeout, self.work_timeout)

        def work(conn):
            domain, _info = managed_domain(conn, uuid, self._what())
            if domain is None:
                raise errors.NotFound('instance %s is not defined on %s; image %s was not made' % (uuid, self._what(), image))
            base_pool = functools.partial(self.images.base_pool_of, conn, build=True)
            return snapshot.Capture(conn, self.host, domain, image, base_pool, self._what(), deadline).run(dest, quiesce)

        return self._run('capturing instance %s into image %s' % (uuid, image), work)

    def close(self):
        self.connection.close()

    # Resize (issue 17): on this host, see resizing.py ---------------------------------------

    def resize(self, uuid, node, vcpus, memory_mb, disk_gb):
        """The domain stopped, redefined with vcpus and memory_mb, its disk grown to disk_gb and a copy of the
        old disk kept beside it; started again when it ran."""
        self._check_node(node)
        return self._resizing('resizing instance %s' % uuid, lambda conn: resizing.resize(
            conn, self._what(), uuid, vcpus, memory_mb, disk_gb, max(self.host.timeout, self.work_timeout)))

    def confirm_resize(self, uuid, node):
        """The kept copy of the old disk deleted."""
        self._check_node(node)
        self._resizing('confirming the resize of instance %s' % uuid, lambda conn: resizing.confirm(conn, self._what(), uuid))

    def revert_resize(self, uuid, node, vcpus, memory_mb):
        """The kept copy put back as the disk, the domain redefined with vcpus and memory_mb."""
        self._check_node(node)
        return self._resizing('reverting the resize of instance %s' % uuid, lambda conn: resizing.revert(
            conn, self._what(), uuid, vcpus, memory_mb, max(self.host.timeout, self.work_timeout)))

    def _resizing(self, doing, work):
        def run(conn):
            try:
                domain = work(conn)
                return instance_state(domain, self.host.name) if domain is not None else None
            except libvirt.libvirtError as exc:
                raise errors.DriverError('%s failed %s: %s; the instance was left with its old sizes and disk'
                                         % (self._what(), doing, exc.get_error_message())) from exc
        # Two disk copies at most (the kept one, and back on a failure) besides the work itself.
        return self._run(doing, run, extra_seconds=2 * max(self.host.timeout, self.work_timeout))

    # Adoption (issue 17 §3) ----------------------------------------------------------------

    def list_vms(self, node):
        """Every domain of the host, ours or not, with its NICs, disks (their capacity from libvirt's block info)
        and storage: shared when every disk is under shared_instance_path, else local; the disks not directly in
        an instance directory are listed as outside (a destroy leaves them)."""
        self._check_node(node)
        return self._run('listing the VMs for adoption', self._list_vms)

    def _list_vms(self, conn):
        shared = posixpath.normpath(self.host.shared_instance_path) if self.host.shared_instance_path else None
        ours = instance_dirs(self.host)
        found = []
        for domain, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE):
            try:
                info = domxml.parse_domain(domain.XMLDesc(0))
            except libvirt.libvirtError:
                continue  # undefined meanwhile
            paths = [posixpath.normpath(path) for path in info.disk_paths]
            directories = [posixpath.dirname(path) for path in paths]
            found.append(VMDetails(
                uuid=info.uuid, name=info.name, node=self.host.name, host=self.host.name,
                power_state=domxml.power_state(stats.get('state.state', 0)), vcpus=info.vcpus, memory_mb=info.memory_mb,
                disk_gb=-(-sum(_capacity(domain, path) for path in info.disk_paths) // GIB), nics=list(info.interfaces),
                disk_paths=list(info.disk_paths),
                # Shared: every disk under the shared instance path (a folder of its own there too).
                storage='shared' if paths and shared and all(p.startswith(shared + '/') for p in paths) else 'local',
                outside=[path for path, d in zip(info.disk_paths, directories) if d not in ours],
                marked=info.managed is not None, marked_uuid=(info.managed or {}).get('uuid') or None))
        return sorted(found, key=lambda vm: (vm.name, vm.uuid))

    def adopt(self, uuid, node, name, metadata):
        """Give the domain the cloud's metadata (virDomainSetMetadata: live when it runs, persistent when it is
        defined), as build_domain writes it; nothing else of the domain changes."""
        self._check_node(node)
        return self._run('adopting VM %s (%s)' % (name, uuid), functools.partial(self._adopt, uuid, name, metadata))

    def _adopt(self, inst_uuid, name, metadata, conn):
        domain = lookup_uuid(conn, inst_uuid)
        if domain is None:
            raise errors.NotFound('no domain %s on %s; nothing was adopted' % (inst_uuid, self._what()))
        info = domxml.parse_domain(domain.XMLDesc(0))
        if info.managed is not None:
            if info.managed.get('uuid') == inst_uuid:
                return instance_state(domain, self.host.name, info=info)  # adopted already
            raise errors.DriverError('domain %s (%s) on %s carries the metadata of instance %s; it was left untouched'
                                     % (info.name, inst_uuid, self._what(), info.managed.get('uuid')))
        spec = InstanceSpec(uuid=inst_uuid, name=name, node=self.host.name, vcpus=int(metadata.get('vcpus') or 0),
                            memory_mb=int(metadata.get('memory_mb') or 0), disk_gb=int(metadata.get('disk_gb') or 0),
                            image=str(metadata.get('image') or ''), storage=str(metadata.get('storage') or 'local'), hostname=name,
                            metadata={'adopted': True})
        flags = (libvirt.VIR_DOMAIN_AFFECT_CONFIG if domain.isPersistent() else 0) | (libvirt.VIR_DOMAIN_AFFECT_LIVE if domain.isActive() else 0)
        try:
            domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.adoption_metadata(spec), domxml.PREFIX, domxml.NAMESPACE, flags)
        except libvirt.libvirtError as exc:
            raise errors.DriverError('cannot give domain %s (%s) on %s the cloud\'s metadata: %s; it was left untouched'
                                     % (info.name, inst_uuid, self._what(), exc.get_error_message())) from exc
        return instance_state(domain, self.host.name)

    # Moves between hypervisor types (issue 19): see export.py --------------------------------

    def export_disks(self, uuid, node, dest_dir, progress=None):
        """The stopped domain's file disks, each flattened by the host's qemu-img (virStorageVolCreateXMLFrom, as a
        capture of a stopped instance) into a temporary qcow2 beside it and streamed into dest_dir as
        `<uuid>-disk<N>.qcow2`; [DiskFile], first disk first. Refused (errors.MultihvError) while it runs."""
        self._check_node(node)
        deadline = time.monotonic() + max(self.host.timeout, self.work_timeout)
        # Imported here: only a move between hypervisor types needs export.py, and every module_utils file a module
        # imports is compiled from source on each run (Ansible ships them in a zip without bytecode).
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import export as exporting  # pylint: disable=import-outside-toplevel
        conn = self.connection.connect()
        # On this thread, not under call_within (as migrate): progress reaches the caller's registry.
        try:
            return exporting.export(conn, uuid, self._what(), dest_dir, deadline, progress)
        except libvirt.libvirtError as exc:
            raise errors.DriverError('%s failed exporting the disks of instance %s: %s; nothing was exported'
                                     % (self._what(), uuid, exc.get_error_message())) from exc

    def retire_converted(self, uuid, node, keep=False):
        """After a move to another hypervisor type: the domain undefined with its files (destroy), or with keep
        powered off, renamed '<name>.moved-<8 hex of uuid>' and stripped of the multihv metadata. Idempotent."""
        self._check_node(node)
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import export as exporting  # pylint: disable=import-outside-toplevel

        def work(conn):
            exporting.retire(conn, uuid, self._what(), keep, lambda: self._destroy(uuid, True, conn))

        self._run('retiring instance %s after its move' % uuid, work)

    # Rebalancing (issue 18 §1): what the domains use, see usage.py ---------------------------

    def usage(self, node, interval):
        """Every active domain's CPU time read twice, interval seconds apart, and its resident memory:
        two bulk calls whatever the number of domains."""
        if node is None or not self.serves(node):
            raise errors.DriverError('node %s is not %s (a KVM host is one node of its own name); nothing was measured'
                                     % (node, self._what()))
        return self._run('measuring what its domains use', lambda conn: host_usage.measure(conn, node, interval),
                         extra_seconds=interval)


def _size(domain):
    """(vCPUs, maximum memory KiB) a domain is given (virDomainGetInfo: its definition, no monitor); (0, 0) for one
    that went meanwhile."""
    try:
        state = domain.info()  # state, maximum memory KiB, memory KiB, vCPUs, CPU time
    except libvirt.libvirtError:
        return 0, 0
    return state[3], state[1]


def _marked(domain):
    """True when the domain carries the cloud's metadata (one virDomainGetMetadata call)."""
    try:
        domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.NAMESPACE, 0)
        return True
    except libvirt.libvirtError:
        return False  # no such metadata (VIR_ERR_NO_DOMAIN_METADATA), or the domain went meanwhile


def _capacity(domain, path):
    """Bytes of the disk at path as the guest sees it (virDomainGetBlockInfo); 0 when libvirt cannot tell."""
    try:
        return int(domain.blockInfo(path, 0)[0])
    except libvirt.libvirtError:
        return 0


def _message(exc):
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message()
    return str(exc)


def _agent_failure(exc, password):
    """Why setUserPassword failed, in words that cannot hold the password: libvirt's message unless
    it contains the password (then a sentence chosen by the error code alone)."""
    message = exc.get_error_message() or ''
    if password and password in message:
        message = ''
    code = exc.get_error_code()
    if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
        reason = 'its QEMU guest agent does not answer (is qemu-guest-agent installed and running in the guest?)'
    elif code in (libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED, libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
        reason = 'the domain has no QEMU guest agent channel'
    elif code == libvirt.VIR_ERR_OPERATION_INVALID:
        reason = 'it is not running'
    else:
        reason = 'the guest agent refused'
    return '%s (%s)' % (reason, message) if message else reason


def _with_uuid(spec, inst_uuid):
    """spec with its UUID in canonical form (the one libvirt reports back)."""
    return spec if spec.uuid == inst_uuid else dataclasses.replace(spec, uuid=inst_uuid)


__all__ = ['WORK_TIMEOUT', 'LibvirtDriver']
