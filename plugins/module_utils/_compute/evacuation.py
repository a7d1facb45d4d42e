# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evacuation of a failed node, and the clean-up of its stale copies when it comes back.
Private to multihv.cloud: do not import.

Nova's evacuate: the instances of a node that is down are rebuilt elsewhere from their
records. Its safety rule is ours: a node that still answers, or that is neither forced
down nor fenced, is refused, because a second copy of a VM on shared storage corrupts
its disk. On shared storage the rebuilt instance adopts the same disk (data and password
kept); on local storage it gets a new disk from its image (data lost, identity kept:
uuid, name, hostname, MACs and IPs) and a new password. Each evacuation is a migration
record of type evacuation that ends in Nova's 'done': the instance runs on the target,
its stale copy on the failed node waits. When that node answers again, clean_stale()
destroys the stale copies (their local disks too) before the node may take instances,
and the records become completed. The lab restores a host with its guests shut off, and
the node stays forced down until clean-up ran: two copies never run at once.

An instance waiting in verify_resize is evacuated too (Masakari evacuates resized instances
as well): it is rebuilt with its new flavor in the power state it had, and its resize is
recorded confirmed, since the failed host that holds its old disk cannot give it back. On
shared storage the copy of the old disk is removed beside the disk the rebuilt instance uses;
a local one goes with the stale copy when the node is cleaned.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import bounds as _bounds
from ansible_collections.multihv.cloud.plugins.module_utils._compute import fencing as _fencing
from ansible_collections.multihv.cloud.plugins.module_utils._compute import guest as _guest
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute import resize as _resize
from ansible_collections.multihv.cloud.plugins.module_utils._compute.records import Evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._constants import VERIFY_RESIZE
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import utcnow
from ansible_collections.multihv.cloud.plugins.module_utils._compute.fencing import fence
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import NoValidHost

EVACUATION = 'evacuation'
# States of an instance that evacuation rebuilds; building ones never ran, error ones have no VM.
EVACUABLE = ('running', 'stopped', VERIFY_RESIZE)


class Unplaced(errors.MultihvError):
    """No node has room for the instance: reported, never forced onto an overcommitted node."""


def restart_order(record):
    """HA instances first, then by restart priority (higher first), then by name."""
    return (not record.ha, -(record.restart_priority or 0), record.name)


def check_failed(ctx, node, check_mode=False):
    """Refuse unless node's hypervisor type has evacuation and node does not answer AND is forced
    down or fenced now (_fencing.power_off: by its fence command, confirmed by its power status where
    the cloud file gives a power_status_command; then it is forced down too, so that nothing is
    scheduled on it until clean_stale ran). Returns 'forced_down' (it was already), 'fenced' or 'would fence'."""
    kind = ctx.hypervisor_type(node)
    if kind is None:
        raise errors.NotFound('node %s is not in the cloud; nothing was evacuated' % node)
    caps = ctx.capabilities(node)
    if not caps.evacuation:
        raise errors.MultihvError('node %s is a %s: %s. Nothing was evacuated' % (node, caps.node_noun, caps.self_recovery))
    view = ctx.view(node)
    if view.up:
        raise errors.MultihvError(
            'node %s answers (its hypervisor is reachable): evacuation starts second copies of its instances, and two copies '
            'of one VM on shared storage corrupt its disk; move them with multihv.cloud.migrate (from_node) instead. '
            'Nothing was evacuated' % node)
    admin = ctx.registry.get_node(node) or {}
    if admin.get('forced_down'):
        return 'forced_down'
    driver = ctx.driver_for(node)
    command, power_status = driver.fence_command(node), driver.power_status_command(node)
    if not command and not power_status:
        raise errors.MultihvError(
            'node %s does not answer (%s) but is neither forced down nor fenceable: it may still run its instances behind a '
            'network fault. Make sure it is off, then set forced_down with multihv.cloud.compute_node, or give it a '
            'fence_command (and a power_status_command) in the cloud file. Nothing was evacuated' % (node, view.reason or 'down'))
    if check_mode:
        return 'would fence'
    _fencing.power_off(node, command, power_status, driver.fence_environment(node))  # raises unless it is off
    ctx.registry.set_node(node, kind, forced_down=True)
    return 'fenced'


def _selected(registry, node, refs):
    """The node's instances to evacuate, in restart order; refs (names or uuids) narrow them."""
    records = [r for r in registry.list_instances(node=node) if r.state in EVACUABLE]
    if refs:
        wanted = set(refs)
        found = [r for r in records if r.name in wanted or r.uuid in wanted]
        missing = wanted - set(r.name for r in found) - set(r.uuid for r in found)
        if missing:
            raise errors.NotFound('node %s has no running or stopped instance %s; nothing was evacuated'
                                  % (node, ', '.join(sorted(missing))))
        records = found
    return sorted(records, key=restart_order)


