# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots to images: an instance captured into a new image of the catalog (Nova's createImage).
Private to multihv.cloud: do not import.

The image row is the intent, written first, in Glance's words: properties.status `saving` while the
capture runs, `active` once its files are in place. A run killed in between leaves a `saving` image
that names its origin (the instance) and its file, and nothing unnamed: on a KVM host an incomplete
base `_base/<image>.qcow2` (no checksum: never used), on the controller the file `dest`; on vSphere
a template of the image's name. Running the same snapshot again removes those and captures again;
`image state=absent` removes them too. Instances are not booted from a `saving` image (request_for).

The instance's lease is held for the whole capture (no migration, resize or delete meanwhile), and
the image's lease (image:<name>, the one uploads take) so that two runs never make one image.
"""

from __future__ import annotations

import os

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import images as _images
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._constants import STATE_DOWN
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import IMAGE_FILE

SAVING = 'saving'
ACTIVE = 'active'


def find_instance(registry, ref, untouched):
    """The instance record whose uuid or name is ref; errors.NotFound otherwise."""
    record = registry.get_instance(uuid=ref) or registry.get_instance(name=ref)
    if record is None:
        raise errors.NotFound('instance %s does not exist; %s' % (ref, untouched))
    return record


def origin_of(image):
    """The uuid of the instance an image was captured from, or None (an image of a file or a template)."""
    return ((image or {}).get('properties') or {}).get('origin', {}).get('instance_uuid')


# What an image's properties say of its file or template, not of its guest: not inherited by a snapshot of it.
OWN_PROPERTIES = ('source', 'format', 'size', 'sha256', 'template', 'status', 'origin', 'quiesced')


def inherited(registry, record, kind):
    """The properties a snapshot takes from the image its instance was booted from, as Nova's createImage does
    (virt_type, min_ram, an admin user...): what says how the guest boots, not where its file is."""
    image = registry.get_image(record.image) if record.image else None
    if image is None or image.get('hypervisor_type') != kind:
        return {}
    return dict((k, v) for k, v in (image.get('properties') or {}).items() if k not in OWN_PROPERTIES)


def _planned(params, record, kind, caps, registry):
    """The image's registry fields once captured (status and the capture's own facts left out)."""
    properties = inherited(registry, record, kind)
    properties.update(params.get('properties') or {})
    for key in ('min_ram', 'min_disk'):
        if params.get(key) is not None:
            properties[key] = params[key]
    properties['origin'] = {'instance_uuid': record.uuid, 'instance_name': record.name, 'node': record.node,
                            'image': record.image, 'flavor': record.flavor}
    if caps.image_kind == IMAGE_FILE:
        dest = params.get('dest')
        if not dest:
            raise errors.MultihvError('image %s: a snapshot of %s instance %s needs dest (the file on the controller the flattened '
                                      'disk is written to, the image\'s source from then on); nothing was changed'
                                      % (params['name'], caps.label, record.name))
        properties.update(source=os.path.abspath(dest), format='qcow2')
    else:
        if params.get('dest'):
            raise errors.MultihvError('image %s: %s instance %s is captured into a template, not a file: dest is for instances whose '
                                      'images are files; nothing was changed' % (params['name'], caps.label, record.name))
        properties['template'] = params['name']
    return {'hypervisor_type': kind, 'properties': properties}


def _view(image):
    return None if image is None else dict((k, image.get(k)) for k in ('name', 'hypervisor_type', 'properties', 'locations'))


def capture(ctx, params, check_mode):
    """Capture instance params['instance'] into image params['name']; (changed, before, after) of the image.

    Idempotent: an active image captured from that instance is left as it is (not captured again).
    Refused with nothing changed: an unknown instance, one on a node that is down or not in the
    cloud, one not running or stopped (building, error), a name that is an image of another origin, a
    dest that is there already (KVM) and is not this image's interrupted capture."""
    registry = ctx.registry
    name = params['name']
    untouched = 'image %s was not made; nothing was changed' % name
    record = find_instance(registry, params['instance'], untouched)
    before = registry.get_image(name)
    _check_origin(name, before, record, untouched)
    if before is not None and (before.get('properties') or {}).get('status') != SAVING:
        return False, _view(before), _view(before)
    fields = _check_can_capture(ctx, params, record, before, untouched)
    after = dict(name=name, locations={}, **fields)
    after['properties'] = dict(after['properties'], status=ACTIVE)
    if check_mode:
        return True, _view(before), after
    with _leases.on_instance(registry, record.uuid, untouched, 'snapshot') as instance_lease:
        record = registry.get_instance(uuid=record.uuid)
        if record is None:
            raise errors.NotFound('instance %s was deleted by another run; %s' % (params['instance'], untouched))
        image_what = 'another run works on image %s; %s' % (name, untouched)
        with _leases.held(registry, 'image:%s' % name, ctx.driver_for(record.node).work_timeout, image_what, 'snapshot',
                          untouched=untouched) as image_lease:
            # Another run may have finished (or begun) this very image while this one waited.
            before = registry.get_image(name)
            _check_origin(name, before, record, untouched)
            if before is not None and (before.get('properties') or {}).get('status') != SAVING:
                return False, _view(before), _view(before)
            fields = _check_can_capture(ctx, params, record, before, untouched)
            return True, _view(before), _capture(ctx, name, record, fields, params, instance_lease, image_lease, before)


