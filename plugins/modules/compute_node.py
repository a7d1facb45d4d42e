#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: compute_node
short_description: Manage the admin state of a compute node
version_added: 0.1.0
description:
  - Enables or disables a compute node for scheduling, forces it down, and sets its availability zone, aggregates,
    allocation ratios, reserved resources and whether it is kept free for failover.
  - A node is one KVM host, named as in the cloud file, or one vSphere cluster, named C(vcenter/datacenter/cluster).
  - Only the options given are changed; the others keep their value in the registry.
  - With O(host) and O(host_maintenance), puts one ESXi host of a vSphere cluster node into maintenance mode, or takes it
    out again. Entering first moves every instance of the cloud's on that host, running or stopped, to the cluster's
    other hosts (vMotion for running ones), each placed by the scheduler's host fit (the other host with the most free
    RAM that has the instance's vCPUs and RAM), not left to DRS, each recorded as a migration like
    M(multihv.cloud.migrate)'s. All the moves are planned before the first one; when the other hosts cannot take the
    running instances, when the host is the last one up of the cluster, or when a VM that is not the cloud's runs there
    (move it, power it off, or adopt it with M(multihv.cloud.instance_import)), the task fails and nothing moves.
    Powered-off VMs that are not the cloud's stay registered on the host. The node's capacity drops at once (a host in
    maintenance is not usable, so M(multihv.cloud.compute_node_info), the scheduler and the inventory leave it out) and
    comes back when it leaves maintenance. A KVM node is a host itself; use O(enabled) and a drain
    (M(multihv.cloud.migrate)) there.
  - A node asked back into service (O(enabled=true) or O(forced_down=false)) whose instances were evacuated
    (M(multihv.cloud.evacuate), M(multihv.cloud.instance_ha)) first loses their stale copies, before the admin state
    changes; RV(cleaned) says which. A stale copy on shared storage is undefined and its disk, which the rebuilt
    instance uses, is kept; one on local storage goes with its disk. While the node does not answer this is refused and
    nothing changes, so a node never takes instances with stale copies left on it.
options:
  name:
    description: The compute node.
    type: str
    required: true
  enabled:
    description: Whether the scheduler may place instances on the node.
    type: bool
  disabled_reason:
    description:
      - Why the node is disabled, shown by M(multihv.cloud.compute_node_info) and the inventory.
      - Cleared when the node is enabled without a reason.
    type: str
  forced_down:
    description:
      - Declare the node down whatever its hypervisor answers, as Nova's C(forced_down); evacuation requires it or a fence.
    type: bool
  availability_zone:
    description: Availability zone of the node, overriding the cloud file's.
    type: str
  aggregates:
    description: Aggregates of the node, overriding the cloud file's.
    type: list
    elements: str
  allocation_ratios:
    description: Overcommit ratios, overriding the cloud file's defaults (cpu 4.0, ram 1.0, disk 1.0).
    type: dict
    suboptions:
      cpu:
        description: vCPUs per physical CPU thread.
        type: float
      ram:
        description: Instance RAM per byte of usable RAM.
        type: float
      disk:
        description: Instance disk per byte of instance storage.
        type: float
  reserved:
    description: Resources kept for the hypervisor itself, subtracted before the ratios apply.
    type: dict
    suboptions:
      vcpus:
        description: Reserved CPU threads.
        type: int
      memory_mb:
        description: Reserved RAM (default 512 on KVM hosts, 0 on clusters).
        type: int
      disk_gb:
        description: Reserved instance storage.
        type: int
  reserved_for_failover:
    description: Keep the node empty for evacuations and instance HA; the scheduler places ordinary instances elsewhere.
    type: bool
  host:
    description:
      - One host of the node (an ESXi host of a vSphere cluster node) whose maintenance mode O(host_maintenance) sets.
      - Given with O(host_maintenance) only, and without the node's own settings (O(enabled) and the others); one task
        changes either the node's admin state or one host's maintenance mode.
    type: str
    version_added: 0.1.0
  host_maintenance:
    description:
      - V(true) puts O(host) into maintenance mode after moving the cloud's instances off it; V(false) takes it out.
      - A host in that state already is left as it is (changed false). A move that fails stops the task with the
        host out of maintenance; the moves made before it stay made and the message names them.
      - The node's lease is held throughout, so no drain, evacuation or other host maintenance of the node runs
        meanwhile; each move holds its instance's lease. A run killed between moves leaves the migration records true
        (M(multihv.cloud.reconcile) settles the move that was under way); running the task again finishes the job.
    type: bool
    version_added: 0.1.0
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - The stale copies that would be cleaned are listed in RV(cleaned) and left in place.
      - With O(host_maintenance), RV(migrations) is the plan (each instance and the host it would go to); nothing
        moves and the host stays as it is.
  diff_mode:
    support: full
    details:
      - The node's admin state before and after; with O(host), the host's maintenance mode before and after.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Take kvm2 out of scheduling for maintenance
  multihv.cloud.compute_node:
    name: kvm2
    enabled: false
    disabled_reason: firmware upgrade

