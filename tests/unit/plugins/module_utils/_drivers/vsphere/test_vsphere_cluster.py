"""HA and DRS settings of a vSphere cluster node, the pure part: vSphere's dasConfig/drsConfig
to the options' settings and back to a ClusterConfigSpecEx, the merge of a task's options,
the diff, and finding the cluster. No vCenter here (tests/integration has one)."""

from __future__ import annotations

import copy

import pytest
from pyVmomi import SoapAdapter, VmomiSupport, vim

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import cluster
from ansible_collections.multihv.cloud.plugins.module_utils._config import CloudConfig, KvmHost, VCenter
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import Record

WHERE = 'node vc1/prod/A'

# What vcsim 0.24.2 has for a fresh cluster: nothing of HA set, DRS enabled and nothing else.
VCSIM_DAS = vim.cluster.DasConfigInfo()
VCSIM_DRS = vim.cluster.DrsConfigInfo(enabled=True)

UNSET = {
    'ha': {'enabled': False,
           'admission_control': {'enabled': None, 'policy': None, 'failover_level': None, 'cpu_percentage': None, 'memory_percentage': None},
           'restart_priority': None, 'isolation_response': None, 'host_monitoring': None},
    'drs': {'enabled': True, 'automation_level': None, 'migration_threshold': None},
}


def full_das(policy=None):
    return vim.cluster.DasConfigInfo(
        enabled=True, hostMonitoring='enabled', admissionControlEnabled=True,
        admissionControlPolicy=policy or vim.cluster.FailoverLevelAdmissionControlPolicy(failoverLevel=2),
        defaultVmSettings=vim.cluster.DasVmSettings(restartPriority='high', isolationResponse='powerOff'))


def full_drs():
    return vim.cluster.DrsConfigInfo(enabled=True, defaultVmBehavior='partiallyAutomated', vmotionRate=2)


def settings(**changes):
    """UNSET with dotted keys replaced: settings(**{'ha.enabled': True})."""
    result = copy.deepcopy(UNSET)
    for key, value in changes.items():
        *path, last = key.split('.')
        target = result
        for part in path:
            target = target[part]
        target[last] = value
    return result


# ------------------------------------------------------------------ the migration threshold

@pytest.mark.parametrize('threshold, rate', [(1, 5), (2, 4), (3, 3), (4, 2), (5, 1)])
def test_migration_threshold_runs_against_vmotion_rate(threshold, rate):
    # The vSphere Client's 1 (conservative) is the API's vmotionRate 5, as vmware.vmware's cluster_drs maps it.
    assert cluster.vmotion_rate(threshold) == rate
    assert cluster.migration_threshold(rate) == threshold


@pytest.mark.parametrize('rate', [None, 0, 6, -1])
def test_migration_threshold_of_an_unset_or_odd_rate_is_none(rate):
    assert cluster.migration_threshold(rate) is None


# ------------------------------------------------------------------ reading

def test_settings_of_a_fresh_vcsim_cluster():
    assert cluster.settings_of(VCSIM_DAS, VCSIM_DRS) == UNSET


def test_settings_of_nothing_at_all():
    assert cluster.settings_of(None, None) == settings(**{'drs.enabled': False})


def test_settings_of_a_configured_cluster():
    assert cluster.settings_of(full_das(), full_drs()) == {
        'ha': {'enabled': True,
               'admission_control': {'enabled': True, 'policy': 'failover_level', 'failover_level': 2,
                                     'cpu_percentage': None, 'memory_percentage': None},
               'restart_priority': 'high', 'isolation_response': 'powerOff', 'host_monitoring': True},
        'drs': {'enabled': True, 'automation_level': 'partiallyAutomated', 'migration_threshold': 4},
    }


def test_settings_of_a_percentage_policy_keep_only_its_own_values():
    policy = vim.cluster.FailoverResourcesAdmissionControlPolicy(cpuFailoverResourcesPercent=25, memoryFailoverResourcesPercent=30,
                                                                 failoverLevel=1, autoComputePercentages=False)
    admission = cluster.settings_of(full_das(policy), None)['ha']['admission_control']
    assert admission == {'enabled': True, 'policy': 'percentage', 'failover_level': None, 'cpu_percentage': 25, 'memory_percentage': 30}


