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
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - The stale copies that would be cleaned are listed in RV(cleaned) and left in place.
  diff_mode:
    support: full
    details:
      - The node's admin state before and after.
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

- name: Declare a failed KVM host down so that it can be evacuated
  multihv.cloud.compute_node:
    name: kvm3
    forced_down: true
'''

RETURN = r'''
node:
  description: The node's admin state after the change (or as it would be, in check mode).
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
diff:
  description: Admin state before and after, in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _argspec
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
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
                             mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    with _args.cloud_session(module) as ctx:
        changed, before, after, cleaned = _evacuation.set_admin_state(ctx, module.params['name'], requested(module.params),
                                                                      check_mode=module.check_mode)
    _args.exit_with(module, changed, 'node', before, after, cleaned=cleaned)


if __name__ == '__main__':
    main()
