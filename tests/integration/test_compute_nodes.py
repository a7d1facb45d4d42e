"""compute_node and compute_node_info against the lab, through real Ansible runs."""

from __future__ import annotations

import pathlib
import sqlite3
import xml.etree.ElementTree as ET

import pytest

from support.lab import ansible_module, run


@pytest.fixture
def cloud(lab, tmp_path):
    """Module options for the lab's cloud with a registry of this test's own."""
    return {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': f'sqlite:///{tmp_path}/registry.sqlite'}


def nodes_by_name(result):
    return {n['name']: n for n in result['nodes']}


def test_info_reports_every_node_with_live_resources(lab, cloud):
    nodes = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', cloud))
    vcsim = lab.info['vcsim']
    clusters = [n for n in nodes.values() if n['hypervisor_type'] == 'vsphere']
    assert len(clusters) == vcsim['datacenters'] * vcsim['clusters']
    assert all(len(c['hosts']) == vcsim['hosts_per_cluster'] and c['state'] == 'up' for c in clusters)
    assert sum(c['instances'] for c in clusters) == vcsim['vms']
    for name in lab.hosts:
        node = nodes[name]
        conn = lab.connect(name)
        try:
            model, memory_mb, cpus = conn.getInfo()[:3]
            host_uuid = ET.fromstring(conn.getCapabilities()).findtext('host/uuid')
        finally:
            conn.close()
        assert (node['state'], node['hypervisor_type'], node['endpoint']) == ('up', 'kvm', lab.uri(name))
        assert node['physical']['vcpus'] == cpus and node['physical']['memory_mb'] == memory_mb
        assert node['host_uuid'] == host_uuid and node['cpu_model'] == model
        # (physical - reserved) x ratio, with the cloud file's defaults: cpu 4.0, 512 MB reserved.
        assert node['capacity']['vcpus'] == cpus * 4
        assert node['capacity']['memory_mb'] == memory_mb - 512
        assert node['availability_zone'] == 'kvm' and node['aggregates'] == ['cattle']
        assert node['enabled'] is True and 0 < node['free']['disk_gb'] <= node['physical']['disk_gb']


def test_info_counts_a_running_guest(lab, cloud, guests):
    name, log = guests.start('kvm1')
    node = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=['kvm1'])))['kvm1']
    assert node['instances'] == 1
    assert node['used']['vcpus'] == 1 and node['used']['memory_mb'] == 32
    assert node['free']['vcpus'] == node['capacity']['vcpus'] - 1


def test_info_filters(cloud):
    vsphere = ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere'))['nodes']
    assert vsphere and {n['hypervisor_type'] for n in vsphere} == {'vsphere'}
    assert [n['name'] for n in ansible_module('multihv.cloud.compute_node_info', dict(cloud, aggregate='cattle'))['nodes']] == ['kvm1', 'kvm2']
    assert ansible_module('multihv.cloud.compute_node_info', dict(cloud, state='down'))['nodes'] == []


def test_disable_is_idempotent_with_check_mode_and_diff(cloud, tmp_path):
    args = dict(cloud, name='kvm2', enabled=False, disabled_reason='firmware upgrade')
    checked = ansible_module('multihv.cloud.compute_node', args, check=True, diff=True)
    assert checked['changed'] is True and checked['node']['enabled'] is False
    assert '-    "enabled": true,' in checked['_output'] and '+    "disabled_reason": "firmware upgrade",' in checked['_output']
    assert not (tmp_path / 'registry.sqlite').exists(), 'check mode created the registry'

    assert ansible_module('multihv.cloud.compute_node', args)['changed'] is True
    assert ansible_module('multihv.cloud.compute_node', args)['changed'] is False
    node = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', dict(cloud, enabled=False)))['kvm2']
    assert (node['enabled'], node['disabled_reason']) == (False, 'firmware upgrade')

    enabled = ansible_module('multihv.cloud.compute_node', dict(cloud, name='kvm2', enabled=True))
    assert enabled['changed'] is True and enabled['node']['disabled_reason'] is None


def test_placement_and_capacity_settings(cloud):
    args = dict(cloud, name='kvm1', availability_zone='gold', aggregates=['gold', 'ssd'],
                allocation_ratios={'cpu': 2.0}, reserved={'memory_mb': 1024, 'vcpus': 1}, reserved_for_failover=True)
    assert ansible_module('multihv.cloud.compute_node', args)['changed'] is True
    assert ansible_module('multihv.cloud.compute_node', args)['changed'] is False
    node = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', dict(cloud, availability_zone='gold')))['kvm1']
    assert node['aggregates'] == ['gold', 'ssd'] and node['reserved_for_failover'] is True
    assert node['allocation_ratios'] == {'cpu': 2.0, 'ram': 1.0, 'disk': 1.0}
    assert node['capacity']['vcpus'] == (node['physical']['vcpus'] - 1) * 2
    assert node['capacity']['memory_mb'] == node['physical']['memory_mb'] - 1024


def test_cluster_node_by_name(cloud):
    cluster = ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere'))['nodes'][0]['name']
    result = ansible_module('multihv.cloud.compute_node', dict(cloud, name=cluster, forced_down=True))
    assert result['changed'] is True and result['node']['forced_down'] is True
    assert nodes_by_name(ansible_module('multihv.cloud.compute_node_info', cloud))[cluster]['forced_down'] is True


def test_down_kvm_host_is_reported_down_not_failed(lab, cloud):
    try:
        lab.make('lab-fail', 'HOST=kvm2')
        nodes = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', cloud))
    finally:
        lab.make('lab-restore', 'HOST=kvm2')
    assert nodes['kvm2']['state'] == 'down' and 'kvm2' in nodes['kvm2']['reason']
    assert nodes['kvm2']['capacity']['vcpus'] == 0
    assert nodes['kvm1']['state'] == 'up'