def test_settings_of_other_policies_name_them():
    hosts = vim.cluster.FailoverHostAdmissionControlPolicy(failoverLevel=1)
    assert cluster.settings_of(full_das(hosts), None)['ha']['admission_control']['policy'] == 'dedicated_host'
    assert cluster.policy_name(None) is None


def test_settings_of_host_monitoring_disabled_and_unknown():
    assert cluster.settings_of(vim.cluster.DasConfigInfo(hostMonitoring='disabled'), None)['ha']['host_monitoring'] is False
    assert cluster.settings_of(vim.cluster.DasConfigInfo(hostMonitoring='odd'), None)['ha']['host_monitoring'] is None


def test_settings_are_plain_strings():
    read = cluster.settings_of(full_das(), full_drs())
    assert type(read['drs']['automation_level']) is str and type(read['ha']['restart_priority']) is str  # pylint: disable=unidiomatic-typecheck


# ------------------------------------------------------------------ the task's options

def test_requested_drops_what_is_left_out():
    ha = {'enabled': True, 'admission_control': {'enabled': None, 'policy': None, 'failover_level': None,
                                                 'cpu_percentage': None, 'memory_percentage': None},
          'restart_priority': None, 'isolation_response': 'none', 'host_monitoring': False}
    assert cluster.requested(ha, None) == {'ha': {'enabled': True, 'isolation_response': 'none', 'host_monitoring': False}}
    assert cluster.requested(None, {'enabled': None, 'automation_level': 'manual', 'migration_threshold': None}) == {
        'drs': {'automation_level': 'manual'}}
    assert cluster.requested() == {}


def test_desired_changes_only_the_keys_given():
    current = cluster.settings_of(full_das(), full_drs())
    after = cluster.desired(current, {'ha': {'restart_priority': 'low'}, 'drs': {'migration_threshold': 5}}, WHERE)
    assert cluster.changed_keys(current, after) == ['ha.restart_priority', 'drs.migration_threshold']
    assert after['ha']['isolation_response'] == 'powerOff' and after['ha']['admission_control']['failover_level'] == 2
    assert current['ha']['restart_priority'] == 'high'  # not modified in place


def test_desired_same_values_change_nothing():
    current = cluster.settings_of(full_das(), full_drs())
    request = {'ha': {'enabled': True, 'admission_control': {'policy': 'failover_level', 'failover_level': 2}, 'host_monitoring': True},
               'drs': {'automation_level': 'partiallyAutomated', 'migration_threshold': 4}}
    assert cluster.changed_keys(current, cluster.desired(current, request, WHERE)) == []


def test_disabling_unset_ha_is_no_change():
    # vcsim leaves dasConfig.enabled unset: HA is off, and asking for it off changes nothing.
    assert cluster.changed_keys(UNSET, cluster.desired(UNSET, {'ha': {'enabled': False}}, WHERE)) == []


def test_switching_policy_needs_its_values_and_drops_the_old_ones():
    current = cluster.settings_of(full_das(), None)
    with pytest.raises(cluster.InvalidSettings) as caught:
        cluster.desired(current, {'ha': {'admission_control': {'policy': 'percentage', 'cpu_percentage': 20}}}, WHERE)
    assert str(caught.value) == ('node vc1/prod/A: admission control policy percentage (now failover_level) needs '
                                 'ha.admission_control.memory_percentage; nothing was changed')
    after = cluster.desired(current, {'ha': {'admission_control': {'policy': 'percentage', 'cpu_percentage': 20, 'memory_percentage': 30}}}, WHERE)
    assert after['ha']['admission_control'] == {'enabled': True, 'policy': 'percentage', 'failover_level': None,
                                                'cpu_percentage': 20, 'memory_percentage': 30}


def test_a_policy_from_unset_needs_its_values():
    with pytest.raises(cluster.InvalidSettings, match=r'policy failover_level \(now unset\) needs ha\.admission_control\.failover_level;'):
        cluster.desired(UNSET, {'ha': {'admission_control': {'policy': 'failover_level'}}}, WHERE)


