# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Maintenance mode of one host inside a node of several hosts (issue 18 §2: an ESXi host of a vSphere
cluster node). Private to multihv.cloud: do not import.

Entering moves the cloud's instances off the host first, to the node's other hosts, placed by the
scheduler's host fit (ClusterHostFit: the usable host with the most free RAM that has the vCPUs and RAM,
each placement counted before the next), never left to DRS; then the driver puts the host in maintenance
mode. Every move is planned before the first one starts: when the other hosts cannot take them all, or the
host is the last one up, or a VM the cloud cannot move runs there, the request is refused and nothing
moves. Stopped instances move too (cold), so that each can be started while the host is away; VMs that
are not the cloud's may stay there powered off, never running (a vCenter without DRS would wait for ever).

Leases and records: the node's lease is held from the plan to the end (renewed by its heartbeat, checked
before each move and before the host changes), so that no drain, evacuation or other maintenance of the
node runs meanwhile; each move holds its instance's lease and is a migration of the node to itself with a
source and destination host, recorded before the driver moves (migrations.run: intent first). A run killed
between moves leaves every finished move completed and the one under way running, which the reconciler
settles from where the VM is (reconcile.py: a migration inside a node ends completed when the VM is on its
destination host, failed otherwise); the host itself is then still out of maintenance, and a new run moves
what is left and enters it. The node's capacity drops as soon as the host is in maintenance: the drivers
report such a host not usable (HostResources.usable), so neither the views nor the scheduler count it.
"""

from __future__ import annotations

import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute import scheduler as _scheduler
from ansible_collections.multihv.cloud.plugins.module_utils._compute.records import Move
from ansible_collections.multihv.cloud.plugins.module_utils._constants import STATE_UP
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationControls

UNTOUCHED = 'nothing moved and the host was left as it was'
MOVABLE_STATES = ('running', 'stopped')


@dataclasses.dataclass(frozen=True)
class PlannedMove:
    """One instance to move off the host: where it is now (live), where it goes, and its size."""

    uuid: str
    name: str
    power_state: str
    vcpus: int
    memory_mb: int
    source_host: str
    dest_host: str

    def as_dict(self, node):
        """As a migration record reads (check mode's plan), with the instance's name."""
        return {'instance_uuid': self.uuid, 'instance_name': self.name, 'migration_type': self.mode, 'status': 'would run',
                'source_node': node, 'source_host': self.source_host, 'dest_node': node, 'dest_host': self.dest_host}

    @property
    def mode(self):
        """vMotion of a running instance; a cold move of any other (it holds nothing on a host)."""
        return 'live' if self.power_state == 'running' else 'cold'


def host_state(node, host):
    """What the module returns of a host (a HostResources) of node."""
    return {'name': host.name, 'node': node, 'in_maintenance': bool(host.in_maintenance), 'connection_state': host.connection_state}


def plan_moves(node, host, cpu_ratio, movable):
    """The PlannedMoves that empty host `host` (a HostResources) of node `node` (a NodeView or NodeResources):
    movable are (uuid, name, VMDetails or InstanceState: its power_state, vcpus, memory_mb) of the cloud's instances on it. Running ones first, the largest
    first, each onto the usable other host with the most free RAM that has its vCPUs (times cpu_ratio) and RAM
    (the scheduler's pick_host, the placement counted before the next); stopped ones onto such a host when one
    has room for them started, else onto the usable host with the most free RAM. errors.MultihvError, nothing
    planned, when the host is the last usable one or some running instance fits no other host."""
    others = [h for h in node.hosts if h.usable and h.name != host.name]
    if not others:
        states = ', '.join('%s %s' % (h.name, 'in maintenance' if h.in_maintenance else h.connection_state)
                           for h in node.hosts if h.name != host.name)
        raise errors.MultihvError('host %s is the last host up of node %s (%s): its instances would have nowhere to go; %s' % (
            host.name, node.name, 'its other hosts: %s' % states if states else 'it has no other host', UNTOUCHED))
    candidate = _scheduler.Candidate(name=node.name, hypervisor_type=node.hypervisor_type, hosts=[
        _scheduler.Host(h.name, True, h.free_vcpus(cpu_ratio), h.memory_mb_free) for h in others])
    free_before = ', '.join('%s %d vCPUs and %d MB' % (h.name, h.free_vcpus, h.free_memory_mb) for h in candidate.hosts)
    running = sorted((m for m in movable if m[2].power_state == 'running'), key=lambda m: (-m[2].memory_mb, -m[2].vcpus, m[1]))
    stopped = sorted((m for m in movable if m[2].power_state != 'running'), key=lambda m: m[1])
    planned, unplaced = [], []
    for inst_uuid, name, state in running:
        request = _scheduler.Request(vcpus=state.vcpus, memory_mb=state.memory_mb)
        dest = _scheduler.pick_host(request, candidate)
        if dest is None:
            unplaced.append('%s (%d vCPUs, %d MB)' % (name, state.vcpus, state.memory_mb))
            continue
        _scheduler.consume(candidate, request, dest)
        planned.append(PlannedMove(inst_uuid, name, state.power_state, state.vcpus, state.memory_mb, host.name, dest))
    if unplaced:
        raise errors.MultihvError('the other hosts of node %s cannot take the running instances of host %s: %s fit no host '
                                  '(free on them: %s); %s' % (node.name, host.name, ', '.join(unplaced), free_before, UNTOUCHED))
    for inst_uuid, name, state in stopped:
        dest = _scheduler.pick_host(_scheduler.Request(vcpus=state.vcpus, memory_mb=state.memory_mb), candidate)
        dest = dest or max(candidate.hosts, key=lambda h: (h.free_memory_mb, h.name)).name
        planned.append(PlannedMove(inst_uuid, name, state.power_state, state.vcpus, state.memory_mb, host.name, dest))
    return planned


def _live(ctx, node):
    """(NodeView of node, [NodeResources] of its endpoint's nodes), read now: one endpoint, not the whole cloud."""
    driver = ctx.driver_for(node)
    live = _nodes.collect([driver])
    found = [n for n in live if n.name == node]
    if not found:
        raise errors.NotFound('node %s is not a node of endpoint %s (it has %s); %s' % (
            node, driver.endpoint_name(), ', '.join(n.name for n in live) or 'none', UNTOUCHED))
    view = _nodes.view(ctx.config, found, ctx.registry.list_nodes(), ctx.drivers)[0]
    return view, live


def _the_host(view, live, host):
    """The HostResources named host in view; errors.NotFound naming where it is instead, or the node's hosts."""
    found = next((h for h in view.hosts if h.name == host), None)
    if found is not None:
        return found
    elsewhere = next((n.name for n in live if n.name != view.name and any(h.name == host for h in n.hosts)), None)
    where = ' (it is a host of node %s)' % elsewhere if elsewhere else ''
    raise errors.NotFound('node %s has no host %s%s; its hosts: %s; %s' % (
        view.name, host, where, ', '.join(h.name for h in view.hosts) or 'none', UNTOUCHED))


def _movable(ctx, driver, node, host):
    """[(uuid, name, VMDetails)] of the cloud's instances on host; errors.MultihvError naming every VM there that
    blocks the maintenance: a running VM that is not the cloud's (or has no record), an instance in another state
    than running or stopped (being built, resized, deleted: its own work is not finished)."""
    records = dict((r.uuid, r) for r in ctx.registry.list_instances(node=node))
    movable, blockers = [], []
    for vm in driver.list_vms(node):
        if vm.host != host:
            continue
        record = records.get(vm.marked_uuid) if vm.marked else None
        if record is None:
            if vm.power_state == 'running':
                blockers.append('VM %s runs there and is not one of the cloud\'s instances%s (move it or power it off, or adopt it with '
                                'multihv.cloud.instance_import)' % (vm.name, ' (it carries the mark of %s, which has no record)'
                                                                    % vm.marked_uuid if vm.marked else ''))
            continue  # a powered-off VM of someone else's stays registered there
        if record.state not in MOVABLE_STATES:
            blockers.append('instance %s is %s' % (record.name, record.state))
            continue
        movable.append((record.uuid, record.name, vm))  # its live power and size (a VMDetails)
    if blockers:
        raise errors.MultihvError('host %s of node %s cannot enter maintenance: %s; %s' % (host, node, '; '.join(blockers), UNTOUCHED))
    return movable


def _checked(ctx, node, host, enter):
    """(driver, NodeView, HostResources) of a request that may go on; every refusal about the node and host."""
    caps = ctx.capabilities(node)
    if caps is None:
        raise errors.NotFound('node %s is not in the cloud; %s' % (node, UNTOUCHED))
    if not caps.host_maintenance:
        if not caps.hosts_in_node:
            raise errors.MultihvError('node %s is a %s: the node is the host, it has no host %s to put in maintenance; take it out '
                                      'of scheduling with enabled false and move its instances with multihv.cloud.migrate (drain); '
                                      '%s' % (node, caps.node_noun, host, UNTOUCHED))
        raise errors.MultihvError('%s nodes cannot put one of their hosts in maintenance (node %s, host %s); %s' % (
            caps.label, node, host, UNTOUCHED))
    view, live = _live(ctx, node)
    if view.state != STATE_UP:
        raise errors.MultihvError('node %s is %s (%s); %s' % (node, view.state, view.reason or 'no reason given', UNTOUCHED))
    target = _the_host(view, live, host)
    if enter and not target.in_maintenance and target.connection_state != 'connected':
        raise errors.MultihvError('host %s of node %s is %s: its VMs cannot be moved off it by vMotion, and its cluster\'s HA '
                                  'restarts them elsewhere by itself; %s' % (host, node, target.connection_state, UNTOUCHED))
    return ctx.driver_for(node), view, target


def set_host_maintenance(ctx, node, host, enter, check_mode=False):
    """Put host `host` of node `node` into maintenance mode (enter True), its instances moved to the node's other hosts
    first, or take it out (False). Returns {changed, host: before, after (host_state), migrations}: the migration records
    of the moves made (check mode: the planned moves, status 'would run'), each with the instance's name. Idempotent:
    a host in the state asked already is left alone (changed False). Refusals (unknown host, another node's host, a
    node whose type has no host maintenance, the last host up, instances that do not fit, VMs that cannot move) say
    why, and nothing moved. A move that fails stops the run: the host stays out of maintenance, the moves made before
    it stay made (their records completed), the error says which."""
    driver, view, target = _checked(ctx, node, host, enter)
    before = host_state(node, target)
    if bool(target.in_maintenance) == bool(enter):
        return {'changed': False, 'host': before, 'before': before, 'migrations': []}
    after = dict(before, in_maintenance=bool(enter))
    if not enter:
        if not check_mode:
            with _leases.on_node(ctx.registry, node, 'host %s was left in maintenance' % host, 'host maintenance'):
                driver.set_host_maintenance(node, host, False)
        return {'changed': True, 'host': after, 'before': before, 'migrations': []}
    if check_mode:
        planned = plan_moves(view, target, view.allocation_ratios['cpu'], _movable(ctx, driver, node, host))
        return {'changed': True, 'host': after, 'before': before, 'migrations': [m.as_dict(node) for m in planned]}
    with _leases.on_node(ctx.registry, node, UNTOUCHED, 'host maintenance') as node_lease:
        # Read again under the lease: another run may have moved instances or changed the host meanwhile.
        driver, view, target = _checked(ctx, node, host, enter)
        if target.in_maintenance:
            return {'changed': False, 'host': host_state(node, target), 'before': host_state(node, target), 'migrations': []}
        planned = plan_moves(view, target, view.allocation_ratios['cpu'], _movable(ctx, driver, node, host))
        done = []
        for move in planned:
            try:
                node_lease.check()
                migration = _move(ctx, node, move)
            except errors.MultihvError as exc:
                raise _stopped(exc, node, host, done, planned) from exc
            if migration is not None:
                done.append(migration)
        try:
            node_lease.check()
            driver.set_host_maintenance(node, host, True)
        except errors.MultihvError as exc:
            raise _stopped(exc, node, host, done, []) from exc
    return {'changed': True, 'host': after, 'before': before, 'migrations': done}


def _move(ctx, node, move):
    """Move one instance to its planned host under its lease, recorded as a migration inside the node (migrations.run:
    intent first); its migration record as a dict with the instance's name, or None when another run moved or deleted
    it since the plan."""
    registry = ctx.registry
    with _leases.on_instance(registry, move.uuid, 'instance %s was not moved' % move.name, 'host maintenance') as lease:
        record = registry.get_instance(uuid=move.uuid)
        if record is None or record.node != node or record.state not in MOVABLE_STATES:
            return None
        # The VM's host as the hypervisor reported it (the record's may be older: vCenter's DRS moves VMs by itself).
        record = dataclasses.replace(record, host=move.source_host)
        result = _migrations.run(ctx, Move(record, move.mode, node, node, move.dest_host), MigrationControls(), lease)
        return dict(result['migration'], instance_name=move.name)


def _stopped(exc, node, host, done, planned):
    """The error of a run that stopped before the host entered maintenance: what failed, what moved, what is left."""
    moved = ', '.join('%s to %s' % (m['instance_name'], m['dest_host']) for m in done) or 'none'
    left = [m.name for m in planned if m.uuid not in set(d['instance_uuid'] for d in done)]
    kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
    return kind('host %s of node %s was not put in maintenance: %s; moved before it stopped: %s%s' % (
        host, node, exc, moved, '; still on it: %s' % ', '.join(left) if left else ''))


def diff(result):
    """The host's maintenance before and after, for diff mode."""
    return {'before': {'host': result['before']['name'], 'in_maintenance': result['before']['in_maintenance']},
            'after': {'host': result['host']['name'], 'in_maintenance': result['host']['in_maintenance']}}


__all__ = ['PlannedMove', 'diff', 'host_state', 'plan_moves', 'set_host_maintenance']
