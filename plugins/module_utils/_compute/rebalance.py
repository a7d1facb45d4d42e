# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rebalancing nodes (issue 18 §1): what DRS does among the hosts of a vSphere cluster, done between nodes that
are single hosts (KVM hosts), by live migration. Private to multihv.cloud: do not import.

1. Select the nodes: those named, or those of an aggregate and/or an availability zone, or all. Only nodes of a
   type whose capabilities say it can be balanced this way (balanceable: its driver measures usage, it has live
   migration, and a node is one host) are: a named node that is not (a vSphere cluster: DRS balances it) refuses
   the whole run; one that a filter or "all" brings in is skipped and listed. Nodes down, disabled or forced down
   are skipped and listed too: they take no instance, and emptying one is a drain's work.
2. Hold the lease of every selected node (leases.on_nodes) for the whole run, so that two rebalances of the same
   nodes (or a rebalance and a drain or an evacuation of one of them) never run at once. Check mode takes none.
3. Measure each node over `interval` seconds through its driver (ComputeDriver.usage), the nodes in parallel. A
   node that cannot be measured is skipped and listed.
4. Plan with balance.plan (the load metric, the aggressiveness levels and the greedy rule are there). Movable:
   the cloud's instances recorded running on the node, running there now, with no other run holding their lease.
5. Run the moves, `concurrency` at a time and never two at once on one node (a move may need the room an
   earlier one frees), each as migrate does it: the instance's lease, a check that it still runs on its source,
   the scheduler's filters on the target with the claims as they are now, the claim first, the migration
   record. A move that fails leaves its instance where it was and the others go on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import balance as _balance
from ansible_collections.multihv.cloud.plugins.module_utils._compute import bounds as _bounds
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._compute.nodes import MAX_PARALLEL_ENDPOINTS
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationControls
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import utcnow

UNTOUCHED = 'nothing was moved'
# The shortest interval a node is measured over: CPU time over less says more about the sampling than the load.
MIN_INTERVAL = 0.1
DIGITS = 4  # loads and spreads in results


def balanceable(caps):
    """True when nodes of a type with these Capabilities are balanced by rebalance: the driver measures what VMs use,
    instances move live, and a node is one host (a node of several hosts balances them itself, or cannot be measured
    as one)."""
    return caps.usage and 'live' in caps.migration_modes and not caps.hosts_in_node


def why_not(view, caps):
    """Why rebalance leaves node `view` alone, by its type's capabilities."""
    if caps.hosts_in_node:
        return ('node %s is a %s, not a single host: %s; rebalance moves instances between single-host nodes only'
                % (view.name, caps.node_noun, caps.self_balancing or 'its hypervisor places VMs among its hosts itself'))
    if 'live' not in caps.migration_modes:
        return 'node %s is a %s, and %s nodes have no live migration' % (view.name, caps.node_noun, caps.label)
    return 'node %s is a %s, and the %s driver does not measure what its VMs use' % (view.name, caps.node_noun, caps.label)


def check_options(aggressiveness, max_moves, concurrency, interval, nodes, aggregate, availability_zone):
    """Refuse bad options before anything is read or moved."""
    if aggressiveness not in _balance.LEVELS or isinstance(aggressiveness, bool):
        raise errors.MultihvError('aggressiveness must be one of %s (1 moves nothing, 5 moves for the smallest gains), got %s; %s'
                                  % (', '.join(str(level) for level in _balance.LEVELS), aggressiveness, UNTOUCHED))
    _bounds.at_least('max_moves', max_moves, 1, UNTOUCHED)
    _bounds.at_least('concurrency', concurrency, 1, UNTOUCHED)
    _bounds.at_least('interval', interval, MIN_INTERVAL, UNTOUCHED)
    if nodes and (aggregate or availability_zone):
        raise errors.MultihvError('nodes names the nodes to balance; it cannot be combined with aggregate or availability_zone; %s'
                                  % UNTOUCHED)