def test_values_of_another_policy_are_refused():
    current = cluster.settings_of(full_das(), None)  # failover_level
    with pytest.raises(cluster.InvalidSettings) as caught:
        cluster.desired(current, {'ha': {'admission_control': {'cpu_percentage': 10, 'memory_percentage': 10}}}, WHERE)
    assert str(caught.value) == ('node vc1/prod/A: ha.admission_control.cpu_percentage and memory_percentage applies to policy percentage, '
                                 'and the policy would be failover_level; give ha.admission_control.policy percentage with it; '
                                 'nothing was changed')
    with pytest.raises(cluster.InvalidSettings, match='failover_level applies to policy failover_level, and the policy would be percentage'):
        cluster.desired(current, {'ha': {'admission_control': {'policy': 'percentage', 'failover_level': 1, 'cpu_percentage': 1,
                                                               'memory_percentage': 1}}}, WHERE)


def test_a_value_of_the_current_policy_alone_is_enough():
    current = cluster.settings_of(full_das(), None)
    after = cluster.desired(current, {'ha': {'admission_control': {'failover_level': 1}}}, WHERE)
    assert cluster.changed_keys(current, after) == ['ha.admission_control.failover_level']


@pytest.mark.parametrize('request_, message', [
    ({'drs': {'migration_threshold': 6}}, 'drs.migration_threshold must be an integer from 1 to 5, not 6'),
    ({'drs': {'migration_threshold': True}}, 'drs.migration_threshold must be an integer from 1 to 5, not True'),
    ({'ha': {'admission_control': {'policy': 'failover_level', 'failover_level': 0}}},
     'ha.admission_control.failover_level must be an integer of at least 1, not 0'),
    ({'ha': {'admission_control': {'policy': 'percentage', 'cpu_percentage': 101, 'memory_percentage': 5}}},
     'ha.admission_control.cpu_percentage must be an integer from 0 to 100, not 101'),
    ({'ha': {'restart_priority': 'urgent'}}, 'ha.restart_priority must be one of disabled, low, medium, high, not \'urgent\''),
    ({'ha': {'isolation_response': 'reboot'}}, 'ha.isolation_response must be one of none, powerOff, shutdown'),
    ({'drs': {'automation_level': 'auto'}}, 'drs.automation_level must be one of manual, partiallyAutomated, fullyAutomated'),
    ({'ha': {'admission_control': {'policy': 'slots'}}}, 'ha.admission_control.policy must be one of failover_level, percentage'),
    ({'drs': {'predictive': True}}, 'unknown option drs.predictive'),
    ({'vsan': {}}, 'unknown option vsan'),
])
def test_bad_settings_are_refused(request_, message):
    with pytest.raises(cluster.InvalidSettings) as caught:
        cluster.desired(UNSET, request_, WHERE)
    assert str(caught.value).startswith('node vc1/prod/A: ' + message)
    assert str(caught.value).endswith('; nothing was changed')


@pytest.mark.parametrize('hosts, level', [(3, 3), (3, 7), (1, 1)])
def test_a_failover_level_must_leave_one_host(hosts, level):
    request_ = {'ha': {'admission_control': {'policy': 'failover_level', 'failover_level': level}}}
    with pytest.raises(cluster.InvalidSettings) as caught:
        cluster.desired(UNSET, request_, WHERE, hosts=hosts)
    assert str(caught.value) == ("node vc1/prod/A: ha.admission_control.failover_level must be at most the cluster's hosts minus "
                                 "one, %d (it has %d host%s), not %d; nothing was changed" % (hosts - 1, hosts, 's' if hosts > 1 else '', level))


def test_a_failover_level_of_hosts_minus_one_is_accepted():
    request_ = {'ha': {'admission_control': {'policy': 'failover_level', 'failover_level': 2}}}
    after = cluster.desired(UNSET, request_, WHERE, hosts=3)
    assert after['ha']['admission_control']['failover_level'] == 2


