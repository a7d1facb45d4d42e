# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The KVM compute driver: one libvirt host is one node. Private to multihv.cloud: do not import.

Every call to the host runs with a deadline (KvmHost.timeout): libvirt's client
blocks for as long as TCP or the RPC handshake does, and one dead host must be
reported down, not stall the whole cloud.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._driver import (
    HYPERVISOR_KVM, ComputeDriver, HostResources, NodeResources, call_within,
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
    return 'multihv-' + uuid.uuid5(uuid.NAMESPACE_URL, 'file://' + path).hex[:16]


def instance_pool(conn, path):
    """An active storage pool on `path`: one the host already has there, else a transient
    one multihv creates under a name derived from the path and leaves active (it holds no
    configuration on the host and is gone when libvirtd restarts).

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
    xml = "<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>" % (name, _xml_text(path))
    try:
        return conn.storagePoolCreateXML(xml, 0)
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


def _xml_text(value):
    return value.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


class LibvirtDriver(ComputeDriver):
    """One KVM host (a libvirt URI) as one node."""

    hypervisor_type = HYPERVISOR_KVM

    def __init__(self, host):
        self.host = host
        self._conn = None

    def node_names(self):
        return [self.host.name]

    def endpoint_name(self):
        return self.host.name

    def _what(self):
        return 'KVM host %s at %s' % (self.host.name, self.host.uri)

    def _connect(self):
        if not HAS_LIBVIRT:
            raise errors.MissingLibrary('libvirt-python', 'for KVM hosts')
        if self._conn is None:
            try:
                self._conn = libvirt.open(self.host.uri)
            except libvirt.libvirtError as exc:
                raise errors.Unreachable('%s did not answer: %s' % (self._what(), exc.get_error_message()))
        return self._conn

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

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass  # a host that died meanwhile has nothing left to release
            self._conn = None
