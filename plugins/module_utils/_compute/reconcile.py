# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reconciler: Nova's periodic tasks in one idempotent pass. Private to multihv.cloud: do not import.

From the registry and what the hypervisors report (every endpoint's list_instances, read
once, and its list_instance_files, read once when a step first asks), it plans and then
carries out, step by step:

- builds: an instance still 'building' whose lease nobody holds, and whose record has not been
  written for two lease lifetimes, was interrupted. Its VMs,
  wherever they are, are destroyed with their disks, its allocations freed and it is
  recorded 'error'; a record that never got a VM is removed (with any local disk left);
- migrations: a migration or evacuation still accepted / preparing / running whose
  instance's lease nobody holds, and whose record has not been written for two lease lifetimes,
  was interrupted. The registry is made to say where the VM
  is (source, target, both: the running one kept and the other undefined, its disk removed
  only on local storage; neither: the instance is 'error'), the migration ends completed
  (or 'done' for an evacuation whose fenced source may still hold a copy) or failed with
  an error saying the reconciler decided, and the allocation no longer used is freed; the
  local files the move left on the side the VM is not on are removed (see Plan.leftovers);
- converts (moves between hypervisor types, issue 19): an interrupted one (judged as migrations are) keeps the copy
  that runs, else the source's: a kept target copy completes it (the records moved, the source VM retired as its
  keep_source said), a kept source copy fails it (the target's VM removed with its disk, the source powered on again
  when the instance ran before the move);
- resizes: an interrupted one (its migration of type resize still accepted or running, judged as
  migrations are) is reverted where its VM is: the driver gives the VM its old sizes and disk back,
  the allocation becomes the old flavor's on that node, the migration failed (an instance with no VM
  is recorded error); one
  left in verify_resize longer than the cloud file's defaults.resize_confirm_window (0: never) is
  confirmed (both in the migrations step);
- power: an instance recorded running whose VM is shut off is recorded stopped, and the
  other way (Nova's _sync_power_states); one whose node has no VM of it is reported missing;
  one that a run works on (its lease is live, or it has an unfinished migration) is left alone;
  an adoption cut off before its VM was marked (a record 'adopting' no run holds) is reported
  unfinished and left alone: the next instance_import run for it finishes it;
- stale: copies of evacuated instances on a node that is not their record's node and
  answers are destroyed, for every evacuation status (local disks removed, shared kept), and
  so is any other second copy of an instance no run works on (its record names where it is);
  evacuations in 'done' go through evacuation.clean_stale, as compute_node does; local files
  of an instance on a node that is not its record's and has no VM of it are removed, when its
  VM is on its record's node and nothing works on it (never a shared file, never one that may
  be the disk it boots from: see Plan.leftovers);
- rules: the per-VM HA overrides and DRS rules of the nodes that keep them (vSphere clusters) made to agree with the
  registry (node_rules.py), for what a task could not set (its warning said so) or someone changed there;
- orphans: VMs whose uuid the registry does not have, files named after such a uuid (that no
  VM of it may be using), allocations of no instance or on a node where their instance is not;
  always reported, deleted only with delete_orphans (a shared file only while every endpoint
  answers). Drivers whose instances have no files of their own (vSphere) report no files.

An instance whose node does not answer is reported 'unknown' and nothing about it changes
(an evacuation from a forced-down node is judged from its target alone). Check mode plans
and writes nothing. Each action runs holding its instance's lease and only when the records
it read are unchanged; a second pass finds nothing to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import convert as _convert
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import node_rules as _node_rules
from ansible_collections.multihv.cloud.plugins.module_utils._compute import resize as _resize
from ansible_collections.multihv.cloud.plugins.module_utils._compute import snapshots as _snapshots
from ansible_collections.multihv.cloud.plugins.module_utils._constants import (
    ADOPTING, INSTANCE_LEASE_WAIT_SECONDS, LEASE_LIFETIME_SECONDS, RESIZE, VERIFY_RESIZE,
)
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT, utcnow

ACTIVE = ('accepted', 'preparing', 'running')
# Power states a record can hold; paused or suspended VMs are left as they are recorded.
RECORDED_POWER = ('running', 'stopped')
# rules (issue 18 §3): the HA overrides and DRS rules of the nodes that keep them (node_rules.py), after the records are settled.
STEPS = ('builds', 'migrations', 'power', 'stale', 'orphans', 'rules')
# What the HA pass may run before it judges nodes: interrupted work and power states.
HA_STEPS = ('builds', 'migrations', 'power')
# Seconds a building instance or an unfinished migration must have been left unwritten before it
# counts as interrupted, besides having no live lease. Every operation holds its instance's lease
# from before its first record and a heartbeat renews it, so a live run always has one; this margin
# of two lease lifetimes only covers a holder's clock being behind the registry's.
SETTLE_SECONDS = 2 * LEASE_LIFETIME_SECONDS  # with the default lease lifetime


def settle_seconds_of(registry):
    """Two of the registry's lease lifetimes (the cloud file's registry.lease_seconds)."""
    return 2 * getattr(registry, 'lease_seconds', LEASE_LIFETIME_SECONDS)


