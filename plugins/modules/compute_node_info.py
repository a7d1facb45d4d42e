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
  - multihv.cloud.cloud.attributes
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
      description: vcpus and memory_mb held by the powered-on VMs as the hypervisor reports them (the instances' and any
        other VM's), disk_gb in use.
      type: dict
    free:
      description: capacity - used.
      type: dict
    instances:
      description: Number of VMs (domains) on the node, the instances and the others.
      type: int
    allocated:
      description: What the registry's instances hold on the node (their claims) - C(vcpus), C(memory_mb), C(disk_gb) - and
        C(instances), how many have an allocation there. All 0 without a registry.
      type: dict
      sample: {vcpus: 2, memory_mb: 2048, disk_gb: 10, instances: 1}
    unmanaged:
      description:
        - The VMs on the node that carry no mark of the cloud's (defined by hand or by another tool), apart from the
          instances - C(vms), how many, and C(vcpus) and C(memory_mb), what the powered-on ones hold (among RV(nodes[].used)).
        - M(multihv.cloud.instance_import) adopts them as instances. The scheduler counts RV(nodes[].allocated) against
          the capacity, not these.
      type: dict
      sample: {vms: 1, vcpus: 1, memory_mb: 512}
    largest_host_free:
      description:
        - The most one usable host of the node can still take, as the scheduler counts it for one instance - C(memory_mb)
          free as the hypervisor reports it, and C(vcpus) its logical CPUs times the node's C(cpu) allocation ratio less
          the vCPUs its powered-on instances have.
      type: dict
    hosts:
      description: Per hypervisor host (each ESXi host of a cluster; the KVM host itself) resources and connection state.
      type: list
      elements: dict
    ha_enabled:
      description: Whether vSphere HA is on for the cluster (see M(multihv.cloud.vsphere_cluster)).
      type: bool
      returned: for a vSphere node that answered
    drs_enabled:
      description: Whether vSphere DRS is on for the cluster.
      type: bool
      returned: for a vSphere node that answered
    datastores:
      description:
        - The datastores attached to the cluster, by name, read in the same PropertyCollector retrieval as the rest of
          the node; C(physical.disk_gb) sums the accessible ones.
        - A KVM node has no such key; its instance storage is its instance path's filesystem.
      type: list
      elements: dict
      returned: for a vSphere node that answered
      contains:
        name:
          description: The datastore's name.
          type: str
        capacity_gb:
          description: Its capacity in GiB, rounded down.
          type: int
        free_gb:
          description: Its free space in GiB, rounded down.
          type: int
        accessible:
          description:
            - Whether vCenter can reach it; the sizes of an inaccessible datastore (NFS server gone, LUN lost) are stale.
          type: bool
        hosts:
          description:
            - The names of the cluster's ESXi hosts that mount it, sorted, whatever their connection state; a VM on the
              datastore can only run on these hosts.
          type: list
          elements: str
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
    - name: vcsim/DC0/DC0_C1
      hypervisor_type: vsphere
      endpoint: https://127.0.0.1:8989/sdk
      state: up
      reason: null
      enabled: false
      disabled_reason: storage maintenance
      forced_down: false
      availability_zone: vsphere
      aggregates: [legacy]
      capacity: {vcpus: 24, memory_mb: 12288, disk_gb: 250}
      used: {vcpus: 6, memory_mb: 192, disk_gb: 10}
      free: {vcpus: 18, memory_mb: 12096, disk_gb: 240}
      instances: 6
      ha_enabled: true
      drs_enabled: true
      datastores:
        - name: LocalDS_0
          capacity_gb: 250
          free_gb: 240
          accessible: true
          hosts: [DC0_C1_H0, DC0_C1_H1, DC0_C1_H2]
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes

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
    with _args.session(module, upgrade=False) as (cloud, registry):
        nodes = [n.as_dict() for n in _nodes.list_nodes(cloud, registry) if _nodes.matches(n, module.params)]
    module.exit_json(changed=False, nodes=nodes)


if __name__ == '__main__':
    main()
