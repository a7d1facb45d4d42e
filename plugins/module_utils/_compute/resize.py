# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Resize: an instance given another flavor, then confirmed or reverted (Nova's resize, confirm_resize,
revert_resize). Private to multihv.cloud: do not import.

A resize stays on the instance's node and host when the node has room for both flavors (Nova's
allow_resize_to_same_host, preferred); otherwise, on a type whose nodes are single hosts with cold
migration (KVM), the scheduler chooses another node and the instance is moved cold before it is
resized there, its old flavor's claim kept on its node until the resize is settled (a revert moves it
back). A cluster node's instance (vSphere) is always reconfigured where it is. The order is Nova's,
with the intent written first, under the instance's lease:

1. every refusal before anything is written: an unknown flavor, a smaller disk, a node or (in a
   cluster node) a host without room, an instance that is not running or stopped, a driver without
   resize;
2. a migration of type resize is recorded (accepted), its stats holding the old and new flavor and
   the instance's power state; then resources are claimed (atomically, as a boot's claim): on its own
   node the larger of the two flavors, resource by resource, so that a revert always fits; on another
   node the new flavor, the old one's claim staying on its node;
3. the driver resizes it (KVM: the domain redefined with the new vCPUs and RAM, the disk grown, a
   copy of the old disk kept; vSphere: ReconfigVM_Task, the VM powered off first when it cannot take
   more CPUs or RAM while it runs); the instance is recorded with the new flavor in state
   verify_resize, the migration 'done';
4. confirm: the driver drops the old disk, the allocation becomes the new flavor's (none is left on
   the node a moved instance came from), the instance its power state, the migration completed;
   revert: the driver brings back the old sizes and disk (a moved instance is moved back cold), the
   allocation becomes the old flavor's on the instance's node, the migration reverted.

