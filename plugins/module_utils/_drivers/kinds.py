# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hypervisor types there are drivers for, and the drivers a cloud file asks for.
Private to multihv.cloud: do not import.

The one place outside a driver's own package that names hypervisor types: a new type is
a driver package (capabilities.py + driver.py), a line in KINDS and a line in drivers_for.
Loading a driver's library (libvirt-python, pyVmomi) waits until a cloud uses it.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import capabilities as libvirt_capabilities
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import capabilities as vsphere_capabilities

KINDS = dict((caps.hypervisor_type, caps) for caps in (libvirt_capabilities.CAPABILITIES, vsphere_capabilities.CAPABILITIES))
HYPERVISOR_TYPES = tuple(KINDS)


def capabilities(hypervisor_type):
    """The Capabilities of a hypervisor type; errors.MultihvError for one without a driver."""
    try:
        return KINDS[hypervisor_type]
    except KeyError:
        raise errors.MultihvError('unknown hypervisor type %r; there are drivers for %s'
                                  % (hypervisor_type, ', '.join(HYPERVISOR_TYPES))) from None


def drivers_for(cloud):
    """One driver per endpoint of the cloud file: each vCenter, each KVM host."""
    drivers = []
    if cloud.vcenters:
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
        drivers.extend(VSphereDriver(v) for v in cloud.vcenters)
    if cloud.kvm_hosts:
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
        drivers.extend(LibvirtDriver(h) for h in cloud.kvm_hosts)
    return drivers


__all__ = ['HYPERVISOR_TYPES', 'KINDS', 'capabilities', 'drivers_for']
