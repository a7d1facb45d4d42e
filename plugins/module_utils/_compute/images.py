# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Images: what instances boot. Private to multihv.cloud: do not import.

A KVM image is a qcow2 or raw file on the controller that the KVM driver uploads
into each KVM host's base image pool through libvirt (no SSH); instance disks are
qcow2 overlays on it. A vSphere image is a template VM that is cloned.
"""

from __future__ import annotations

import os

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._constants import INSTANCE_LEASE_WAIT_SECONDS
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import IMAGE_FILE, IMAGE_TEMPLATE


def disk_format(source, given=None):
    """qcow2 or raw: as given, else from the file's first bytes (qcow2 starts with QFI\\xfb)."""
    if given:
        return given
    with open(source, 'rb') as handle:
        return 'qcow2' if handle.read(4) == b'QFI\xfb' else 'raw'


def upload(registry, driver, name, source, disk_format_):
    """driver.ensure_image under a registry lease per image: two runs readying one image would
    otherwise replace each other's half-uploaded base. Per image, not per host: hosts share the
    base on shared storage. True when uploaded.

    A base already there whose size and checksum match the file is checked without the lease
    (runs booting from one image then do not wait for each other): that check writes nothing,
    and it finds a base complete only once its checksum was written last, under the lease. What
    the lease guards is the placing and replacing, which still happens under it only, checked
    again there. (A boot's spawn, after this, was never under the image's lease.)"""
    if not driver.ensure_image(name, source, disk_format_, check_mode=True):
        return False
    untouched = 'image %s was not placed on %s' % (name, driver.endpoint_name())
    with _leases.held(registry, 'image:%s' % name, driver.work_timeout, untouched, 'image upload', untouched=untouched):
        return driver.ensure_image(name, source, disk_format_)


def desired(params, caps):
    """The registry fields an image task asks for; caps: what its hypervisor type can do."""
    kind = params['hypervisor_type']
    properties = dict(params.get('properties') or {})
    for key in ('min_ram', 'min_disk'):
        if params.get(key) is not None:
            properties[key] = params[key]
    if caps.image_kind == IMAGE_FILE:
        source = params.get('source')
        if not source:
            raise errors.MultihvError('image %s: a %s image needs source (a qcow2 or raw file on the controller); nothing was changed'
                                      % (params['name'], caps.label))
        if not os.path.isfile(source):
            raise errors.MultihvError('image %s: source %s is not a file on the controller; nothing was changed' % (params['name'], source))
        properties.update(source=os.path.abspath(source), format=disk_format(source, params.get('format')),
                          size=os.path.getsize(source))
    else:
        properties['template'] = params.get('template') or params['name']
    return {'hypervisor_type': kind, 'properties': properties}


def distribute(ctx, name, fields, check_mode, lease_held=False):
    """Make the image usable on every node of its hypervisor type that is up (check_mode: say whether it
    would be uploaded). Returns (changed, locations): {KVM host: 'present' or why not} or {vCenter: template moid}.
    lease_held: the caller holds the image's lease already (a snapshot), so the uploads do not take it."""
    changed, locations = False, {}
    props = fields['properties']
    for driver in ctx.drivers:
        if driver.hypervisor_type != fields['hypervisor_type']:
            continue
        if driver.capabilities.image_kind == IMAGE_FILE:
            try:
                if check_mode:
                    # The driver compares its base with the file and uploads nothing; no lease either (a registry write).
                    uploaded = driver.ensure_image(name, props['source'], props['format'], check_mode=True)
                elif lease_held:
                    uploaded = driver.ensure_image(name, props['source'], props['format'])
                else:
                    uploaded = upload(ctx.registry, driver, name, props['source'], props['format'])
            except errors.Unreachable as exc:
                locations[driver.endpoint_name()] = 'down: %s' % exc
                continue
            changed = changed or uploaded
            locations[driver.endpoint_name()] = 'present'
        elif driver.capabilities.image_kind == IMAGE_TEMPLATE:
            template = driver.find_template(props['template'])  # NotFound names it
            locations[driver.endpoint_name()] = template['moid']
    return changed, locations