def test_failed_esxi_host_leaves_the_cluster_capacity(lab, cloud):
    before = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere')))
    name, cluster = sorted(before.items())[0]
    esxi = cluster['hosts'][0]
    try:
        lab.make('lab-fail', f'HOST={esxi["name"]}')
        after = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=[name])))[name]
    finally:
        lab.make('lab-restore', f'HOST={esxi["name"]}')
    assert after['state'] == 'up'
    assert [h['connection_state'] for h in after['hosts'] if h['name'] == esxi['name']] == ['notResponding']
    assert after['physical']['memory_mb'] == cluster['physical']['memory_mb'] - esxi['memory_mb']
    assert after['physical']['vcpus'] == cluster['physical']['vcpus'] - esxi['vcpus']


@pytest.mark.parametrize('args, message', [
    ({'name': 'no-such-node', 'enabled': False}, 'no compute node named no-such-node; the cloud has '),
    ({'name': 'kvm1', 'allocation_ratios': {'cpu': 0}}, 'allocation_ratios.cpu must be greater than 0'),
    ({'name': 'kvm1', 'enabled': 'maybe'}, "enabled"),
    ({'name': 'kvm1', 'reserved': {'memory_mb': 'lots'}}, 'memory_mb'),
])
def test_bad_input_fails_clearly_and_writes_nothing(cloud, tmp_path, args, message):
    result = ansible_module('multihv.cloud.compute_node', dict(cloud, **args), expect_failure=True)
    assert message in result['msg']
    path = tmp_path / 'registry.sqlite'
    if path.exists():
        with sqlite3.connect(path) as db:
            assert db.execute('SELECT count(*) FROM nodes').fetchone() == (0,)


def test_bad_cloud_file_and_registry(lab, tmp_path):
    bad = tmp_path / 'cloud.yml'
    bad.write_text('kvm_hosts:\n  - name: kvm1\n    uri: http://nope\nregistry: {url: "sqlite:////tmp/x.sqlite"}\n')
    result = ansible_module('multihv.cloud.compute_node_info', {'cloud_file': str(bad)}, expect_failure=True)
    assert result['msg'].startswith(f'{bad}: kvm_hosts[0].uri must be a libvirt QEMU URI')
    # A reader of a registry that is not there sees an empty one and creates nothing (issue 16).
    result = ansible_module('multihv.cloud.compute_node_info', {'cloud_file': str(lab.dir / 'multihv-cloud.yml'),
                                                                'registry_url': 'sqlite:////nonexistent/dir/r.sqlite'})
    assert nodes_by_name(result)['kvm1']['enabled'] is True and not pathlib.Path('/nonexistent/dir').exists()


def test_wrong_vcenter_password_names_the_vcenter(lab, cloud):
    result = ansible_module('multihv.cloud.compute_node_info', cloud, env={'MULTIHV_VCENTER_VCSIM_PASSWORD': 'wrong'},
                            expect_failure=True)
    assert 'vcsim' in result['msg'] and 'wrong' not in result['msg'].replace('wrong user', '')


def test_unreachable_vcenter_is_down_not_fatal(lab, tmp_path):
    cloud_file = tmp_path / 'cloud.yml'
    cloud_file.write_text((lab.dir / 'multihv-cloud.yml').read_text().replace(f'port: {lab.info["vcsim"]["port"]}', 'port: 1'))
    nodes = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', {
        'cloud_file': str(cloud_file), 'registry_url': f'sqlite:///{tmp_path}/r.sqlite'}))
    assert nodes['vcsim']['state'] == 'down' and '127.0.0.1:1' in nodes['vcsim']['reason']
    assert nodes['kvm1']['state'] == 'up'


def test_module_defaults_group_carries_the_cloud_file(lab, tmp_path):
    playbook = tmp_path / 'play.yml'
    playbook.write_text(f"""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/multihv.cloud.all:
      cloud_file: {lab.dir}/multihv-cloud.yml
      registry_url: sqlite:///{tmp_path}/r.sqlite
  tasks:
    - multihv.cloud.compute_node:
        name: kvm1
        aggregates: [grouped]
    - multihv.cloud.compute_node_info:
        aggregate: grouped
      register: grouped
    - ansible.builtin.assert:
        that: grouped.nodes | map(attribute='name') | list == ['kvm1']
""")
    run('ansible-playbook', str(playbook))


def test_stuck_kvm_host_is_down_after_its_timeout(lab, tmp_path):
    """A libvirtd that accepts connections and never answers (hung, or a black hole)."""
    import socket  # pylint: disable=import-outside-toplevel
    import yaml  # pylint: disable=import-outside-toplevel
    stuck = socket.socket()
    stuck.bind(('127.0.0.1', 0))
    stuck.listen(8)
    cloud = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    cloud['kvm_hosts'].append({'name': 'stuck', 'uri': f'qemu+tcp://127.0.0.1:{stuck.getsockname()[1]}/system', 'timeout': 1})
    cloud_file = tmp_path / 'cloud.yml'
    cloud_file.write_text(yaml.safe_dump(cloud))
    try:
        # A thread left blocked on the stuck host must not keep the module from exiting.
        nodes = nodes_by_name(ansible_module('multihv.cloud.compute_node_info', {
            'cloud_file': str(cloud_file), 'registry_url': f'sqlite:///{tmp_path}/r.sqlite'}, timeout=60))
    finally:
        stuck.close()
    assert nodes['stuck']['state'] == 'down' and 'did not answer within 1 s' in nodes['stuck']['reason']
    assert nodes['kvm1']['state'] == nodes['kvm2']['state'] == 'up'