DECIDED = 'interrupted (no run holds its instance any more); the reconciler '


def settled(updated_at, settle_seconds):
    """True when a record was last written settle_seconds ago or more: work that still runs writes
    its records (a migration's progress every second), so a quiet one was left."""
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=settle_seconds)
    return updated_at <= since.strftime(TIMESTAMP_FORMAT)


def lease_is_live(registry, inst_uuid):
    """True while a run holds instance inst_uuid's lease (one not expired yet: a live holder's
    heartbeat renews it, a dead holder's ends within a lease lifetime). The one place the
    reconciler reads leases."""
    return held_now(registry, 'instance:%s' % inst_uuid)


def held_now(registry, lease):
    """True while a run holds the lease named `lease` (one not expired yet)."""
    holder = registry.lease_holder(lease)
    return bool(holder) and holder['expires_at'] > utcnow()


class Survey:
    """What the hypervisors report, read once: each instance uuid's VMs by node, and why the
    endpoints that did not answer did not."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.copies = {}
        self.down = {}
        self._files = None
        self.files_down = {}
        for driver in ctx.drivers:
            try:
                states = driver.list_instances()
            except errors.MultihvError as exc:
                self.down[driver.endpoint_name()] = str(exc)
                continue
            for state in states:
                self.copies.setdefault(state.uuid, {})[state.node] = state

    def files(self, inst_uuid):
        """[InstanceFile] of the instance's files (see ComputeDriver.list_instance_files) on the nodes
        whose endpoints answered both listings. The files are listed once, on the first question:
        passes that ask none (the HA steps, mostly) cost no listing."""
        if self._files is None:
            self._files = {}
            for driver in self.ctx.drivers:
                if driver.endpoint_name() in self.down:
                    continue
                try:
                    found = driver.list_instance_files()
                except errors.MultihvError as exc:
                    self.files_down[driver.endpoint_name()] = str(exc)
                    continue
                for instance_file in found:
                    self._files.setdefault(instance_file.uuid, []).append(instance_file)
        return self._files.get(inst_uuid, [])

    def all_files(self):
        """{uuid: [InstanceFile]} of every file listed (see files)."""
        self.files(None)
        return self._files

    def files_blind(self, node):
        """None when node's files were listed; else why they were not."""
        reason = self.blind(node)
        if reason:
            return reason
        self.files(None)
        return self.files_down.get(self.ctx.serving(node).endpoint_name())

    def blind(self, node):
        """None when node's endpoint answered (or there is no node); else why it cannot be seen."""
        if node is None:
            return None
        driver = self.ctx.serving(node)
        if driver is None:
            return 'no endpoint in the cloud file serves node %s' % node
        return self.down.get(driver.endpoint_name())

    def on(self, inst_uuid):
        """{node: InstanceState} of the instance's VMs on the nodes that answered."""
        return self.copies.get(inst_uuid, {})


@dataclasses.dataclass
class Action:
    """One thing the pass does: work() carries it out, holding the instance's lease, when
    unchanged() still says True then."""

    kind: str
    uuid: str
    name: str | None
    node: str | None
    found: str
    does: str
    work: object
    unchanged: object
    lease: str

    def as_dict(self):
        return {'kind': self.kind, 'uuid': self.uuid, 'name': self.name, 'node': self.node, 'found': self.found, 'does': self.does}