def remove(ctx, image, check_mode):
    """Remove the image's files from every endpoint of its type (KVM: the bases on every host; vSphere: the
    template, only one a snapshot made), all or nothing: every endpoint is asked first whether it can
    (check mode), so that a base still used as instance disks' backing file, or a host that does not
    answer, refuses the removal with nothing deleted anywhere. True when something was (would be) removed."""
    name = image['name']
    untouched = 'image %s was left in place' % name
    drivers = [d for d in ctx.drivers if d.hypervisor_type == image.get('hypervisor_type')]
    if not drivers:
        return False
    found = False
    for driver in drivers:
        found = _removal_check(ctx, driver, image, untouched) or found
    if check_mode or not found:
        return found
    with _leases.held(ctx.registry, 'image:%s' % name, INSTANCE_LEASE_WAIT_SECONDS, 'another run works on image %s; %s' % (name, untouched),
                      'image delete', untouched=untouched):
        for driver in drivers:
            driver.remove_image(name)
    return True


def _removal_check(ctx, driver, image, untouched):
    name = image['name']
    try:
        return driver.remove_image(name, check_mode=True)
    except errors.ImageInUse as exc:
        names = dict((i.uuid, i.name) for i in ctx.registry.list_instances())
        users = ', '.join('%s (%s)' % (names[u], u) if u in names else u for u in exc.uuids)
        raise errors.MultihvError('image %s is the base (backing file) of the disks of instances %s on %s; %s'
                                  % (name, users, driver.endpoint_name(), untouched)) from exc
    except errors.Unreachable as exc:
        raise errors.MultihvError('image %s: %s %s does not answer, so its copy there cannot be removed (%s); %s'
                                  % (name, driver.capabilities.label, driver.endpoint_name(), exc, untouched)) from exc


# What an image multihv.cloud.instance_snapshot made says of itself, which an image task keeps (see snapshots.py).
SNAPSHOT_OWN = ('origin', 'status', 'quiesced', 'sha256')


def _kept_by_snapshot(name, before, fields):
    """fields for an image task on name: a snapshot's own properties kept (its origin, status, checksum), its file or
    template refused to change (another file under its name would not be the instance's snapshot), and one still
    being captured left alone."""
    own = ((before or {}).get('properties') or {})
    origin = own.get('origin')
    if not origin:
        return fields
    what = 'image %s is a snapshot of instance %s (multihv.cloud.instance_snapshot)' % (name, origin.get('instance_name'))
    if own.get('status') != 'active':
        raise errors.MultihvError('%s still being captured; nothing was changed' % what)
    wanted = fields['properties']
    kind = before.get('hypervisor_type')
    if fields['hypervisor_type'] != kind:
        raise errors.MultihvError('%s of hypervisor type %s, not %s; nothing was changed' % (what, kind, fields['hypervisor_type']))
    for key in ('source', 'format', 'template'):
        if key in own and wanted.get(key) != own[key]:
            raise errors.MultihvError('%s: its %s stays %s (%s was asked); give another image another name; nothing was changed'
                                      % (what, key, own[key], wanted.get(key)))
    return dict(fields, properties=dict(wanted, **dict((key, own[key]) for key in SNAPSHOT_OWN if key in own)))


def ensure(ctx, params, check_mode):
    """(changed, before, after) for state=present or absent."""
    registry = ctx.registry
    name = params['name']
    before = registry.get_image(name)
    if params['state'] == 'absent':
        if before is None:
            return False, None, None
        users = [i.name for i in registry.list_instances() if i.image == name]
        if users:
            raise errors.MultihvError('image %s is used by instances %s; it was left in place' % (name, ', '.join(sorted(users))))
        remove(ctx, before, check_mode)
        if not check_mode:
            registry.delete_image(name)
        return True, before, None
    fields = _kept_by_snapshot(name, before, desired(params, ctx.kind_capabilities(params['hypervisor_type'])))
    uploaded, locations = distribute(ctx, name, fields, check_mode)
    after = dict(before or {}, name=name, **fields)
    after['locations'] = locations
    same = before is not None and all(before.get(k) == after.get(k) for k in ('hypervisor_type', 'properties', 'locations'))
    if same and not uploaded:
        return False, before, before
    if not check_mode:
        after = registry.set_image(name, hypervisor_type=fields['hypervisor_type'], properties=fields['properties'],
                                   locations=locations)[1]
    return True, before, after
