"""What vSphere knows of each instance (issue 18 §3), through real Ansible runs on the lab's vcsim, read back with pyVmomi
apart from the collection: an instance's ha / restart_priority as its VM's HA override on the cluster, a server group of
two instances there as a DRS anti-affinity rule with both VMs, new ha settings on an existing instance, the rule gone
with the member that leaves, and the override following its instance to another cluster. vcsim 0.24.2 keeps a
ClusterConfigSpecEx's dasVmConfigSpec and rulesSpec itself; the lab's launcher adds the dasConfig and drsConfig it drops,
and names the VM reference of an override's removal as the simulator decodes it."""

from __future__ import annotations

from pyVmomi import vim, vmodl

from support.cloud import vcsim
from support.lab import ansible_module

NODE, OTHER = 'vcsim/DC0/DC0_C0', 'vcsim/DC0/DC0_C1'
GROUP = 'nr-apart'


def cluster_rules(lab, node=NODE):
    """({VM name: restart priority} of the cluster's per-VM HA overrides, {rule name: (type, sorted VM names, enabled,
    mandatory)} of its rules named multihv-*), read from the node's cluster's configurationEx."""
    with vcsim(lab) as si:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.ClusterComputeResource], True)
        try:
            cluster = next(c for c in view.view if c.name == node.rsplit('/', 1)[1])
        finally:
            view.Destroy()
        config = cluster.configurationEx

        def name(vm):
            try:
                return vm.name
            except vmodl.fault.ManagedObjectNotFound:  # a VM deleted: vcsim keeps its override (vCenter drops it)
                return None
        overrides = dict((name(entry.key), entry.dasSettings.restartPriority) for entry in config.dasVmConfig or ())
        rules = dict((rule.name, (type(rule).__name__, sorted(name(vm) for vm in rule.vm), rule.enabled, rule.mandatory))
                     for rule in config.rule or () if rule.name.startswith('multihv-'))
    return overrides, rules


def test_ha_overrides_and_a_group_rule_follow_the_instances(lab, cloud, template):
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    ansible_module('multihv.cloud.server_group', dict(cloud, name=GROUP, policy='soft-anti-affinity'))
    booted = ansible_module('multihv.cloud.instance', dict(cloud, flavor='tiny', image='tmpl', node=NODE, server_group=GROUP, instances=[
        {'name': 'nr-a', 'ha': True, 'restart_priority': 1}, {'name': 'nr-b'}]))
    assert booted['failures'] == [] and not booted.get('warnings'), booted
    overrides, rules = cluster_rules(lab)
    assert overrides['nr-a'] == 'highest' and 'nr-b' not in overrides  # no ha: the cluster's default restart priority
    assert rules['multihv-' + GROUP] == ('vim.cluster.AntiAffinityRuleSpec', ['nr-a', 'nr-b'], True, False)

    changed = ansible_module('multihv.cloud.instance', dict(cloud, name='nr-b', ha=True, restart_priority=-1))
    assert changed['changed'] is True and (changed['instance']['ha'], changed['instance']['restart_priority']) == (True, -1)
    assert cluster_rules(lab)[0]['nr-b'] == 'medium'
    unset = ansible_module('multihv.cloud.instance', dict(cloud, name='nr-b', ha=False))
    assert unset['changed'] is True and 'nr-b' not in cluster_rules(lab)[0]  # its override goes: the cluster's default again

    ansible_module('multihv.cloud.instance', dict(cloud, name='nr-b', state='absent'))
    overrides, rules = cluster_rules(lab)
    assert 'multihv-' + GROUP not in rules and overrides['nr-a'] == 'highest'
    # The override follows the instance to another cluster (the one it left removes it: a remove by VM reference).
    moved = ansible_module('multihv.cloud.migrate', dict(cloud, instance='nr-a', target_node=OTHER))
    assert moved['instance']['node'] == OTHER and not moved.get('warnings'), moved
    assert 'nr-a' not in cluster_rules(lab)[0] and cluster_rules(lab, OTHER)[0]['nr-a'] == 'highest'
    # The reconciler's rules step finds both clusters as the registry says.
    assert not [a for a in ansible_module('multihv.cloud.reconcile', cloud)['actions'] if a['kind'] == 'rules']