class Plan:
    def __init__(self, ctx, survey, settle_seconds=None):
        self.ctx, self.registry, self.survey = ctx, ctx.registry, survey
        self.settle_seconds = settle_seconds_of(ctx.registry) if settle_seconds is None else settle_seconds
        self.actions, self.unknown, self.missing, self.orphans, self.unfinished = [], [], [], [], []
        self.handled = set()
        self.records = dict((r.uuid, r) for r in ctx.registry.list_instances())
        # Every migration, read once (planning writes nothing), and the instances an unfinished one moves.
        self.migrations = ctx.registry.list_migrations()
        self.moving = set(m.instance_uuid for m in self.migrations if m.status in ACTIVE)
        self._separate = {}

    def left(self, inst_uuid, updated_at):
        """True when the work on the instance whose record was written at updated_at was left: no
        live lease and settled."""
        return settled(updated_at, self.settle_seconds) and not lease_is_live(self.registry, inst_uuid)

    def add(self, kind, uuid, name, node, found, does, work, unchanged=None, lease=None):
        """lease: the lease work() runs under (the instance's by default; '' when work() takes its own)."""
        self.actions.append(Action(kind, uuid, name, node, found, does, work, unchanged or self.same_record(uuid),
                                   'instance:%s' % uuid if lease is None else lease))

    def same_record(self, uuid):
        """unchanged(): the instance's record is as the plan read it (or still absent)."""
        seen = self.records.get(uuid)
        seen = seen.updated_at if seen else None

        def unchanged():
            now = self.registry.get_instance(uuid=uuid)
            return (now.updated_at if now else None) == seen
        return unchanged

    def blind_to(self, record, node, reason):
        self.handled.add(record.uuid)
        self.unknown.append({'uuid': record.uuid, 'name': record.name, 'node': node, 'state': record.state,
                             'reason': 'node %s cannot be reached (%s); nothing about instance %s was changed'
                                       % (node, reason, record.name)})

    def destroy(self, uuid, node, destroy_disks):
        self.ctx.driver_for(node).destroy(uuid, node, destroy_disks=destroy_disks)

    def remove_files(self, uuid, node, storage):
        """Delete instance uuid's files in node's storage directory; refused by the driver while node has a VM of it."""
        self.ctx.driver_for(node).remove_instance_files(uuid, node, storage)

    def leftovers(self, inst_uuid, node, keep, storage):
        """The files instance inst_uuid has in node's local directory, when node has no VM of it and they are
        leftovers its VM on keep (whose disk is on keep's `storage`) cannot be using; else []. Never shared
        files; never when node's files were not listed; never when a file has the path of one of the kept VM's
        files, unless the drivers show that node's and keep's local directories are two directories (hosts
        often use one path for their own local directories; one directory seen by both would make the file
        the disk the instance boots from)."""
        survey = self.survey
        kept = survey.on(inst_uuid).get(keep)
        if node == keep or kept is None or survey.on(inst_uuid).get(node) is not None or survey.files_blind(node):
            return []
        files = [f for f in survey.files(inst_uuid) if f.node == node and f.storage == 'local']
        theirs = dict((f.path, f.storage) for f in survey.files(inst_uuid) if f.node == keep)
        for path in kept.disk_paths:
            theirs.setdefault(path, storage)
        clashes = set(theirs[f.path] for f in files if f.path in theirs)
        if clashes and (clashes != {'local'} or not self.separate(node, keep)):
            return []
        return files

    def separate(self, node, other):
        """True when the drivers show that node's local instance directory is not other's (a marker test,
        see ComputeDriver.shares_storage); False when it is the same one, or when they cannot tell."""
        key = (node, other)
        if key not in self._separate:
            try:
                self._separate[key] = not self.ctx.driver_for(node).shares_storage(self.ctx.driver_for(other), 'local')
            except errors.MultihvError:
                self._separate[key] = False
        return self._separate[key]


def _where(copies):
    return ', '.join('%s (%s)' % (node, state.power_state) for node, state in sorted(copies.items())) or 'no node'


def plan_builds(plan):
    registry = plan.registry
    for record in plan.records.values():
        if record.state != 'building' or not plan.left(record.uuid, record.updated_at):
            continue
        reason = plan.survey.blind(record.node)
        if reason:
            plan.blind_to(record, record.node, reason)
            continue
        plan.handled.add(record.uuid)
        copies = plan.survey.on(record.uuid)
        found = 'building with no live lease; its VM is on %s' % _where(copies)
        if copies:
            def work(record=record, nodes=sorted(copies)):
                for node in nodes:
                    plan.destroy(record.uuid, node, True)  # a build's disk is its own
                registry.release(record.uuid)
                registry.update_instance(record.uuid, state='error')
            plan.add('build', record.uuid, record.name, record.node, found,
                     'destroy its VM and disks on %s, free its allocations, record it error' % ', '.join(sorted(copies)), work)
        else:
            def work(record=record):
                if record.node:
                    plan.destroy(record.uuid, record.node, True)  # a local disk a spawn may have left
                registry.delete_instance(record.uuid)  # its allocations go with it
            plan.add('build', record.uuid, record.name, record.node, found,
                     'remove its record and allocations (it never got a VM)', work)


def plan_migrations(plan):
    registry = plan.registry
    for migration in plan.migrations:
        inst_uuid = migration.instance_uuid
        if migration.status not in ACTIVE or inst_uuid in plan.handled or not plan.left(inst_uuid, migration.updated_at):
            continue
        record = plan.records.get(inst_uuid)
        unchanged = _same_migration(plan, migration)
        if record is not None and migration.migration_type == RESIZE:
            _plan_interrupted_resize(plan, record, migration, unchanged)
            continue
        if record is None:
            def work(migration=migration):
                registry.update_migration(migration.id, status='failed', finished_at=utcnow(),
                                          error=DECIDED + 'found its instance deleted')
            plan.add('migration', inst_uuid, None, migration.source_node, 'migration %s %s of an instance no longer recorded'
                     % (migration.id, migration.status), 'record the migration failed', work, unchanged)
            continue
        if migration.migration_type == _convert.CONVERT:
            _plan_convert(plan, record, migration, unchanged)
            continue
        _plan_move(plan, record, migration, unchanged)
    _plan_resize_window(plan)