def _check_target(ctx, node, target_node):
    if target_node is None:
        return
    if target_node == node:
        raise errors.MultihvError('target_node %s is the failed node itself; nothing was evacuated' % node)
    kind = _nodes.hypervisor_type_of(ctx.drivers, target_node)
    if kind is None:
        raise errors.NotFound('target node %s is not in the cloud file; nothing was evacuated' % target_node)
    source = ctx.capabilities(node)
    if kind != ctx.hypervisor_type(node) and source is not None:
        raise errors.MultihvError('target node %s is a %s node: %s instances are rebuilt on %s nodes only; nothing was evacuated'
                                  % (target_node, kind, source.label, source.label))


def evacuate(ctx, node, target_node=None, instances=None, concurrency=4, check_mode=False, hold_node=True):
    """Rebuild the instances of failed `node` elsewhere. Returns {changed, node, fencing,
    evacuations, unplaced, failures}; one instance that fails stays recorded on node and the
    others go on. A refusal (see check_failed) raises before anything happens. The node's lease
    is held from before the fence to the end (another evacuation or drain of the node is refused:
    errors.LeaseHeld), unless the caller holds it already (hold_node=False: an HA pass)."""
    _bounds.at_least('concurrency', concurrency, 1, 'nothing was evacuated')
    if check_mode or not hold_node:
        return _evacuate(ctx, node, target_node, instances, concurrency, check_mode)
    with _leases.on_node(ctx.registry, node, 'nothing was evacuated', 'evacuate'):
        return _evacuate(ctx, node, target_node, instances, concurrency, check_mode)


def _evacuate(ctx, node, target_node, instances, concurrency, check_mode):
    _check_target(ctx, node, target_node)
    records = _selected(ctx.registry, node, instances)
    fencing = check_failed(ctx, node, check_mode)
    result = {'changed': fencing in ('fenced', 'would fence'), 'node': node, 'fencing': fencing,
              'evacuations': [], 'unplaced': [], 'failures': []}
    if check_mode:
        scheduler = ctx.scheduler()
        for record in records:
            try:
                dest, _host = scheduler.place(_request(ctx, record, target_node, 'instance %s was not evacuated' % record.name))
                result['evacuations'].append({'name': record.name, 'uuid': record.uuid, 'status': 'would run',
                                              'source_node': node, 'dest_node': dest, 'storage': record.storage})
                result['changed'] = True
            except (NoValidHost, errors.MultihvError) as exc:
                result['unplaced' if isinstance(exc, NoValidHost) else 'failures'].append(
                    {'name': record.name, 'uuid': record.uuid, 'msg': str(exc)})
        return result
    ctx.views()  # read once, before the workers share them
    with contextlib.ExitStack() as leases:
        # Placed one by one in restart order, so that when room is short the first get it;
        # then rebuilt concurrently. Each instance's lease is held until its rebuild ended.
        placed = []
        for record in records:
            try:
                placed.append(_place(ctx, leases, record.uuid, node, target_node))
            except Unplaced as exc:
                result['unplaced'].append({'name': record.name, 'uuid': record.uuid, 'msg': str(exc)})
            except errors.MultihvError as exc:
                result['failures'].append({'name': record.name, 'uuid': record.uuid, 'msg': str(exc)})
        workers = max(1, min(concurrency, len(placed) or 1))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = dict((pool.submit(_rebuild_apart, ctx, evacuation), evacuation.record) for evacuation in placed)
            for future in concurrent.futures.as_completed(futures):
                record = futures[future]
                try:
                    result['evacuations'].append(future.result())
                except errors.MultihvError as exc:
                    result['failures'].append({'name': record.name, 'uuid': record.uuid, 'msg': str(exc)})
    order = dict((record.uuid, index) for index, record in enumerate(records))
    result['evacuations'].sort(key=lambda e: order[e['uuid']])
    # Changed is what happened: instances that fit nowhere again change nothing.
    result['changed'] = result['changed'] or bool(result['evacuations'])
    return result


