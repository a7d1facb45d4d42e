"""Per-VM HA overrides and server groups as DRS VM-VM rules (issue 18 §3, §4), the pure part: the restart priority
mapping, the override and rule specs, the diff against what a cluster has, the contradictions refused, and the plan of
one cluster from PropertyCollector records. No vCenter here (tests/integration/test_vsphere_node_rules.py has vcsim)."""

from __future__ import annotations

import uuid as uuidlib

import pytest
from pyVmomi import SoapAdapter, vim

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import GroupRule, InstanceRule
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import drs_rules, node_rules, vm_overrides
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import format_annotation
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.drs_rules import Rule


def vm(moid):
    return vim.VirtualMachine(moid)


@pytest.mark.parametrize('ha, priority, expected', [
    (False, 5, None), (False, 0, None), (True, None, 'high'), (True, 0, 'high'), (True, 1, 'highest'), (True, 2, 'highest'),
    (True, 100, 'highest'), (True, -1, 'medium'), (True, -2, 'low'), (True, -3, 'lowest'), (True, -50, 'lowest'),
])
def test_ha_and_restart_priority_map_to_vsphere_restart_priorities_in_order(ha, priority, expected):
    """Without ha, no override (the cluster's default, vSphere's medium unless vsphere_cluster changed it); with ha, a
    level above that default for priority 0, so that ha instances restart first."""
    assert vm_overrides.restart_priority_of(ha, priority) == expected
    assert expected is None or expected in [str(p) for p in (vim.cluster.DasVmSettings.RestartPriority.disabled,) + tuple(
        getattr(vim.cluster.DasVmSettings.RestartPriority, level) for level in vm_overrides.LEVELS)]


def test_overrides_are_read_by_vm_and_only_what_differs_changes():
    current = vm_overrides.overrides_of([
        vim.cluster.DasVmConfigInfo(key=vm('vm-1'), dasSettings=vim.cluster.DasVmSettings(restartPriority='high')),
        vim.cluster.DasVmConfigInfo(key=vm('vm-2'), dasSettings=vim.cluster.DasVmSettings(restartPriority='disabled')),
        vim.cluster.DasVmConfigInfo(key=vm('vm-3'), dasSettings=vim.cluster.DasVmSettings()),
        vim.cluster.DasVmConfigInfo(key=vm('vm-9'), dasSettings=vim.cluster.DasVmSettings(restartPriority='low')),  # someone else's VM
    ])
    assert current == {'vm-1': 'high', 'vm-2': 'disabled', 'vm-3': None, 'vm-9': 'low'}
    wanted = {'vm-1': 'high', 'vm-2': 'medium', 'vm-3': 'disabled', 'vm-4': 'lowest'}
    assert vm_overrides.override_changes(wanted, current, gone=['vm-7', 'vm-8']) == [
        ('edit', 'vm-2', 'medium'), ('edit', 'vm-3', 'disabled'), ('add', 'vm-4', 'lowest')]
    assert vm_overrides.override_changes(wanted, current, gone=['vm-9'])[-1] == ('remove', 'vm-9', None)
    assert vm_overrides.override_changes({'vm-1': 'high'}, {'vm-1': 'high'}, gone=[]) == []
    # An instance without ha has no override: one it had goes, and none is added.
    assert vm_overrides.override_changes({'vm-1': None, 'vm-4': None}, current, gone=[]) == [('remove', 'vm-1', None)]


def test_override_specs_say_what_vcenter_needs():
    added = vm_overrides.override_spec('add', vm('vm-4'), 'lowest')
    assert (added.operation, added.info.key._moId, added.info.dasSettings.restartPriority) == ('add', 'vm-4', 'lowest')
    removed = SoapAdapter.Serialize(vm_overrides.override_spec('remove', vm('vm-9'), None)).decode()
    assert '<operation>remove</operation>' in removed and 'type="VirtualMachine">vm-9</removeKey>' in removed