def select(ctx, nodes=None, aggregate=None, availability_zone=None):
    """(the NodeViews to balance, [{node, reason}] skipped). A named node that the cloud does not have, or that is
    not balanceable, refuses the whole; so does a filter that no node of the cloud matches."""
    views = ctx.views()
    if nodes:
        by_name = dict((v.name, v) for v in views)
        missing = [name for name in nodes if name not in by_name]
        if missing:
            raise errors.NotFound('node%s %s %s not in the cloud (it has %s); %s' % (
                's' if len(missing) > 1 else '', ', '.join(missing), 'are' if len(missing) > 1 else 'is',
                ', '.join(sorted(by_name)) or 'none', UNTOUCHED))
        chosen = [by_name[name] for name in dict.fromkeys(nodes)]
        refused = [why_not(v, ctx.kind_capabilities(v.hypervisor_type)) for v in chosen
                   if not balanceable(ctx.kind_capabilities(v.hypervisor_type))]
        if refused:
            raise errors.MultihvError('%s; name single-host nodes only (or select by aggregate or availability zone, which skips '
                                      'the others); %s' % ('; '.join(refused), UNTOUCHED))
    else:
        chosen = [v for v in views if (aggregate is None or aggregate in (v.aggregates or ()))
                  and (availability_zone is None or v.availability_zone == availability_zone)]
        if not chosen and (aggregate or availability_zone):
            wanted = ' and '.join(what for what in ('aggregate %s' % aggregate if aggregate else '',
                                                    'availability zone %s' % availability_zone if availability_zone else '') if what)
            raise errors.NotFound('no node of the cloud is in %s (its aggregates: %s; its availability zones: %s); %s' % (
                wanted, ', '.join(sorted(set(a for v in views for a in v.aggregates or ()))) or 'none',
                ', '.join(sorted(set(v.availability_zone for v in views if v.availability_zone))) or 'none', UNTOUCHED))
    selected, skipped = [], []
    for view in chosen:
        caps = ctx.kind_capabilities(view.hypervisor_type)
        if not balanceable(caps):
            skipped.append({'node': view.name, 'reason': why_not(view, caps)})
        elif not view.up:
            skipped.append({'node': view.name, 'reason': 'node %s is down (%s)' % (view.name, view.reason or 'no answer')})
        elif view.forced_down:
            skipped.append({'node': view.name, 'reason': 'node %s is forced down' % view.name})
        elif not view.enabled:
            skipped.append({'node': view.name, 'reason': 'node %s is disabled (%s): it takes no instance, and a drain empties it'
                            % (view.name, view.disabled_reason or 'no reason given')})
        else:
            selected.append(view)
    return selected, skipped


def measure(ctx, views, interval):
    """({node: NodeUsage}, [{node, reason}] of those that could not be measured): each endpoint's nodes one after
    another, the endpoints in parallel, so that the whole takes about one interval."""
    by_driver = {}
    for view in views:
        driver = ctx.driver_for(view.name)
        by_driver.setdefault(id(driver), (driver, []))[1].append(view.name)

    def endpoint(driver, names):
        found = []
        try:
            for name in names:
                try:
                    found.append((name, driver.usage(name, interval), None))
                except errors.AuthenticationFailed:
                    raise
                except errors.MultihvError as exc:
                    found.append((name, None, 'node %s could not be measured: %s' % (name, exc)))
        finally:
            driver.close()  # opened on this thread; the next user opens its own
        return found

    usages, skipped = {}, []
    if not by_driver:
        return usages, skipped
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_ENDPOINTS, len(by_driver))) as pool:
        for found in pool.map(lambda pair: endpoint(*pair), list(by_driver.values())):
            for name, usage, reason in found:
                if usage is not None:
                    usages[name] = usage
                else:
                    skipped.append({'node': name, 'reason': reason})
    return usages, skipped


def _held(registry, inst_uuid):
    """True while another run holds the instance's lease (one not expired: its holder still works on it)."""
    holder = registry.lease_holder('instance:%s' % inst_uuid)
    return bool(holder) and holder['expires_at'] > utcnow()


