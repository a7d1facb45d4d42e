# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resize: an instance given another flavor, then confirmed or reverted (Nova's resize, confirm_resize,
revert_resize). Private to multihv.cloud: do not import.

A resize stays on the instance's node and host (Nova's allow_resize_to_same_host, always): a node
without room for the new flavor refuses it, and the instance can be migrated first. The order is
Nova's, with the intent written first, under the instance's lease:

1. every refusal before anything is written: an unknown flavor, a smaller disk, a node or (in a
   cluster node) a host without room, an instance that is not running or stopped, a driver without
   resize;
2. a migration of type resize is recorded (accepted), its stats holding the old and new flavor and
   the instance's power state; then the larger of the two flavors, resource by resource, is claimed
   on the node (atomically, as a boot's claim): until the resize is settled the node keeps room for
   either, so a revert always fits;
3. the driver resizes it (KVM: the domain redefined with the new vCPUs and RAM, the disk grown, a
   copy of the old disk kept; vSphere: ReconfigVM_Task, the VM powered off first when it cannot take
   more CPUs or RAM while it runs); the instance is recorded with the new flavor in state
   verify_resize, the migration 'done';
4. confirm: the driver drops the old disk, the allocation becomes the new flavor's, the instance its
   power state, the migration completed; revert: the driver brings back the old sizes and disk, the
   allocation becomes the old flavor's, the migration reverted.

A resize the driver failed is undone (the old flavor's claim, the migration failed). One that a
controller's death interrupted is reverted by the reconciler (plan_interrupted), and one left in
verify_resize longer than the cloud file's defaults.resize_confirm_window is confirmed by it
(plan_confirm_window).
"""

from __future__ import annotations

import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._constants import RESIZE, RESOURCES, VERIFY_RESIZE
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import utcnow

# What the instance task's state asks of a resize waiting in verify_resize.
CONFIRMED = 'resize_confirmed'
REVERTED = 'resize_reverted'
# A shrinking claim (confirm, revert) gives back what the instance held: it cannot overcommit its
# node, whatever the node's capacity says now (a ratio lowered meanwhile must not make it fail).
NO_LIMIT = dict((resource, 2 ** 53) for resource in RESOURCES)


def resources(flavor):
    """{vcpus, memory_mb, disk_gb} of a flavor, as an allocation holds them."""
    return {'vcpus': flavor['vcpus'], 'memory_mb': flavor['ram_mb'], 'disk_gb': flavor['disk_gb']}


def _larger(old, new):
    return dict((resource, max(old[resource], new[resource])) for resource in RESOURCES)


def pending(registry, record):
    """The resize of record waiting to be confirmed or reverted (its migration 'done'), or None."""
    found = registry.list_migrations(instance_uuid=record.uuid, migration_type=RESIZE, status='done')
    return found[-1] if found else None


def _untouched(record):
    return 'instance %s was not resized' % record.name


def check(ctx, record, flavor_name):
    """(old flavor, new flavor) of a resize of record to flavor_name, every refusal raised here,
    before anything is written; the node's and host's room as the registry and the driver say now."""
    registry, untouched = ctx.registry, _untouched(record)
    new = registry.get_flavor(flavor_name)
    if new is None:
        raise errors.NotFound('flavor %s does not exist; %s' % (flavor_name, untouched))
    old = registry.get_flavor(record.flavor)
    if old is None:
        raise errors.NotFound('instance %s has flavor %s, which no longer exists; %s' % (record.name, record.flavor, untouched))
    if record.state not in ('running', 'stopped'):
        raise errors.MultihvError('instance %s is %s, not running or stopped; %s' % (record.name, record.state, untouched))
    if new['disk_gb'] < old['disk_gb']:
        raise errors.MultihvError('flavor %s has a %d GB disk, smaller than the %d GB of flavor %s that instance %s has: a disk is '
                                  'never shrunk; %s' % (new['name'], new['disk_gb'], old['disk_gb'], old['name'], record.name, untouched))
    caps = ctx.capabilities(record.node)
    if caps is None:
        raise errors.NotFound('instance %s is on node %s, which the cloud file does not have; %s' % (record.name, record.node, untouched))
    if not caps.resize:
        raise errors.MultihvError('%s instances cannot be resized (instance %s); %s' % (caps.label, record.name, untouched))
    wanted = (new.get('extra_specs') or {}).get('hypervisor_type')
    if wanted and wanted != caps.hypervisor_type:
        raise errors.MultihvError('flavor %s is for %s nodes; instance %s is on %s node %s; %s'
                                  % (new['name'], wanted, record.name, caps.label, record.node, untouched))
    image = registry.get_image(record.image)
    if image is not None:
        _instances.request_for(new, image, {})  # the image's min_ram / min_disk against the new flavor
    _check_room(ctx, record, old, new, caps, untouched)
    return old, new


def _check_room(ctx, record, old, new, caps, untouched):
    """The node's capacity (the registry's allocations, this instance's own not counted) holds the larger
    of the two flavors, and in a node of several hosts the instance's host has the RAM and CPUs it adds."""
    view = ctx.view(record.node)
    if view is None or view.state != 'up':
        raise errors.MultihvError('node %s of instance %s %s; %s' % (
            record.node, record.name, 'is not in the cloud' if view is None else 'is %s (%s)' % (view.state, view.reason), untouched))
    needs = _larger(resources(old), resources(new))
    held = dict((resource, 0) for resource in RESOURCES)
    for allocation in ctx.registry.list_allocations(node=record.node):
        if allocation['instance_uuid'] != record.uuid:
            for resource in RESOURCES:
                held[resource] += allocation[resource]
    short = [resource for resource in RESOURCES if held[resource] + needs[resource] > view.capacity[resource]]
    if short:
        raise errors.MultihvError('node %s has no room to resize instance %s to flavor %s (%s: %s held by others, %s needed, capacity %s); '
                                  'migrate it to a node with room first; %s' % (
                                      record.node, record.name, new['name'], ', '.join(short), ', '.join(str(held[r]) for r in short),
                                      ', '.join(str(needs[r]) for r in short), ', '.join(str(view.capacity[r]) for r in short), untouched))
    if caps.hosts_in_node and record.state == 'running':
        host = next((h for h in view.hosts if h.name == record.host), None)
        more_ram = new['ram_mb'] - old['ram_mb']
        if host is not None and (more_ram > host.memory_mb_free or new['vcpus'] > host.vcpus):
            raise errors.MultihvError('host %s of node %s cannot take instance %s with flavor %s (%d MB more RAM, %d MB free; %d vCPUs, '
                                      'the host has %d); migrate it to another host first; %s' % (
                                          host.name, record.node, record.name, new['name'], max(more_ram, 0), host.memory_mb_free,
                                          new['vcpus'], host.vcpus, untouched))


def resize(ctx, record, flavor_name, check_mode=False):
    """Resize record to flavor_name: (changed, record after). In check mode nothing is written (not even
    a lease): the record returned is the one a resize would give. A resize waiting to be confirmed to
    that flavor is the desired state already (unchanged); to another flavor it is refused."""
    if record.state == VERIFY_RESIZE:
        if record.flavor == flavor_name:
            return False, record
        raise errors.MultihvError('instance %s was resized to flavor %s, which waits to be confirmed or reverted (state %s or %s); '
                                  '%s' % (record.name, record.flavor, CONFIRMED, REVERTED, _untouched(record)))
    if record.flavor == flavor_name:
        return False, record
    if check_mode:
        check(ctx, record, flavor_name)
        return True, dataclasses.replace(record, flavor=flavor_name, state=VERIFY_RESIZE)
    untouched = _untouched(record)
    with _leases.on_instance(ctx.registry, record.uuid, untouched, 'resize') as lease:
        record = _instances.current(ctx.registry, record, untouched)
        if record.state == VERIFY_RESIZE or record.flavor == flavor_name:  # another run resized it meanwhile
            return resize(ctx, record, flavor_name)
        old, new = check(ctx, record, flavor_name)
        return True, _resize(ctx, record, old, new, lease)


def _resize(ctx, record, old, new, lease):
    registry, untouched = ctx.registry, _untouched(record)
    view = ctx.view(record.node)
    # Intent first: a controller that dies after it leaves a migration that explains the larger claim.
    migration = registry.create_migration(
        instance_uuid=record.uuid, migration_type=RESIZE, status='accepted', source_node=record.node, source_host=record.host,
        dest_node=record.node, dest_host=record.host, stats={'old_flavor': old['name'], 'new_flavor': new['name'], 'power': record.state})
    try:
        if not registry.claim(record.uuid, record.node, view.hypervisor_type, _larger(resources(old), resources(new)), view.capacity):
            raise errors.MultihvError('node %s has no room for instance %s with flavor %s any more (another run took it); %s'
                                      % (record.node, record.name, new['name'], untouched))
        with lease.guarded():
            registry.update_migration(migration.id, status='running', started_at=utcnow())
        state = ctx.driver_for(record.node).resize(record.uuid, record.node, new['vcpus'], new['ram_mb'], new['disk_gb'])
    except errors.Unreachable as exc:
        # The host stopped answering mid-way: the resize may still be carried out there. Its records stay as
        # they are (running, the larger claim) for the reconciler, which reverts it once the node answers.
        raise errors.Unreachable('resize %s of instance %s to flavor %s was cut off: %s; it stays recorded running: once node %s '
                                 'answers and no run holds the instance, multihv.cloud.reconcile reverts it to flavor %s'
                                 % (migration.id, record.name, new['name'], exc, record.node, old['name'])) from exc
    except errors.MultihvError as exc:
        # The driver left the VM as it was: the old flavor's claim again, the resize failed.
        registry.claim(record.uuid, record.node, view.hypervisor_type, resources(old), NO_LIMIT)
        registry.update_migration(migration.id, status='failed', error=str(exc), finished_at=utcnow())
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
        raise kind('resize %s of instance %s to flavor %s failed: %s' % (migration.id, record.name, new['name'], exc)) from exc
    try:
        with lease.guarded():
            after = registry.update_instance(record.uuid, flavor=new['name'], host=state.host or record.host, state=VERIFY_RESIZE)[1]
            registry.update_migration(migration.id, status='done', dest_host=state.host or record.host, finished_at=utcnow())
    except errors.MultihvError as exc:
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.RegistryError
        raise kind('instance %s was resized to flavor %s on node %s but its records could not be written: %s; the resize %s stays '
                   'running: once the registry answers and no run holds the instance, multihv.cloud.reconcile reverts it'
                   % (record.name, new['name'], record.node, exc, migration.id)) from exc
    return after


def finish(ctx, record, wanted, check_mode=False):
    """Confirm (wanted CONFIRMED) or revert (REVERTED) record's resize: (changed, record after). An instance
    with no resize waiting is as asked already (unchanged)."""
    if record.state != VERIFY_RESIZE:
        return False, record
    untouched = 'the resize of instance %s was left waiting' % record.name
    if check_mode:
        migration = _waiting(ctx.registry, record, untouched)
        stats = migration.stats or {}
        if wanted == CONFIRMED:
            return True, dataclasses.replace(record, state=stats.get('power') or 'running')
        return True, dataclasses.replace(record, flavor=stats.get('old_flavor') or record.flavor, state=stats.get('power') or 'running')
    with _leases.on_instance(ctx.registry, record.uuid, untouched, 'confirm resize' if wanted == CONFIRMED else 'revert resize') as lease:
        record = _instances.current(ctx.registry, record, untouched)
        if record.state != VERIFY_RESIZE:
            return False, record  # another run settled it meanwhile
        migration = _waiting(ctx.registry, record, untouched)
        work = confirm_held if wanted == CONFIRMED else revert_held
        return True, work(ctx, record, migration, lease)


def _waiting(registry, record, untouched):
    migration = pending(registry, record)
    if migration is None:
        raise errors.MultihvError('instance %s is in state %s but no resize of it is recorded done; %s'
                                  % (record.name, VERIFY_RESIZE, untouched))
    return migration


def _power_now(ctx, record, fallback):
    try:
        power = _instances.live_power(ctx, record)
    except errors.NotFound:
        return fallback
    return power if power in ('running', 'stopped') else fallback


def confirm_held(ctx, record, migration, lease=None, decided=None):
    """Confirm a resize (under the instance's lease, held by the caller): the old disk dropped, the
    allocation the new flavor's, the instance its power state, the migration completed."""
    registry = ctx.registry
    new = registry.get_flavor(record.flavor)
    if lease is not None:
        lease.check()
    ctx.driver_for(record.node).confirm_resize(record.uuid, record.node)
    power = _power_now(ctx, record, (migration.stats or {}).get('power') or 'running')
    with registry.transaction():
        if lease is not None:
            lease.check()
        if new is not None:
            registry.claim(record.uuid, record.node, ctx.hypervisor_type(record.node), resources(new), NO_LIMIT)
        after = registry.update_instance(record.uuid, state=power)[1]
        registry.update_migration(migration.id, status='completed', finished_at=utcnow(), error=decided)
    return after


def revert_held(ctx, record, migration, lease=None, decided=None):
    """Revert a resize (under the instance's lease, held by the caller): the old sizes and disk back,
    the allocation the old flavor's, the migration reverted (failed with decided, for the reconciler's
    revert of an interrupted one)."""
    registry = ctx.registry
    old_name = (migration.stats or {}).get('old_flavor')
    old = registry.get_flavor(old_name) if old_name else None
    if old is None:
        raise errors.NotFound('flavor %s, which instance %s had before its resize, no longer exists; the resize was left waiting'
                              % (old_name, record.name))
    if lease is not None:
        lease.check()
    state = ctx.driver_for(record.node).revert_resize(record.uuid, record.node, old['vcpus'], old['ram_mb'])
    power = state.power_state if state.power_state in ('running', 'stopped') else (migration.stats or {}).get('power') or 'running'
    with registry.transaction():
        if lease is not None:
            lease.check()
        registry.claim(record.uuid, record.node, ctx.hypervisor_type(record.node), resources(old), NO_LIMIT)
        after = registry.update_instance(record.uuid, flavor=old['name'], host=state.host or record.host, state=power)[1]
        registry.update_migration(migration.id, status='failed' if decided else 'reverted', finished_at=utcnow(), error=decided)
    return after


__all__ = ['CONFIRMED', 'REVERTED', 'check', 'confirm_held', 'finish', 'pending', 'resize', 'resources', 'revert_held']
