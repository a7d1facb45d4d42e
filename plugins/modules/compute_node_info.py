#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: compute_node_info
short_description: Live resources, usage and health of compute nodes
version_added: 0.1.0
description:
  - Reads every compute node of the cloud, live, with its admin state from the registry.
  - A node is one KVM host or one vSphere cluster. For a cluster, capacity counts the connected ESXi hosts that are not in
    maintenance, and RV(nodes[].largest_host_free) shows the most one host can take, which the cluster's total hides.
  - All vCenters and KVM hosts are queried in parallel; one vCenter costs a constant number of calls whatever its size.
    A node whose endpoint does not answer is returned with RV(nodes[].state=down) and the reason, not as a failure.
options:
  names:
    description: Only these nodes.
    type: list
    elements: str
  hypervisor_type:
    description: Only nodes of this hypervisor type.
    type: str
    choices: [kvm, vsphere]
  availability_zone:
    description: Only nodes in this availability zone.
    type: str
  aggregate:
    description: Only nodes in this aggregate.
    type: str
  state:
    description: Only nodes that are up, or down.
    type: str
    choices: [up, down]
  enabled:
    description: Only nodes enabled, or disabled, for scheduling.
    type: bool
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.info
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Read every node
  multihv.cloud.compute_node_info:
  register: cloud_nodes

- name: KVM hosts that are down
  multihv.cloud.compute_node_info:
    hypervisor_type: kvm
    state: down
  register: down_hosts
'''

RETURN = r'''
nodes:
  description: The nodes that pass the filters, in cloud file order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Node name (a KVM host name, or C(vcenter/datacenter/cluster)).
      type: str
    hypervisor_type:
      description: C(kvm) or C(vsphere).
      type: str
    endpoint:
      description: The libvirt URI or vCenter SDK URL.
      type: str
    state:
      description: C(up) when its endpoint answered, C(down) otherwise.
      type: str
    reason:
      description: Why the node is down, or why it has no capacity.
      type: str
    enabled:
      description: Whether the scheduler may use it.
      type: bool
    disabled_reason:
      description: Why it was disabled.
      type: str
    forced_down:
      description: Declared down by an operator.
      type: bool
    availability_zone:
      description: Its availability zone.
      type: str
    aggregates:
      description: Its aggregates.
      type: list
      elements: str
    allocation_ratios:
      description: cpu, ram and disk overcommit ratios in force.
      type: dict
    reserved:
      description: vcpus, memory_mb and disk_gb kept for the hypervisor.
      type: dict
    reserved_for_failover:
      description: Kept free for evacuation.
      type: bool
    physical:
      description: vcpus, memory_mb, disk_gb of the usable hosts.
      type: dict
    capacity:
      description: Schedulable vcpus, memory_mb, disk_gb, (physical - reserved) x ratio.
      type: dict
    used:
      description: vcpus and memory_mb held by powered-on instances, disk_gb in use.
      type: dict
    free:
      description: capacity - used.
      type: dict
    instances:
      description: Number of instances (VMs, domains) on the node.
      type: int
    largest_host_free:
      description: The most free memory_mb and vcpus one usable host of the node has.
      type: dict
    hosts:
      description: Per hypervisor host (each ESXi host of a cluster; the KVM host itself) resources and connection state.
      type: list
      elements: dict
  sample:
    - name: kvm1
      hypervisor_type: kvm
      endpoint: qemu+tcp://127.0.0.1:16510/system
      state: up
      reason: null
      enabled: true
      forced_down: false
      availability_zone: kvm
      aggregates: [cattle]
      capacity: {vcpus: 8, memory_mb: 5338, disk_gb: 251}
      used: {vcpus: 1, memory_mb: 32, disk_gb: 23}
      free: {vcpus: 7, memory_mb: 5306, disk_gb: 228}
      instances: 1
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args, _nodes

OPTIONS = {
    'names': {'type': 'list', 'elements': 'str'},
    'hypervisor_type': {'type': 'str', 'choices': ['kvm', 'vsphere']},
    'availability_zone': {'type': 'str'},
    'aggregate': {'type': 'str'},
    'state': {'type': 'str', 'choices': ['up', 'down']},
    'enabled': {'type': 'bool'},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    with _args.session(module) as (cloud, registry):
        nodes = [n for n in _nodes.list_nodes(cloud, registry) if _nodes.matches(n, module.params)]
    module.exit_json(changed=False, nodes=nodes)


if __name__ == '__main__':
    main()