def test_changed_keys_in_order_and_nested():
    after = settings(**{'ha.enabled': True, 'ha.admission_control.policy': 'failover_level', 'ha.admission_control.failover_level': 1,
                        'drs.enabled': False})
    assert cluster.changed_keys(UNSET, after) == ['ha.enabled', 'ha.admission_control.policy', 'ha.admission_control.failover_level',
                                                  'drs.enabled']
    assert cluster.changed_keys(after, after) == []


# ------------------------------------------------------------------ the spec sent

def test_spec_sends_only_what_changed():
    after = settings(**{'drs.automation_level': 'fullyAutomated', 'drs.migration_threshold': 2})
    spec = cluster.config_spec(after, cluster.changed_keys(UNSET, after))
    assert spec.dasConfig is None
    assert (spec.drsConfig.enabled, spec.drsConfig.defaultVmBehavior, spec.drsConfig.vmotionRate) == (None, 'fullyAutomated', 4)
    assert spec.rulesSpec == [] and spec.drsVmConfigSpec == []


def test_spec_of_ha_with_a_failover_level_policy():
    request = {'ha': {'enabled': True, 'host_monitoring': True, 'restart_priority': 'high',
                      'admission_control': {'enabled': True, 'policy': 'failover_level', 'failover_level': 1}}}
    after = cluster.desired(UNSET, request, WHERE)
    spec = cluster.config_spec(after, cluster.changed_keys(UNSET, after))
    das = spec.dasConfig
    assert spec.drsConfig is None
    assert (das.enabled, das.hostMonitoring, das.admissionControlEnabled) == (True, 'enabled', True)
    assert isinstance(das.admissionControlPolicy, vim.cluster.FailoverLevelAdmissionControlPolicy)
    assert das.admissionControlPolicy.failoverLevel == 1
    # isolationResponse unknown (unset) stays unset: vCenter keeps its own.
    assert (das.defaultVmSettings.restartPriority, das.defaultVmSettings.isolationResponse) == ('high', None)
    assert das.vmMonitoring is None and das.option == []


def test_spec_sends_the_whole_policy_and_both_vm_defaults():
    current = cluster.settings_of(full_das(vim.cluster.FailoverResourcesAdmissionControlPolicy(
        cpuFailoverResourcesPercent=25, memoryFailoverResourcesPercent=30)), full_drs())
    after = cluster.desired(current, {'ha': {'admission_control': {'memory_percentage': 40}, 'isolation_response': 'shutdown'}}, WHERE)
    changed = cluster.changed_keys(current, after)
    assert changed == ['ha.admission_control.memory_percentage', 'ha.isolation_response']
    das = cluster.config_spec(after, changed).dasConfig
    policy = das.admissionControlPolicy
    assert isinstance(policy, vim.cluster.FailoverResourcesAdmissionControlPolicy)
    assert (policy.cpuFailoverResourcesPercent, policy.memoryFailoverResourcesPercent, policy.autoComputePercentages) == (25, 40, False)
    assert (das.defaultVmSettings.restartPriority, das.defaultVmSettings.isolationResponse) == ('high', 'shutdown')
    assert (das.enabled, das.hostMonitoring, das.admissionControlEnabled) == (None, None, None)


def test_spec_turns_things_off():
    current = cluster.settings_of(full_das(), full_drs())
    after = cluster.desired(current, {'ha': {'enabled': False, 'host_monitoring': False, 'admission_control': {'enabled': False}},
                                      'drs': {'enabled': False}}, WHERE)
    spec = cluster.config_spec(after, cluster.changed_keys(current, after))
    assert (spec.dasConfig.enabled, spec.dasConfig.hostMonitoring, spec.dasConfig.admissionControlEnabled) == (False, 'disabled', False)
    assert spec.dasConfig.admissionControlPolicy is None and spec.dasConfig.defaultVmSettings is None
    assert spec.drsConfig.enabled is False


def test_spec_serializes_as_soap():
    after = cluster.desired(UNSET, {'ha': {'enabled': True, 'admission_control': {'policy': 'percentage', 'cpu_percentage': 25,
                                                                                  'memory_percentage': 25}},
                                    'drs': {'migration_threshold': 1}}, WHERE)
    spec = cluster.config_spec(after, cluster.changed_keys(UNSET, after))
    xml = SoapAdapter.Serialize(spec, version=VmomiSupport.newestVersions.GetName('vim')).decode()
    assert 'xsi:type="ClusterConfigSpecEx"' in xml
    assert 'xsi:type="ClusterFailoverResourcesAdmissionControlPolicy"' in xml
    assert '<vmotionRate>5</vmotionRate>' in xml and '<enabled>true</enabled>' in xml