def test_rules_are_read_with_their_kind_and_vms():
    infos = [vim.cluster.AffinityRuleSpec(key=1, name='multihv-web', enabled=True, mandatory=False, vm=[vm('vm-1'), vm('vm-2')]),
             vim.cluster.AntiAffinityRuleSpec(key=2, name='theirs', enabled=False, vm=[vm('vm-3'), vm('vm-4')]),
             vim.cluster.VmHostRuleInfo(key=3, name='pin', enabled=True, vmGroupName='g', affineHostGroupName='h')]
    assert drs_rules.rules_of(infos) == [
        Rule('multihv-web', 'affinity', frozenset({'vm-1', 'vm-2'}), True, False, 1),
        Rule('theirs', 'anti-affinity', frozenset({'vm-3', 'vm-4'}), False, False, 2),
        Rule('pin', None, frozenset(), True, False, 3)]
    assert [r.ours for r in drs_rules.rules_of(infos)] == [True, False, False]


def test_every_policy_is_a_rule_of_its_kind_once_two_members_are_there():
    wanted = drs_rules.wanted_rules({'a': ('affinity', ['vm-1', 'vm-2']), 'b': ('soft-affinity', ['vm-3', 'vm-4']),
                                     'c': ('anti-affinity', ['vm-5', 'vm-6', 'vm-7']), 'd': ('soft-anti-affinity', ['vm-8', 'vm-9']),
                                     'e': ('anti-affinity', ['vm-10'])})
    assert dict((name, (r.kind, sorted(r.vms))) for name, r in wanted.items()) == {
        'multihv-a': ('affinity', ['vm-1', 'vm-2']), 'multihv-b': ('affinity', ['vm-3', 'vm-4']),
        'multihv-c': ('anti-affinity', ['vm-5', 'vm-6', 'vm-7']), 'multihv-d': ('anti-affinity', ['vm-8', 'vm-9'])}


def test_rule_changes_touch_only_the_cloud_s_rules():
    current = [Rule('multihv-keep', 'affinity', frozenset({'vm-1', 'vm-2'}), key=1),
               Rule('multihv-grow', 'anti-affinity', frozenset({'vm-3', 'vm-4'}), key=2),
               Rule('multihv-flip', 'affinity', frozenset({'vm-5', 'vm-6'}), key=3),
               Rule('multihv-off', 'affinity', frozenset({'vm-7', 'vm-8'}), enabled=False, key=4),
               Rule('multihv-gone', 'affinity', frozenset({'vm-11', 'vm-12'}), key=5),
               Rule('multihv-other-registry', 'affinity', frozenset({'vm-13', 'vm-14'}), key=6),
               Rule('theirs', 'affinity', frozenset({'vm-9', 'vm-10'}), key=7)]
    wanted = drs_rules.wanted_rules({'keep': ('affinity', ['vm-1', 'vm-2']), 'grow': ('anti-affinity', ['vm-3', 'vm-4', 'vm-15']),
                                     'flip': ('anti-affinity', ['vm-5', 'vm-6']), 'off': ('affinity', ['vm-7', 'vm-8']),
                                     'new': ('affinity', ['vm-16', 'vm-17'])})
    changes = drs_rules.rule_changes(current, wanted, removable=lambda rule: rule.name != 'multihv-other-registry')
    assert [(op, r.name, r.kind, sorted(r.vms), r.key) for op, r in changes] == [
        ('remove', 'multihv-gone', 'affinity', ['vm-11', 'vm-12'], 5),
        ('remove', 'multihv-flip', 'affinity', ['vm-5', 'vm-6'], 3),  # a rule's type cannot change: removed, then added
        ('add', 'multihv-flip', 'anti-affinity', ['vm-5', 'vm-6'], None),
        ('edit', 'multihv-grow', 'anti-affinity', ['vm-15', 'vm-3', 'vm-4'], 2),
        ('add', 'multihv-new', 'affinity', ['vm-16', 'vm-17'], None),
        ('edit', 'multihv-off', 'affinity', ['vm-7', 'vm-8'], 4)]  # enabled again
    assert drs_rules.rule_changes(current[:1], drs_rules.wanted_rules({'keep': ('affinity', ['vm-2', 'vm-1'])})) == []