A resize the driver failed is undone (a moved instance moved back, the old flavor's claim, the
migration failed); one whose host stopped answering is left to the reconciler. The reconciler
reverts an interrupted resize where its VM is, and confirms one left in verify_resize longer than the
cloud file's defaults.resize_confirm_window (reconcile.py).
"""

from __future__ import annotations

import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import NoValidHost
from ansible_collections.multihv.cloud.plugins.module_utils._constants import RESIZE, RESOURCES, VERIFY_RESIZE
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationControls, MigrationTarget
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


@dataclasses.dataclass
class ResizePlan:
    """A resize checked and placed: the flavors, and the node and host it goes to (the instance's own
    when they have room, else one the scheduler chose for a cold move)."""

    old: dict
    new: dict
    node: str
    host: str | None

    def moves(self, record):
        return self.node != record.node


def check(ctx, record, flavor_name, node=None):
    """The ResizePlan of a resize of record to flavor_name (on node when given: the instance's own, or another
    it moves to), every refusal raised here, before anything is written; the nodes' and host's room as the
    registry and the drivers say now."""
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
    movable = not caps.hosts_in_node and 'cold' in caps.migration_modes
    if node and node != record.node:
        if not movable:
            raise errors.MultihvError('%s instances are resized where they are, not moved to node %s (instance %s is on %s); %s'
                                      % (caps.label, node, record.name, record.node, untouched))
        return ResizePlan(old, new, *_elsewhere(ctx, record, new, 'node %s was asked for' % node, untouched, node))
    short = _short_here(ctx, record, old, new, caps, untouched)
    if not short:
        return ResizePlan(old, new, record.node, record.host)
    if not movable or node == record.node:
        # A cluster node's instance is reconfigured where it is (its host moves are the cluster's own); a node asked for is kept.
        raise errors.MultihvError('%s; migrate it to a node or host with room first; %s' % (short, untouched))
    return ResizePlan(old, new, *_elsewhere(ctx, record, new, short, untouched))


def _short_here(ctx, record, old, new, caps, untouched):
    """Why the instance's own node (and, in a node of several hosts, its host) cannot hold it resized, or ''. The node
    must keep room for the larger of the two flavors (the registry's allocations, this instance's own not counted),
    so that a revert always fits."""
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
        return 'node %s has no room to resize instance %s to flavor %s (%s: %s held by others, %s needed, capacity %s)' % (
            record.node, record.name, new['name'], ', '.join(short), ', '.join(str(held[r]) for r in short),
            ', '.join(str(needs[r]) for r in short), ', '.join(str(view.capacity[r]) for r in short))
    if caps.hosts_in_node and record.state == 'running':
        host = next((h for h in view.hosts if h.name == record.host), None)
        more_ram = new['ram_mb'] - old['ram_mb']
        if host is not None and (more_ram > host.memory_mb_free or new['vcpus'] > host.vcpus):
            return 'host %s of node %s cannot take instance %s with flavor %s (%d MB more RAM, %d MB free; %d vCPUs, the host has %d)' % (
                host.name, record.node, record.name, new['name'], max(more_ram, 0), host.memory_mb_free, new['vcpus'], host.vcpus)
    return ''


def _elsewhere(ctx, record, new, short, untouched, node=None):
    """(node, host) the scheduler chooses (among node only, when given) for the instance with the new flavor, its
    node excluded (a cold move)."""
    if node:
        _nodes.type_in_cloud(ctx.drivers, node, untouched)  # a node the cloud file does not have is refused, naming it
    request = _instances.move_request(ctx, record, node, untouched, keep_backing=True)
    request = dataclasses.replace(request, vcpus=new['vcpus'], memory_mb=new['ram_mb'], disk_gb=new['disk_gb'])
    try:
        return ctx.scheduler().place(request)
    except NoValidHost as exc:
        which = 'it cannot take it' if node else 'no other node can take it'
        raise errors.MultihvError('%s, and %s: %s; %s' % (short, which, exc, untouched)) from None


def resize(ctx, record, flavor_name, check_mode=False, node=None):
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
        planned = check(ctx, record, flavor_name, node)
        host = planned.host if not planned.moves(record) else planned.host or planned.node
        return True, dataclasses.replace(record, flavor=flavor_name, state=VERIFY_RESIZE, node=planned.node, host=host)
    untouched = _untouched(record)
    with _leases.on_instance(ctx.registry, record.uuid, untouched, 'resize') as lease:
        record = _instances.current(ctx.registry, record, untouched)
        if record.state == VERIFY_RESIZE or record.flavor == flavor_name:  # another run resized it meanwhile
            return resize(ctx, record, flavor_name)
        planned = check(ctx, record, flavor_name, node)
        return True, _resize(ctx, record, planned, lease)


def _resize(ctx, record, planned, lease):
    registry, untouched = ctx.registry, _untouched(record)
    old, new = planned.old, planned.new
    view = ctx.view(planned.node)
    moves = planned.moves(record)
    # Intent first: a controller that dies after it leaves a migration that explains the claim.
    migration = registry.create_migration(
        instance_uuid=record.uuid, migration_type=RESIZE, status='accepted', source_node=record.node, source_host=record.host,
        dest_node=planned.node, dest_host=planned.host if not moves else planned.host or planned.node,
        stats={'old_flavor': old['name'], 'new_flavor': new['name'], 'power': record.state})
    # On its own node, room for either flavor until it is settled; on another node, the new flavor's
    # there while the old one's stays on its node for a revert.
    needs = resources(new) if moves else _larger(resources(old), resources(new))
    target = ctx.driver_for(planned.node)
    try:
        if not registry.claim(record.uuid, planned.node, view.hypervisor_type, needs, view.capacity):
            raise errors.MultihvError('node %s has no room for instance %s with flavor %s any more (another run took it); %s'
                                      % (planned.node, record.name, new['name'], untouched))
        with lease.guarded():
            registry.update_migration(migration.id, status='running', started_at=utcnow())
        if moves:
            _move(ctx, record, planned.node, lease)
        lease.check()
        state = target.resize(record.uuid, planned.node, new['vcpus'], new['ram_mb'], new['disk_gb'])
    except errors.Unreachable as exc:
        # A host stopped answering mid-way: the work may still be carried out there. The records stay as they
        # are for the reconciler, which settles the resize (reverted) once the nodes answer.
        raise errors.Unreachable('resize %s of instance %s to flavor %s was cut off: %s; it stays recorded running: once node %s '
                                 'answers and no run holds the instance, multihv.cloud.reconcile reverts it to flavor %s'
                                 % (migration.id, record.name, new['name'], exc, planned.node, old['name'])) from exc
    except errors.MultihvError as exc:
        _undo(ctx, record, planned, migration, exc)
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
        raise kind('resize %s of instance %s to flavor %s failed: %s' % (migration.id, record.name, new['name'], exc)) from exc
    try:
        with lease.guarded():
            after = registry.update_instance(record.uuid, node=planned.node, flavor=new['name'], host=state.host or planned.host,
                                             state=VERIFY_RESIZE)[1]
            registry.update_migration(migration.id, status='done', dest_host=state.host or planned.host, finished_at=utcnow())
    except errors.MultihvError as exc:
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.RegistryError
        raise kind('instance %s was resized to flavor %s on node %s but its records could not be written: %s; the resize %s stays '
                   'running: once the registry answers and no run holds the instance, multihv.cloud.reconcile reverts it'
                   % (record.name, new['name'], planned.node, exc, migration.id)) from exc
    return after


def _move(ctx, record, node, lease):
    """The instance moved cold to node (its image's base there first, as a cold migration does)."""
    source, target = ctx.driver_for(record.node), ctx.driver_for(node)
    image = ctx.registry.get_image(record.image)
    if image is not None:
        _instances.ensure_image_on(ctx.registry, target, image)
    lease.check()
    source.migrate(record.uuid, record.node, MigrationTarget(target, node, None), 'cold', MigrationControls())


def _undo(ctx, record, planned, migration, cause):
    """After a refused claim or a failed driver call: the VM back on its node when it moved (its sizes are the old
    ones: a failed resize leaves them), the claims as before, the resize failed."""
    registry = ctx.registry
    error = str(cause)
    if planned.moves(record):
        where = _found_on(ctx, record.uuid, (planned.node, record.node))
        if where == planned.node:
            try:
                ctx.driver_for(planned.node).migrate(record.uuid, planned.node, MigrationTarget(ctx.driver_for(record.node), record.node, None),
                                                     'cold', MigrationControls())
            except errors.MultihvError as exc:
                # It stays where it is, with its old sizes: the records follow it there.
                registry.update_instance(record.uuid, node=planned.node, host=planned.host or planned.node)
                registry.claim(record.uuid, planned.node, ctx.hypervisor_type(planned.node), resources(planned.old), NO_LIMIT)
                registry.release(record.uuid, node=record.node)
                registry.update_migration(migration.id, status='failed', finished_at=utcnow(),
                                          error='%s; moving it back to %s failed too (%s): it stays on %s with flavor %s'
                                                % (error, record.node, exc, planned.node, planned.old['name']))
                return
        registry.release(record.uuid, node=planned.node)
    else:
        registry.claim(record.uuid, record.node, ctx.hypervisor_type(record.node), resources(planned.old), NO_LIMIT)
    registry.update_migration(migration.id, status='failed', error=error, finished_at=utcnow())


def _found_on(ctx, inst_uuid, nodes):
    """The first of nodes whose driver lists a VM of the instance, or None."""
    for node in nodes:
        try:
            if any(s.uuid == inst_uuid and s.node == node for s in ctx.driver_for(node).list_instances()):
                return node
        except errors.MultihvError:
            continue
    return None


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
        return True, dataclasses.replace(record, flavor=stats.get('old_flavor') or record.flavor, state=stats.get('power') or 'running',
                                         node=migration.source_node or record.node, host=migration.source_host or record.host)
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


def power_before(migration):
    """The power state an instance had when its resize began (running when nothing says)."""
    return ((migration.stats or {}).get('power') if migration is not None else None) or 'running'


def confirmed_by_evacuation(registry, migration, failed_node, dest):
    """Record the resize of an instance evacuated from failed_node to dest confirmed: its old flavor's claim left on the
    node it came from (a resize that moved it) released, the migration completed. Run in the evacuation's transaction,
    which moves the instance's own claim."""
    came_from = migration.source_node
    if came_from and came_from not in (failed_node, dest):
        registry.release(migration.instance_uuid, node=came_from)
    registry.update_migration(migration.id, status='completed', finished_at=utcnow(),
                              error='confirmed by the evacuation of node %s: the old disk was there' % failed_node)


def _power_now(ctx, record, fallback):
    try:
        power = _instances.live_power(ctx, record)
    except errors.NotFound:
        return fallback
    return power if power in ('running', 'stopped') else fallback


def confirm_held(ctx, record, migration, lease=None, decided=None):
    """Confirm a resize (under the instance's lease, held by the caller): the old disk dropped, the allocation the
    new flavor's on its node (and none left on the node it came from), the instance its power state, the migration
    completed."""
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
        if migration.source_node and migration.source_node != record.node:
            registry.release(record.uuid, node=migration.source_node)
        after = registry.update_instance(record.uuid, state=power)[1]
        registry.update_migration(migration.id, status='completed', finished_at=utcnow(), error=decided)
    return after


def revert_held(ctx, record, migration, lease=None, decided=None, where=None):
    """Revert a resize (under the instance's lease, held by the caller): the old sizes and disk back on the node the
    instance came from (moved back cold when it moved), the allocation the old flavor's there and none elsewhere, the
    migration reverted. The reconciler's revert of an interrupted resize (decided: why, the migration failed) leaves
    the VM where it found it (where) with its old sizes, as it settles interrupted migrations."""
    registry = ctx.registry
    old_name = (migration.stats or {}).get('old_flavor')
    old = registry.get_flavor(old_name) if old_name else None
    if old is None:
        raise errors.NotFound('flavor %s, which instance %s had before its resize, no longer exists; the resize was left waiting'
                              % (old_name, record.name))
    node, home = where or record.node, migration.source_node or record.node
    if lease is not None:
        lease.check()
    state = ctx.driver_for(node).revert_resize(record.uuid, node, old['vcpus'], old['ram_mb'])
    if decided is None and node != home:
        if lease is not None:
            lease.check()
        state, _stats = ctx.driver_for(node).migrate(record.uuid, node, MigrationTarget(ctx.driver_for(home), home, None), 'cold',
                                                     MigrationControls())
        node = home
    power = power_before(migration)
    if power == 'running' and state.power_state != 'running':
        # As Nova's revert: it runs again when it ran before, also after a run that died while the VM was stopped.
        if lease is not None:
            lease.check()
        state = ctx.driver_for(node).set_power(record.uuid, node, 'start')
    power = state.power_state if state.power_state in ('running', 'stopped') else power
    with registry.transaction():
        if lease is not None:
            lease.check()
        registry.claim(record.uuid, node, ctx.hypervisor_type(node), resources(old), NO_LIMIT)
        for other in set((migration.source_node, migration.dest_node)) - {node, None}:
            registry.release(record.uuid, node=other)
        after = registry.update_instance(record.uuid, node=node, flavor=old['name'], host=state.host or record.host, state=power)[1]
        registry.update_migration(migration.id, status='failed' if decided else 'reverted', finished_at=utcnow(), error=decided)
    return after


__all__ = ['CONFIRMED', 'REVERTED', 'check', 'confirm_held', 'confirmed_by_evacuation', 'finish', 'pending', 'power_before', 'resize',
           'resources', 'revert_held']
