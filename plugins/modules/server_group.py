#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: server_group
short_description: Manage server groups, the affinity rules between instances
version_added: 0.1.0
description:
  - Creates, changes and deletes a server group in the registry, as Nova's C(openstack server group create/delete).
  - Instances join a group when they are booted (M(multihv.cloud.instance) C(server_group)); the scheduler then
    places each new member according to the group's policy.
  - The policy of a group that has members cannot change, and such a group cannot be deleted; the task fails
    naming the members.
  - On a vSphere cluster node (one node for the scheduler), a group with two members or more there becomes a DRS VM-VM
    rule named C(multihv-<group>), so that DRS keeps its own moves inside the cluster in the group's spirit - a
    C(ClusterAffinityRuleSpec) for V(affinity) and V(soft-affinity) (the VMs on one ESXi host), a
    C(ClusterAntiAffinityRuleSpec) for V(anti-affinity) and V(soft-anti-affinity) (on different hosts). Every such rule is
    enabled and not mandatory, the hard policies' too - vSphere HA never restarts a VM and DRS never evacuates a host
    against a mandatory rule, and VM-VM rules have no other "should" form. M(multihv.cloud.instance) and
    M(multihv.cloud.migrate) keep the rule up to date as members come and go, and it is removed once fewer than two remain
    there (a group with members cannot be deleted). A rule named so is the collection's; a rule that would contradict a
    rule made by someone else on the cluster is refused with a warning naming both, and M(multihv.cloud.reconcile)
    reports it until it is resolved.
options:
  name:
    description: The server group.
    type: str
    required: true
  state:
    description: Whether the server group should exist.
    type: str
    choices: [present, absent]
    default: present
  policy:
    description:
      - V(affinity) - every member on the same node; a member that cannot fit there is not booted.
      - V(anti-affinity) - every member on a different node; a member with no node left is not booted.
      - V(soft-affinity) - prefer the node the members are on, else anywhere.
      - V(soft-anti-affinity) - prefer nodes with fewer members.
      - Required to create a group; when not given, an existing group keeps its policy.
    type: str
    choices: [affinity, anti-affinity, soft-affinity, soft-anti-affinity]
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The server group before and after.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Keep the database replicas on different nodes
  multihv.cloud.server_group:
    name: db-replicas
    policy: anti-affinity

- name: Remove a group whose members are gone
  multihv.cloud.server_group:
    name: db-replicas
    state: absent
'''

RETURN = r'''
server_group:
  description: The server group after the change (or as it would be, in check mode); null when absent.
  returned: always
  type: dict
  contains:
    name:
      description: The group.
      type: str
    policy:
      description: Its policy.
      type: str
    members:
      description: Names of the instances in the group.
      type: list
      elements: str
  sample:
    name: db-replicas
    policy: anti-affinity
    members: [db1, db2]
diff:
  description: The server group before and after, in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import catalog as _catalog
from ansible_collections.multihv.cloud.plugins.module_utils._constants import GROUP_POLICIES

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
    'policy': {'type': 'str', 'choices': list(GROUP_POLICIES)},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    params = module.params
    with _args.session(module, upgrade=not module.check_mode) as (_cloud, registry):
        changed, before, after = _catalog.set_server_group(registry, params['name'], params['state'], {'policy': params['policy']},
                                                           check_mode=module.check_mode)
    _args.exit_with(module, changed, 'server_group', before, after)


if __name__ == '__main__':
    main()