def loads(ctx, views, usages, records):
    """A balance.NodeLoad per measured node: each VM that ran through the interval with what it uses, the cloud's
    instances counting at least their claim's RAM (see balance.py) and movable when recorded running there and
    no other run holds them."""
    registry = ctx.registry
    by_uuid = dict((r.uuid, r) for r in records)
    flavors = dict((f['name'], f) for f in registry.list_flavors())
    found = []
    for view in views:
        if view.name not in usages:
            continue
        items = []
        for used in usages[view.name].instances:
            record = by_uuid.get(used.uuid)
            if record is None or record.node != view.name:  # another's VM, or a copy the registry puts elsewhere
                items.append(_balance.Item(used.uuid, used.uuid, used.cpu, used.memory_mb))
                continue
            claim = (flavors.get(record.flavor) or {}).get('ram_mb', 0)
            movable = record.state == 'running' and not _held(registry, record.uuid)
            items.append(_balance.Item(record.uuid, record.name, used.cpu, max(used.memory_mb, claim), movable, record.server_group))
        found.append(_balance.NodeLoad(view.name, max(view.physical['vcpus'] - view.reserved.get('vcpus', 0), 0),
                                       max(view.physical['memory_mb'] - view.reserved.get('memory_mb', 0), 0), items, view.availability_zone))
    return found


def filter_check(ctx, views, records):
    """A balance.FilterCheck over the scheduler's candidates (the claims as the registry has them now), each instance's
    request as a migration makes it (its flavor, image, server group, networks with the backings they have), held to
    its node's hypervisor type and availability zone: a rebalance never takes an instance out of its failure domain
    (the registry does not record the zone an instance was booted into; its node's is the one it has)."""
    by_uuid = dict((r.uuid, r) for r in records)
    kinds = dict((v.name, v.hypervisor_type) for v in views)
    zones = dict((v.name, v.availability_zone) for v in views)
    groups = {}
    for record in records:
        if record.server_group and record.node:
            members = groups.setdefault(record.server_group, {})
            members[record.node] = members.get(record.node, 0) + 1

    def request_of(item, source):
        record = by_uuid[item.uuid]
        if ctx.registry.get_flavor(record.flavor) is None:
            return None  # no flavor, no claim to move: the scheduler cannot place it, so a plan leaves it
        try:
            req = _instances.move_request(ctx, record, None, 'instance %s was not moved' % record.name, keep_backing=True)
        except errors.MultihvError:
            return None
        return dataclasses.replace(req, hypervisor_type=req.hypervisor_type or kinds[source],
                                   availability_zone=req.availability_zone or zones[source])

    return _balance.FilterCheck(dict(ctx.scheduler().by_name), request_of, groups)


def rebalance(ctx, nodes=None, aggregate=None, availability_zone=None, aggressiveness=3, max_moves=10, concurrency=2,
              interval=5.0, check_mode=False):
    """Balance the load of the nodes selected (see the module docstring). Returns {changed, nodes, moves, skipped,
    failures, spread_before, spread_after, threshold, min_gain}; check mode plans and moves nothing, takes no lease."""
    check_options(aggressiveness, max_moves, concurrency, interval, nodes, aggregate, availability_zone)
    selected, skipped = select(ctx, nodes, aggregate, availability_zone)
    if check_mode:
        return _rebalance(ctx, selected, skipped, _balance.LEVELS[aggressiveness], max_moves, concurrency, interval, None)
    with _leases.on_nodes(ctx.registry, [v.name for v in selected], UNTOUCHED, 'rebalance') as held:
        return _rebalance(ctx, selected, skipped, _balance.LEVELS[aggressiveness], max_moves, concurrency, interval, held)


