#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: network
short_description: Manage networks, the subnets instances get fixed IPs on
version_added: 0.1.0
description:
  - Creates, updates and deletes a network in the registry, as Neutron's C(openstack network create) and
    C(openstack subnet create) together - one subnet per network.
  - A network has a subnet (IPv4 or IPv6), an optional gateway, DNS servers and an allocation range, and O(backings) - what
    it is on each node - a libvirt network or a bridge on KVM hosts, a port group on vSphere clusters.
  - Instances name networks in their NICs (M(multihv.cloud.instance) O(multihv.cloud.instance#module:networks)). Each NIC gets a fixed IP,
    the one asked for or the lowest free address of the allocation range, allocated atomically in the registry. The
    scheduler places an instance only on a node where each of its networks has a backing.
  - Only the options given are changed; the others keep their value in the registry.
  - While instances hold addresses on a network, its O(cidr) cannot change, its O(gateway) cannot become one of their
    addresses, and it cannot be deleted; the task fails naming those instances.
options:
  name:
    description: The network.
    type: str
    required: true
  state:
    description:
      - Whether the network should exist.
      - V(absent) takes no other setting than O(name) (and the cloud options); giving one is an error.
    type: str
    choices: [present, absent]
    default: present
  cidr:
    description:
      - The subnet in CIDR form, IPv4 (V(192.0.2.0/24)) or IPv6 (V(2001:db8:10::/64)), its host bits zero.
      - Required to create a network. Cannot change while instances hold addresses on it.
      - A new O(cidr) resets the allocation range to the new subnet's host addresses unless O(allocation_start) and
        O(allocation_end) are given too.
    type: str
  gateway:
    description:
      - The subnet's gateway, a host address of O(cidr); it is never given to an instance.
      - V('') removes it. A network without a gateway gives its guests no default route.
    type: str
  dns_servers:
    description: DNS servers the guests on this network are given, IP addresses; V([]) removes them.
    type: list
    elements: str
  allocation_start:
    description:
      - The first address instances are given from when they ask for no fixed IP.
      - Defaults to the first host address of O(cidr). A fixed IP may be any host address of the subnet, inside the range or not.
    type: str
  allocation_end:
    description: The last address of the allocation range; defaults to the last host address of O(cidr).
    type: str
  backings:
    description:
      - Where the network exists, replacing the stored list whole. For each node, the first item whose selector matches
        it is the network there; a node no item matches does not have the network.
      - A selector matches a node when each of its keys that is set does - O(backings[].nodes),
        O(backings[].aggregates), O(backings[].endpoints), O(backings[].hypervisor_type). An item with none of them
        matches every node.
      - V([]) (the default of a new network) puts the network on no node.
    type: list
    elements: dict
    suboptions:
      backing:
        description:
          - What the network is on the matching nodes - on KVM a libvirt network's name or C(bridge:NAME) (a Linux
            bridge on the host), on vSphere a port group's name (a standard or distributed one).
        type: str
        required: true
      nodes:
        description: Only these nodes (a KVM host's name, a vSphere cluster's C(vcenter/datacenter/cluster)).
        type: list
        elements: str
      aggregates:
        description: Only nodes in one of these aggregates.
        type: list
        elements: str
      endpoints:
        description: Only nodes served by one of these endpoints - a vCenter's or a KVM host's name in the cloud file.
        type: list
        elements: str
      hypervisor_type:
        description: Only nodes of this hypervisor type (V(kvm), V(vsphere)).
        type: str
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - A registry older than networks counts as having none.
  diff_mode:
    support: full
    details:
      - The network before and after.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: A tenant network, a Linux bridge on the KVM hosts and a port group on the vSphere clusters
  multihv.cloud.network:
    name: tenant-a
    cidr: 192.0.2.0/24
    gateway: 192.0.2.1
    dns_servers: [192.0.2.53]
    allocation_start: 192.0.2.100
    allocation_end: 192.0.2.199
    backings:
      - backing: bridge:br-tenant-a
        hypervisor_type: kvm
      - backing: tenant-a-pg
        hypervisor_type: vsphere

- name: An IPv6 network only on the KVM hosts of the cattle aggregate
  multihv.cloud.network:
    name: v6-cattle
    cidr: 2001:db8:10::/64
    gateway: 2001:db8:10::1
    backings:
      - backing: default
        aggregates: [cattle]

- name: Remove a network no instance uses any more
  multihv.cloud.network:
    name: old-net
    state: absent
'''

RETURN = r'''
network:
  description: The network after the change (or as it would be, in check mode); null when absent.
  returned: always
  type: dict
  contains:
    name:
      description: The network's name.
      type: str
      sample: tenant-a
    cidr:
      description: Its subnet.
      type: str
      sample: 192.0.2.0/24
    gateway:
      description: Its gateway, null when it has none.
      type: str
      sample: 192.0.2.1
    dns_servers:
      description: The DNS servers its guests are given.
      type: list
      elements: str
      sample: [192.0.2.53]
    allocation_start:
      description: The first address of the allocation range.
      type: str
      sample: 192.0.2.100
    allocation_end:
      description: The last address of the allocation range.
      type: str
      sample: 192.0.2.199
    backings:
      description: Where it exists - each C(backing) with its selector (C(nodes), C(aggregates), C(endpoints) as lists,
        C(hypervisor_type) or null).
      type: list
      elements: dict
      sample: [{backing: bridge:br-tenant-a, nodes: [], aggregates: [], endpoints: [], hypervisor_type: kvm}]
diff:
  description: The network before and after, in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _argspec
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
    'cidr': {'type': 'str'},
    'gateway': {'type': 'str'},
    'dns_servers': {'type': 'list', 'elements': 'str'},
    'allocation_start': {'type': 'str'},
    'allocation_end': {'type': 'str'},
    'backings': {'type': 'list', 'elements': 'dict', 'options': {
        'backing': {'type': 'str', 'required': True},
        'nodes': {'type': 'list', 'elements': 'str'},
        'aggregates': {'type': 'list', 'elements': 'str'},
        'endpoints': {'type': 'list', 'elements': 'str'},
        'hypervisor_type': {'type': 'str'},
    }},
}


def main():
    module = _argspec.module(AnsibleModule, argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                             mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    params = module.params
    fields = dict((key, params[key]) for key in _networks.FIELDS)
    # Check mode opens the registry as it is: no schema upgrade either.
    with _args.session(module, upgrade=not module.check_mode) as (_cloud, registry):
        changed, before, after = _networks.set_network(registry, params['name'], params['state'], fields, check_mode=module.check_mode)
    _args.exit_with(module, changed, 'network', before, after)


if __name__ == '__main__':
    main()
