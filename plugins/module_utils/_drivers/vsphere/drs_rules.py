# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Server groups as DRS VM-VM rules of a cluster node (issue 18 §3 and §4). Private to multihv.cloud: do not import.

A server group with at least two members whose VMs are on one cluster becomes one rule there, named
`multihv-<group>` (rule_name), so that it is found again by its name without a registry column: affinity and
soft-affinity a ClusterAffinityRuleSpec (DRS keeps the VMs on one ESXi host), anti-affinity and soft-anti-affinity a
ClusterAntiAffinityRuleSpec (DRS keeps them on different hosts). The group's policy is the scheduler's between nodes
(a cluster is one node); inside a cluster the rule is what keeps DRS's own moves in its spirit.

Every rule is enabled and not mandatory, hard policies too: vSphere never lets HA restart, DRS evacuate a host for
maintenance or a user power on a VM against a mandatory rule, and the cloud must never stop vSphere HA from restarting
an instance for a placement preference. VM-VM rules have no other "should" form (only VM-Host rules do), so the soft
and hard policies make the same rule; the difference is the scheduler's, between nodes.

A rule whose name starts with `multihv-` is the cloud's: it is added, edited and removed to match the groups (removed
once fewer than two members' VMs are on the cluster; the driver removes only such a rule that names an instance the
registry puts on the node, or a VM that is gone, so that one registry never removes another's rules on a shared
vCenter). Any other rule is someone else's and never changed; but a rule of ours that would contradict one of them is
refused (conflicts): two VMs an anti-affinity rule keeps apart that affinity rules keep together, directly or through a
chain of enabled affinity rules (vSphere does not validate rules against each other: it disables the newer of two
conflicting rules). A contradiction among others' rules alone is
not the cloud's to judge. VM-Host rules (host groups) are not compared.

Pure functions of the rules as read (configurationEx.rule) and the groups as wanted.
"""

from __future__ import annotations

import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import plain
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

PREFIX = 'multihv-'
AFFINITY, ANTI_AFFINITY = 'affinity', 'anti-affinity'
# The server group policies (_constants.GROUP_POLICIES) and the kind of VM-VM rule each becomes.
KIND_OF_POLICY = {'affinity': AFFINITY, 'soft-affinity': AFFINITY, 'anti-affinity': ANTI_AFFINITY, 'soft-anti-affinity': ANTI_AFFINITY}
# The rule types (their WSDL names) the kinds are.
KIND_OF_TYPE = {'ClusterAffinityRuleSpec': AFFINITY, 'ClusterAntiAffinityRuleSpec': ANTI_AFFINITY}


@dataclasses.dataclass(frozen=True)
class Rule:
    """A VM-VM rule as read or wanted: kind AFFINITY / ANTI_AFFINITY (None: another kind of rule, VM-Host...), vms the
    VM moids, key vCenter's (None for a rule not made yet)."""

    name: str
    kind: str | None
    vms: frozenset = frozenset()
    enabled: bool = True
    mandatory: bool = False
    key: int | None = None

    @property
    def ours(self):
        return self.name.startswith(PREFIX)


def rule_name(group):
    return PREFIX + group


def rules_of(infos):
    """[Rule] of a cluster's configurationEx.rule."""
    found = []
    for info in infos or ():
        kind = KIND_OF_TYPE.get(getattr(info, '_wsdlName', None) or type(info).__name__)
        found.append(Rule(name=str(info.name or ''), kind=kind, vms=frozenset(plain(getattr(info, 'vm', None) or [])),
                          enabled=bool(info.enabled), mandatory=bool(info.mandatory), key=info.key))
    return found


def wanted_rules(groups):
    """{rule name: Rule} of {group: (policy, [VM moids of its members on the cluster])}: one for each group with two
    VMs or more there."""
    return dict((rule_name(group), Rule(rule_name(group), KIND_OF_POLICY[policy], frozenset(vms)))
                for group, (policy, vms) in groups.items() if len(set(vms)) >= 2)


