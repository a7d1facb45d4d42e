# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migrations: move one instance to another node or host, or drain a node.
Private to multihv.cloud: do not import.

The order is Nova's, with the intent written first: check the request, choose the target
(the scheduler, without the source node, honouring server groups and capacity), record the
migration (accepted), claim the instance's resources on the target (a node without room
refuses before anything moves: the migration is recorded failed), then preparing and
running while the source's driver moves it, then
either move the instance's record and free the source's allocation (completed) or free
the target's (failed / cancelled). One move per instance at a time: the instance's lease
(instance:<uuid>), checked before the move and in the writes of its outcome; a drain holds
the node's lease (node:<name>) first, so that two drains never work on one node at once.
"""

from __future__ import annotations

import concurrent.futures
import time

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import convert as _convert
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import node_rules as _node_rules
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute import resize as _resize
from ansible_collections.multihv.cloud.plugins.module_utils._compute.records import Move
from ansible_collections.multihv.cloud.plugins.module_utils._constants import MIGRATION_MODES, VERIFY_RESIZE
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import IMAGE_FILE, MigrationControls, MigrationTarget
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import utcnow
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import NoValidHost

# convert (issue 19): a cold move to a node of another hypervisor type, its disks converted (convert.py).
MODES = ('auto',) + MIGRATION_MODES + (_convert.CONVERT,)
# Progress reaches the registry at most this often.
PROGRESS_EVERY_SECONDS = 1.0


def _untouched(record):
    return 'instance %s was not moved' % record.name


def find_instance(registry, ref):
    """The instance named ref (or whose uuid is ref); errors.NotFound otherwise."""
    record = registry.get_instance(name=ref) or registry.get_instance(uuid=ref)
    if record is None:
        raise errors.NotFound('instance %s does not exist; nothing moved' % ref)
    return record


def plan(ctx, record, mode, target_node=None, target_host=None):
    """Check a move and choose its target: a Move. Every refusal happens here, before anything moves."""
    untouched = _untouched(record)
    if mode not in MODES:
        raise errors.MultihvError('mode must be one of %s, not %s; %s' % (', '.join(MODES), mode, untouched))
    if record.state not in ('running', 'stopped'):
        raise errors.MultihvError('instance %s is %s, not running or stopped; %s' % (record.name, record.state, untouched))
    source = record.node
    kind = _nodes.hypervisor_type_of(ctx.drivers, source)
    caps = ctx.capabilities(source)
    if caps is not None and mode != 'auto' and mode not in caps.migration_modes:
        raise errors.MultihvError('%s nodes have no %s migration; %s' % (caps.label, mode, untouched))
    hosts_in_node = caps is not None and caps.hosts_in_node
    if not hosts_in_node:
        target_node, target_host = target_node or target_host, None  # the node is its own host
    if mode in ('live', 'block') and record.state != 'running':
        raise errors.MultihvError('instance %s is stopped: a %s migration moves a running instance; use mode cold (or auto); %s'
                                  % (record.name, mode, untouched))
    if target_node:
        target_kind = _nodes.type_in_cloud(ctx.drivers, target_node, untouched)
        if target_kind != kind:
            raise errors.MultihvError('node %s is a %s node and instance %s is on %s node %s: a %s move does not cross hypervisor '
                                      'types (mode convert, or auto, converts its disks); %s'
                                      % (target_node, target_kind, record.name, kind, source, mode, untouched))
    if hosts_in_node and target_host and target_node in (None, source):
        # A move between hosts of the node (vMotion inside a cluster): the allocation stays on the node.
        if target_host == record.host:
            raise errors.MultihvError('instance %s already runs on host %s of node %s; %s' % (record.name, target_host, source, untouched))
        return Move(record, mode, source, source, target_host)
    if target_node == source:
        raise errors.MultihvError('instance %s is already on node %s; %s' % (record.name, source, untouched))
    node, host = _schedule(ctx, record, target_node, untouched)
    return Move(record, mode, source, node, target_host or host)


def _schedule(ctx, record, target_node, untouched):
    """(node, host) from the scheduler: the source excluded, the instance's server group and
    scheduler filters applied, capacity as the registry's allocations say now."""
    try:
        # The VM moves with its NICs as they are: the target must give each network the same backing.
        return ctx.scheduler().place(_instances.move_request(ctx, record, target_node, untouched, keep_backing=True))
    except NoValidHost as exc:
        raise errors.MultihvError('no node can take instance %s: %s; %s' % (record.name, exc, untouched)) from None


