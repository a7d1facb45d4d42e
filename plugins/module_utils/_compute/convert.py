# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moves between hypervisor types (issue 19): a cold move that converts the VM's disks.
Private to multihv.cloud: do not import.

Reached from migrations.migrate with mode convert, or with mode auto when the target node is of another
hypervisor type. The order keeps the instance whole at every step:

1. checks (plan): the instance running or stopped, its node up, a target of another type, both types
   declaring Capabilities.convert (never a hypervisor's name), the flavor usable there, the image to record;
2. the migration record (type convert, accepted) written first, with what a reconciler needs to settle it
   (keep_source, the power the instance had), then the target's resources claimed (a node without room
   refuses before anything moves);
3. the source powered off: a guest shutdown, then a hard power-off after shutdown_timeout;
4. source.export_disks into a temporary directory on the controller, then target.import_instance with the
   instance's spec (uuid, name, sizes, MACs on the target's backings of its networks, hostname, metadata);
5. the records (the instance's node, host and image, the source's allocation freed, the migration completed
   with bytes), then source.retire_converted (removed, or kept powered off and renamed: keep_source).

A failure before the records are written removes the target's VM, frees the target's claim, powers the
source on again if it ran and records the migration failed. The instance's lease is held throughout (the
caller's); a run that lost it stops before its next irreversible step and the reconciler settles the rest
(reconcile.py: an interrupted convert keeps the copy that runs, else the source).