def rule_changes(current, wanted, removable=None):
    """[(operation, Rule)] that take the cloud's rules among `current` to `wanted`: remove (by key) one of ours no group
    wants (and that removable(rule) lets go: see node_rules.py), add a missing one, edit one whose VMs differ or that is
    disabled or mandatory (with its key), and remove then add one of the other kind (vCenter cannot change a rule's
    type). Others' rules are never in it."""
    changes = []
    ours = dict((rule.name, rule) for rule in current if rule.ours)
    for name, rule in sorted(ours.items()):
        if name not in wanted and (removable is None or removable(rule)):
            changes.append(('remove', rule))
    for name, rule in sorted(wanted.items()):
        have = ours.get(name)
        if have is None:
            changes.append(('add', rule))
        elif have.kind != rule.kind:
            changes.extend([('remove', have), ('add', rule)])
        elif have.vms != rule.vms or not have.enabled or have.mandatory:
            changes.append(('edit', dataclasses.replace(rule, key=have.key)))
    return changes


def _components(rules):
    """{VM moid: its component} of the VMs enabled affinity rules join, directly or through each other (union-find)."""
    parent = {}

    def root(vm):
        parent.setdefault(vm, vm)
        while parent[vm] != vm:
            parent[vm] = parent[parent[vm]]
            vm = parent[vm]
        return vm

    for rule in rules:
        if rule.kind == AFFINITY and rule.enabled:
            first = None
            for vm in sorted(rule.vms):
                first = first or root(vm)
                parent[root(vm)] = first
    return root


def _contradictions(rules):
    """{(anti-affinity rule name, pair of VMs)} for each pair an enabled anti-affinity rule keeps apart that enabled
    affinity rules keep together."""
    root = _components(rules)
    found = set()
    for rule in rules:
        if rule.kind != ANTI_AFFINITY or not rule.enabled:
            continue
        vms = sorted(rule.vms)
        for index, vm in enumerate(vms):
            for other in vms[index + 1:]:
                if root(vm) == root(other):
                    found.add((rule.name, (vm, other)))
    return found


def conflicts(current, wanted, names=None):
    """Sentences naming each contradiction the `wanted` rules would bring with the others' enabled rules of `current`
    (those among others' rules alone excepted); [] when there is none. names: {VM moid: name} for the sentences."""
    names = names or {}
    theirs = [rule for rule in current if not rule.ours and rule.kind and rule.enabled]
    together = list(wanted.values()) + theirs
    new = sorted(_contradictions(together) - _contradictions(theirs))
    sentences = []
    root = _components(together)
    for anti, pair in new:
        joining = sorted(r.name for r in together if r.kind == AFFINITY and r.enabled and any(root(vm) == root(pair[0]) for vm in r.vms))
        sentences.append('rule %s keeps %s apart, and affinity rule%s %s keep%s them together' % (
            anti, ' and '.join(names.get(vm, vm) for vm in pair), '' if len(joining) == 1 else 's', ', '.join(joining),
            's' if len(joining) == 1 else ''))
    return sentences


def rule_spec(operation, rule, refs):
    """One ClusterRuleSpec; refs(moid) makes a VirtualMachine reference."""
    if operation == 'remove':
        return vim.cluster.RuleSpec(operation='remove', removeKey=rule.key)
    kind = vim.cluster.AffinityRuleSpec if rule.kind == AFFINITY else vim.cluster.AntiAffinityRuleSpec
    info = kind(name=rule.name, enabled=True, mandatory=False, vm=[refs(vm) for vm in sorted(rule.vms)])
    if operation == 'edit':
        info.key = rule.key
    return vim.cluster.RuleSpec(operation=operation, info=info)


__all__ = ['AFFINITY', 'ANTI_AFFINITY', 'KIND_OF_POLICY', 'PREFIX', 'Rule', 'conflicts', 'rule_changes', 'rule_name', 'rule_spec',
           'rules_of', 'wanted_rules']
