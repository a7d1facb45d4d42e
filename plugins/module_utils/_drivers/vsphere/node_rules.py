# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a cluster node's HA and DRS are told of the cloud's instances (issue 18 §3): the I/O of
VSphereDriver.sync_node_rules. Private to multihv.cloud: do not import.

One PropertyCollector retrieval (RULES_PROPERTIES: the VMs with what marks an instance and where it runs, the clusters
with their VM overrides and rules), the plan (vm_overrides.py, drs_rules.py: pure), then, only when something differs
and not in check mode, one ReconfigureComputeResource_Task with modify=True carrying the dasVmConfigSpec and
rulesSpec entries (the cluster's other settings unset, so kept), and one retrieval of the cluster to check that it reads
back as sent. A contradiction with someone else's rule is refused before anything is sent.
"""

from __future__ import annotations

import collections

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import RulesSync
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import drs_rules, vm_overrides
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import managed_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.cluster import find_cluster
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import (
    LIST_PROPERTIES, by_kind, merge_properties, retrieve_inventory, retrieve_objects, stub, vm_name,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

RULE, DAS_VM = 'configurationEx.rule', 'configurationEx.dasVmConfig'
RULES_PROPERTIES = merge_properties(LIST_PROPERTIES, collections.OrderedDict([('ClusterComputeResource', (RULE, DAS_VM))]))

Plan = collections.namedtuple('Plan', 'overrides rules changes skipped')


def cluster_vms(objects, cluster):
    """({instance uuid: VM moid} of the cloud's instances on the cluster's hosts, {moid: name} of every VM there)."""
    hosts = set(moid for moid, props in objects['HostSystem'].items() if props.get('parent') == cluster)
    instances, names = {}, {}
    for moid, props in sorted(objects['VirtualMachine'].items()):
        if props.get('runtime.host') not in hosts:
            continue
        names[moid] = vm_name(props.get('name'))
        inst = managed_uuid(props)
        if inst is not None:
            instances.setdefault(inst, moid)
    return instances, names


def plan(objects, cluster, props, instances, groups):
    """The Plan that makes cluster (its props as read) agree with instances ([InstanceRule]) and groups ([GroupRule]):
    override changes, rule changes, their sentences, and what was skipped. errors.RuleConflict when a rule of ours would
    contradict another's."""
    vms, names = cluster_vms(objects, cluster)
    every = objects['VirtualMachine']
    labels = dict((moid, "VM %s" % vm_name(vm_props.get("name"))) for moid, vm_props in every.items())
    skipped, wanted_ha = [], {}
    for inst in instances:
        moid = vms.get(inst.uuid)
        if moid is None:
            skipped.append('instance %s: no VM of it on the cluster yet' % inst.name)
            continue
        labels[moid] = 'instance %s' % inst.name
        wanted_ha[moid] = vm_overrides.restart_priority_of(inst.ha, inst.restart_priority)
    current_ha = vm_overrides.overrides_of(props.get(DAS_VM))
    # An instance that moved to another cluster may leave its override on this one: it is removed. A deleted VM's is left:
    # vCenter drops a VM's overrides with it (the simulator keeps them, harmlessly), and whose it was cannot be told.
    moved = [moid for moid in current_ha if moid in every and moid not in names and managed_uuid(every[moid]) is not None]
    overrides = vm_overrides.override_changes(wanted_ha, current_ha, moved)
    wanted_groups = {}
    for group in groups:
        members = [vms[u] for u in group.members if u in vms]
        if len(members) < len(group.members):
            skipped.append('server group %s: %d of its %d members here have no VM on the cluster yet' % (
                group.name, len(group.members) - len(members), len(group.members)))
        wanted_groups[group.name] = (group.policy, members)
    current = drs_rules.rules_of(props.get(RULE))
    wanted = drs_rules.wanted_rules(wanted_groups)
    contradictions = drs_rules.conflicts(current, wanted, names)
    if contradictions:
        raise errors.RuleConflict('; '.join(contradictions))
    recorded = set(wanted_ha)

    def removable(rule):
        """One of ours that names an instance recorded on this node, or a VM that is gone: another registry's rules on a
        shared vCenter name neither."""
        return bool(rule.vms & recorded) or any(vm not in every for vm in rule.vms)
    rules = drs_rules.rule_changes(current, wanted, removable)
    changes = [_override_sentence(op, moid, priority, current_ha.get(moid), labels) for op, moid, priority in overrides]
    changes += [_rule_sentence(op, rule, names) for op, rule in rules]
    return Plan(overrides, rules, changes, skipped)


def _override_sentence(operation, moid, priority, before, labels):
    what = labels.get(moid, 'VM %s' % moid)
    if operation == 'add':
        return '%s: HA restart priority %s' % (what, priority)
    if operation == 'edit':
        return '%s: HA restart priority %s (was %s)' % (what, priority, before or 'the cluster\'s')
    if moid in labels and labels[moid].startswith('instance '):
        return '%s: HA override removed (no ha: the cluster\'s default restart priority)' % what
    return '%s: HA override removed (the VM is no longer in the cluster)' % what


def _rule_sentence(operation, rule, names):
    vms = ', '.join(sorted(names.get(vm, vm) for vm in rule.vms))
    if operation == 'remove':
        return 'rule %s: removed' % rule.name
    return 'rule %s: %s, %s of %s' % (rule.name, 'added' if operation == 'add' else 'set to', rule.kind, vms)


def sync(content, vcenter, node, instances, groups, check_mode, deadline):
    """VSphereDriver.sync_node_rules on a logged-in session: a RulesSync."""
    records = retrieve_inventory(content, RULES_PROPERTIES)
    cluster, props = find_cluster(vcenter, records, node)
    objects = by_kind(records)
    where = 'cluster %s of vCenter %s' % (node, vcenter.name)
    try:
        planned = plan(objects, cluster, props, instances, groups)
    except errors.RuleConflict as exc:
        raise errors.RuleConflict('%s: %s; no HA override or DRS rule was changed' % (where, exc)) from None
    result = RulesSync(node, list(planned.changes), list(planned.skipped))
    if check_mode or not planned.changes:
        return result
    refs = stub(content)

    def vm(moid):
        return vim.VirtualMachine(moid, refs)

    spec = vim.cluster.ConfigSpecEx(
        dasVmConfigSpec=[vm_overrides.override_spec(op, vm(moid), priority) for op, moid, priority in planned.overrides],
        rulesSpec=[drs_rules.rule_spec(op, rule, vm) for op, rule in planned.rules])
    ref = vim.ClusterComputeResource(cluster, refs)
    wait_task(content.propertyCollector, ref.ReconfigureComputeResource_Task(spec=spec, modify=True), deadline,
              'ReconfigureComputeResource_Task (HA overrides and DRS rules) of %s' % where)
    answer = retrieve_objects(content.propertyCollector, [ref], 'ClusterComputeResource', (RULE, DAS_VM))
    if not answer:
        raise errors.NotFound('%s was deleted while its HA overrides and DRS rules were set' % where)
    again = plan(objects, cluster, answer[0].props, instances, groups)
    if again.changes:
        raise errors.DriverError('%s completed the reconfiguration but still differs: %s' % (where, '; '.join(again.changes)))
    return result


__all__ = ['RULES_PROPERTIES', 'cluster_vms', 'plan', 'sync']