def already_there(ctx, record, target_node=None, target_host=None):
    """True when a target is given and the instance is there already: the desired state, nothing to move.
    Without a target there is no desired place: each request is a move."""
    if not (target_node or target_host) or record.node is None:
        return False
    caps = ctx.capabilities(record.node)
    if caps is None or not caps.hosts_in_node:
        # A KVM host is its own node: either option names it.
        return (target_node or target_host) == record.node
    return target_node in (None, record.node) and target_host in (None, record.host)


def migrate(ctx, ref, mode='auto', target_node=None, target_host=None, controls=None, check_mode=False, sync_rules=True,
            image=None, keep_source=False, shutdown_timeout=None):
    """Move one instance (by name or uuid). Returns {changed, instance, migration}, the records as
    dicts (as modules return them); errors say what was refused or failed, and a failed move's record
    says so too. An instance already on the target given is not moved (changed False, migration None).
    Check mode takes no lease (a registry write): it plans from the records as they are. sync_rules: bring
    the HA overrides and DRS rules of the source and target nodes up to date after a move (node_rules.after;
    a drain does it once for all its moves). image, keep_source, shutdown_timeout: a convert's (mode convert, or auto
    towards a node of another hypervisor type: convert.py), refused with any other move."""
    registry = ctx.registry
    controls = controls or MigrationControls()
    record = find_instance(registry, ref)
    if already_there(ctx, record, target_node, target_host):
        return {'changed': False, 'instance': record.as_dict(), 'migration': None}
    converting = _convert.wanted(ctx, record, mode, target_node)
    if (image or keep_source or shutdown_timeout is not None) and not converting:
        raise errors.MultihvError('image, keep_source and shutdown_timeout apply to a move to another hypervisor type (mode '
                                  'convert) only; %s' % _untouched(record))
    if shutdown_timeout is not None and shutdown_timeout < 0:
        raise errors.MultihvError('shutdown_timeout must be 0 or more seconds, not %s; %s' % (shutdown_timeout, _untouched(record)))
    if converting:
        return _converted(ctx, record, target_node, target_host, image, keep_source, check_mode, sync_rules,
                          _convert.SHUTDOWN_TIMEOUT if shutdown_timeout is None else shutdown_timeout)
    if check_mode:
        move = plan(ctx, record, mode, target_node, target_host)
        caps = ctx.capabilities(move.target_node)
        # A node that is its own host (KVM) has no host to choose: the move's host is the node, as a real move records.
        dest_host = move.target_host or (move.target_node if caps is not None and not caps.hosts_in_node else None)
        return {'changed': True, 'instance': record.as_dict(), 'migration': {
            'instance_uuid': record.uuid, 'migration_type': move.mode, 'status': 'would run',
            'source_node': move.source_node, 'source_host': record.host,
            'dest_node': move.target_node, 'dest_host': dest_host}}
    with _leases.on_instance(registry, record.uuid, _untouched(record), 'migrate') as lease:
        record = find_instance(registry, record.uuid)  # as it is now that no other run moves it
        if already_there(ctx, record, target_node, target_host):  # another run moved it there meanwhile
            return {'changed': False, 'instance': record.as_dict(), 'migration': None}
        move = plan(ctx, record, mode, target_node, target_host)
        result = run(ctx, move, controls, lease)
    if not sync_rules or move.source_node == move.target_node:  # a move between hosts of a node keeps its VM and rules
        return result
    return _node_rules.after(ctx, result, [move.source_node, move.target_node])


def _converted(ctx, record, target_node, target_host, image, keep_source, check_mode, sync_rules, shutdown_timeout):
    """migrate's path for a move to another hypervisor type (convert.py), under the instance's lease as the others."""
    registry = ctx.registry
    if check_mode:
        conversion = _convert.plan(ctx, record, target_node, target_host, image, keep_source)
        return {'changed': True, 'instance': record.as_dict(), 'migration': {
            'instance_uuid': record.uuid, 'migration_type': _convert.CONVERT, 'status': 'would run',
            'source_node': conversion.source_node, 'source_host': record.host,
            'dest_node': conversion.target_node, 'dest_host': conversion.target_host or conversion.target_node}}
    with _leases.on_instance(registry, record.uuid, _untouched(record), 'migrate') as lease:
        record = find_instance(registry, record.uuid)  # as it is now that no other run moves it
        if already_there(ctx, record, target_node, target_host):
            return {'changed': False, 'instance': record.as_dict(), 'migration': None}
        conversion = _convert.plan(ctx, record, target_node, target_host, image, keep_source)
        result = _convert.run(ctx, conversion, lease, shutdown_timeout)
    if not sync_rules:
        return result
    return _node_rules.after(ctx, result, [conversion.source_node, conversion.target_node])