- name: Put a vSphere cluster in the legacy tier with less CPU overcommit
  multihv.cloud.compute_node:
    name: vc1/DC1/Cluster-A
    availability_zone: legacy
    aggregates: [legacy, ha]
    allocation_ratios:
      cpu: 2.0

- name: Move the instances off an ESXi host of a cluster node and put it into maintenance mode
  multihv.cloud.compute_node:
    name: vc1/DC1/Cluster-A
    host: esx-03.example.com
    host_maintenance: true

- name: Take it out of maintenance mode again
  multihv.cloud.compute_node:
    name: vc1/DC1/Cluster-A
    host: esx-03.example.com
    host_maintenance: false

- name: Declare a failed KVM host down so that it can be evacuated
  multihv.cloud.compute_node:
    name: kvm3
    forced_down: true
'''

RETURN = r'''
node:
  description: The node's admin state after the change (or as it would be, in check mode; as it is, with O(host)).
  returned: always
  type: dict
  sample:
    enabled: false
    disabled_reason: firmware upgrade
    forced_down: false
    availability_zone: null
    aggregates: null
    allocation_ratios: null
    reserved: null
    reserved_for_failover: false
cleaned:
  description:
    - The stale copies of evacuated instances destroyed on the node before it was enabled (in check mode, those that
      would be), each with C(name), C(uuid), C(migration) (the evacuation record's id, now C(completed)), C(destroyed)
      (a domain was there) and C(disks_removed) (its local disk went too).
  returned: always
  type: list
  elements: dict
host:
  description:
    - With O(host), the host after the task (in check mode, as it would be) with C(name), C(node), C(in_maintenance)
      and C(connection_state); null otherwise.
  returned: always
  type: dict
  sample:
    name: DC0_C0_H0
    node: vcsim/DC0/DC0_C0
    in_maintenance: true
    connection_state: connected
migrations:
  description:
    - With O(host_maintenance=true), the migration records of the instances moved off the host (in check mode, the planned
      moves, C(status) V(would run)), each with C(instance_name); empty otherwise.
  returned: always
  type: list
  elements: dict
diff:
  description: Admin state before and after (or the host's maintenance mode, with O(host)), in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _argspec
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import host_maintenance as _host_maintenance
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'enabled': {'type': 'bool'},
    'disabled_reason': {'type': 'str'},
    'forced_down': {'type': 'bool'},
    'availability_zone': {'type': 'str'},
    'aggregates': {'type': 'list', 'elements': 'str'},
    'allocation_ratios': {'type': 'dict', 'options': {'cpu': {'type': 'float'}, 'ram': {'type': 'float'}, 'disk': {'type': 'float'}}},
    'reserved': {'type': 'dict', 'options': {'vcpus': {'type': 'int'}, 'memory_mb': {'type': 'int'}, 'disk_gb': {'type': 'int'}}},
    'reserved_for_failover': {'type': 'bool'},
    # ESXi host maintenance (issue 18 §2)
    'host': {'type': 'str'},
    'host_maintenance': {'type': 'bool'},
}


def requested(params):
    """The admin settings the task gives; sub-dicts without their unset keys."""
    changes = {}
    for key in _nodes.ADMIN_FIELDS:
        value = params.get(key)
        if isinstance(value, dict):
            value = dict((k, v) for k, v in value.items() if v is not None)
        if value is not None:
            changes[key] = value
    return changes


def main():
    module = _argspec.module(AnsibleModule, argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                             mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE, required_together=[('host', 'host_maintenance')])
    if module.params['host'] is not None:
        host_task(module)
    with _args.cloud_session(module) as ctx:
        changed, before, after, cleaned = _evacuation.set_admin_state(ctx, module.params['name'], requested(module.params),
                                                                      check_mode=module.check_mode)
    _args.exit_with(module, changed, 'node', before, after, cleaned=cleaned, host=None, migrations=[])


def host_task(module):
    """One host's maintenance mode; the node's own settings belong to another task."""
    given = sorted(key for key in requested(module.params))
    if given:
        module.fail_json(msg='host and host_maintenance change one host of node %s; %s change the node itself: give them in '
                             'another task; nothing was changed' % (module.params['name'], ', '.join(given)))
    with _args.cloud_session(module) as ctx:
        result = _host_maintenance.set_host_maintenance(ctx, module.params['name'], module.params['host'],
                                                        module.params['host_maintenance'], check_mode=module.check_mode)
        admin = _nodes.admin_state(ctx.registry.get_node(module.params['name']))
    extra = {'diff': _host_maintenance.diff(result)} if module._diff else {}  # pylint: disable=protected-access
    module.exit_json(changed=result['changed'], node=admin, cleaned=[], host=result['host'], migrations=result['migrations'], **extra)


if __name__ == '__main__':
    main()
