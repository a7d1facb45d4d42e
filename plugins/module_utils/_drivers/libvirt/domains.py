# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The domains of one KVM host: finding ours, reading their state, removing them.
Private to multihv.cloud: do not import. The driver and migration share these.
"""

from __future__ import annotations

import posixpath

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceState
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import found_or_none, instance_file_names

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None


def lookup_uuid(conn, inst_uuid):
    """The domain of that UUID, or None."""
    return found_or_none(conn.lookupByUUIDString, inst_uuid, libvirt.VIR_ERR_NO_DOMAIN)


def lookup_name(conn, name):
    """The domain of that name, or None."""
    return found_or_none(conn.lookupByName, name, libvirt.VIR_ERR_NO_DOMAIN)


def managed_domain(conn, inst_uuid, what):
    """(domain, DomainInfo) of our instance on the host `what` names, or (None, None) when
    it is not defined there; errors.DriverError for a domain multihv did not create."""
    domain = lookup_uuid(conn, inst_uuid)
    if domain is None:
        return None, None
    info = domxml.parse_domain(domain.XMLDesc(0))
    if info.managed is None:
        raise errors.DriverError('domain %s (%s) on %s was not created by multihv (no %s metadata); it was left untouched'
                                 % (info.name, inst_uuid, what, domxml.NAMESPACE))
    return domain, info


def instance_state(domain, node, state=None, info=None):
    """The InstanceState of a domain on the KVM host `node` (its own node and host);
    state and info when the caller has read them already."""
    if info is None:
        info = domxml.parse_domain(domain.XMLDesc(0))
    if state is None:
        state = domain.state()[0]
    return InstanceState(uuid=info.uuid, name=info.name, node=node, host=node,
                         power_state=domxml.power_state(state), vcpus=info.vcpus, memory_mb=info.memory_mb,
                         macs=info.macs, disk_paths=info.disk_paths)


def config_drives(info):
    """The domain's config drive (a list: none or one): the CD-ROM named after the instance
    (storage.instance_file_names). Another CD-ROM someone attached is not the instance's own."""
    name = instance_file_names(info.uuid)[2]
    return [path for path in info.cdrom_paths if posixpath.basename(path) == name]


def files_of(info):
    """The files of a domain that are the instance's: its disks, its config drive and its console log."""
    return info.disk_paths + config_drives(info) + ([info.console_log] if info.console_log else [])


def ignore_not_running(call):
    """Stopping a domain that stopped meanwhile is done, not an error."""
    try:
        call()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
            raise


def remove_domain(domain):
    """Power off (if running) and undefine, with whatever state libvirt keeps for it."""
    try:
        if domain.isActive():
            ignore_not_running(domain.destroy)
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


__all__ = ['config_drives', 'files_of', 'ignore_not_running', 'instance_state', 'lookup_name', 'lookup_uuid', 'managed_domain', 'remove_domain']