def _plan_interrupted_resize(plan, record, migration, unchanged):
    """A resize whose run died: reverted where its VM is (a VM on both nodes of a cold move: the running one kept, else
    the one on its own node, the other undefined as for an interrupted migration), whatever step it reached: the
    driver's revert is idempotent, so the VM gets its old sizes (and disk, when a copy was kept) and the records the old
    flavor and the node the VM is on."""
    source, dest = migration.source_node, migration.dest_node or migration.source_node
    for node in sorted(set((source, dest))):
        reason = plan.survey.blind(node)
        if reason:
            plan.blind_to(record, node, reason)
            return
    plan.handled.add(record.uuid)
    copies = dict((node, state) for node, state in plan.survey.on(record.uuid).items() if node in (source, dest))
    stats = migration.stats or {}
    found = 'resize %s %s to flavor %s from %s to %s; its VM is on %s' % (
        migration.id, migration.status, stats.get('new_flavor'), source, dest, _where(copies))
    if not copies:
        def work():
            plan.registry.update_instance(record.uuid, state='error')
            plan.registry.update_migration(migration.id, status='failed', finished_at=utcnow(),
                                           error=DECIDED + 'found no VM on %s or %s' % (source, dest))
        plan.add('migration', record.uuid, record.name, source, found, 'record the resize failed and the instance error (it has no VM)',
                 work, unchanged)
        return
    keep, drop = _keep(copies, source, dest, False)
    local = record.storage == 'local'
    does = ['undefine the copy on %s (%s)' % (drop, 'its local disk removed' if local else 'its shared disk kept')] if drop else []
    does.append('revert it on %s: flavor %s again (its sizes, its disk when a copy was kept, its allocation there and none '
                'elsewhere), the resize failed' % (keep, stats.get('old_flavor')))

    def work():
        if drop:
            plan.destroy(record.uuid, drop, local)
        _resize.revert_held(plan.ctx, record, migration, decided=DECIDED + 'reverted it on %s' % keep, where=keep)
    plan.add('migration', record.uuid, record.name, keep, found, '; '.join(does), work, unchanged)


def _plan_resize_window(plan):
    """Resizes left in verify_resize longer than defaults.resize_confirm_window are confirmed (Nova's
    _poll_unconfirmed_resizes); 0 (the default) never. One whose instance was deleted is recorded completed."""
    window = getattr(getattr(plan.ctx.config, 'defaults', None), 'resize_confirm_window', 0)
    for migration in plan.migrations:
        record = plan.records.get(migration.instance_uuid)
        if migration.migration_type == RESIZE and migration.status == 'done' and record is None:
            plan.add('resize', migration.instance_uuid, None, migration.source_node, 'resize %s waiting for an instance that was '
                     'deleted' % migration.id, 'record it completed',
                     lambda migration=migration: plan.registry.update_migration(migration.id, status='completed', finished_at=utcnow(),
                                                                                error='its instance was deleted before it was confirmed'),
                     _same_migration(plan, migration))
            continue
        if (not window or migration.migration_type != RESIZE or migration.status != 'done' or record is None or record.state != VERIFY_RESIZE
                or record.uuid in plan.handled or not migration.finished_at or not settled(migration.finished_at, window)
                or lease_is_live(plan.registry, record.uuid)):
            continue
        reason = plan.survey.blind(record.node)
        if reason:
            plan.blind_to(record, record.node, reason)
            continue
        plan.handled.add(record.uuid)
        plan.add('resize', record.uuid, record.name, record.node, 'resize %s to flavor %s waiting since %s, longer than the %d s of '
                 'defaults.resize_confirm_window' % (migration.id, record.flavor, migration.finished_at, window),
                 'confirm it (its old disk dropped, its allocation the new flavor\'s)',
                 lambda record=record, migration=migration: _resize.confirm_held(plan.ctx, record, migration),
                 _same_migration(plan, migration))


def _same_migration(plan, migration):
    same_record = plan.same_record(migration.instance_uuid)

    def unchanged():
        now = plan.registry.get_migration(migration.id)
        return same_record() and now is not None and now.updated_at == migration.updated_at
    return unchanged


