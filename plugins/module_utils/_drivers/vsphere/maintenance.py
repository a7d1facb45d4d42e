# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ESXi host maintenance mode (issue 18 §2): EnterMaintenanceMode_Task and ExitMaintenanceMode_Task of one
host of a cluster node. Private to multihv.cloud: do not import.

The driver moves nothing: the core moves the cloud's instances off the host first (vMotion, each under its
lease and migration record). Entering is refused while a powered-on VM is still on the host: a vCenter
without DRS would keep the task waiting until someone moves it, and vcsim enters at once whatever runs
there, so the check is the driver's own. Powered-off VMs may stay registered on the host (the task's
evacuatePoweredOffVms is False: vCenter does not move them, and they cannot be powered on there until the
host leaves maintenance). One retrieval of the inventory, then the task.
"""

from __future__ import annotations

import collections

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import cluster_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import PROPERTIES, by_kind, merge_properties, vm_name
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import wait_task

# get_nodes' view (clusters, hosts and their state, where each VM runs and its power) and the VMs' names.
MAINTENANCE_PROPERTIES = merge_properties(PROPERTIES, collections.OrderedDict([('VirtualMachine', ('name',))]))


def find_host(vcenter, records, node, host):
    """(host moid, its props) of host `host` in cluster node `node`, from one retrieval of MAINTENANCE_PROPERTIES.
    errors.NotFound when the node is not a cluster of the vCenter or has no such host (naming the host's cluster
    when it is another one's, and the node's hosts)."""
    objects = by_kind(records)
    nodes = cluster_nodes(vcenter, objects, strict=False)
    cluster = next((moid for moid, name in nodes.items() if name == node), None)
    untouched = 'no host was put in or out of maintenance'
    if cluster is None:
        raise errors.NotFound('vCenter %s has no cluster node %s; %s' % (vcenter.name, node, untouched))
    hosts = sorted(objects['HostSystem'].items())
    mine = [(moid, props) for moid, props in hosts if props.get('parent') == cluster]
    found = next(((moid, props) for moid, props in mine if props.get('name') == host), None)
    if found is not None:
        return found
    elsewhere = next((props.get('parent') for _moid, props in hosts if props.get('name') == host), None)
    where = (' (it is a host of %s)' % nodes.get(elsewhere, 'no cluster node')) if elsewhere is not None else ''
    raise errors.NotFound('node %s has no host %s%s; its hosts: %s; %s' % (
        node, host, where, ', '.join(sorted(props.get('name', '') for _moid, props in mine)) or 'none', untouched))


def powered_on_vms(records, host_moid):
    """Names of the powered-on VMs (templates excluded) that run on host host_moid, sorted."""
    objects = by_kind(records)
    return sorted(vm_name(props.get('name')) for props in objects['VirtualMachine'].values()
                  if props.get('runtime.host') == host_moid and str(props.get('runtime.powerState')) == 'poweredOn'
                  and not props.get('summary.config.template'))


def task_call(enter):
    """(method name, keyword arguments) of the task that puts a host in (enter) or out of maintenance: no timeout
    of the vCenter's own (the driver's deadline bounds the wait), and powered-off VMs left where they are."""
    if enter:
        return 'EnterMaintenanceMode_Task', {'timeout': 0, 'evacuatePoweredOffVms': False}
    return 'ExitMaintenanceMode_Task', {'timeout': 0}


def set_maintenance(content, vcenter, records, node, host, enter, host_ref, deadline):
    """Run the task on host_ref (the HostSystem of find_host) unless the host is in the state asked already.
    True when it changed. Entering with powered-on VMs on the host is refused, nothing done."""
    moid, props = find_host(vcenter, records, node, host)
    if bool(props.get('runtime.inMaintenanceMode')) == bool(enter):
        return False
    if enter:
        running = powered_on_vms(records, moid)
        if running:
            raise errors.DriverError('host %s of node %s still runs VMs %s: they must move or stop before it enters '
                                     'maintenance mode; it was left out of maintenance' % (host, node, ', '.join(running)))
    method, arguments = task_call(enter)
    what = '%s of host %s (node %s)' % (method, host, node)
    wait_task(content.propertyCollector, getattr(host_ref, method)(**arguments), deadline, what)
    return True


__all__ = ['MAINTENANCE_PROPERTIES', 'find_host', 'powered_on_vms', 'set_maintenance', 'task_call']
