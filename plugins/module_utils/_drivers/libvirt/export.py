# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stopped instance's disks exported to the controller, and the domain a move between hypervisor
types leaves behind retired (issue 19). Private to multihv.cloud: do not import.

Export reuses the capture of a stopped instance (snapshot.py): virStorageVolCreateXMLFrom has the
host's qemu-img convert a disk's whole backing chain (overlay and image base) into one flattened
qcow2 volume, which a storage stream then downloads to the controller (snapshot.download_to). The
flattened volume is a temporary file beside the disk, named after the instance (`<uuid>.export-N.qcow2`)
so that a controller that dies mid-export leaves a file the reconciler's instance-file sweep finds;
it is deleted whatever happens.
"""

from __future__ import annotations

import os
import posixpath

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import DiskFile
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.domains import lookup_uuid, managed_domain
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.snapshot import download_to
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import (
    delete_named, delete_volume, find_volume, instance_pool, physical_size, refresh_pool,
)

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None


def export_name(inst_uuid, index):
    """The temporary flattened copy of disk `index` beside the instance's disk."""
    return '%s.export-%d.qcow2' % (inst_uuid, index)


def controller_name(inst_uuid, index):
    """The file disk `index` becomes in the controller's dest_dir."""
    return '%s-disk%d.qcow2' % (inst_uuid, index)


def moved_name(name, inst_uuid):
    """The name a kept source VM gets after a move: '<name>.moved-<first 8 hex digits of its uuid>'; a name that
    has the suffix already keeps it (retire_converted is idempotent)."""
    suffix = '.moved-%s' % inst_uuid.replace('-', '')[:8]
    return name if name.endswith(suffix) else name + suffix


def export(conn, inst_uuid, what, dest_dir, deadline, progress=None):
    """[DiskFile] of the stopped domain's file disks (not its config drive: a CD-ROM the target makes anew),
    first disk first, each flattened into a qcow2 in dest_dir. On failure the files written so far and the
    temporary volumes are removed before raising."""
    domain, info = managed_domain(conn, inst_uuid, what)
    if domain is None:
        raise errors.NotFound('instance %s is not defined on %s; nothing was exported' % (inst_uuid, what))
    if domain.isActive():
        raise errors.MultihvError('instance %s on %s is not powered off: its disks are exported only from a stopped VM; '
                                  'nothing was exported' % (inst_uuid, what))
    if not info.disk_paths:
        raise errors.DriverError('instance %s on %s has no file disk to export; nothing was exported' % (inst_uuid, what))
    sources = []
    for path in info.disk_paths:
        pool = instance_pool(conn, posixpath.dirname(posixpath.normpath(path)))
        refresh_pool(pool)  # instance pools are transient: a libvirtd restart forgets their volumes
        volume = find_volume(pool, posixpath.basename(path))
        if volume is None:
            raise errors.DriverError('the disk %s of instance %s is not on %s; nothing was exported' % (path, inst_uuid, what))
        sources.append((pool, volume))
    # Bytes to stream: the flattened copies are not known before they are made, so the sources' files
    # (overlay only) are a floor; the total grows as each copy is made, and is exact at the end.
    total = [sum(physical_size(volume) for _pool, volume in sources)]
    done = [0]
    paths, files = [], []
    try:
        for index, (pool, volume) in enumerate(sources):
            capacity = volume.info()[1]
            name = export_name(inst_uuid, index)
            delete_named(pool, name)  # a leftover of an export that died: ours to replace
            flat = pool.createXMLFrom(domxml.volume_xml(name, capacity, 'qcow2', mode='0600'), volume, 0)
            try:
                total[0] += physical_size(flat) - physical_size(volume)
                dest = os.path.join(dest_dir, controller_name(inst_uuid, index))
                base = done[0]

                def report(size, base=base):
                    done[0] = base + size
                    if progress is not None:
                        progress(done[0], max(total[0], done[0]))

                download_to(conn, flat, dest, report, deadline)  # removes what it wrote when it fails
                paths.append(dest)
            finally:
                delete_volume(flat)
            files.append(DiskFile(path=dest, disk_format='qcow2', virtual_size=int(capacity)))
    except BaseException:
        for path in paths:
            if os.path.exists(path):
                os.remove(path)
        raise
    return files


def retire(conn, inst_uuid, what, keep, remove):
    """The domain left on the source after a move: remove(domain_info) undefines it and deletes its files
    (the driver's destroy), or with keep it is powered off, renamed moved_name and stripped of the cloud's
    metadata, so that it is no instance any more but can be started again by hand (the rollback path).
    Idempotent: a domain already gone, or already renamed and unmarked, is left as it is."""
    domain = lookup_uuid(conn, inst_uuid)
    if domain is None:
        return
    info = domxml.parse_domain(domain.XMLDesc(0))
    if not keep:
        if info.managed is None:
            raise errors.DriverError('domain %s (%s) on %s carries no multihv metadata: it is not the instance\'s; it was left '
                                     'untouched' % (info.name, inst_uuid, what))
        remove()
        return
    if domain.isActive():
        domain.destroy()
    wanted = moved_name(info.name, inst_uuid)
    if info.name != wanted:
        domain.rename(wanted, 0)  # virDomainRename: an inactive, persistent domain only
    if info.managed is not None:
        domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, None, None, domxml.NAMESPACE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)


__all__ = ['controller_name', 'export', 'export_name', 'moved_name', 'retire']
