# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a node's own HA and DRS are told of the cloud's instances (issue 18 §3). Private to multihv.cloud: do not import.

On a node whose driver keeps per-VM HA and DRS rules (Capabilities.node_rules: a vSphere cluster), each instance's ha and
restart_priority become its VM's HA restart override, and each server group with two members or more there a VM-VM
rule (see the driver for the mapping). These are derived state: the registry says what they must be, and sync() makes
one node agree with it, declaratively (what the node has is read back and only what differs is sent), so the same call
serves after any change and in the reconciler. It is called once per node an operation changed (a boot, a delete, a
rebuild, a move, new ha settings: after()), never per instance of a batch.

A sync that fails never undoes nor fails the operation before it: the instance, its record and its claim are what
matter, and they are done. It is reported as a warning (after()) that names the node and says that
multihv.cloud.reconcile (its `rules` step), or the next task on that node, sets them. A rule that would contradict a
rule someone made on the node (errors.RuleConflict) is a refusal of the sync alone: nothing is sent to the node.
Nodes without the capability are skipped without a word (KVM: the core's scheduler and instance HA are all there is).
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import STATE_UP
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import GroupRule, InstanceRule


# Records whose VM is still being made (a boot, an adoption): their run syncs the node once it is done, and the reconciler
# settles them first when the run died; a half-made VM is never given an override or put in a rule.
UNSETTLED = ('building', 'adopting')


def wanted(registry, node):
    """([InstanceRule], [GroupRule]) of the instances the registry records on node (those settled) and their server groups."""
    records = [r for r in registry.list_instances(node=node) if r.state not in UNSETTLED]
    instances = [InstanceRule(r.uuid, r.name, bool(r.ha), int(r.restart_priority or 0)) for r in records]
    members = {}
    for record in records:
        if record.server_group:
            members.setdefault(record.server_group, []).append(record.uuid)
    groups = []
    for name, uuids in sorted(members.items()):
        group = registry.get_server_group(name)
        if group is not None:
            groups.append(GroupRule(name, group['policy'], tuple(uuids)))
    return instances, groups


def keeps_rules(ctx, node):
    """True when node's driver keeps per-VM HA and DRS rules (asked of the configuration, no I/O)."""
    caps = ctx.capabilities(node) if node else None
    return bool(caps is not None and caps.node_rules)


def sync(ctx, node, check_mode=False):
    """Make node's HA overrides and VM-VM rules agree with the registry: the driver's RulesSync, or None for a node that
    keeps none. Errors are raised (errors.RuleConflict: nothing was sent)."""
    if not keeps_rules(ctx, node):
        return None
    instances, groups = wanted(ctx.registry, node)
    return ctx.driver_for(node).sync_node_rules(node, instances, groups, check_mode=check_mode)


def after(ctx, result, nodes):
    """sync() each of `nodes` (those that keep rules; once each) after an operation that changed instances there, and add
    a warning to result['warnings'] for each that failed: the operation stands."""
    for node in sorted(set(n for n in nodes if n)):
        if not keeps_rules(ctx, node):
            continue
        try:
            sync(ctx, node)
        except errors.MultihvError as exc:
            result.setdefault('warnings', []).append(
                'the HA overrides and DRS rules of node %s were not brought up to date: %s; multihv.cloud.reconcile (or the next '
                'task that changes an instance there) sets them' % (node, exc))
    return result


def plan_rules(plan):
    """The reconciler's `rules` step (reconcile.py's Plan, duck-typed: ctx, survey, add): one action per node that keeps
    rules, answers and differs from the registry, found by a sync in check mode; its work syncs the node. A node whose
    check fails (a contradiction, a refusal) gets an action whose work raises that error, so the pass reports it and the
    other nodes go on. Only the endpoints that keep rules and answered the pass's survey are asked for their nodes (one
    get_nodes each): an endpoint that did not answer has its instances reported unknown already."""
    ctx = plan.ctx
    for driver in ctx.drivers:
        if not driver.capabilities.node_rules or driver.endpoint_name() in plan.survey.down:
            continue
        try:
            nodes = sorted(n.name for n in driver.get_nodes() if n.state == STATE_UP)
        except errors.MultihvError as exc:
            plan.add('rules', None, None, driver.endpoint_name(), 'its nodes cannot be listed: %s' % exc, 'nothing',
                     lambda exc=exc: _raise(exc), unchanged=lambda: True, lease='')
            continue
        for node in nodes:
            _plan_node(plan, node)


def _plan_node(plan, node):
    ctx = plan.ctx
    try:
        would = sync(ctx, node, check_mode=True)
    except errors.MultihvError as exc:
        plan.add('rules', None, None, node, 'its HA overrides and DRS rules cannot be checked: %s' % exc, 'nothing',
                 lambda exc=exc: _raise(exc), unchanged=lambda: True, lease='')
        return
    if would is not None and would.changed:
        plan.add('rules', None, None, node, 'its HA overrides and DRS rules differ from the registry: %s' % '; '.join(would.changes),
                 'set them (one reconfiguration)', lambda: sync(ctx, node), unchanged=lambda: True, lease='')


def _raise(exc):
    raise exc


__all__ = ['UNSETTLED', 'after', 'keeps_rules', 'plan_rules', 'sync', 'wanted']
