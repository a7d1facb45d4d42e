# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance HA: one unattended pass of what vSphere HA does for a cluster, for the nodes whose
hypervisor type has no such thing and whose instances the core evacuates (KVM hosts;
Masakari's host-failure recovery). Private to multihv.cloud: do not import.

A pass reads every node once. A node that does not answer gets a down_since in the registry
the first time a pass sees it (so that the grace period counts across passes, processes and
controllers), and each pass that finds it unreachable counts one more down probe; a node that
answers loses both. A pass acts on a node only when it has been down for the grace period AND
at least min_down_probes passes saw it down: one timeout under load is never a failure.

It acts on no node at all when more than max_down_share of the watched nodes (those not forced
down) look down at once: then the controller is more likely cut off from them than they all
failed at once, and fencing them would power off a healthy estate. It only keeps its
bookkeeping then, and reports every down node with that reason in `withheld`.

A pass first runs the reconciler's HA steps (reconcile.run_for_ha: interrupted builds and
migrations, power states), so that it judges nodes from records that say where instances are:
an evacuation a killed controller left half done is finished or undone before the next one
starts. Its actions are reported in `reconciled`; in check mode they are only planned.

A node that does not answer but whose storage heartbeat (the file its writer renews on its
shared instance storage), read through a node that answers, is younger than heartbeat_timeout
AND was written after the pass first saw the node down is isolated, not dead (vSphere HA's
datastore heartbeating): reported in `withheld`, neither fenced nor evacuated. One from before
that but still younger than heartbeat_timeout is what a host that just lost its power leaves
behind, and also what one cut off a moment ago shows: the node stays in `waiting` until that
heartbeat is heartbeat_timeout old (dead) or advances (isolated). No heartbeat, or none that a
node that answers can read, is no evidence either way.