def _plan_move(plan, record, migration, unchanged):
    registry, survey = plan.registry, plan.survey
    source, dest = migration.source_node, migration.dest_node
    evacuation = migration.migration_type == _evacuation.EVACUATION
    source_blind, dest_blind = survey.blind(source), survey.blind(dest)
    # An evacuation's source is down by design; forced down, its copy cannot run again unseen.
    fenced = bool(evacuation and source_blind and (registry.get_node(source) or {}).get('forced_down'))
    if dest_blind or (source_blind and not fenced):
        plan.blind_to(record, dest if dest_blind else source, dest_blind or source_blind)
        return
    plan.handled.add(record.uuid)
    copies = dict((node, state) for node, state in survey.on(record.uuid).items() if node in (source, dest))
    keep, drop = _keep(copies, source, dest, evacuation)
    kept = copies.get(keep)
    if kept is None:
        end = 'failed'
    elif keep != dest or (source == dest and kept.host != migration.dest_host):
        end = 'failed'  # it stayed where it was
    else:
        end = 'done' if fenced else 'completed'  # done: its stale copy on the fenced source waits for clean_stale
    local = record.storage == 'local'
    other = source if keep == dest else dest  # the node whose allocation it no longer uses
    found = '%s %s %s from %s to %s; its VM is on %s%s' % (migration.migration_type, migration.id, migration.status, source, dest,
                                                           _where(copies), ' (the source is forced down)' if fenced else '')
    does = []
    if drop:
        does.append('undefine the copy on %s (%s)' % (drop, 'its local disk removed' if local else 'its shared disk kept'))
    if kept is not None:
        does.append('record the instance on %s (%s), the migration %s' % (keep, kept.power_state, end))
    elif fenced:
        does.append('record the migration failed; the instance stays recorded on %s' % source)
    else:
        does.append('record the migration failed and the instance error (it has no VM)')
    if source != dest:
        does.append('free its allocation on %s' % other)
    # What a block or cold move left in the local directory of the side the VM is not on.
    left = plan.leftovers(record.uuid, other, keep, record.storage) if kept is not None and source != dest and other != drop else []
    if left:
        does.append('remove its files left on %s (%s)' % (other, ', '.join(f.name for f in left)))

    def work():
        if drop:
            plan.destroy(record.uuid, drop, local)
        fields = {}
        if kept is not None:
            fields = {'node': keep, 'host': kept.host}
            if kept.power_state in RECORDED_POWER:
                fields['state'] = kept.power_state
        elif not fenced:
            fields = {'state': 'error'}
        if fields:
            registry.update_instance(record.uuid, **fields)
        if source != dest:
            registry.release(record.uuid, node=other)
        decided = DECIDED + ('kept the VM on %s' % keep if kept is not None else 'found no VM on %s or %s' % (source, dest))
        registry.update_migration(migration.id, status=end, finished_at=utcnow(), error=decided if end == 'failed' else None,
                                  dest_host=kept.host if kept is not None and keep == dest else migration.dest_host)
        if left:  # last: the records are right even when this fails (the stale step finds the files again)
            plan.remove_files(record.uuid, other, 'local')
    plan.add('migration', record.uuid, record.name, keep or source, found, '; '.join(does), work, unchanged)


def _plan_convert(plan, record, migration, unchanged):
    """A move between hypervisor types whose run died (issue 19): the copy that runs is kept, else the source's. A kept
    target copy completes the move as the run would have (the records moved, the source VM retired as the migration's
    keep_source said); a kept source copy fails it (the target's VM removed with its disk: an import is the target's
    own, never shared; the source powered on again if the instance ran before the move powered it off)."""
    registry, survey = plan.registry, plan.survey
    source, dest = migration.source_node, migration.dest_node
    for node in (source, dest):
        reason = survey.blind(node)
        if reason:
            plan.blind_to(record, node, reason)
            return
    plan.handled.add(record.uuid)
    copies = dict((node, state) for node, state in survey.on(record.uuid).items() if node in (source, dest))
    keep, drop = _keep(copies, source, dest, False)
    kept = copies.get(keep)
    stats = migration.stats or {}
    restart = keep == source and kept is not None and kept.power_state == 'stopped' and stats.get('source_power') == 'running'
    found = 'convert %s %s from %s to %s; its VM is on %s' % (migration.id, migration.status, source, dest, _where(copies))
    does = []
    if drop == source:
        does.append('%s the VM on %s' % ('rename (keep_source)' if stats.get('keep_source') else 'remove', source))
    elif drop:
        does.append('remove the VM on %s with its disk' % dest)
    if kept is None:
        does.append('record the migration failed and the instance error (it has no VM)')
    elif keep == dest:
        does.append('record the instance on %s (%s), the migration completed' % (dest, kept.power_state))
    else:
        does.append('record the migration failed%s' % ('; power the instance on again on %s' % source if restart else ''))
    other = source if keep == dest else dest
    does.append('free its allocation on %s' % other)
    left = plan.leftovers(record.uuid, dest, keep, record.storage) if keep == source and drop != dest else []
    if left:
        does.append('remove its files left on %s (%s)' % (dest, ', '.join(f.name for f in left)))

    def work():
        if drop == source:
            plan.ctx.driver_for(source).retire_converted(record.uuid, source, keep=bool(stats.get('keep_source')))
        elif drop:
            plan.destroy(record.uuid, dest, True)
        if restart:
            plan.ctx.driver_for(source).set_power(record.uuid, source, 'start')
        if kept is None:
            registry.update_instance(record.uuid, state='error')
        elif keep == dest:
            fields = {'node': dest, 'host': kept.host, 'image': stats.get('image') or _convert.NO_IMAGE}
            if kept.power_state in RECORDED_POWER:
                fields['state'] = kept.power_state
            registry.update_instance(record.uuid, **fields)
        registry.release(record.uuid, node=other)
        end = 'completed' if keep == dest and kept is not None else 'failed'
        decided = DECIDED + ('kept the VM on %s' % keep if kept is not None else 'found no VM on %s or %s' % (source, dest))
        registry.update_migration(migration.id, status=end, finished_at=utcnow(), error=decided if end == 'failed' else None,
                                  dest_host=kept.host if kept is not None and keep == dest else migration.dest_host)
        if left:
            plan.remove_files(record.uuid, dest, 'local')
    plan.add('migration', record.uuid, record.name, keep or source, found, '; '.join(does), work, unchanged)


