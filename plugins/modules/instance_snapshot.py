#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: instance_snapshot
short_description: Capture an instance into a new image that instances boot from
version_added: 0.1.0
description:
  - Nova's C(createImage) - captures a running or stopped instance into a new image of the catalog. Delete that image with
    M(multihv.cloud.image) and O(multihv.cloud.image#module:state=absent), as any other.
  - On a KVM node the instance's disk (its copy-on-write overlay and the image below it) becomes one flattened qcow2 file. A
    running guest is captured while it runs (a libvirt block copy); its filesystems are frozen for that moment through the
    QEMU guest agent when one answers (and thawed whatever happens), else the copy is crash-consistent (the result's
    C(properties.quiesced) says which). The file is written to O(dest) on the controller, which is the image's C(source)
    from then on, and placed through libvirt storage volumes in the C(_base) directories of every KVM host, as
    M(multihv.cloud.image) places images.
  - On a vSphere node the instance's VM is cloned into a template VM named O(name), in the VM's folder and resource pool.
  - The image records where it came from in C(properties.origin) (the instance's uuid, name, node, image and flavor). While
    the capture runs the image is in C(properties.status=saving) and nothing boots from it; once complete it is C(active).
    A run that was cut off leaves the image in status C(saving), naming its instance and file; running the task again
    captures it afresh, and deleting the image removes what was left.
  - The instance's lease is held while it is captured - it is neither moved, resized, nor deleted meanwhile.
options:
  name:
    description: The new image's name. An image of that name that is not a snapshot of O(instance) is refused.
    type: str
    required: true
  instance:
    description: The instance to capture, by name or uuid.
    type: str
    required: true
  dest:
    description:
      - For an instance on a KVM node, the file on the controller the flattened qcow2 is written to; it must not exist, and its
        directory must. It becomes the image's C(source). Required for KVM instances, refused for vSphere ones.
    type: path
  quiesce:
    description:
      - Freeze a running KVM guest's filesystems through its QEMU guest agent while its disk is captured, where the agent answers.
      - Best effort, as the result says - C(properties.quiesced) of the image is V(true) only when the guest was frozen; a guest with no
        agent answering is captured crash-consistent (V(false)). vSphere captures are never quiesced (V(false) or V(null)), whatever this says.
    type: bool
    default: true
  min_ram:
    description: Smallest flavor RAM (MB) the image boots with.
    type: int
  min_disk:
    description: Smallest flavor disk (GB) the image boots with.
    type: int
  properties:
    description:
      - Properties to record with the image (as M(multihv.cloud.image)'s). The image takes those of the image the instance
        was booted from (such as C(virt_type) or C(min_ram)), as Nova's C(createImage) does, except what describes that
        image's file or template; these override them.
    type: dict
  timeout:
    description: Seconds the capture may take on the hypervisor once it answered.
    type: int
    default: 600
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - The instance, its node (it must be up), the name and O(dest) are checked and the image it would make is returned;
        nothing is captured, written nor uploaded.
  diff_mode:
    support: full
    details:
      - The image's record before (none, or an interrupted capture's) and after.
  idempotent:
    support: full
    details:
      - An image of that name captured from that instance is left as it is; the instance is not captured again.
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Capture web-1 (KVM) into an image, then boot a copy of it
  block:
    - multihv.cloud.instance_snapshot:
        name: web-1-2026-12-06
        instance: web-1
        dest: /srv/images/web-1-2026-12-06.qcow2
    - multihv.cloud.instance:
        name: web-2
        flavor: small
        image: web-1-2026-12-06

- name: Capture a vSphere instance into a template
  multihv.cloud.instance_snapshot:
    name: legacy-app-golden
    instance: legacy-app-1
'''

RETURN = r'''
image:
  description:
    - The image as recorded, with C(properties.origin), C(properties.status) and C(properties.quiesced) (true when the guest's
      filesystems were frozen, false when it ran without an agent that answered, null when it was stopped), and C(locations)
      (per KVM host C(present), or per vCenter the template's id).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import snapshots as _snapshots

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'instance': {'type': 'str', 'required': True},
    'dest': {'type': 'path'},
    'quiesce': {'type': 'bool', 'default': True},
    'min_ram': {'type': 'int'},
    'min_disk': {'type': 'int'},
    'properties': {'type': 'dict'},
    'timeout': {'type': 'int', 'default': 600},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    with _args.cloud_session(module, module.params['timeout']) as ctx:
        changed, before, after = _snapshots.capture(ctx, module.params, module.check_mode)
    _args.exit_with(module, changed, 'image', before, after)


if __name__ == '__main__':
    main()