def test_not_applied_names_what_reads_back_otherwise():
    after = settings(**{'ha.enabled': True, 'drs.migration_threshold': 3})
    assert cluster.not_applied(after, UNSET, ['ha.enabled', 'drs.migration_threshold']) == [
        'ha.enabled = False (sent True)', 'drs.migration_threshold = None (sent 3)']
    assert cluster.not_applied(after, after, ['ha.enabled']) == []


# ------------------------------------------------------------------ which cluster

def vcenter(**kwargs):
    return VCenter(name='vc1', hostname='vc1.example.com', username='svc@vsphere.local', password='s3cret', **kwargs)


def records():
    return [
        Record('Datacenter', 'datacenter-1', {'name': 'prod'}),
        Record('Folder', 'folder-h1', {'parent': 'datacenter-1'}),
        Record('Folder', 'folder-n', {'parent': 'folder-h1'}),
        Record('ClusterComputeResource', 'domain-c1', {'name': 'A', 'parent': 'folder-n', cluster.DAS: full_das(), cluster.DRS: full_drs()}),
        Record('ClusterComputeResource', 'domain-c2', {'name': 'B', 'parent': 'folder-h1', cluster.DRS: VCSIM_DRS}),
    ]


def test_find_cluster_by_node_name():
    moid, props = cluster.find_cluster(vcenter(), records(), 'vc1/prod/A')
    assert moid == 'domain-c1' and cluster.settings_of(props.get(cluster.DAS), props.get(cluster.DRS))['ha']['enabled'] is True
    moid, props = cluster.find_cluster(vcenter(), records(), 'vc1/prod/B')
    assert moid == 'domain-c2' and cluster.settings_of(props.get(cluster.DAS), props.get(cluster.DRS))['ha']['enabled'] is False


def test_unknown_cluster_names_the_known_ones():
    with pytest.raises(errors.NotFound) as caught:
        cluster.find_cluster(vcenter(), records(), 'vc1/prod/C')
    assert str(caught.value) == 'vCenter vc1 has no cluster node vc1/prod/C; its cluster nodes: vc1/prod/A, vc1/prod/B; nothing was changed'


def test_a_cluster_the_filter_leaves_out_is_no_node():
    with pytest.raises(errors.NotFound, match='its cluster nodes: vc1/prod/A;'):
        cluster.find_cluster(vcenter(clusters=['A']), records(), 'vc1/prod/B')


def test_two_clusters_of_one_name_are_ambiguous():
    twin = Record('ClusterComputeResource', 'domain-c3', {'name': 'A', 'parent': 'folder-h1'})
    with pytest.raises(errors.DriverError, match=r'node vc1/prod/A names 2 clusters of vCenter vc1 \(domain-c1, domain-c3'):
        cluster.find_cluster(vcenter(), records() + [twin], 'vc1/prod/A')


def test_vcenter_of_a_node():
    cloud = CloudConfig(source='test', registry_url='sqlite://', vcenters=[vcenter(), VCenter(name='vc2', hostname='h', username='u')],
                        kvm_hosts=[KvmHost(name='kvm1', uri='qemu:///system')])
    assert cluster.vcenter_of(cloud, 'vc2/dc/c').name == 'vc2'
    with pytest.raises(errors.NotFound, match='^node kvm1 is a KVM host; HA and DRS are settings of a vSphere cluster node'):
        cluster.vcenter_of(cloud, 'kvm1')
    with pytest.raises(errors.NotFound) as caught:
        cluster.vcenter_of(cloud, 'vc3/dc/c')
    assert str(caught.value) == ('no vSphere cluster node vc3/dc/c: a cluster node is named vcenter/datacenter/cluster, '
                                 'and the cloud file has vCenters vc1, vc2; nothing was changed')