def _keep(copies, source, dest, evacuation):
    """(node whose VM stays, node whose VM is undefined): the running one when exactly one runs, else
    the target of an evacuation and the source of a migration; (None, None) when there is no VM."""
    if not copies:
        return None, None
    if len(copies) == 1:
        return next(iter(copies)), None
    running = [node for node, state in copies.items() if state.power_state == 'running']
    keep = running[0] if len(running) == 1 else (dest if evacuation else source)
    return keep, source if keep == dest else dest


def plan_power(plan):
    for record in plan.records.values():
        if record.state == ADOPTING and record.uuid not in plan.handled and not lease_is_live(plan.registry, record.uuid):
            plan.unfinished.append({'uuid': record.uuid, 'name': record.name, 'node': record.node, 'state': record.state,
                                    'reason': 'its adoption was cut off before its VM was marked: run multihv.cloud.instance_import '
                                              'for VM %s on node %s again' % (record.name, record.node)})
        if record.uuid in plan.handled or record.state not in RECORDED_POWER:
            continue
        # A VM an operation is working on (a cold move stops it first) is not the record's to follow yet.
        if record.uuid in plan.moving or lease_is_live(plan.registry, record.uuid):
            continue
        reason = plan.survey.blind(record.node)
        if reason:
            plan.blind_to(record, record.node, reason)
            continue
        state = plan.survey.on(record.uuid).get(record.node)
        if state is None:
            plan.missing.append({'uuid': record.uuid, 'name': record.name, 'node': record.node, 'state': record.state,
                                 'reason': 'node %s has no VM of it: rebuild or delete it' % record.node})
        elif state.power_state in RECORDED_POWER and state.power_state != record.state:
            def work(record=record, power=state.power_state):
                plan.registry.update_instance(record.uuid, state=power)
            plan.add('power', record.uuid, record.name, record.node, 'recorded %s, its VM is %s' % (record.state, state.power_state),
                     'record it %s' % state.power_state, work)


def plan_stale(plan, check_mode):
    evacuations = [m for m in plan.migrations if m.migration_type == _evacuation.EVACUATION]
    # 'done' evacuations: the clean-up compute_node runs, node by node.
    for node in sorted(set(m.source_node for m in evacuations if m.status == 'done')):
        if plan.survey.blind(node):
            continue
        entries = _evacuation.clean_stale(plan.ctx, node, check_mode=True)
        if entries:
            plan.add('stale', None, None, node, 'evacuations done from %s: %s' % (node, ', '.join(
                '%s (%s)' % (e['name'] or e['uuid'], 'its copy there' if e['destroyed'] else 'no copy there') for e in entries)),
                'destroy the stale copies (local disks removed, shared kept), record the evacuations completed',
                lambda node=node: _evacuation.clean_stale(plan.ctx, node), lambda: True, '')  # it takes the node's lease
            plan.handled.update((e['uuid'], node) for e in entries)
    for migration in evacuations:
        record = plan.records.get(migration.instance_uuid)
        if record is None or record.uuid in plan.handled or migration.status in ACTIVE:
            continue
        for node in sorted(set((migration.source_node, migration.dest_node)) - {record.node}):
            state = plan.survey.on(record.uuid).get(node)
            if state is None or (record.uuid, node) in plan.handled or plan.survey.blind(node):
                continue
            if plan.survey.on(record.uuid).get(record.node) is None:
                continue  # never the only copy: the instance is reported missing where it is recorded
            plan.handled.add((record.uuid, node))
            local = _evacuation.copy_storage(record, migration) == 'local'
            plan.add('stale', record.uuid, record.name, node, 'a copy (%s) on %s, evacuation %s %s; the record says %s'
                     % (state.power_state, node, migration.id, migration.status, record.node),
                     'destroy it (%s)' % ('its local disk removed' if local else 'its shared disk kept'),
                     lambda record=record, node=node, local=local: plan.destroy(record.uuid, node, local))
    plan_second_copies(plan)
    plan_left_files(plan)


def plan_second_copies(plan):
    """A copy of a recorded instance on a node that is not its record's, with no migration of it unfinished
    and no run on it (a move whose source's undefine failed, a VM defined by hand): the record is where the
    instance is, so the other copy is destroyed, its disk removed only when it is local and that node's
    own (never shared: it is the instance's disk). Never the only copy: that one is reported missing.
    The source VM of a finished convert whose retire failed is retired as that move asked instead."""
    registry = plan.registry
    for record in plan.records.values():
        if record.state not in RECORDED_POWER or record.uuid in plan.handled or record.uuid in plan.moving:
            continue
        copies = plan.survey.on(record.uuid)
        others = [node for node in sorted(copies) if node != record.node and (record.uuid, node) not in plan.handled]
        if record.node not in copies or not others or lease_is_live(registry, record.uuid):
            continue
        for node in others:
            plan.handled.add((record.uuid, node))
            moved = _converted_from(plan, record.uuid, node)
            if moved is not None:
                # the source of a finished convert whose retire failed: retired as the move asked (keep_source
                # keeps it renamed, the rollback path the user chose), never destroyed in its place
                keep = bool((moved.stats or {}).get('keep_source'))
                plan.add('stale', record.uuid, record.name, node, 'the VM on %s that convert %s moved to %s was not retired'
                         % (node, moved.id, record.node), 'rename it and remove the mark (keep_source)' if keep else 'remove it with its disks',
                         lambda record=record, node=node, keep=keep: plan.ctx.driver_for(node).retire_converted(record.uuid, node, keep=keep))
                continue
            own_disk = record.storage == 'local' and plan.separate(node, record.node)
            plan.add('stale', record.uuid, record.name, node, 'a second copy (%s) on %s; the record says %s (%s) and no migration of it '
                     'is unfinished' % (copies[node].power_state, node, record.node, copies[record.node].power_state),
                     'destroy it (%s)' % ('its local disk removed' if own_disk else 'its disk kept'),
                     lambda record=record, node=node, own_disk=own_disk: plan.destroy(record.uuid, node, own_disk))