def test_rule_specs_are_enabled_not_mandatory_and_edits_carry_the_key():
    refs = vm
    added = drs_rules.rule_spec('add', Rule('multihv-a', 'anti-affinity', frozenset({'vm-2', 'vm-1'})), refs)
    assert isinstance(added.info, vim.cluster.AntiAffinityRuleSpec) and added.operation == 'add'
    assert (added.info.name, added.info.enabled, added.info.mandatory, [v._moId for v in added.info.vm]) == (
        'multihv-a', True, False, ['vm-1', 'vm-2'])
    edited = drs_rules.rule_spec('edit', Rule('multihv-b', 'affinity', frozenset({'vm-3', 'vm-4'}), key=7), refs)
    assert isinstance(edited.info, vim.cluster.AffinityRuleSpec) and (edited.operation, edited.info.key) == ('edit', 7)
    removed = drs_rules.rule_spec('remove', Rule('multihv-c', 'affinity', key=9), refs)
    assert (removed.operation, removed.removeKey, removed.info) == ('remove', 9, None)
    assert '<removeKey xsi:type="xsd:int">9</removeKey>' in SoapAdapter.Serialize(removed).decode()


def test_a_rule_of_ours_that_contradicts_another_s_is_found_directly_or_through_a_chain():
    names = {'vm-1': 'db-1', 'vm-2': 'db-2', 'vm-3': 'db-3'}
    ours = drs_rules.wanted_rules({'db': ('anti-affinity', ['vm-1', 'vm-2'])})
    direct = [Rule('keep-together', 'affinity', frozenset({'vm-1', 'vm-2'}))]
    assert drs_rules.conflicts(direct, ours, names) == [
        'rule multihv-db keeps db-1 and db-2 apart, and affinity rule keep-together keeps them together']
    chain = [Rule('one', 'affinity', frozenset({'vm-1', 'vm-3'})), Rule('two', 'affinity', frozenset({'vm-3', 'vm-2'}))]
    assert drs_rules.conflicts(chain, ours, names) == [
        'rule multihv-db keeps db-1 and db-2 apart, and affinity rules one, two keep them together']
    together = drs_rules.wanted_rules({'db': ('affinity', ['vm-1', 'vm-2'])})
    apart = [Rule('spread', 'anti-affinity', frozenset({'vm-1', 'vm-2', 'vm-3'}))]
    assert drs_rules.conflicts(apart, together, names) == [
        'rule spread keeps db-1 and db-2 apart, and affinity rule multihv-db keeps them together']


def test_what_is_no_contradiction():
    ours = drs_rules.wanted_rules({'db': ('anti-affinity', ['vm-1', 'vm-2'])})
    assert drs_rules.conflicts([Rule('off', 'affinity', frozenset({'vm-1', 'vm-2'}), enabled=False)], ours) == []  # disabled
    assert drs_rules.conflicts([Rule('more', 'anti-affinity', frozenset({'vm-1', 'vm-2'}))], ours) == []  # the same sense
    assert drs_rules.conflicts([Rule('one', 'affinity', frozenset({'vm-1', 'vm-3'}))], ours) == []  # one VM in common
    theirs_alone = [Rule('x', 'affinity', frozenset({'vm-5', 'vm-6'})), Rule('y', 'anti-affinity', frozenset({'vm-5', 'vm-6'}))]
    assert drs_rules.conflicts(theirs_alone, ours) == []  # not the cloud's to judge
    # Our own rule as read (an older copy of it) never counts against the new one.
    assert drs_rules.conflicts([Rule('multihv-db', 'affinity', frozenset({'vm-1', 'vm-2'}))], ours) == []


# ---------------------------------------------------------------- one cluster's plan from PropertyCollector records

DB1, DB2, WEB, MOVED = (str(uuidlib.UUID(int=n)) for n in (1, 2, 3, 4))


def instance_vm(inst_uuid, name, host):
    return {'name': name, 'config.uuid': inst_uuid, 'config.annotation': format_annotation(inst_uuid, {}), 'runtime.host': host}


