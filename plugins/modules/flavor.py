#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: flavor
short_description: Manage flavors, the sizes instances are booted with
version_added: 0.1.0
description:
  - Creates, updates and deletes a flavor in the registry, as Nova's C(openstack flavor create/set/delete).
  - A flavor says how many vCPUs, how much RAM and disk an instance gets, and, through O(extra_specs), where the
    scheduler may place it.
  - Only the options given are changed; the others keep their value in the registry.
  - Flavors are immutable once used, as in Nova, so that an instance's record always says what it runs with.
    While instances use a flavor its O(vcpus), O(ram_mb) and O(disk_gb) cannot change and it cannot be deleted;
    the task fails naming those instances. O(extra_specs) may change.
options:
  name:
    description: The flavor.
    type: str
    required: true
  state:
    description: Whether the flavor should exist.
    type: str
    choices: [present, absent]
    default: present
  vcpus:
    description:
      - Virtual CPUs, at least 1.
      - Required to create a flavor.
    type: int
  ram_mb:
    description:
      - RAM in MiB, at least 1.
      - Required to create a flavor.
    type: int
  disk_gb:
    description:
      - Root disk in GiB; 0 boots from the image's own size.
      - Defaults to 0 when the flavor is created.
    type: int
  extra_specs:
    description:
      - Placement constraints, replacing the stored ones whole (give V({}) to clear them).
      - C(hypervisor_type) (V(kvm) or V(vsphere)) - only nodes of that hypervisor type; put HA-dependent
        applications on vSphere clusters and scale-out instances on KVM hosts.
      - C(aggregates) (a list of aggregate names) - only nodes that are in every one of them (a tier such as
        C(legacy) or C(cattle)); a node's aggregates come from the cloud file or M(multihv.cloud.compute_node).
      - C(availability_zone) (a zone name) - only nodes of that availability zone.
      - Other keys must be namespaced (C(namespace:key)), as Nova's are; the scheduler ignores them. An
        un-namespaced key the scheduler does not read is refused, so that a typo cannot go unnoticed.
    type: dict
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The flavor before and after.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: A small flavor for scale-out instances on KVM hosts
  multihv.cloud.flavor:
    name: m1.small
    vcpus: 1
    ram_mb: 2048
    disk_gb: 20
    extra_specs:
      hypervisor_type: kvm
      aggregates: [cattle]

- name: A flavor for HA-dependent applications on the legacy vSphere tier
  multihv.cloud.flavor:
    name: legacy.large
    vcpus: 4
    ram_mb: 16384
    disk_gb: 100
    extra_specs:
      hypervisor_type: vsphere
      availability_zone: legacy

- name: Remove a flavor no instance uses any more
  multihv.cloud.flavor:
    name: m1.tiny
    state: absent
'''

RETURN = r'''
flavor:
  description: The flavor after the change (or as it would be, in check mode); null when absent.
  returned: always
  type: dict
  sample:
    name: m1.small
    vcpus: 1
    ram_mb: 2048
    disk_gb: 20
    extra_specs:
      hypervisor_type: kvm
      aggregates: [cattle]
diff:
  description: The flavor before and after, in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import catalog as _catalog

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
    'vcpus': {'type': 'int'},
    'ram_mb': {'type': 'int'},
    'disk_gb': {'type': 'int'},
    'extra_specs': {'type': 'dict'},
}
FIELDS = ('vcpus', 'ram_mb', 'disk_gb', 'extra_specs')


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    params = module.params
    with _args.session(module, upgrade=not module.check_mode) as (_cloud, registry):
        changed, before, after = _catalog.set_flavor(registry, params['name'], params['state'],
                                                     dict((field, params[field]) for field in FIELDS), check_mode=module.check_mode)
    _args.exit_with(module, changed, 'flavor', before, after)


if __name__ == '__main__':
    main()