def _converted_from(plan, inst_uuid, node):
    """The latest completed convert of the instance away from node, or None."""
    moves = [m for m in plan.migrations if m.instance_uuid == inst_uuid and m.migration_type == _convert.CONVERT
             and m.status == 'completed' and m.source_node == node]
    return max(moves, key=lambda m: m.created_at) if moves else None


def plan_left_files(plan):
    """Local files of a recorded instance on a node that is not its record's and has no VM of it (what an
    interrupted block or cold migration or an evacuation left there), removed when its VM is on its record's
    node and nothing works on it (see Plan.leftovers)."""
    for inst_uuid, found in sorted(plan.survey.all_files().items()):
        record = plan.records.get(inst_uuid)
        if record is None or inst_uuid in plan.handled or inst_uuid in plan.moving or record.state == 'building':
            continue
        if plan.survey.on(inst_uuid).get(record.node) is None:
            continue  # no VM where it is recorded: these files may hold its only disk
        if lease_is_live(plan.registry, inst_uuid):
            continue  # a run works on it. No settling time is needed: every run that makes files on another node
            # records its migration first (`plan.moving`), so a holder whose clock is behind is still seen.
        for node in sorted(set(f.node for f in found) - {record.node}):
            files = [] if (inst_uuid, node) in plan.handled else plan.leftovers(inst_uuid, node, record.node, record.storage)
            if not files:
                continue
            plan.handled.add((inst_uuid, node))
            plan.add('stale', inst_uuid, record.name, node, 'files of it in the local directory of %s, which has no VM of it (%s); '
                     'its VM is on %s' % (node, ', '.join(f.name for f in files), record.node),
                     'remove them (its files on %s are kept)' % record.node,
                     lambda inst_uuid=inst_uuid, node=node: plan.remove_files(inst_uuid, node, 'local'))


def plan_orphan_files(plan, delete):
    """Files named after an instance the registry does not have, and that no VM of that uuid can be using."""
    survey, removals = plan.survey, {}
    for inst_uuid, found in sorted(survey.all_files().items()):
        vms = survey.on(inst_uuid)
        if inst_uuid in plan.records:
            continue
        for found_file in sorted(found, key=lambda f: (f.node, f.storage, f.name)):
            if found_file.node in vms or (found_file.storage == 'shared' and vms):
                continue  # the orphan VM's own: it is reported, and its destroy takes them
            where = 'the %s directory of %s' % (found_file.storage, found_file.node)
            entry = {'kind': 'file', 'uuid': inst_uuid, 'name': found_file.name, 'node': found_file.node,
                     'storage': found_file.storage, 'path': found_file.path, 'reason': 'a file of no instance in %s' % where}
            blind = sorted(set(survey.down) | set(survey.files_down))
            if found_file.storage == 'shared' and blind:
                entry['reason'] += '; not deleted while %s, which may see that directory, cannot be seen' % ', '.join(blind)
            elif delete:
                # A shared file is removed once, through the first node that sees it.
                key = (inst_uuid, found_file.node, 'local') if found_file.storage == 'local' else \
                    (inst_uuid, 'shared', found_file.path.rpartition('/')[0])
                removals.setdefault(key, (found_file, []))[1].append(found_file.name)
            plan.orphans.append(entry)
    for first, names in removals.values():
        names = sorted(set(names))
        plan.add('orphan', first.uuid, None, first.node, 'files of no instance in the %s directory of %s: %s'
                 % (first.storage, first.node, ', '.join(names)), 'delete them',
                 lambda f=first: plan.remove_files(f.uuid, f.node, f.storage))


def unrecorded(copies, recorded):
    """[(uuid, node, VM)] of the VMs in copies ({uuid: {node: VM}}) whose uuid the registry does not have
    (recorded: the uuids it has), by uuid and node: the orphan VMs this pass reports, and the VMs adoption
    (adoption.py) may make instances of."""
    return [(inst_uuid, node, vm) for inst_uuid, on in sorted(copies.items()) if inst_uuid not in recorded
            for node, vm in sorted(on.items())]