def _check_origin(name, image, record, untouched):
    if image is None:
        return
    origin = origin_of(image)
    if origin != record.uuid:
        what = 'a snapshot of instance %s' % origin if origin else 'an image of %s' % (
            (image.get('properties') or {}).get('source') or (image.get('properties') or {}).get('template') or 'another origin')
        raise errors.MultihvError('image %s exists already and is %s, not a snapshot of instance %s (%s); choose another name; %s'
                                  % (name, what, record.name, record.uuid, untouched))


def _check_can_capture(ctx, params, record, before, untouched):
    """The image's planned fields, once everything that can refuse the capture has been asked."""
    if record.state not in ('running', 'stopped'):
        raise errors.MultihvError('instance %s is in state %s: only a running or stopped instance can be captured; %s'
                                  % (record.name, record.state, untouched))
    view = ctx.view(record.node)
    if view is None:
        raise errors.NotFound('instance %s is on node %s, which the cloud file does not have; %s' % (record.name, record.node, untouched))
    if view.state == STATE_DOWN:
        raise errors.MultihvError('instance %s is on node %s, which is down (%s): it cannot be captured; %s'
                                  % (record.name, record.node, view.reason or 'no answer', untouched))
    caps = ctx.kind_capabilities(view.hypervisor_type)
    fields = _planned(params, record, view.hypervisor_type, caps, ctx.registry)
    source = fields['properties'].get('source')
    if source:
        resumed = before is not None and (before.get('properties') or {}).get('source') == source
        if os.path.exists(source) and not resumed:
            raise errors.MultihvError('image %s: dest %s exists already on the controller; give a new file; %s' % (params['name'], source, untouched))
        if not os.path.isdir(os.path.dirname(source)):
            raise errors.MultihvError('image %s: the directory of dest %s does not exist on the controller; %s'
                                      % (params['name'], source, untouched))
    return fields


def _drivers_of(ctx, kind):
    return [d for d in ctx.drivers if d.hypervisor_type == kind]


def _remove_leftovers(ctx, name, kind, source):
    """What an interrupted capture of image name left: its bases or template, its controller file."""
    for driver in _drivers_of(ctx, kind):
        driver.remove_image(name)
    if source and os.path.exists(source):
        os.remove(source)


def _capture(ctx, name, record, fields, params, instance_lease, image_lease, before):
    registry = ctx.registry
    kind, properties = fields['hypervisor_type'], fields['properties']
    source = properties.get('source')
    if before is not None:  # an interrupted capture of this image: start afresh
        _remove_leftovers(ctx, name, kind, source)
    # The intent, before any hypervisor is touched.
    with image_lease.guarded():
        registry.set_image(name, hypervisor_type=kind, properties=dict(properties, status=SAVING), locations={})
    driver = ctx.driver_for(record.node)
    try:
        instance_lease.check()
        made = driver.snapshot_instance(record.uuid, record.node, name, source, quiesce=params.get('quiesce', True))
    except BaseException as exc:
        left = _undo(ctx, name, kind, source)
        if isinstance(exc, errors.MultihvError):
            raise type(exc)('capture of instance %s (%s) on node %s into image %s failed: %s; %s'
                            % (record.name, record.uuid, record.node, name, exc, left)) from exc
        raise
    properties = dict(properties, status=ACTIVE, quiesced=made.quiesced)
    if made.size is not None:
        properties.update(size=made.size, format=made.disk_format or 'qcow2')
    if made.sha256:
        properties['sha256'] = made.sha256
    locations = {}
    if made.template:
        locations[driver.endpoint_name()] = made.moid
    else:
        # Every other host of the type gets the image as any file image (the source host has it already: unchanged).
        locations = _images.distribute(ctx, name, {'hypervisor_type': kind, 'properties': properties}, False,
                                       lease_held=True)[1]
    with image_lease.guarded():
        return _view(registry.set_image(name, properties=properties, locations=locations)[1])


def _undo(ctx, name, kind, source):
    """Remove what a failed capture made and its intent; a sentence saying so."""
    try:
        _remove_leftovers(ctx, name, kind, source)
        ctx.registry.delete_image(name)
    except (errors.MultihvError, OSError) as exc:
        return ('what it made could not all be removed (%s): image %s stays in status saving; run the snapshot again or '
                'remove the image (multihv.cloud.image state=absent)' % (exc, name))
    return 'the instance was left as it was and nothing of image %s was kept' % name


def undo_interrupted(ctx, image):
    """What the reconciler does with a capture left in status saving that no run holds: what it left goes (the
    bases or template of the image on every endpoint of its type, its controller file), then the image's record."""
    _remove_leftovers(ctx, image['name'], image['hypervisor_type'], (image.get('properties') or {}).get('source'))
    ctx.registry.delete_image(image['name'])


__all__ = ['ACTIVE', 'SAVING', 'capture', 'find_instance', 'origin_of', 'undo_interrupted']