Flavor and image across types: the flavor is kept (its sizes are the instance's on either type) unless its
extra_specs name another hypervisor_type than the target's (refused). The image of the source's type means
nothing on the target: the record names the `image` the caller gives (an image of the target's type, which
a later rebuild or evacuation there boots), else NO_IMAGE ('-', as adoption does: a rebuild then says so).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import NoValidHost
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import utcnow

CONVERT = 'convert'
# The image a converted instance's record names when the task names none (adoption's placeholder).
NO_IMAGE = '-'
# Seconds a guest is given to shut down before the source VM is powered off hard.
SHUTDOWN_TIMEOUT = 120.0
# How often the source is asked whether its guest has shut down.
POWER_POLL_SECONDS = 2.0
# Progress reaches the registry at most this often.
PROGRESS_EVERY_SECONDS = 1.0


@dataclasses.dataclass
class Conversion:
    """A checked convert request: the instance, where it goes, the flavor and image its record will name."""

    record: object
    source_node: str
    target_node: str
    target_host: str | None
    flavor: dict
    image: dict | None
    keep_source: bool = False


def _untouched(record):
    return 'instance %s was not moved' % record.name


def wanted(ctx, record, mode, target_node):
    """True when this request is a convert: mode convert, or mode auto with a target of another type."""
    if mode == CONVERT:
        return True
    if mode != 'auto' or not target_node or record.node is None:
        return False
    target_kind = _nodes.hypervisor_type_of(ctx.drivers, target_node)
    return target_kind is not None and target_kind != ctx.hypervisor_type(record.node)


def plan(ctx, record, target_node=None, target_host=None, image=None, keep_source=False):
    """Check a convert and choose its target: a Conversion. Every refusal happens here, before anything moves."""
    registry, untouched = ctx.registry, _untouched(record)
    if record.state not in ('running', 'stopped'):
        raise errors.MultihvError('instance %s is %s, not running or stopped; %s' % (record.name, record.state, untouched))
    source = record.node
    kind = ctx.hypervisor_type(source)
    caps = ctx.capabilities(source)
    if caps is None or not caps.convert:
        raise errors.MultihvError('%s nodes cannot export an instance\'s disks for a move to another hypervisor type; %s'
                                  % (caps.label if caps else 'its', untouched))
    view = ctx.view(source)
    if view is None or not view.up:
        raise errors.MultihvError('node %s of instance %s is down (%s): its VM cannot be powered off and exported; %s'
                                  % (source, record.name, view.reason if view else 'not reported', untouched))
    if target_node:
        target_kind = _nodes.type_in_cloud(ctx.drivers, target_node, untouched)
        if target_kind == kind:
            raise errors.MultihvError('node %s is a %s node like node %s of instance %s: mode convert moves an instance to another '
                                      'hypervisor type; use mode cold (or auto); %s' % (target_node, kind, source, record.name, untouched))
    else:
        target_kind = _only_other_type(ctx, kind, untouched)
    target_caps = ctx.kind_capabilities(target_kind)
    if not target_caps.convert:
        raise errors.MultihvError('%s nodes cannot import converted disks; %s' % (target_caps.label, untouched))
    flavor = registry.get_flavor(record.flavor)
    if flavor is None:
        raise errors.NotFound('flavor %s of instance %s does not exist; %s' % (record.flavor, record.name, untouched))
    flavor_kind = (flavor.get('extra_specs') or {}).get('hypervisor_type')
    if flavor_kind and flavor_kind != target_kind:
        what = (flavor['name'], record.name, flavor_kind, target_caps.label, untouched)
        raise errors.MultihvError('flavor %s of instance %s asks for hypervisor_type %s: it cannot run on %s nodes; resize it to a '
                                  'flavor without that extra spec first; %s' % what)
    image_row = None
    if image:
        image_row = registry.get_image(image)
        if image_row is None:
            raise errors.NotFound('image %s does not exist; %s' % (image, untouched))
        if image_row.get('hypervisor_type') and image_row['hypervisor_type'] != target_kind:
            raise errors.MultihvError('image %s is for %s nodes, not %s ones; %s'
                                      % (image, image_row['hypervisor_type'], target_kind, untouched))
    node, host = _schedule(ctx, record, flavor, image_row, target_kind, target_node, untouched)
    if not target_caps.hosts_in_node:
        host = None
    return Conversion(record, source, node, target_host or host, flavor, image_row, keep_source)


def _only_other_type(ctx, kind, untouched):
    """Without a target node: the one other hypervisor type whose drivers convert; refused when there are several."""
    kinds = sorted(set(d.hypervisor_type for d in ctx.drivers if d.hypervisor_type != kind and d.capabilities.convert))
    if len(kinds) != 1:
        raise errors.MultihvError('mode convert without target_node needs exactly one other hypervisor type that imports '
                                  'converted disks; the cloud has %s: name the target node; %s' % (', '.join(kinds) or 'none', untouched))
    return kinds[0]


def _schedule(ctx, record, flavor, image_row, target_kind, target_node, untouched):
    """(node, host) from the scheduler among nodes of target_kind: the source excluded, the instance's server group and
    the filters applied (capacity as the registry's allocations say now), its networks' backings the target's own."""
    request = _instances.move_request(ctx, record, target_node, untouched, keep_backing=False)
    request = dataclasses.replace(request, hypervisor_type=target_kind)
    if image_row is not None:
        _instances.request_for(flavor, image_row, {})  # the image's min_ram / min_disk against the flavor
    try:
        return ctx.scheduler().place(request)
    except NoValidHost as exc:
        raise errors.MultihvError('no %s node can take instance %s: %s; %s' % (target_kind, record.name, exc, untouched)) from None


def run(ctx, conversion, lease, shutdown_timeout=SHUTDOWN_TIMEOUT):
    """Record, claim and make the move (see the module's docstring); lease: the instance's, checked before each
    irreversible step and in the writes of the outcome. Returns {changed, instance, migration}."""
    record, registry = conversion.record, ctx.registry
    source, target = ctx.driver_for(conversion.source_node), ctx.driver_for(conversion.target_node)
    image_name = conversion.image['name'] if conversion.image else NO_IMAGE
    # Intent first, with what the reconciler needs to settle an interrupted run the way this one would have.
    migration = registry.create_migration(
        instance_uuid=record.uuid, migration_type=CONVERT, status='accepted', source_node=conversion.source_node,
        source_host=record.host, dest_node=conversion.target_node, dest_host=conversion.target_host,
        stats={'keep_source': conversion.keep_source, 'source_power': record.state, 'image': image_name})
    _instances.claim_for_move(ctx, conversion.flavor, conversion.target_node, record, migration.id)
    powered_off = imported = False
    workdir = None
    stats = {'keep_source': conversion.keep_source, 'source_power': record.state, 'image': image_name}
    try:
        registry.update_migration(migration.id, status='preparing')
        # Made before the source goes down: a network without a backing on the target refuses with nothing touched.
        spec = _instances.spec_for(ctx, record, target, conversion.target_node, conversion.target_host, conversion.flavor,
                                   conversion.image or {'name': image_name})
        with lease.guarded(registry):
            registry.update_migration(migration.id, status='running', started_at=utcnow())
        if record.state == 'running':
            powered_off = True
            _power_off(source, record, conversion.source_node, shutdown_timeout, lease)
        # The controller holds the files between the two drivers: it streams images already, the hosts need no tools.
        workdir = tempfile.mkdtemp(prefix='multihv-convert-%s-' % record.uuid[:8])
        report = _progress(registry, migration.id, stats)
        lease.check()
        disks = source.export_disks(record.uuid, conversion.source_node, workdir, lambda done, total: report('export', done, total))
        if not disks:
            raise errors.DriverError('node %s exported no disk of instance %s' % (conversion.source_node, record.name))
        stats['bytes_total'] = sum(os.path.getsize(d.path) for d in disks if os.path.exists(d.path))
        stats['virtual_size'] = sum(d.virtual_size for d in disks)
        stats['disk_formats'] = [d.disk_format for d in disks]
        lease.check()
        imported = True
        state = target.import_instance(spec, disks, lambda done, total: report('import', done, total))
        if record.state == 'stopped' and state.power_state != 'stopped':
            state = target.set_power(record.uuid, conversion.target_node, 'stop')
    except errors.MultihvError as exc:
        _undo(ctx, conversion, source, target, migration, imported, powered_off, exc)
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
        raise kind('migration %s (convert) of instance %s from %s to %s failed: %s; the instance stays on %s%s' % (
            migration.id, record.name, conversion.source_node, conversion.target_node, exc, conversion.source_node,
            ' and was powered on again' if powered_off else '')) from exc
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    try:
        with lease.guarded(registry):
            instance = registry.update_instance(record.uuid, node=conversion.target_node, host=state.host, image=image_name)[1]
            registry.release(record.uuid, node=conversion.source_node)
            migration = registry.update_migration(migration.id, status='completed', stats=stats, dest_host=state.host,
                                                  finished_at=utcnow())
    except errors.MultihvError as exc:
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.RegistryError
        raise kind('migration %s (convert) made instance %s on %s (host %s) but its records could not be written: %s; the migration '
                   'stays running: once the registry answers and no run holds the instance, multihv.cloud.reconcile records the '
                   'instance where its VM runs' % (migration.id, record.name, conversion.target_node, state.host, exc)) from exc
    result = {'changed': True, 'instance': instance.as_dict(), 'migration': migration.as_dict()}
    try:
        source.retire_converted(record.uuid, conversion.source_node, keep=conversion.keep_source)
    except errors.MultihvError as exc:
        # The move stands (the records say so); the source's stopped VM is a second copy the reconciler settles.
        result['warnings'] = ['instance %s runs on %s but its old VM on %s could not be %s: %s; multihv.cloud.reconcile settles it'
                              % (record.name, conversion.target_node, conversion.source_node,
                                 'renamed' if conversion.keep_source else 'removed', exc)]
    return result


def _power_off(driver, record, node, shutdown_timeout, lease):
    """The source VM powered off: a guest shutdown, then a hard power-off when the guest is not off after
    shutdown_timeout (drivers whose shutdown waits and powers off by itself are off after the first call)."""
    lease.check()
    state = driver.set_power(record.uuid, node, 'shutdown')
    deadline = time.monotonic() + shutdown_timeout
    while state.power_state != 'stopped' and time.monotonic() < deadline:
        time.sleep(POWER_POLL_SECONDS)
        state = _state_of(driver, record.uuid, node) or state
    if state.power_state != 'stopped':
        lease.check()
        driver.set_power(record.uuid, node, 'stop')


def _state_of(driver, inst_uuid, node):
    return next((s for s in driver.list_instances() if s.uuid == inst_uuid and s.node == node), None)


def _undo(ctx, conversion, source, target, migration, imported, powered_off, cause):
    """After a failed step: the target's VM removed (import_instance leaves nothing itself; a stop after it may have
    failed), the target's claim freed, the source powered on again if it ran, the migration failed. Each part is
    tried; what could not be undone is said in the migration's error, and the reconciler settles it."""
    record, registry = conversion.record, ctx.registry
    left = []
    if imported:
        try:
            target.destroy(record.uuid, conversion.target_node)
        except errors.MultihvError as exc:
            left.append('its VM on %s could not be removed (%s)' % (conversion.target_node, exc))
    if powered_off:
        try:
            source.set_power(record.uuid, conversion.source_node, 'start')
        except errors.MultihvError as exc:
            left.append('it could not be powered on again on %s (%s)' % (conversion.source_node, exc))
    registry.release(record.uuid, node=conversion.target_node)
    error = str(cause) + ('; ' + '; '.join(left) if left else '')
    registry.update_migration(migration.id, status='failed', error=error, finished_at=utcnow())


def _progress(registry, migration_id, stats):
    """report(phase, done, total): bytes done of the current phase (export, import) in the migration's stats,
    at most every PROGRESS_EVERY_SECONDS. A registry that does not answer loses a report, never the move."""
    last = [0.0]

    def report(phase, done, total):
        stats['phase'] = phase
        stats['%s_processed' % phase] = done
        stats['%s_total' % phase] = total
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_SECONDS or done >= total:
            last[0] = now
            try:
                registry.update_migration(migration_id, stats=dict(stats))
            except errors.RegistryError:
                pass
    return report


__all__ = ['CONVERT', 'Conversion', 'NO_IMAGE', 'plan', 'run', 'wanted']