def _rebalance(ctx, selected, skipped, level, max_moves, concurrency, interval, held):
    usages, unmeasured = measure(ctx, selected, interval)
    skipped = skipped + unmeasured
    records = ctx.registry.list_instances()
    measured = loads(ctx, selected, usages, records)
    planned, _after = _balance.plan(measured, level, max_moves, filter_check(ctx, selected, records))
    outcomes = [('would run', None)] * len(planned) if held is None else _run(ctx, planned, concurrency, held)
    done = [move for move, (status, _detail) in zip(planned, outcomes) if status in ('would run', 'completed')]
    after = _balance.Balance(measured)
    for move in done:
        after.move(move.item, move.source, move.target)
    return {
        'changed': bool(done),
        'nodes': [_node_entry(node, after.loads[node.name]) for node in measured],
        'moves': [_move_entry(move, status, detail) for move, (status, detail) in zip(planned, outcomes)],
        'skipped': skipped,
        'failures': [{'name': move.item.name, 'msg': detail} for move, (status, detail) in zip(planned, outcomes) if status == 'failed'],
        'spread_before': round(_balance.spread(node.load for node in measured), DIGITS),
        'spread_after': round(after.spread(), DIGITS),
        'threshold': level.threshold,
        'min_gain': level.min_gain,
    }


def _node_entry(node, load_after):
    return {'node': node.name, 'cpus': node.cpus, 'memory_mb': node.memory_mb, 'cpu_used': round(node.cpu_used, DIGITS),
            'memory_mb_used': round(node.memory_used, 1), 'load_before': round(node.load, DIGITS), 'load_after': round(load_after, DIGITS),
            'instances': len(node.items), 'movable': sum(1 for item in node.items if item.movable)}


def _move_entry(move, status, detail):
    entry = {'instance': move.item.name, 'instance_uuid': move.item.uuid, 'source': move.source, 'target': move.target,
             'load_before': {'source': round(move.load_before[move.source], DIGITS), 'target': round(move.load_before[move.target], DIGITS)},
             'load_after': {'source': round(move.load_after[move.source], DIGITS), 'target': round(move.load_after[move.target], DIGITS)},
             'spread_before': round(move.spread_before, DIGITS), 'spread_after': round(move.spread_after, DIGITS),
             'status': status, 'migration': None}
    if status == 'completed':
        entry['migration'] = detail
    elif status == 'failed':
        entry['msg'] = detail
    return entry


def _run(ctx, planned, concurrency, held):
    """[(status, migration record or why it failed)] of the planned moves in their order: started `concurrency` at a
    time, never two at once on one node, and none before an earlier move that shares a node with it ended."""
    outcomes = [None] * len(planned)
    if not planned:
        return outcomes
    ctx.views()  # read once, before the workers share them
    pending, running = list(range(len(planned))), {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(concurrency, len(planned))) as pool:
        while pending or running:
            blocked = set(node for index in running.values() for node in (planned[index].source, planned[index].target))
            for index in list(pending):
                ends = {planned[index].source, planned[index].target}
                if len(running) < concurrency and not ends & blocked:
                    running[pool.submit(_move_apart, ctx, planned[index], held)] = index
                    pending.remove(index)
                blocked |= ends
            finished, _others = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                try:
                    outcomes[index] = ('completed', future.result()['migration'])
                except errors.MultihvError as exc:
                    outcomes[index] = ('failed', str(exc))
    return outcomes


def _move_apart(ctx, move, held):
    """One planned move on a worker's own context, as migrate makes it, once this run still holds both nodes."""
    name = move.item.name
    untouched = 'instance %s was not moved' % name
    with ctx.apart() as worker:
        registry = worker.registry
        for node in (move.source, move.target):
            held[node].check(registry)  # a run that lost a node's lease starts no move there
        with _leases.on_instance(registry, move.item.uuid, untouched, 'rebalance') as lease:
            record = registry.get_instance(uuid=move.item.uuid)
            if record is None or record.node != move.source or record.state != 'running':
                raise errors.MultihvError('instance %s no longer runs on node %s (another run moved, stopped or deleted it since it '
                                          'was measured); %s' % (name, move.source, untouched))
            return _migrations.run(worker, _migrations.plan(worker, record, 'auto', target_node=move.target), MigrationControls(), lease)


__all__ = ['MIN_INTERVAL', 'balanceable', 'check_options', 'loads', 'measure', 'rebalance', 'select', 'why_not']
