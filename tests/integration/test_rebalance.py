"""rebalance against the lab (issue 18 §1): three tick guests on kvm1 and none on kvm2, measured through libvirt;
check mode plans and moves nothing, a run live-migrates to kvm2, a second run finds the pair balanced; a vSphere
cluster named beside a KVM host is refused (§4).

Both lab hosts are this one machine (tens of GiB of RAM, tick guests of tens of MiB): the test reserves all but
1 GiB of each host's RAM in its own registry (compute_node reserved), so that three guests are a load worth
balancing on hosts that size, as they would be on small hosts.
"""

from __future__ import annotations

from support.cloud import domains
from support.lab import ansible_module

HOST_MEMORY_MB = 1024


def rebalance(cloud, check=False, expect_failure=False, **args):
    return ansible_module('multihv.cloud.rebalance', dict(cloud, **args), check=check, expect_failure=expect_failure)


def test_a_skewed_pair_of_kvm_hosts_is_balanced_by_live_migration_once(lab, cloud):
    ansible_module('multihv.cloud.instance', dict(cloud, instances=[{'name': 'rb-%d' % i} for i in range(3)], flavor='tiny',
                                                  image='tick', node='kvm1', storage='shared'))
    nodes = dict((n['name'], n) for n in ansible_module('multihv.cloud.compute_node_info', cloud)['nodes'])
    for name in ('kvm1', 'kvm2'):
        ansible_module('multihv.cloud.compute_node', dict(cloud, name=name, reserved={
            'memory_mb': nodes[name]['physical']['memory_mb'] - HOST_MEMORY_MB}))
    options = {'nodes': ['kvm1', 'kvm2'], 'aggressiveness': 5, 'interval': 1}

    planned = rebalance(cloud, check=True, **options)
    loads = dict((n['node'], n) for n in planned['nodes'])
    assert loads['kvm1']['memory_mb'] == HOST_MEMORY_MB and loads['kvm1']['instances'] == 3 and loads['kvm1']['movable'] == 3
    assert loads['kvm1']['memory_mb_used'] >= 3 * 32 and loads['kvm2']['instances'] == 0  # at least each guest's claim
    assert planned['changed'] is True and planned['moves'][0]['status'] == 'would run'
    assert (planned['moves'][0]['source'], planned['moves'][0]['target']) == ('kvm1', 'kvm2')
    assert planned['spread_after'] < planned['spread_before']
    assert sorted(domains(lab, 'kvm1')) == ['rb-0', 'rb-1', 'rb-2'] and domains(lab, 'kvm2') == []

    done = rebalance(cloud, **options)
    assert done['changed'] is True and done['failures'] == [] and done['moves']
    for move in done['moves']:
        assert (move['source'], move['target'], move['status']) == ('kvm1', 'kvm2', 'completed')
        assert move['migration']['migration_type'] == 'live' and move['migration']['status'] == 'completed'
    moved = sorted(move['instance'] for move in done['moves'])
    assert sorted(domains(lab, 'kvm2')) == moved and len(domains(lab, 'kvm1')) == 3 - len(moved)
    assert done['spread_after'] < done['spread_before']

    again = rebalance(cloud, **options)
    assert again['changed'] is False and again['moves'] == [], again
    assert sorted(domains(lab, 'kvm2')) == moved


def test_a_vsphere_cluster_named_beside_a_kvm_host_is_refused_and_nothing_moves(lab, cloud):
    clusters = [n['name'] for n in ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere'))['nodes']]
    refused = rebalance(cloud, expect_failure=True, nodes=['kvm1', clusters[0]], interval=0.5)
    assert refused['msg'] == (
        'node %s is a vSphere cluster, not a single host: vSphere DRS balances the VMs among the ESXi hosts of a cluster by '
        'itself (configure it with multihv.cloud.vsphere_cluster); rebalance moves instances between single-host nodes only; '
        'name single-host nodes only (or select by aggregate or availability zone, which skips the others); nothing was moved'
        % clusters[0])
