"""rebalance against the lab (issue 18 §1): three tick guests on kvm1 and none on kvm2, measured through libvirt;
check mode measures and moves nothing, a run live-migrates one guest to kvm2, a second run finds the pair balanced;
a vSphere cluster named beside a KVM host is refused (§4).

Both lab hosts are this one machine (tens of GiB of RAM, tick guests of tens of MiB): the test reserves all but five
guests' worth of each host's RAM in its own registry (what compute_node's reserved sets), so that a guest's memory is
about 0.1 of a host's load whatever its resident memory is, as on small hosts; its CPU adds to that (seen: about 0.13
of a CPU each, 0.03 of the load of a 2-CPU host). At aggressiveness 3 (balanced at a spread of 0.10) three guests
against none (seen: spread 0.20) take one move, and two against one (seen: 0.07) none.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.cloud import domains
from support.lab import ansible_module

VSPHERE_NODE = 'vcsim/DC0/DC0_C0'
GUESTS_PER_HOST = 5  # how many guests' memory each host is given


def rebalance(cloud, check=False, expect_failure=False, **args):
    return ansible_module('multihv.cloud.rebalance', dict(cloud, **args), check=check, expect_failure=expect_failure)


def test_a_skewed_pair_of_kvm_hosts_is_balanced_by_live_migration_once(lab, cloud):
    ansible_module('multihv.cloud.instance', dict(cloud, instances=[{'name': 'rb-%d' % i} for i in range(3)], flavor='tiny',
                                                  image='tick', node='kvm1', storage='shared'))
    options = {'nodes': ['kvm1', 'kvm2'], 'interval': 1}

    measured = rebalance(cloud, check=True, aggressiveness=1, nodes=['kvm1', 'kvm2'], interval=0.5)  # measures only
    loads = dict((n['node'], n) for n in measured['nodes'])
    assert (loads['kvm1']['instances'], loads['kvm1']['movable'], loads['kvm2']['instances']) == (3, 3, 0)
    assert loads['kvm1']['memory_mb_used'] >= 3 * 32, 'each guest counts at least its claim'
    assert measured['changed'] is False and measured['moves'] == []
    guest_mb = loads['kvm1']['memory_mb_used'] / 3
    # What compute_node's reserved option writes, written directly: three module runs less.
    with Registry.open(cloud['registry_url']) as registry:
        for name in ('kvm1', 'kvm2'):
            conn = lab.connect(name)
            physical = conn.getInfo()[1]  # MiB, as the driver reports it
            conn.close()
            registry.set_node(name, 'kvm', reserved={'memory_mb': physical - int(GUESTS_PER_HOST * guest_mb)})

    done = rebalance(cloud, **options)
    assert done['changed'] is True and done['failures'] == [] and done['spread_before'] > done['threshold'] == 0.1
    (move,) = done['moves']
    assert (move['source'], move['target'], move['status']) == ('kvm1', 'kvm2', 'completed')
    assert move['load_before']['source'] > move['load_after']['source'] and move['load_before']['target'] < move['load_after']['target']
    assert (move['migration']['migration_type'], move['migration']['status']) == ('live', 'completed')
    assert domains(lab, 'kvm2') == [move['instance']] and len(domains(lab, 'kvm1')) == 2
    assert done['spread_after'] < done['spread_before']

    again = rebalance(cloud, **options)
    assert again['changed'] is False and again['moves'] == [], again
    assert domains(lab, 'kvm2') == [move['instance']]
    # One call for the three (the cloud fixture would delete them one call each).
    ansible_module('multihv.cloud.instance', dict(cloud, instances=[{'name': 'rb-%d' % i} for i in range(3)], state='absent'))


def test_a_vsphere_cluster_named_beside_a_kvm_host_is_refused_and_nothing_moves(lab, tmp_path):
    options = {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': f'sqlite:///{tmp_path}/registry.sqlite'}
    refused = rebalance(options, expect_failure=True, nodes=['kvm1', VSPHERE_NODE], interval=0.5)
    assert refused['msg'] == (
        'node %s is a vSphere cluster, not a single host: vSphere DRS balances the VMs among the ESXi hosts of a cluster by '
        'itself (configure it with multihv.cloud.vsphere_cluster); rebalance moves instances between single-host nodes only; '
        'name single-host nodes only (or select by aggregate or availability zone, which skips the others); nothing was moved'
        % VSPHERE_NODE)
    assert refused['changed'] is False and 'moves' not in refused