def _place(ctx, leases, inst_uuid, node, target_node):
    """An Evacuation: the instance's lease taken (into the ExitStack leases), its record checked, a
    target scheduled, the evacuation recorded as accepted, then the target claimed (a failed claim
    records the evacuation failed, with the reason)."""
    registry = ctx.registry
    untouched = 'instance %s was not evacuated' % inst_uuid
    lease = leases.enter_context(_leases.on_instance(registry, inst_uuid, untouched, 'evacuate'))
    record = registry.get_instance(uuid=inst_uuid)
    if record is None or record.node != node:
        raise errors.MultihvError('instance %s is not on node %s any more (another run moved or deleted it); %s'
                                  % (inst_uuid, node, untouched))
    untouched = 'instance %s was not evacuated and is still recorded on %s' % (record.name, node)
    request = _request(ctx, record, target_node, untouched)
    try:
        dest, host = ctx.scheduler().place(request)
    except NoValidHost as exc:
        raise Unplaced('no node can take instance %s: %s; %s' % (record.name, exc, untouched)) from None
    # Intent first: the evacuation is recorded before its target's claim, so that a controller that
    # dies between the two never leaves an allocation that no record explains.
    migration = registry.create_migration(
        instance_uuid=inst_uuid, migration_type=EVACUATION, status='accepted', source_node=node,
        source_host=record.host, dest_node=dest, dest_host=host, stats={'storage': record.storage})
    try:
        claimed = _claim_target(ctx, record, request, dest, host, untouched)
    except errors.MultihvError as exc:
        registry.update_migration(migration.id, status='failed', error=str(exc), finished_at=utcnow())
        raise
    if claimed != (dest, host):  # another run took the room: the claim went to the next node the scheduler chose
        dest, host = claimed
        migration = registry.update_migration(migration.id, dest_node=dest, dest_host=host)
    return Evacuation(record, dest, host, migration, lease)


def _rebuild_apart(ctx, evacuation):
    with ctx.apart() as worker:
        return rebuild(worker, evacuation)


def _request(ctx, record, target_node, untouched):
    """The scheduler request that rebuilds record elsewhere (see _instances.move_request), as a
    failover request (reserved failover nodes first), on a node that shares its disk when shared."""
    request = _instances.move_request(ctx, record, target_node, untouched)
    source = ctx.serving(record.node)
    peers = source.storage_peers(record.node) if source is not None else None
    if record.storage == 'shared' and peers:
        # Its disk is only on the nodes that share the directory: elsewhere it would be lost.
        request = dataclasses.replace(request, exclude=request.exclude | (frozenset(v.name for v in ctx.views()) - set(peers)))
    return dataclasses.replace(request, for_failover=True)


def _claim_target(ctx, record, request, dest, host, untouched):
    """(node, host) claimed for record: dest, or another node the scheduler chose when other runs
    took dest's room meanwhile; Unplaced when no node has room."""
    try:
        return _instances.claim_somewhere(ctx, ctx.registry.get_flavor(record.flavor), record.uuid, dest, host, request)
    except NoValidHost as exc:
        raise Unplaced('no node can take instance %s: %s; %s' % (record.name, exc, untouched)) from None
    except _instances.ClaimContended as exc:
        raise Unplaced('%s; %s' % (exc, untouched)) from None


def rebuild(ctx, evacuation):
    """Rebuild one placed instance of the failed node on its destination (see _place) and move its
    record there. Returns {name, uuid, status, source_node, dest_node, dest_host, storage, disk,
    instance, migration} (the records as dicts, as modules return them), resize (the id of a resize
    the evacuation confirmed) and, after a new disk, admin_password (never logged or stored)."""
    registry = ctx.registry
    record, dest, host, migration = evacuation.record, evacuation.dest, evacuation.host, evacuation.migration
    inst_uuid, node = record.uuid, record.node
    keep = record.storage == 'shared'
    disk = 'kept' if keep else 'rebuilt'
    password = None if keep else _guest.new_password()
    resized = _resize.pending(registry, record) if record.state == VERIFY_RESIZE else None
    power = _resize.power_before(resized) if record.state == VERIFY_RESIZE else record.state
    try:
        registry.update_migration(migration.id, status='preparing')
        state = _rebuild_on(ctx, record, dest, host, keep, password, migration.id, evacuation.lease, power)
    except errors.MultihvError as exc:
        registry.release(inst_uuid, node=dest)
        registry.update_migration(migration.id, status='failed', error=str(exc), finished_at=utcnow())
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
        raise kind('evacuation %s of instance %s from %s to %s failed: %s; instance %s was not evacuated and is '
                   'still recorded on %s' % (migration.id, record.name, node, dest, exc, record.name, node)) from exc
    with evacuation.lease.guarded(registry):
        instance = registry.update_instance(inst_uuid, node=dest, host=state.host, state=power)[1]
        registry.release(inst_uuid, node=node)
        if resized is not None:
            _resize.confirmed_by_evacuation(registry, resized, node, dest)
        migration = registry.update_migration(migration.id, status='done', dest_host=state.host, finished_at=utcnow(),
                                              stats={'storage': record.storage, 'disk': disk})
    result = {'name': record.name, 'uuid': inst_uuid, 'status': 'done', 'source_node': node, 'dest_node': dest,
              'dest_host': state.host, 'storage': record.storage, 'disk': disk,
              'instance': instance.as_dict(), 'migration': migration.as_dict()}
    if resized is not None:
        result['resize'] = resized.id
        if keep:
            # The copy of the old disk lies beside the shared disk the instance now runs from.
            try:
                ctx.driver_for(dest).confirm_resize(inst_uuid, dest)
            except errors.MultihvError as exc:
                result['msg'] = ('the copy of its old disk, kept for the resize, could not be removed beside its disk (%s); '
                                 'remove the file <uuid>.resize.qcow2 there before it is resized again' % exc)
    if password is not None:
        result['admin_password'] = password
    return result


