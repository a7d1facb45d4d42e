"""The multihv.cloud.nodes inventory plugin through real ansible-inventory and ansible-playbook runs."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from ansible_collections.multihv.cloud.plugins.module_utils._registry.schema import SCHEMA_VERSION
from support.lab import ansible_module, run


@pytest.fixture
def source(lab, tmp_path):
    """Write an inventory source and return a function that lists it."""
    def write(**options):
        config = {'plugin': 'multihv.cloud.nodes', 'cloud_file': str(lab.dir / 'multihv-cloud.yml'),
                  'registry_url': f'sqlite:///{tmp_path}/registry.sqlite'}
        config.update(options)
        path = tmp_path / 'cloud.multihv.yml'
        path.write_text(yaml.safe_dump(config))
        return path
    return write


def plain(value):
    """ansible-inventory --list writes unsafe values as {"__ansible_unsafe": value}: every value of ours is one."""
    if isinstance(value, dict):
        if set(value) == {'__ansible_unsafe'}:
            return value['__ansible_unsafe']
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def inventory(path, *extra, env=None):
    result = run('ansible-inventory', '-i', str(path), '--list', *extra, check=False,
                 env=dict(env or {}, ANSIBLE_INVENTORY_UNPARSED_FAILED='true'))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    assert data['_meta']['hostvars']['kvm1']['multihv_name'] == {'__ansible_unsafe': 'kvm1'}
    return plain(data)


def test_one_host_per_node_grouped(lab, source, tmp_path):
    data = inventory(source())
    assert not (tmp_path / 'registry.sqlite').exists(), 'the inventory created the registry'
    hostvars = data['_meta']['hostvars']
    kvm = sorted(data['hypervisor_kvm']['hosts'])
    vsphere = sorted(data['hypervisor_vsphere']['hosts'])
    assert kvm == sorted(lab.hosts)
    assert len(vsphere) == lab.info['vcsim']['clusters'] * lab.info['vcsim']['datacenters']
    assert sorted(data['state_up']['hosts']) == sorted(kvm + vsphere)
    assert sorted(data['aggregate_cattle']['hosts']) == kvm and sorted(data['az_vsphere']['hosts']) == vsphere
    kvm1 = hostvars['kvm1']
    assert kvm1['multihv_hypervisor_type'] == 'kvm' and kvm1['multihv_endpoint'] == lab.uri('kvm1')
    assert kvm1['multihv_capacity']['vcpus'] > 0 and kvm1['multihv_enabled'] is True
    assert kvm1['multihv_networks'] == {}
    cluster = hostvars[vsphere[0]]
    assert len(cluster['multihv_hosts']) == lab.info['vcsim']['hosts_per_cluster']
    assert cluster['multihv_largest_host_free']['memory_mb'] > 0


def test_query_compose_and_keyed_groups(source):
    data = inventory(source(query="hypervisor_type == 'kvm' && state == 'up'",
                            compose={'free_vcpus': 'multihv_free.vcpus'},
                            keyed_groups=[{'key': 'multihv_availability_zone', 'prefix': 'zone'}]))
    hosts = sorted(data['_meta']['hostvars'])
    assert hosts == ['kvm1', 'kvm2']
    assert sorted(data['zone_kvm']['hosts']) == hosts
    assert all(isinstance(v['free_vcpus'], int) for v in data['_meta']['hostvars'].values())


def test_each_node_shows_the_networks_there_and_the_registry_is_only_read(lab, source, tmp_path):
    url = f'sqlite:///{tmp_path}/registry.sqlite'
    cloud = {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': url}
    ansible_module('multihv.cloud.network', dict(cloud, name='tenant', cidr='192.0.2.0/24', backings=[
        {'backing': 'bridge:br-t', 'nodes': ['kvm2']}, {'backing': 'default', 'hypervisor_type': 'kvm'},
        {'backing': 'VM Network', 'endpoints': ['vcsim']}]))
    data = inventory(source(query="contains(keys(networks), 'tenant')"))
    hostvars = data['_meta']['hostvars']
    assert hostvars['kvm1']['multihv_networks'] == {'tenant': 'default'} and hostvars['kvm2']['multihv_networks'] == {'tenant': 'bridge:br-t'}
    assert sorted(hostvars) == sorted(data['hypervisor_kvm']['hosts'] + data['hypervisor_vsphere']['hosts'])
    assert all(hostvars[name]['multihv_networks'] == {'tenant': 'VM Network'} for name in data['hypervisor_vsphere']['hosts'])
    # A registry older than the collection's schema is refused, never upgraded.
    with sqlite3.connect(tmp_path / 'registry.sqlite') as conn:
        conn.execute('DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)')
    result = run('ansible-inventory', '-i', str(source()), '--list', check=False, env={'ANSIBLE_INVENTORY_UNPARSED_FAILED': 'true'})
    assert result.returncode != 0 and 'upgrade it with multihv.cloud.registry' in result.stdout + result.stderr
    with sqlite3.connect(tmp_path / 'registry.sqlite') as conn:
        assert conn.execute('SELECT max(version) FROM schema_version').fetchone()[0] == SCHEMA_VERSION - 1


def test_bad_query_fails_naming_it(source):
    result = run('ansible-inventory', '-i', str(source(query='state ==')), '--list', check=False,
                 env={'ANSIBLE_INVENTORY_UNPARSED_FAILED': 'true'})
    assert result.returncode != 0 and 'is not valid JMESPath' in result.stdout + result.stderr


def test_down_host_is_a_host_in_state_down_and_cache(lab, source, tmp_path):
    path = source(cache=True, cache_plugin='ansible.builtin.jsonfile', cache_connection=str(tmp_path / 'cache'))
    assert 'kvm2' in inventory(path)['state_up']['hosts']
    try:
        lab.make('lab-fail', 'HOST=kvm2')
        cached = inventory(path)
        fresh = inventory(path, '--flush-cache')
    finally:
        lab.make('lab-restore', 'HOST=kvm2')
    assert 'kvm2' in cached['state_up']['hosts'], 'the cache was not used'
    assert fresh['state_down']['hosts'] == ['kvm2']
    assert 'kvm2' in fresh['_meta']['hostvars']['kvm2']['multihv_reason']


def test_vcenter_password_from_the_environment(lab, source, tmp_path):
    cloud = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    del cloud['vcenters'][0]['password']
    path = source(cloud=cloud, cloud_file=None)
    result = run('ansible-inventory', '-i', str(path), '--list', check=False, env={'ANSIBLE_INVENTORY_UNPARSED_FAILED': 'true'})
    assert result.returncode != 0 and 'has no password' in result.stdout + result.stderr
    data = inventory(path, env={'MULTIHV_VCENTER_PASSWORD': 'lab-only-secret'})
    assert data['hypervisor_vsphere']['hosts']


def test_api_values_are_unsafe(lab, source, tmp_path):
    """A cluster named like a template must not run it on the controller."""
    marker = tmp_path / 'pwned'
    evil = "{{ lookup('ansible.builtin.pipe', 'touch %s') }}" % marker
    vcsim = lab.info['vcsim']
    si = SmartConnect(host=vcsim['host'], port=vcsim['port'], user=vcsim['username'], pwd='lab-only-secret',
                      disableSslCertValidation=True)
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.ClusterComputeResource], True)
    cluster = sorted(view.view, key=lambda c: c.name)[-1]
    original = cluster.name
    playbook = tmp_path / 'show.yml'
    playbook.write_text(yaml.safe_dump([{'hosts': 'hypervisor_vsphere', 'gather_facts': False, 'tasks': [
        {'ansible.builtin.debug': {'msg': '{{ multihv_name }} {{ multihv_hosts | map(attribute="name") | list }}'}}]}]))
    try:
        WaitForTask(cluster.Rename_Task(evil))
        result = run('ansible-playbook', '-i', str(source()), str(playbook), check=False)
    finally:
        WaitForTask(cluster.Rename_Task(original))
        Disconnect(si)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "lookup('ansible.builtin.pipe'" in result.stdout
    assert not marker.exists(), 'a value from vCenter was templated on the controller'
