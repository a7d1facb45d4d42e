#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: keypair
short_description: Manage keypairs, the SSH public keys guests may be given
version_added: 0.1.0
description:
  - Stores, replaces and deletes a keypair in the registry, as Nova's C(openstack keypair create/delete) and
    M(openstack.cloud.keypair).
  - A keypair is an OpenSSH public key under a name. Only public keys are stored; unlike Nova, none is generated
    (make one with C(ssh-keygen)).
  - Instances are not given keypairs yet; this module only keeps them in the registry.
options:
  name:
    description: The keypair.
    type: str
    required: true
  state:
    description: Whether the keypair should exist.
    type: str
    choices: [present, absent]
    default: present
  public_key:
    description:
      - One line of an OpenSSH public key file (C(id_ed25519.pub) and the like) - its type, its key data in base64
        and an optional comment.
      - Types C(ssh-ed25519), C(ssh-rsa) (at least 1024 bits), C(ecdsa-sha2-nistp256), C(ecdsa-sha2-nistp384) and
        C(ecdsa-sha2-nistp521). The key data must decode and name the same type.
      - Required to create a keypair. Given for an existing one, it replaces the stored key when it differs (its
        comment included).
      - Ignored when O(state=absent).
    type: str
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - A registry older than keypairs counts as having none.
  diff_mode:
    support: full
    details:
      - The keypair's type, fingerprint and comment before and after, not the key itself.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Store the operator's public key
  multihv.cloud.keypair:
    name: ops
    public_key: "{{ lookup('ansible.builtin.file', '~/.ssh/id_ed25519.pub') }}"

- name: Replace it with a new key
  multihv.cloud.keypair:
    name: ops
    public_key: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6i2CvFCwz54Soz+ludqXfqXyZnzDCGFwjweGz3enl5 ops@example

- name: Remove a keypair
  multihv.cloud.keypair:
    name: old-ops
    state: absent
'''

RETURN = r'''
keypair:
  description:
    - The keypair after the change (or as it would be, in check mode); null when absent.
    - C(created_at) is null for a keypair check mode would create.
  returned: always
  type: dict
  contains:
    name:
      description: The keypair's name.
      type: str
      sample: ops
    fingerprint:
      description: Its SHA256 fingerprint, as C(ssh-keygen -l) prints it.
      type: str
      sample: SHA256:rFtAWzDTDJn2usEQyhZewUc78/79zNiFvIpj5LOziFE
    type:
      description: The key's type.
      type: str
      sample: ssh-ed25519
    public_key:
      description: The public key as stored - its type, key data and comment, one space apart.
      type: str
      sample: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6i2CvFCwz54Soz+ludqXfqXyZnzDCGFwjweGz3enl5 ops@example
    created_at:
      description: When the keypair was first stored, ISO 8601 UTC.
      type: str
      sample: '2026-05-01T12:00:00.000000Z'
diff:
  description: The keypair's name, type, fingerprint and comment before and after, in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import keypairs as _keypairs

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
    # A public key is not a secret.
    'public_key': {'type': 'str', 'no_log': False},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    params = module.params
    # Check mode opens the registry as it is: no schema upgrade either.
    with _args.session(module, upgrade=not module.check_mode) as (_cloud, registry):
        changed, before, after = _keypairs.set_keypair(registry, params['name'], params['state'], params['public_key'],
                                                       check_mode=module.check_mode)
    _args.exit_with(module, changed, 'keypair', before, after, diff_view=_keypairs.diff_view)


if __name__ == '__main__':
    main()