def _rebuild_on(ctx, record, dest, host, keep, password, migration_id, lease, power):
    """Spawn the instance from its record on dest: its own disk when keep, else a new one from its
    image; the instance's lease checked as the spawn is recorded."""
    registry = ctx.registry
    driver = ctx.driver_for(dest)
    flavor = registry.get_flavor(record.flavor)
    image = registry.get_image(record.image)
    if image is None:
        raise errors.NotFound('its image %s is no longer in the registry' % record.image)
    if not keep:
        _instances.ensure_image_on(registry, driver, image)
    with lease.guarded(registry):
        registry.update_migration(migration_id, status='running', started_at=utcnow())
    # A new disk gets a new password; a kept shared disk keeps the guest's own (and its config drive).
    spec = _instances.spec_for(ctx, record, driver, dest, host, flavor, image, password=password)
    # A copy left on dest by a failure would be a second one once the instance is evacuated again.
    return _instances.spawn_in_state(driver, dataclasses.replace(spec, reuse_disk=keep), power, destroy_disks=not keep)


def stale_copies(registry, node):
    """The evacuations from node whose stale copies wait for clean-up (status done)."""
    return registry.list_migrations(source_node=node, migration_type=EVACUATION, status='done')


def copy_storage(record, migration):
    """'local' or 'shared': the storage of an evacuated instance's copies, from its record, else
    from what its evacuation recorded (shared when neither says: its disk is then never removed)."""
    return (record.storage if record else None) or (migration.stats or {}).get('storage') or 'shared'


def clean_stale(ctx, node, check_mode=False):
    """Destroy the stale copies the evacuations from node left there (their disks too when local:
    a shared disk is the one the rebuilt instance uses) and complete those records. Returns
    [{name, uuid, migration, destroyed, disks_removed}]; [] when there is nothing to clean.
    Refuses while node does not answer: it must not come back with its copies. Holds the node's
    lease (not in check mode): an evacuation or drain of it meanwhile is refused."""
    if not stale_copies(ctx.registry, node):
        return []
    if check_mode:
        return _clean_stale(ctx, node, check_mode)
    with _leases.on_node(ctx.registry, node, 'its stale copies were left as they were', 'clean stale copies'):
        return _clean_stale(ctx, node, check_mode)


def _clean_stale(ctx, node, check_mode):
    pending = stale_copies(ctx.registry, node)
    if not pending:
        return []
    view = ctx.view(node)
    if view is None or not view.up:
        raise errors.MultihvError(
            'node %s has %d evacuated instances whose stale copies must be destroyed before it takes instances again, '
            'and it does not answer (%s); it was left as it was' % (node, len(pending), (view.reason if view else None) or 'down'))
    driver = ctx.driver_for(node)
    present = set(s.uuid for s in driver.list_instances())
    cleaned = []
    for migration in pending:
        inst_uuid = migration.instance_uuid
        record = ctx.registry.get_instance(uuid=inst_uuid)
        back_here = record is not None and record.node == node
        local = copy_storage(record, migration) == 'local' and not back_here
        entry = {'name': record.name if record else None, 'uuid': inst_uuid, 'migration': migration.id,
                 'destroyed': inst_uuid in present and not back_here, 'disks_removed': local}
        if not check_mode:
            if entry['destroyed'] or local:
                driver.destroy(inst_uuid, node, destroy_disks=local)
            ctx.registry.update_migration(migration.id, status='completed')
        cleaned.append(entry)
    return cleaned


def set_admin_state(ctx, name, changes, check_mode=False):
    """compute_node's work: _nodes.set_admin_state, but a node asked back into service (enabled,
    or no longer forced down) first loses the stale copies its evacuations left there.
    Returns (changed, before, after, cleaned). The drivers connect only when there is something
    to clean."""
    cleaned = []
    if changes.get('enabled') is True or changes.get('forced_down') is False:
        cleaned = clean_stale(ctx, name, check_mode)
    changed, before, after = _nodes.set_admin_state(ctx.config, ctx.registry, name, changes, check_mode=check_mode,
                                                    drivers=ctx.drivers)
    return changed or bool(cleaned), before, after, cleaned


__all__ = ['EVACUATION', 'Unplaced', 'check_failed', 'clean_stale', 'copy_storage', 'set_admin_state', 'evacuate', 'rebuild', 'fence', 'restart_order',
           'stale_copies']