def objects(rules=(), overrides=()):
    """A cluster domain-c1 (hosts host-1, host-2) with db-1, db-2, web-1 and a VM made by hand; MOVED's VM is on another
    cluster's host now."""
    return {
        'HostSystem': {'host-1': {'parent': 'domain-c1'}, 'host-2': {'parent': 'domain-c1'}, 'host-9': {'parent': 'domain-c9'}},
        'VirtualMachine': {'vm-1': instance_vm(DB1, 'db-1', 'host-1'), 'vm-2': instance_vm(DB2, 'db-2', 'host-2'),
                           'vm-3': instance_vm(WEB, 'web-1', 'host-1'), 'vm-4': instance_vm(MOVED, 'moved', 'host-9'),
                           'vm-5': {'name': 'by-hand', 'runtime.host': 'host-2'}},
    }, {'configurationEx.rule': list(rules), 'configurationEx.dasVmConfig': list(overrides)}


def test_the_plan_of_a_cluster_sets_overrides_and_rules_of_its_instances_and_leaves_the_rest():
    overrides = [vim.cluster.DasVmConfigInfo(key=vm(moid), dasSettings=vim.cluster.DasVmSettings(restartPriority=priority))
                 for moid, priority in (('vm-1', 'disabled'), ('vm-2', 'high'), ('vm-4', 'high'), ('vm-5', 'low'), ('vm-404', 'high'))]
    found, props = objects(overrides=overrides)
    instances = [InstanceRule(DB1, 'db-1', True, 1), InstanceRule(DB2, 'db-2'), InstanceRule(WEB, 'web-1', True, -1),
                 InstanceRule(str(uuidlib.UUID(int=99)), 'unborn')]
    groups = [GroupRule('db', 'anti-affinity', (DB1, DB2)), GroupRule('solo', 'affinity', (WEB,))]
    planned = node_rules.plan(found, 'domain-c1', props, instances, groups)
    assert planned.overrides == [('edit', 'vm-1', 'highest'), ('remove', 'vm-2', None), ('add', 'vm-3', 'medium'), ('remove', 'vm-4', None)]
    assert [(op, r.name, r.kind, sorted(r.vms)) for op, r in planned.rules] == [('add', 'multihv-db', 'anti-affinity', ['vm-1', 'vm-2'])]
    assert planned.changes == [
        'instance db-1: HA restart priority highest (was disabled)',
        "instance db-2: HA override removed (no ha: the cluster's default restart priority)",
        'instance web-1: HA restart priority medium', 'VM moved: HA override removed (the VM is no longer in the cluster)',
        'rule multihv-db: added, anti-affinity of db-1, db-2']
    assert planned.skipped == ['instance unborn: no VM of it on the cluster yet']
    # vm-5 (made by hand) and vm-404 (a VM deleted: vCenter drops its override itself) are left as they are.


def test_the_plan_removes_a_rule_of_ours_only_when_it_names_an_instance_here_or_a_vm_that_is_gone():
    rules = [vim.cluster.AffinityRuleSpec(key=1, name='multihv-db', enabled=True, vm=[vm('vm-1'), vm('vm-2')]),
             vim.cluster.AffinityRuleSpec(key=2, name='multihv-old', enabled=True, vm=[vm('vm-404'), vm('vm-405')]),
             vim.cluster.AffinityRuleSpec(key=3, name='multihv-elsewhere', enabled=True, vm=[vm('vm-5'), vm('vm-4')])]
    found, props = objects(rules=rules)
    planned = node_rules.plan(found, 'domain-c1', props, [InstanceRule(DB1, 'db-1')], [GroupRule('db', 'affinity', (DB1,))])
    assert [(op, r.name) for op, r in planned.rules] == [('remove', 'multihv-db'), ('remove', 'multihv-old')]


def test_the_plan_refuses_a_contradiction_before_anything():
    rules = [vim.cluster.AffinityRuleSpec(key=1, name='keep-together', enabled=True, vm=[vm('vm-1'), vm('vm-2')])]
    found, props = objects(rules=rules)
    with pytest.raises(errors.RuleConflict, match='^rule multihv-db keeps db-1 and db-2 apart, and affinity rule keep-together keeps'):
        node_rules.plan(found, 'domain-c1', props, [InstanceRule(DB1, 'db-1'), InstanceRule(DB2, 'db-2')],
                        [GroupRule('db', 'soft-anti-affinity', (DB1, DB2))])
