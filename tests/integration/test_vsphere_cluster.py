"""vsphere_cluster against the lab's vcsim, through real Ansible runs: HA and DRS settings set,
read back independently with pyVmomi, idempotence, check mode, diff and errors; and
compute_node_info's ha_enabled / drs_enabled following them.

vcsim 0.24.2 alone drops the dasConfig and drsConfig of ReconfigureComputeResource_Task;
the lab's launcher (tests/lab/roles/lab/files/vcsim/main.go, serveReconfigure) keeps them, so what
the module sends reads back here. The test changes one cluster of the shared lab and puts
its configuration back afterwards."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from support.lab import ansible_module

MODULE = 'multihv.cloud.vsphere_cluster'

HA = {
    'enabled': True,
    'host_monitoring': True,
    'admission_control': {'enabled': True, 'policy': 'failover_level', 'failover_level': 1},
    'restart_priority': 'high',
    'isolation_response': 'powerOff',
}
DRS = {'enabled': True, 'automation_level': 'partiallyAutomated', 'migration_threshold': 2}

# What the module returns for HA and DRS once set.
HA_SET = dict(HA, admission_control=dict(HA['admission_control'], cpu_percentage=None, memory_percentage=None))
SET = {'ha': HA_SET, 'drs': DRS}


@pytest.fixture(scope='module')
def vcenter(lab):
    return yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())['vcenters'][0]


@pytest.fixture(scope='module')
def si(vcenter):
    conn = SmartConnect(host=vcenter['hostname'], port=vcenter['port'], user=vcenter['username'], pwd=vcenter['password'],
                        disableSslCertValidation=True)
    yield conn
    Disconnect(conn)


def clusters(si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.ClusterComputeResource], True)
    try:
        return {c.name: c for c in view.view}
    finally:
        view.Destroy()


@pytest.fixture
def node(lab, si):
    """(node name, cluster object) of the lab's last cluster; its HA and DRS configuration is
    put back as it was after the test (modify=False: the launcher then replaces both whole)."""
    want = lab.info['vcsim']
    datacenter = 'DC%d' % (want['datacenters'] - 1)
    name = '%s_C%d' % (datacenter, want['clusters'] - 1)
    cluster = clusters(si)[name]
    config = cluster.configurationEx
    yield 'vcsim/%s/%s' % (datacenter, name), cluster
    WaitForTask(cluster.ReconfigureComputeResource_Task(
        spec=vim.cluster.ConfigSpecEx(dasConfig=config.dasConfig, drsConfig=config.drsConfig), modify=False))
    assert text(read(cluster)) == text((config.dasConfig, config.drsConfig)), 'the cluster was not put back as it was'


@pytest.fixture
def options(lab, tmp_path):
    return {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': f'sqlite:///{tmp_path}/registry.sqlite'}


def control(lab, method, path):
    req = urllib.request.Request(lab.info['vcsim']['control_url'] + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b'null')


def read(cluster):
    """(dasConfig, drsConfig) as vCenter has them, read apart from the module."""
    config = cluster.configurationEx
    return config.dasConfig, config.drsConfig


def text(config):
    """Data objects as text, to compare them (pyVmomi's == compares identities)."""
    return tuple(repr(part) for part in config)


def run(options, node_name, **kwargs):
    check, diff, failure = kwargs.pop('check', False), kwargs.pop('diff', False), kwargs.pop('expect_failure', False)
    return ansible_module(MODULE, dict(options, name=node_name, **kwargs), check=check, diff=diff, expect_failure=failure)


def test_set_reads_back_and_second_run_is_unchanged(options, node, si):
    name, cluster = node
    other = next(c for n, c in clusters(si).items() if n != cluster.name)
    other_das = other.configurationEx.dasConfig.enabled

    result = run(options, name, ha=HA, drs=DRS)
    assert result['changed'] is True
    assert result['cluster'] == SET

    das, drs = read(cluster)
    assert (das.enabled, das.hostMonitoring, das.admissionControlEnabled) == (True, 'enabled', True)
    assert isinstance(das.admissionControlPolicy, vim.cluster.FailoverLevelAdmissionControlPolicy)
    assert das.admissionControlPolicy.failoverLevel == 1
    assert (das.defaultVmSettings.restartPriority, das.defaultVmSettings.isolationResponse) == ('high', 'powerOff')
    # Migration threshold 2 (the vSphere Client's scale) is vmotionRate 4.
    assert (drs.enabled, drs.defaultVmBehavior, drs.vmotionRate) == (True, 'partiallyAutomated', 4)
    assert other.configurationEx.dasConfig.enabled == other_das  # the other cluster is left alone

    again = run(options, name, ha=HA, drs=DRS)
    assert again['changed'] is False and again['cluster'] == SET

    # One key: only it changes; everything else keeps its value.
    one = run(options, name, drs={'migration_threshold': 5})
    assert one['changed'] is True
    assert one['cluster'] == dict(SET, drs=dict(DRS, migration_threshold=5))
    das, drs = read(cluster)
    assert (drs.vmotionRate, drs.defaultVmBehavior) == (1, 'partiallyAutomated')
    assert (das.enabled, das.defaultVmSettings.restartPriority, das.admissionControlPolicy.failoverLevel) == (True, 'high', 1)


def test_check_mode_sends_nothing(lab, options, node):
    name, cluster = node
    run(options, name, ha=HA, drs=DRS)
    change = {'ha': {'enabled': False, 'restart_priority': 'low'}, 'drs': {'automation_level': 'manual'}}

    control(lab, 'POST', '/stats/reset')
    result = run(options, name, check=True, **change)
    calls = control(lab, 'GET', '/stats')['by_method']
    assert result['changed'] is True
    assert result['cluster'] == {'ha': dict(HA_SET, enabled=False, restart_priority='low'), 'drs': dict(DRS, automation_level='manual')}
    # Others may use the lab meanwhile (and reset the counts), but none reconfigures clusters.
    assert 'ReconfigureComputeResource_Task' not in calls, calls
    das, drs = read(cluster)
    assert (das.enabled, das.defaultVmSettings.restartPriority, drs.defaultVmBehavior) == (True, 'high', 'partiallyAutomated')

    unchanged = run(options, name, check=True, ha=HA, drs=DRS)
    assert unchanged['changed'] is False and unchanged['cluster'] == SET


def test_diff_shows_the_settings_before_and_after(options, node):
    name, cluster = node
    before = run(options, name)  # no ha, no drs: a read
    assert before['changed'] is False
    assert set(before['cluster']) == {'ha', 'drs'}

    result = run(options, name, diff=True, ha={'enabled': True, 'restart_priority': 'medium'}, drs={'automation_level': 'manual'})
    assert result['changed'] is True
    assert result['cluster'] == {'ha': dict(before['cluster']['ha'], enabled=True, restart_priority='medium'),
                                 'drs': dict(before['cluster']['drs'], automation_level='manual')}
    # The callback prints the diff (before and after as JSON, keys sorted) rather than returning it.
    shown = result['_output']
    assert '--- before\n+++ after\n' in shown
    for key, old, new in (('automation_level', before['cluster']['drs']['automation_level'], 'manual'),
                          ('restart_priority', before['cluster']['ha']['restart_priority'], 'medium')):
        assert '\n-        "%s": %s' % (key, json.dumps(old)) in shown
        assert '\n+        "%s": %s' % (key, json.dumps(new)) in shown
    assert '\n-        "enabled": false,\n' in shown and '\n+        "enabled": true,\n' in shown  # ha.enabled
    assert read(cluster)[0].defaultVmSettings.restartPriority == 'medium'
    assert '--- before' not in run(options, name, ha={'restart_priority': 'low'})['_output']  # no diff unless asked


def test_admission_control_policy_switch(options, node):
    name, cluster = node
    run(options, name, ha=HA)

    # vSphere bounds the failover level by the cluster's hosts minus one: refused before anything is sent.
    hosts = len(cluster.host)
    too_high = run(options, name, ha={'admission_control': {'failover_level': hosts}}, expect_failure=True)
    assert too_high['msg'] == ("node %s: ha.admission_control.failover_level must be at most the cluster's hosts minus one, %d "
                               "(it has %d host%s), not %d; nothing was changed" % (name, hosts - 1, hosts, 's' if hosts > 1 else '', hosts))
    assert too_high['changed'] is False and read(cluster)[0].admissionControlPolicy.failoverLevel == 1

    refused = run(options, name, ha={'admission_control': {'policy': 'percentage', 'cpu_percentage': 25}}, expect_failure=True)
    assert refused['msg'] == ('node %s: admission control policy percentage (now failover_level) needs '
                              'ha.admission_control.memory_percentage; nothing was changed' % name)
    assert refused['changed'] is False

    result = run(options, name, ha={'admission_control': {'policy': 'percentage', 'cpu_percentage': 25, 'memory_percentage': 30}})
    assert result['changed'] is True
    assert result['cluster']['ha']['admission_control'] == {'enabled': True, 'policy': 'percentage', 'failover_level': None,
                                                            'cpu_percentage': 25, 'memory_percentage': 30}
    policy = read(cluster)[0].admissionControlPolicy
    assert isinstance(policy, vim.cluster.FailoverResourcesAdmissionControlPolicy)
    assert (policy.cpuFailoverResourcesPercent, policy.memoryFailoverResourcesPercent, policy.autoComputePercentages) == (25, 30, False)
    assert run(options, name, ha={'admission_control': {'memory_percentage': 30}})['changed'] is False


def test_compute_node_info_follows(options, node):
    name, _cluster = node

    def flags():
        (found,) = ansible_module('multihv.cloud.compute_node_info', dict(options, names=[name]))['nodes']
        return found['ha_enabled'], found['drs_enabled']

    run(options, name, ha={'enabled': True}, drs={'enabled': False})
    assert flags() == (True, False)
    run(options, name, ha={'enabled': False}, drs={'enabled': True})
    assert flags() == (False, True)


def test_unknown_cluster_names_the_known_ones(lab, options):
    want = lab.info['vcsim']
    known = ', '.join('vcsim/DC%d/DC%d_C%d' % (d, d, c) for d in range(want['datacenters']) for c in range(want['clusters']))
    result = run(options, 'vcsim/DC0/no-such-cluster', ha={'enabled': True}, expect_failure=True)
    assert result['msg'] == 'vCenter vcsim has no cluster node vcsim/DC0/no-such-cluster; its cluster nodes: %s; nothing was changed' % known

    kvm = run(options, 'kvm1', ha={'enabled': True}, expect_failure=True)
    assert kvm['msg'].startswith('node kvm1 is a KVM host; HA and DRS are settings of a vSphere cluster node')
    assert run(options, 'vc9/DC0/C0', expect_failure=True)['msg'] == (
        'no vSphere cluster node vc9/DC0/C0: a cluster node is named vcenter/datacenter/cluster, and the cloud file has vCenter vcsim; '
        'nothing was changed')


def test_unreachable_vcenter_says_so(lab, options, tmp_path):
    data = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    data['vcenters'][0]['port'] = 1  # nothing listens there
    cloud_file = tmp_path / 'cloud.yml'
    cloud_file.write_text(yaml.safe_dump(data))
    result = run(dict(options, cloud_file=str(cloud_file)), 'vcsim/DC0/DC0_C0', ha={'enabled': True}, expect_failure=True)
    assert result['msg'].startswith('vCenter vcsim at 127.0.0.1:1 did not answer: ')
    assert result['msg'].endswith('; the HA/DRS settings of node vcsim/DC0/DC0_C0 were not changed')
    assert result['changed'] is False


def test_launcher_applies_nothing_of_a_failed_reconfiguration(node):
    """The launcher applies dasConfig and drsConfig only once the simulator's task succeeded:
    here the edit of a rule that does not exist fails the whole reconfiguration."""
    _name, cluster = node
    before = read(cluster)
    assert text(before) == text(read(cluster))  # as read, unchanged
    spec = vim.cluster.ConfigSpecEx(
        dasConfig=vim.cluster.DasConfigInfo(enabled=not before[0].enabled),
        drsConfig=vim.cluster.DrsConfigInfo(vmotionRate=1),
        rulesSpec=[vim.cluster.RuleSpec(operation='edit', info=vim.cluster.AffinityRuleSpec(name='no-such-rule', vm=[cluster.host[0].vm[0]]))])
    with pytest.raises(vmodl.fault.InvalidArgument):
        WaitForTask(cluster.ReconfigureComputeResource_Task(spec=spec, modify=True))
    assert text(read(cluster)) == text(before)