def diff(result):
    """The before/after of a migrate result, for diff mode: the instance's node and host (a drain's: those of each
    instance it moved or would move, by uuid)."""
    def place(node, host):
        return {'node': node, 'host': host}
    if 'migrations' in result:
        moves = result['migrations']
        return {'before': dict((m['instance_uuid'], place(m['source_node'], m['source_host'])) for m in moves),
                'after': dict((m['instance_uuid'], place(m['dest_node'], m['dest_host'])) for m in moves)}
    move, instance = result.get('migration'), result['instance']
    if move is None or move.get('status') in ('failed', 'cancelled'):
        here = place(instance['node'], instance['host'])
        return {'before': here, 'after': dict(here)}
    return {'before': place(move['source_node'], move['source_host']), 'after': place(move['dest_node'], move['dest_host'])}


def run(ctx, move, controls, lease):
    """Record, claim and make the move; lease: the instance's (a Lease), checked before the driver
    moves it and in the writes of the outcome. A lost lease stops the move before it starts (the
    claim released, the migration failed); lost after it, the records are left for the reconciler."""
    record, registry = move.record, ctx.registry
    flavor = registry.get_flavor(record.flavor)
    source_driver, target_driver = ctx.driver_for(move.source_node), ctx.driver_for(move.target_node)
    claimed = move.target_node != move.source_node
    # Intent first: a controller that dies between the two writes leaves a migration that explains
    # the claim (or an accepted migration with nothing claimed), never an allocation of no move.
    migration = registry.create_migration(
        instance_uuid=record.uuid, migration_type=move.mode, status='accepted', source_node=move.source_node,
        source_host=record.host, dest_node=move.target_node, dest_host=move.target_host)
    if claimed:
        _instances.claim_for_move(ctx, flavor, move.target_node, move.record, migration.id)
    try:
        registry.update_migration(migration.id, status='preparing')
        mode = _prepare(ctx, record, move, source_driver, target_driver)
        with lease.guarded(registry):
            registry.update_migration(migration.id, status='running', migration_type=mode, started_at=utcnow())
        state, stats = source_driver.migrate(record.uuid, move.source_node, MigrationTarget(target_driver, move.target_node, move.target_host),
                                             mode, controls, _progress(registry, migration.id))
    except errors.MultihvError as exc:
        status = 'cancelled' if isinstance(exc, errors.MigrationCancelled) else 'failed'
        if claimed:
            registry.release(record.uuid, node=move.target_node)
        registry.update_migration(migration.id, status=status, error=str(exc), finished_at=utcnow())
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
        raise kind('migration %s of instance %s from %s to %s %s: %s' % (
            migration.id, record.name, move.source_node, move.target_node, status, exc)) from exc
    try:
        with lease.guarded(registry):
            instance = registry.update_instance(record.uuid, node=move.target_node, host=state.host)[1]
            if claimed:
                registry.release(record.uuid, node=move.source_node)
            migration = registry.update_migration(migration.id, status='completed', stats=stats, dest_host=state.host,
                                                  finished_at=utcnow())
    except errors.MultihvError as exc:
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.RegistryError
        what = (migration.id, record.name, move.source_node, move.target_node, state.host, exc)
        raise kind('migration %s moved instance %s from %s to %s (host %s) but its records could not be written: %s; the '
                   'migration stays running: once the registry answers and no run holds the instance, multihv.cloud.reconcile '
                   'records the instance where its VM is' % what) from exc
    return {'changed': True, 'instance': instance.as_dict(), 'migration': migration.as_dict()}


def _prepare(ctx, record, move, source_driver, target_driver):
    """The mode the move really takes, after the checks only the hypervisors can answer:
    auto is cold for a stopped instance; for a running one it is live, unless the driver also
    has block migration and says the instance's disk directory is not shared with the target
    (a marker test), then block. A target whose images are files gets the image's base before
    a block or cold move, whose overlays need it."""
    mode = move.mode
    caps = source_driver.capabilities
    if mode == 'auto' and record.state == 'stopped':
        mode = 'cold'
    if mode in ('auto', 'live') and 'block' in caps.migration_modes:
        shared = source_driver.shares_storage(target_driver, record.storage)
        if mode == 'live' and not shared:
            raise errors.MultihvError('instance %s has %s storage that %s does not share with %s: live migration needs the disk '
                                      'on storage both hosts see; use mode block; %s' % (
                                          record.name, record.storage, move.source_node, move.target_node, _untouched(record)))
        mode = 'live' if shared else 'block'
    mode = 'live' if mode == 'auto' else mode
    if mode in ('block', 'cold') and target_driver.capabilities.image_kind == IMAGE_FILE:
        image = ctx.registry.get_image(record.image)
        if image is not None:
            _instances.ensure_image_on(ctx.registry, target_driver, image)
    return mode


