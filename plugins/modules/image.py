#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: image
short_description: Manage the images instances boot from
version_added: 0.1.0
description:
  - For KVM nodes, an image is a qcow2 or raw file on the controller, uploaded through libvirt storage volumes into the
    C(_base) directory of every KVM host's instance paths (no SSH); instance disks are qcow2 overlays on it.
  - For vSphere nodes, an image is a template VM of the vCenter, cloned for each instance.
  - The image is recorded in the registry with its properties; the scheduler only places it on nodes of its hypervisor type.
  - An image M(multihv.cloud.instance_snapshot) made keeps what it says of itself (its origin, status, checksum) when this
    module sets its other properties; another O(source), O(format) or O(template) for it is refused, and so is any
    change while it is being captured.
options:
  name:
    description: The image's name.
    type: str
    required: true
  state:
    description:
      - Whether the image exists. An image used by instances is not removed.
      - O(state=absent) removes the image's base files from the C(_base) directories of every KVM host (a vSphere image's
        template only when M(multihv.cloud.instance_snapshot) made it), all or nothing - it is refused, with nothing
        removed, while a base is the backing file of instance disks (naming those instances) or a host does not answer.
        The file on the controller (C(source)) is left.
    type: str
    choices: [present, absent]
    default: present
  hypervisor_type:
    description: The kind of node the image boots on. Required with O(state=present).
    type: str
    choices: [kvm, vsphere]
  source:
    description: For KVM, the image file on the controller.
    type: path
  format:
    description: For KVM, the file's format; found from its first bytes when not given.
    type: str
    choices: [qcow2, raw]
  template:
    description: For vSphere, the template VM's name; defaults to O(name).
    type: str
  min_ram:
    description: Smallest flavor RAM (MB) the image boots with.
    type: int
  min_disk:
    description: Smallest flavor disk (GB) the image boots with.
    type: int
  properties:
    description:
      - Other properties to record with the image.
      - C(virt_type) (KVM images) is the libvirt domain type its instances boot with, V(kvm) or V(qemu). Without it a KVM host
        uses KVM where it offers it and QEMU's emulator (TCG) where it does not. V(qemu) is TCG even on a host that offers KVM,
        for a guest that does not boot under that host's KVM; V(kvm) is refused by a host that offers no KVM. Any other
        value fails the instance's boot before anything is created for it.
    type: dict
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - For a KVM image, each host's base is compared with the file (size and checksum) through libvirt and nothing is
        uploaded; for a vSphere image, the template is looked up.
      - With O(state=absent), every host is asked whether the image's files can be removed (the same refusals as the real run),
        and nothing is removed.
  diff_mode:
    support: full
    details:
      - The image's record (hypervisor type, properties, locations) before and after.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: A KVM image, uploaded to every KVM host
  multihv.cloud.image:
    name: debian-12
    hypervisor_type: kvm
    source: /srv/images/debian-12-genericcloud-amd64.qcow2
    min_disk: 2

- name: A KVM image whose instances run under QEMU's emulator (TCG) even where KVM is offered
  multihv.cloud.image:
    name: debian-12-tcg
    hypervisor_type: kvm
    source: /srv/images/debian-12-genericcloud-amd64.qcow2
    properties:
      virt_type: qemu

- name: A vSphere image is a template VM
  multihv.cloud.image:
    name: rhel9
    hypervisor_type: vsphere
    template: tmpl-rhel9
'''

RETURN = r'''
image:
  description: The image as recorded, with C(locations) (per KVM host C(present), or per vCenter the template's id).
  returned: when O(state=present)
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import images as _images

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
    'hypervisor_type': {'type': 'str', 'choices': ['kvm', 'vsphere']},
    'source': {'type': 'path'},
    'format': {'type': 'str', 'choices': ['qcow2', 'raw']},
    'template': {'type': 'str'},
    'min_ram': {'type': 'int'},
    'min_disk': {'type': 'int'},
    'properties': {'type': 'dict'},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE,
                           required_if=[('state', 'present', ['hypervisor_type'])])
    with _args.cloud_session(module) as ctx:
        changed, before, after = _images.ensure(ctx, module.params, module.check_mode)
    _args.exit_with(module, changed, 'image', before, after)


if __name__ == '__main__':
    main()