A node it acts on is fenced (see _compute/fencing.py: confirmed by its power status where the
cloud file says how), forced down and its HA instances evacuated, HA first and by restart
priority (and the others when asked), onto reserved failover nodes first. A node with nothing
to recover is not fenced: it is reported in `withheld`; its instances were never evacuated, so
it comes back with no stale copies. A pass holds the node's lease while it fences and evacuates
it, so two passes (or a pass and an operator's evacuation or drain) never act on one node at
once: the second reports the node as skipped. What does not fit is reported and stays where it was: the
scheduler never overcommits a node. Stale copies of an evacuated node are compute_node's to
clean when it is enabled again. Nodes whose hypervisor recovers by itself (vSphere clusters:
vSphere HA) are left to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import bounds as _bounds
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT, utcnow

MAX_DOWN_SHARE = 0.5
MIN_DOWN_PROBES = 3
# Seconds within which a storage heartbeat proves a node that does not answer alive (its writer
# writes every few seconds); and how many nodes that answer are asked to read it.
HEARTBEAT_TIMEOUT = 30
HEARTBEAT_READERS = 2


def _seconds_since(stamp, now):
    then = datetime.datetime.strptime(stamp, TIMESTAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return (now - then).total_seconds()


def _probe(registry, view, check_mode, enough):
    """Record what this pass saw of one watched node (check_mode: only say it). Returns (admin, down_since,
    down_probes, marked): for a node that answers, its marks cleared (None when it had none); marked True when
    its marks in the registry were (would be) written, which the pass reports as a change. Probes are counted
    up to `enough` (min_down_probes) only: more says nothing new, and a node that stays down (fenced, or
    withheld) then costs no write and no change at each pass."""
    admin = registry.get_node(view.name) or {}
    since, probes = admin.get('down_since'), admin.get('down_probes') or 0
    if view.up:
        if not (since or probes):
            return admin, None, None, False
        if not check_mode:
            registry.set_node(view.name, view.hypervisor_type, down_since=None, down_probes=0)
        return admin, None, 0, True
    if since and probes >= enough:
        return admin, since, probes, False
    since, probes = since or utcnow(), probes + 1
    if not check_mode:
        registry.set_node(view.name, view.hypervisor_type, down_since=since, down_probes=probes)
    return admin, since, probes, True


def _too_many_down(down, watched, max_down_share):
    """The reason to fence nothing when more than max_down_share of the watched nodes look down, else None."""
    if not down or len(down) <= max_down_share * watched:
        return None
    return ('%d of the %d watched nodes look down at once (more than max_down_share %s): the controller is more likely cut '
            'off from them than they all failed, so this pass fenced and evacuated nothing; check the network from the '
            'controller' % (len(down), watched, max_down_share))


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a pass decides (run_pass's options), and its time (after the probes)."""

    grace_period: int
    evacuate_all: bool
    concurrency: int
    check_mode: bool
    min_down_probes: int
    heartbeat_timeout: int
    now: datetime.datetime
    # In check mode, the instances the reconciler would act on first (their records would change): left out.
    reconciling: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class Down:
    """One node this pass found unreachable: its view, its registry row, its marks after this pass."""

    view: object
    admin: dict
    since: str
    probes: int

    def entry(self, **more):
        return dict({'node': self.view.name, 'down_since': self.since, 'down_probes': self.probes}, **more)


def run_pass(ctx, grace_period=60, evacuate_all=False, concurrency=4, check_mode=False, max_down_share=MAX_DOWN_SHARE,
             min_down_probes=MIN_DOWN_PROBES, heartbeat_timeout=HEARTBEAT_TIMEOUT, settle_seconds=_reconcile.SETTLE_SECONDS):
    """One pass. Returns {changed, reconciled, down, waiting, withheld, recovered, unplaced, failures, cleared,
    skipped}: reconciled the reconciler's actions (reconcile.run's, an action that failed with its
    error: the next pass tries again), down the nodes acted on, waiting those still in their
    grace period or short of probes, withheld the down nodes not acted on and why, recovered
    the per-instance evacuation results, unplaced the instances no node has room for, failures
    what went wrong (per node or instance), cleared the nodes that answer again, skipped the
    nodes another run works on (it holds their lease). settle_seconds: the reconciler's."""
    _bounds.at_least('concurrency', concurrency, 1, 'no node was looked at')
    _bounds.at_least('grace_period', grace_period, 0, 'no node was looked at')
    if not 0 <= max_down_share <= 1 or min_down_probes < 1 or heartbeat_timeout < 0:
        raise errors.MultihvError('max_down_share must be between 0 and 1, min_down_probes at least 1 and heartbeat_timeout at '
                                  'least 0, got %r, %r and %r; no node was looked at' % (max_down_share, min_down_probes, heartbeat_timeout))
    registry = ctx.registry
    reconciled = _reconcile.run_for_ha(ctx, check_mode=check_mode, settle_seconds=settle_seconds)
    result = {'changed': reconciled['changed'], 'reconciled': reconciled['actions'], 'down': [], 'waiting': [], 'withheld': [],
              'recovered': [], 'unplaced': [], 'failures': [], 'cleared': [], 'skipped': []}
    watched, down = 0, []
    for view in ctx.views():
        if not ctx.kind_capabilities(view.hypervisor_type).evacuation:
            continue
        admin, since, probes, marked = _probe(registry, view, check_mode, min_down_probes)
        # The marks are the registry's record of the watch: writing them is a change, reported as one.
        result['changed'] = result['changed'] or marked
        watched += not admin.get('forced_down')  # a node forced down is known to be down: it counts neither way
        if view.up:
            if probes == 0:
                result['cleared'].append(view.name)
        else:
            down.append(Down(view, admin, since, probes))
    # Now is taken after the probes: a down_since this pass set is not later.
    policy = Policy(grace_period, evacuate_all, concurrency, check_mode, min_down_probes, heartbeat_timeout,
                    datetime.datetime.now(datetime.timezone.utc),
                    frozenset(a['uuid'] for a in reconciled['actions'] if check_mode and a['uuid']))
    refused = _too_many_down([d for d in down if not d.admin.get('forced_down')], watched, max_down_share)
    for node in down:
        if refused:
            result['withheld'].append(node.entry(why='controller_cut_off', reason=refused))
        else:
            _recover(ctx, result, node, policy)
    return result


def _heartbeat(ctx, node, policy):
    """What a storage heartbeat of node, read through the nodes that answer, says (vSphere HA's
    datastore heartbeating): ('isolated', reason) when one was written since the node was first
    seen down (it is cut off, not dead); ('unsure', reason, seconds) when the youngest is from
    before that but younger than heartbeat_timeout (a host that lost its power leaves such a
    heartbeat, and so may one cut off a moment ago: the pass waits `seconds` for it to age or to
    advance); None when there is no heartbeat, none is that young, no peer answers or none can
    read it (no evidence either way)."""
    if not policy.heartbeat_timeout or node.admin.get('forced_down'):
        return None  # forced down: declared off by an operator, or fenced (its power confirmed) by an earlier pass
    name = node.view.name
    down_for = _seconds_since(node.since, policy.now)
    peers = ctx.driver_for(name).storage_peers(name)
    asked, youngest = 0, None
    for other in ctx.views():
        if asked >= HEARTBEAT_READERS or not other.up or other.name == name or (peers and other.name not in peers) \
                or not ctx.kind_capabilities(other.hypervisor_type).evacuation:
            continue
        asked += 1
        try:
            beat = ctx.driver_for(other.name).storage_heartbeat(name)
        except errors.MultihvError:
            continue
        if beat is None:
            continue
        age = max(0.0, policy.now.timestamp() - beat)
        if age < policy.heartbeat_timeout and age < down_for:
            return ('isolated', 'isolated, not dead: it does not answer (%s) but its storage heartbeat, read through %s, is %.0f s '
                    'old (under heartbeat_timeout %d s, and written since it was first seen down %.0f s ago): it runs on, so it '
                    'was neither fenced nor evacuated' % (node.view.reason or 'no answer', other.name, age, policy.heartbeat_timeout,
                                                          down_for))
        if youngest is None or age < youngest[0]:
            youngest = (age, other.name)
    if youngest is None or youngest[0] >= policy.heartbeat_timeout:
        return None
    age, reader = youngest
    return ('unsure', 'its last storage heartbeat, read through %s, is %.0f s old, from before it was first seen down %.0f s ago: '
            'it lost its power or was cut off a moment ago; the pass waits until that heartbeat is heartbeat_timeout (%d s) old, '
            'or advances' % (reader, age, down_for, policy.heartbeat_timeout), policy.heartbeat_timeout - age)


def _recover(ctx, result, node, policy):
    """Act on one down node once its grace period and probes are over: fence it and evacuate what it ran."""
    name = node.view.name
    down_for = _seconds_since(node.since, policy.now)
    if down_for < policy.grace_period or node.probes < policy.min_down_probes:
        result['waiting'].append(node.entry(seconds_left=round(max(0.0, policy.grace_period - down_for), 1),
                                            probes_left=max(0, policy.min_down_probes - node.probes), reason=node.view.reason))
        return
    try:
        with contextlib.nullcontext() if policy.check_mode else _leases.on_node(ctx.registry, name, 'this pass left it', 'instance_ha'):
            _recover_held(ctx, result, node, policy)
    except errors.LeaseHeld as exc:
        result['skipped'].append({'node': name, 'msg': str(exc)})


def _recover_held(ctx, result, node, policy):
    """_recover's work with the node's lease held (so that what is left to do is read now, after any
    other run's work on it)."""
    name = node.view.name
    todo = [r.uuid for r in ctx.registry.list_instances(node=name)
            if r.state in _evacuation.EVACUABLE and (policy.evacuate_all or r.ha) and r.uuid not in policy.reconciling]
    if not todo:
        if not node.admin.get('forced_down'):  # a forced-down node with nothing left was handled before: nothing new
            result['withheld'].append(node.entry(
                why='nothing_to_recover',
                reason='down (%s) with nothing to recover: no %sinstance runs or is stopped there, so it was not fenced'
                % (node.view.reason or 'no answer', '' if policy.evacuate_all else 'HA ')))
        return
    heard = _heartbeat(ctx, node, policy)
    if heard and heard[0] == 'isolated':
        result['withheld'].append(node.entry(why='isolated', reason=heard[1]))
        return
    if heard:
        result['waiting'].append(node.entry(seconds_left=round(heard[2], 1), probes_left=0,
                                            reason='%s; %s' % (node.view.reason or 'no answer', heard[1])))
        return
    try:
        done = _evacuation.evacuate(ctx, name, instances=todo, concurrency=policy.concurrency, check_mode=policy.check_mode,
                                    hold_node=False)
    except errors.MultihvError as exc:
        result['failures'].append({'node': name, 'msg': str(exc)})
        return
    result['changed'] = result['changed'] or done['changed']
    result['down'].append(node.entry(fencing=done['fencing']))
    result['recovered'].extend(done['evacuations'])
    result['unplaced'].extend(dict(entry, node=name) for entry in done['unplaced'])
    result['failures'].extend(dict(entry, node=name) for entry in done['failures'])


__all__ = ['HEARTBEAT_TIMEOUT', 'MAX_DOWN_SHARE', 'MIN_DOWN_PROBES', 'run_pass']
