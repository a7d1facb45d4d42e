# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance HA: one unattended pass of what vSphere HA does for a cluster, for the nodes whose
hypervisor type has no such thing and whose instances the core evacuates (KVM hosts;
Masakari's host-failure recovery). Private to multihv.cloud: do not import.

A pass reads every node once. A KVM node that does not answer gets a down_since in the
registry the first time a pass sees it (so that the grace period counts across passes,
processes and controllers); once it has been down for the grace period, the pass fences
it, forces it down and evacuates its HA instances, HA first and by restart priority (and
the others when asked), onto reserved failover nodes first. What does not fit is
reported and stays where it was: the scheduler never overcommits a node. A node that
answers again loses its down_since; its stale copies are compute_node's to clean when it
is enabled again. Nodes whose hypervisor recovers by itself (vSphere clusters: vSphere HA)
are left to it. A pass holds the node's lease while it fences and evacuates a node, so two
passes (or a pass and an operator's evacuation or drain) never act on one node at once: the
second reports the node as skipped.
"""

from __future__ import annotations

import contextlib
import datetime

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT, utcnow


def _seconds_since(stamp, now):
    then = datetime.datetime.strptime(stamp, TIMESTAMP_FORMAT).replace(tzinfo=datetime.timezone.utc)
    return (now - then).total_seconds()


def run_pass(ctx, grace_period=60, evacuate_all=False, concurrency=4, check_mode=False):
    """One pass. Returns {changed, down, waiting, recovered, unplaced, failures, cleared, skipped}:
    down the nodes acted on, waiting those still in their grace period, recovered the
    per-instance evacuation results, unplaced the instances no node has room for,
    failures what went wrong (per node or instance), cleared the nodes that answer again,
    skipped the nodes another run works on (it holds their lease)."""
    registry = ctx.registry
    now = datetime.datetime.now(datetime.timezone.utc)
    result = {'changed': False, 'down': [], 'waiting': [], 'recovered': [], 'unplaced': [], 'failures': [], 'cleared': [], 'skipped': []}
    for view in ctx.views():
        if not ctx.kind_capabilities(view.hypervisor_type).evacuation:
            continue
        name, kind = view.name, view.hypervisor_type
        admin = registry.get_node(name) or {}
        since = admin.get('down_since')
        if view.up:
            if since:
                result['cleared'].append(name)
                if not check_mode:  # bookkeeping of the watch, not a change of the cloud
                    registry.set_node(name, kind, down_since=None)
            continue
        if since is None:
            since = utcnow()
            if not check_mode:
                registry.set_node(name, kind, down_since=since)
        down_for = _seconds_since(since, now)
        if down_for < grace_period:
            result['waiting'].append({'node': name, 'down_since': since, 'seconds_left': round(grace_period - down_for, 1),
                                      'reason': view.reason})
            continue
        try:
            with contextlib.nullcontext() if check_mode else _leases.on_node(registry, name, 'this pass left it', 'instance_ha'):
                done = _recover(ctx, name, evacuate_all, concurrency, check_mode)
        except errors.LeaseHeld as exc:
            result['skipped'].append({'node': name, 'msg': str(exc)})
            continue
        except errors.MultihvError as exc:
            result['failures'].append({'node': name, 'msg': str(exc)})
            continue
        if done is None:
            continue  # handled by an earlier pass: nothing new
        result['changed'] = result['changed'] or done['changed']
        result['down'].append({'node': name, 'down_since': since, 'fencing': done['fencing']})
        result['recovered'].extend(done['evacuations'])
        result['unplaced'].extend(dict(entry, node=name) for entry in done['unplaced'])
        result['failures'].extend(dict(entry, node=name) for entry in done['failures'])
    return result


def _recover(ctx, name, evacuate_all, concurrency, check_mode):
    """Fence and evacuate node name, its lease held by the caller (so that what is left to do is
    read now, after any other run's work on it): evacuate's result, or None when there is nothing new."""
    todo = [r.uuid for r in ctx.registry.list_instances(node=name)
            if r.state in _evacuation.EVACUABLE and (evacuate_all or r.ha)]
    if not todo and (ctx.registry.get_node(name) or {}).get('forced_down'):
        return None
    if todo:
        return _evacuation.evacuate(ctx, name, instances=todo, concurrency=concurrency, check_mode=check_mode, hold_node=False)
    # Nothing to restart: fenced and forced down all the same, so that it comes back clean.
    fencing = _evacuation.check_failed(ctx, name, check_mode)
    return {'changed': fencing != 'forced_down', 'fencing': fencing, 'evacuations': [], 'unplaced': [], 'failures': []}


__all__ = ['run_pass']
