# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An instance's VM cloned into a template VM that is an image (issue 17, snapshots to images), and
such templates removed with their image. Private to multihv.cloud: do not import.

The template carries, in its annotation, the marker line `multihv.cloud image <name>` (never the
instance marker: it is no instance), so that deleting the image removes the templates the cloud
made and never one it was given. The instance's guest data (cloud-init's guestinfo keys, which may
hold user_data and a password) is not copied into the template: those keys are emptied in the clone.

The clone is made as a VM, given what vcsim 0.24.2 ignores of CloneSpec.config (the annotation) by
ReconfigVM_Task, then marked as a template: a half-made clone is never a template that looks complete.
"""

from __future__ import annotations

import re

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import (
    EXTRA_CONFIG, plain, retrieve_inventory, retrieve_objects, stub, vm_name,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.power import power_off_and_destroy
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

IMAGE_MARKER = 'multihv.cloud image'
_IMAGE_LINE = re.compile(r'^multihv\.cloud image (\S+)[ \t]*\r?$', re.MULTILINE)
# Every VM's name, template flag and annotation: which templates an image's are.
NAMED_VMS = {'VirtualMachine': ('name', 'summary.config.template', 'config.annotation')}


def image_annotation(image, instance):
    """The annotation of a template made from instance for image."""
    return '%s %s\ncaptured from instance %s' % (IMAGE_MARKER, image, instance)


def image_of(annotation):
    """The image a template was made for (its marker line), or None."""
    match = _IMAGE_LINE.search(annotation or '')
    return match.group(1) if match else None


def named(content, name):
    """[(moid, props)] of every VM or template named name (one retrieval)."""
    return [(r.moid, r.props) for r in retrieve_inventory(content, NAMED_VMS) if vm_name(r.props.get('name')) == name]


def image_templates(content, image):
    """The moids of the templates made for image."""
    return [moid for moid, props in named(content, image)
            if props.get('summary.config.template') and image_of(props.get('config.annotation')) == image]


def clone_to_template(content, vm, image, instance, deadline, what):
    """Clone the VM (running or not) beside it, named image, without its guest data, marked as the image's
    template; its moid. A failure destroys the half-made clone before raising."""
    if named(content, image):
        raise errors.DriverError('%s has a VM or template named %s already; image %s was not made; nothing was changed' % (what, image, image))
    pc = content.propertyCollector
    answer = retrieve_objects(pc, [vm], 'VirtualMachine', ('parent', EXTRA_CONFIG))
    if not answer:
        raise errors.NotFound('the VM of instance %s is gone; nothing was changed' % instance)
    props = answer[0].props
    present = extra_config.as_dict(props.get(EXTRA_CONFIG))
    blank = dict((key, '') for key in extra_config.CLOUD_INIT_KEYS if present.get(key))
    annotation = image_annotation(image, instance)
    config = vim.vm.ConfigSpec(annotation=annotation, extraConfig=extra_config.options(blank))
    refs = stub(content)
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(), config=config, powerOn=False, template=False)
    task = vm.CloneVM_Task(folder=vim.Folder(props['parent'], refs), name=image, spec=spec)
    moid = wait_task(pc, task, deadline, 'CloneVM_Task of instance %s into image %s' % (instance, image))
    clone = vim.VirtualMachine(moid, refs)
    try:
        read = retrieve_objects(pc, [clone], 'VirtualMachine', ('config.annotation', EXTRA_CONFIG))
        read = read[0].props if read else {}
        left = dict((k, '') for k, v in extra_config.as_dict(read.get(EXTRA_CONFIG)).items() if k in blank and v)
        if image_of(read.get('config.annotation')) != image or left:
            fix = vim.vm.ConfigSpec(annotation=annotation, extraConfig=extra_config.options(left))
            wait_task(pc, clone.ReconfigVM_Task(spec=fix), deadline, 'ReconfigVM_Task of the template of image %s' % image)
        clone.MarkAsTemplate()
    except BaseException:
        power_off_and_destroy(pc, clone, deadline, 'the half-made template of image %s' % image)
        raise
    return plain(clone)


def remove_templates(content, image, deadline, check_mode):
    """Destroy the templates made for image (never another); True when there were some."""
    found = image_templates(content, image)
    if check_mode or not found:
        return bool(found)
    refs = stub(content)
    for moid in found:
        wait_task(content.propertyCollector, vim.VirtualMachine(moid, refs).Destroy_Task(), deadline,
                  'Destroy_Task of template %s of image %s' % (moid, image))
    return True


__all__ = ['IMAGE_MARKER', 'clone_to_template', 'image_annotation', 'image_of', 'image_templates', 'remove_templates']