def plan_orphans(plan, delete):
    registry = plan.registry
    for inst_uuid, node, state in unrecorded(plan.survey.copies, plan.records):
        plan.orphans.append({'kind': 'vm', 'uuid': inst_uuid, 'name': state.name, 'node': node, 'power_state': state.power_state})
        if delete:
            plan.add('orphan', inst_uuid, state.name, node, 'a VM (%s) the registry has no record of' % state.power_state,
                     'destroy it and its disks', lambda u=inst_uuid, n=node: plan.destroy(u, n, True))
    plan_orphan_files(plan, delete)
    # A resize that moved its instance keeps the old flavor's allocation on the node it came from until it is settled.
    resized_from = set((m.instance_uuid, m.source_node) for m in plan.migrations if m.migration_type == RESIZE and m.status == 'done')
    for allocation in registry.list_allocations():
        inst_uuid, node = allocation['instance_uuid'], allocation['node']
        record = plan.records.get(inst_uuid)
        if record is not None and (record.node == node or inst_uuid in plan.handled or inst_uuid in plan.moving
                                   or (inst_uuid, node) in resized_from or lease_is_live(registry, inst_uuid)):
            continue
        why = 'of no instance' if record is None else 'of instance %s, which is on %s' % (record.name, record.node)
        plan.orphans.append({'kind': 'allocation', 'uuid': inst_uuid, 'name': record.name if record else None, 'node': node,
                             'reason': 'an allocation on %s %s' % (node, why)})
        if delete:
            plan.add('orphan', inst_uuid, record.name if record else None, node, 'an allocation on %s %s' % (node, why),
                     'free it', lambda u=inst_uuid, n=node: registry.release(u, node=n))


def plan_snapshots(plan):
    """Captures into images (snapshots.py) left in status saving, whose image no run holds and whose record is settled:
    what they left (bases, a template, the controller file) goes, and the image with it."""
    for image in plan.registry.list_images():
        props = image.get('properties') or {}
        name = image['name']
        if props.get('status') != _snapshots.SAVING or not settled(image['updated_at'], plan.settle_seconds) \
                or held_now(plan.registry, 'image:%s' % name):
            continue
        origin = props.get('origin') or {}

        def unchanged(seen=image['updated_at'], name=name):
            now = plan.registry.get_image(name)
            return now is not None and now['updated_at'] == seen

        plan.add('snapshot', origin.get('instance_uuid'), origin.get('instance_name'), origin.get('node'),
                 'image %s in status saving: its capture was interrupted' % name,
                 'remove what it left and the image', lambda i=image: _snapshots.undo_interrupted(plan.ctx, i), unchanged,
                 lease='image:%s' % name)


def survey_and_plan(ctx, delete_orphans=False, steps=STEPS, settle_seconds=None):
    """The Plan of one pass (nothing written): the steps run in STEPS order, each skipping the
    instances an earlier one took."""
    plan = Plan(ctx, Survey(ctx), settle_seconds)
    for step in STEPS:
        if step not in steps:
            continue
        if step == 'builds':
            plan_builds(plan)
        elif step == 'migrations':
            plan_migrations(plan)
        elif step == 'power':
            plan_power(plan)
        elif step == 'stale':
            plan_stale(plan, True)
        elif step == 'rules':
            _node_rules.plan_rules(plan)
        else:
            plan_orphans(plan, delete_orphans)
            plan_snapshots(plan)
    return plan


def run(ctx, delete_orphans=False, check_mode=False, steps=STEPS, settle_seconds=None):
    """One pass. Returns {changed, actions, unknown, missing, unfinished, orphans, failures}: actions as
    {kind, uuid, name, node, found, does} (and error when it failed; the others go on)."""
    plan = survey_and_plan(ctx, delete_orphans, steps, settle_seconds)
    actions, failures = [], []
    for action in plan.actions:
        entry = action.as_dict()
        actions.append(entry)
        if check_mode:
            continue
        try:
            _carry_out(ctx.registry, action)
        except errors.MultihvError as exc:
            entry['error'] = str(exc)
            failures.append(entry)
    done = [a for a in actions if 'error' not in a]
    return {'changed': bool(done), 'actions': actions, 'unknown': plan.unknown, 'missing': plan.missing,
            'unfinished': plan.unfinished, 'orphans': plan.orphans, 'failures': failures}


def _carry_out(registry, action):
    left = 'the reconciler left %s as it was' % ('instance %s' % (action.name or action.uuid) if action.uuid else 'node %s' % action.node)
    with contextlib.ExitStack() as held:
        if action.lease:
            held.enter_context(_leases.held(registry, action.lease, INSTANCE_LEASE_WAIT_SECONDS, 'another run works on it; ' + left,
                                            'reconcile'))
        if not action.unchanged():
            raise errors.MultihvError('its records changed since the pass read them (another run acted); %s' % left)
        action.work()


def run_for_ha(ctx, check_mode=False, settle_seconds=None):
    """What the HA pass may call before judging nodes: interrupted builds and migrations, and power states."""
    return run(ctx, check_mode=check_mode, steps=HA_STEPS, settle_seconds=settle_seconds)


__all__ = ['ACTIVE', 'HA_STEPS', 'SETTLE_SECONDS', 'STEPS', 'Survey', 'lease_is_live', 'settle_seconds_of', 'settled', 'run', 'run_for_ha', 'survey_and_plan',
           'unrecorded']
