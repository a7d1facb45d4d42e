#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: instance_info
short_description: The cloud's instances, as recorded and as their hypervisors see them
version_added: 0.1.0
description:
  - Reads the instances from the registry and, unless O(live=false), asks every node's hypervisor for their power state
    (in parallel; one retrieval per vCenter). An instance whose node does not answer has C(power_state=unknown).
options:
  names:
    description: Only these instances.
    type: list
    elements: str
  node:
    description: Only instances on this node.
    type: str
  server_group:
    description: Only members of this server group.
    type: str
  live:
    description: Ask the hypervisors for the power state.
    type: bool
    default: true
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
  - multihv.cloud.cloud.info
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Instances on kvm2
  multihv.cloud.instance_info:
    node: kvm2
  register: on_kvm2
'''

RETURN = r'''
instances:
  description: The instances, each the registry record plus C(power_state) and the live C(host).
  returned: always
  type: list
  elements: dict
  contains:
    identity:
      description:
        - What the instance keeps across rebuilds and evacuations - C(hostname), C(macs), C(metadata) and C(networks), its
          NICs in order, each C(network) (the registry network), C(mac) and C(address) (without prefix).
      type: dict
      sample: {hostname: web-1, macs: ['52:54:00:3e:11:a0'], metadata: {},
               networks: [{network: tenant-a, mac: '52:54:00:3e:11:a0', address: 192.0.2.100}]}
    addresses:
      description: The instance's addresses by network (as Nova's server addresses), in NIC order.
      type: dict
      sample: {tenant-a: [192.0.2.100]}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_views as _instance_views

OPTIONS = {
    'names': {'type': 'list', 'elements': 'str'},
    'node': {'type': 'str'},
    'server_group': {'type': 'str'},
    'live': {'type': 'bool', 'default': True},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    with _args.session(module, upgrade=False) as (cloud, registry):
        instances = _instance_views.info(cloud, registry, module.params)
    module.exit_json(changed=False, instances=instances)


if __name__ == '__main__':
    main()