def _progress(registry, migration_id):
    """A driver's progress callback that writes the statistics to the record now and then. A write
    that fails (the registry restarted, locked) is skipped: the move runs on in the hypervisors
    whatever the callback does, so an error raised here would only let the run record an outcome
    (failed) that the hypervisors then contradict; the next report, or the outcome, writes again."""
    last = [0.0]

    def report(stats):
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_SECONDS:
            last[0] = now
            try:
                registry.update_migration(migration_id, stats=stats)
            except errors.RegistryError:
                pass
    return report


def drain(ctx, node, mode='auto', controls=None, concurrency=2, check_mode=False, reason=None):
    """Disable node for scheduling and move every instance off it: running ones in `mode`,
    stopped ones cold, `concurrency` at a time. One that fails stays where it was and is
    reported; the others go on. Returns {changed, node, migrations, failures}. The node's lease is
    held throughout (another drain or evacuation of it is refused), each instance's by its move."""
    kind = ctx.hypervisor_type(node)
    if kind is None:
        raise errors.NotFound('node %s is not in the cloud; nothing was changed' % node)
    if mode == _convert.CONVERT:
        raise errors.MultihvError('a drain moves instances to nodes of their own type; mode convert moves one instance (give instance); '
                                  'nothing was changed')
    if check_mode:
        return _drain(ctx, node, kind, mode, controls, concurrency, check_mode, reason)
    with _leases.on_node(ctx.registry, node, 'nothing was changed', 'drain'):
        return _drain(ctx, node, kind, mode, controls, concurrency, check_mode, reason)


def _drain(ctx, node, kind, mode, controls, concurrency, check_mode, reason):
    registry = ctx.registry
    admin = registry.get_node(node)
    disable = admin is None or admin.get('enabled', True)
    if disable and not check_mode:
        registry.set_node(node, kind, enabled=False, disabled_reason=reason or 'drained by multihv.cloud.migrate')
    on_node = registry.list_instances(node=node)
    instances = [i for i in on_node if i.state in ('running', 'stopped')]
    result = {'changed': disable or bool(instances), 'node': node, 'migrations': [], 'failures': []}
    # Nova moves no resized instance before its resize is settled: the node is not drained while one waits.
    for record in on_node:
        if record.state == VERIFY_RESIZE:
            result['failures'].append({'name': record.name, 'msg': 'instance %s waits in %s: confirm or revert its resize (instance state '
                                                                   '%s or %s), then drain again; it was not moved' % (
                                                                       record.name, VERIFY_RESIZE, _resize.CONFIRMED, _resize.REVERTED)})
    if check_mode:
        for record in instances:
            try:
                planned = migrate(ctx, record.uuid, _mode_for(record, mode), controls=controls, check_mode=True)
                result['migrations'].append(planned['migration'])
            except errors.MultihvError as exc:
                result['failures'].append({'name': record.name, 'msg': str(exc)})
        return result
    ctx.views()  # read once, before the workers share them
    workers = max(1, min(concurrency, len(instances)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = dict((pool.submit(_migrate_apart, ctx, record.uuid, _mode_for(record, mode), controls), record)
                       for record in instances)
        for future in concurrent.futures.as_completed(futures):
            try:
                result['migrations'].append(future.result()['migration'])
            except errors.MultihvError as exc:
                result['failures'].append({'name': futures[future].name, 'msg': str(exc)})
    result['migrations'].sort(key=lambda m: m['created_at'])
    moved = [m['dest_node'] for m in result['migrations'] if m['status'] == 'completed']
    return _node_rules.after(ctx, result, [node] + moved) if moved else result


def _mode_for(record, mode):
    return 'cold' if record.state == 'stopped' and mode in ('auto', 'live', 'block') else mode


def _migrate_apart(ctx, ref, mode, controls):
    with ctx.apart() as worker:
        return migrate(worker, ref, mode, controls=controls, sync_rules=False)


__all__ = ['MODES', 'Move', 'drain', 'find_instance', 'migrate', 'plan', 'run']
