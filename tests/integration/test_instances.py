"""flavor, image and instance against the lab, through real Ansible runs."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib

import pytest
import yaml

from support.cloud import allocations, domain_active, domains, registry_rows, vcsim_guest_documents, vcsim_vm
from support.lab import ansible_module, run, serial, wait_for


KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6i2CvFCwz54Soz+ludqXfqXyZnzDCGFwjweGz3enl5 it@example'
SECRET = 'it-user-data-secret-4711'


def test_boot_pinned_idempotent_power_cycle_and_delete(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.keypair', dict(cloud, name='it-key', public_key=KEY))
    args = dict(cloud, name='it-pinned', flavor='tiny', image='tick', node='kvm1', key_name='it-key',
                user_data='#cloud-config\nbootcmd: [echo %s]\n' % SECRET)
    first = ansible_module('multihv.cloud.instance', args, diff=True)
    assert first['changed'] is True and first['instance']['node'] == 'kvm1' and first['instance']['state'] == 'running'
    assert domain_active(lab, 'kvm1', 'it-pinned')
    # The generated password is returned once; user_data (no_log) and the password are nowhere else.
    password = first['instance']['admin_password']
    assert len(password) == 20 and first['_output'].count(password) == 1 and SECRET not in first['_output']
    stored = b''.join(f.read_bytes() for f in tmp_path.glob('registry.sqlite*'))  # the database and its write-ahead log
    assert password.encode() not in stored and SECRET.encode() not in stored and KEY.encode() in stored
    again = ansible_module('multihv.cloud.instance', args)
    assert again['changed'] is False and 'admin_password' not in again['instance']
    assert allocations(tmp_path) == {'kvm1': 32}

    stopped = ansible_module('multihv.cloud.instance', dict(args, state='stopped'))
    assert stopped['changed'] is True and not domain_active(lab, 'kvm1', 'it-pinned')
    assert ansible_module('multihv.cloud.instance', dict(args, state='stopped'))['changed'] is False
    assert ansible_module('multihv.cloud.instance', dict(args, state='started'))['changed'] is True
    assert domain_active(lab, 'kvm1', 'it-pinned')

    info = ansible_module('multihv.cloud.instance_info', dict(cloud, names=['it-pinned']))['instances']
    assert [(i['name'], i['power_state'], i['node']) for i in info] == [('it-pinned', 'running', 'kvm1')]

    gone = ansible_module('multihv.cloud.instance', dict(cloud, name='it-pinned', state='absent'))
    assert gone['changed'] is True and 'it-pinned' not in domains(lab, 'kvm1')
    assert allocations(tmp_path) == {}
    assert ansible_module('multihv.cloud.instance', dict(cloud, name='it-pinned', state='absent'))['changed'] is False


def test_rebuild_starts_a_fresh_disk_and_keeps_the_instance(lab, cloud, tmp_path):
    args = dict(cloud, name='it-rebuild', flavor='tiny', image='tick', node='kvm2', storage='shared')
    before = ansible_module('multihv.cloud.instance', args)['instance']
    log = pathlib.Path(lab.info['shared_instance_path']) / f"{before['uuid']}.console.log"

    def boots(count):
        wait_for(lambda: len(serial(log)) >= count and len(serial(log)[-1].ticks) >= 3, 30, f'{count} boot(s) in {log}')
        return serial(log)

    boots(1)
    ansible_module('multihv.cloud.instance', dict(args, state='restarted'))
    assert boots(2)[1].persisted is not None, 'a restart keeps the disk: the guest finds its last tick there'

    assert ansible_module('multihv.cloud.instance', dict(args, state='rebuilt'), check=True)['changed'] is True
    assert len(serial(log)) == 2, 'check mode rebuilt it'
    result = ansible_module('multihv.cloud.instance', dict(args, state='rebuilt'))
    after = result['instance']
    assert result['changed'] is True
    assert (after['uuid'], after['node'], after['identity'], after['state']) == (
        before['uuid'], 'kvm2', before['identity'], 'running')
    first = boots(1)[0]
    assert first.persisted is None, 'the rebuilt disk still held the old tick'
    assert allocations(tmp_path) == {'kvm2': 32}

    other = ansible_module('multihv.cloud.instance', dict(args, state='rebuilt', image='nope'), expect_failure=True)
    assert 'image nope does not exist' in other['msg'] and 'left untouched' in other['msg']
    assert domain_active(lab, 'kvm2', 'it-rebuild')


def test_a_name_clash_changes_nothing(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.flavor', dict(cloud, name='tiny2', vcpus=1, ram_mb=48, disk_gb=1))
    first = ansible_module('multihv.cloud.instance', dict(cloud, name='it-clash', flavor='tiny', image='tick', node='kvm1'))['instance']
    for other in ({'flavor': 'tiny2', 'state': 'rebuilt'}, {'image': 'other'}):  # another flavor alone resizes it
        refused = ansible_module('multihv.cloud.instance', {**cloud, 'name': 'it-clash', 'flavor': 'tiny', 'image': 'tick', **other},
                                 expect_failure=True)
        assert 'instance it-clash exists with' in refused['msg'] and 'Nothing was changed' in refused['msg']
    again = ansible_module('multihv.cloud.instance', dict(cloud, name='it-clash', state='absent'), check=True)
    assert again['changed'] is True  # still there, still the first one
    assert registry_rows(tmp_path, 'SELECT uuid, flavor, image FROM instances') == [(first['uuid'], 'tiny', 'tick')]
    assert allocations(tmp_path) == {'kvm1': 32}
    assert domains(lab, 'kvm1').count('it-clash') == 1


def test_check_mode_places_without_booting(lab, cloud, tmp_path):
    result = ansible_module('multihv.cloud.instance', dict(cloud, name='it-check', flavor='tiny', image='tick'), check=True)
    assert result['changed'] is True and result['instance']['node'] in lab.hosts
    assert allocations(tmp_path) == {} and 'it-check' not in domains(lab, 'kvm1') + domains(lab, 'kvm2')


def test_a_full_node_sends_the_next_instance_elsewhere(lab, cloud, tmp_path):
    # Leave kvm1 room for exactly one tiny instance.
    node = ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=['kvm1']))['nodes'][0]
    reserve = node['physical']['memory_mb'] - 40
    ansible_module('multihv.cloud.compute_node', dict(cloud, name='kvm1', reserved={'memory_mb': reserve}))
    ansible_module('multihv.cloud.instance', dict(cloud, name='it-fill', flavor='tiny', image='tick', node='kvm1'))
    placed = ansible_module('multihv.cloud.instance', dict(cloud, name='it-next', flavor='tiny', image='tick'))
    assert placed['instance']['node'] == 'kvm2'
    refused = ansible_module('multihv.cloud.instance', dict(cloud, name='it-over', flavor='tiny', image='tick', node='kvm1'),
                             expect_failure=True)
    assert 'ResourcesFilter removed kvm1' in refused['msg'] and 'NodeFilter removed' in refused['msg']


def test_batch_boot_with_anti_affinity(lab, cloud, tmp_path):
    ansible_module('multihv.cloud.server_group', dict(cloud, name='spread', policy='anti-affinity'))
    result = ansible_module('multihv.cloud.instance', dict(cloud, instances=[{'name': 'it-b1'}, {'name': 'it-b2'}],
                                                           flavor='tiny', image='tick', server_group='spread'))
    assert sorted(i['node'] for i in result['instances']) == ['kvm1', 'kvm2']
    third = ansible_module('multihv.cloud.instance', dict(cloud, name='it-b3', flavor='tiny', image='tick', server_group='spread'),
                           expect_failure=True)
    assert 'ServerGroupFilter removed kvm1, kvm2' in third['msg']


def test_concurrent_runs_never_overcommit(lab, cloud, tmp_path):
    """Two ansible-playbook runs boot into room for three instances in all."""
    for name in lab.hosts:
        node = ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=[name]))['nodes'][0]
        # kvm1 takes two tiny instances, kvm2 one; vSphere nodes are out of the way (KVM image).
        room = 70 if name == 'kvm1' else 40
        ansible_module('multihv.cloud.compute_node', dict(cloud, name=name, reserved={'memory_mb': node['physical']['memory_mb'] - room}))
    playbooks = []
    for run_id in ('a', 'b'):
        path = tmp_path / f'boot-{run_id}.yml'
        path.write_text(yaml.safe_dump([{'hosts': 'localhost', 'gather_facts': False, 'tasks': [
            {'multihv.cloud.instance': dict(cloud, instances=[{'name': f'it-{run_id}{i}'} for i in range(3)],
                                            flavor='tiny', image='tick'), 'ignore_errors': True}]}]))
        playbooks.append(path)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda p: run('ansible-playbook', str(p), check=False), playbooks))
    booted = registry_rows(tmp_path, "SELECT node, count(*) FROM instances WHERE state = 'running' GROUP BY node")
    left = registry_rows(tmp_path, "SELECT count(*) FROM instances WHERE state != 'running'")[0][0]
    assert dict(booted) == {'kvm1': 2, 'kvm2': 1}
    assert left == 0, 'a failed boot left its record behind'
    assert allocations(tmp_path) == {'kvm1': 64, 'kvm2': 32}
    running = [d for h in lab.hosts for d in domains(lab, h) if d.startswith('it-')]
    assert len(running) == 3


@pytest.mark.parametrize('args, message', [
    ({'flavor': 'nope'}, 'flavor nope does not exist'),
    ({'image': 'nope'}, 'image nope does not exist'),
    ({'node': 'vcsim/DC0/DC0_C0'}, 'image tick is for kvm nodes; node vcsim/DC0/DC0_C0 is vsphere'),
    ({'node': 'no-such-node'}, 'node no-such-node is not in the cloud file; nothing was created'),
])
def test_bad_boots_leave_nothing_behind(lab, cloud, tmp_path, args, message):
    result = ansible_module('multihv.cloud.instance', {**cloud, 'name': 'it-bad', 'flavor': 'tiny', 'image': 'tick', **args},
                            expect_failure=True)
    assert message in result['msg']
    assert registry_rows(tmp_path, 'SELECT count(*) FROM instances') == [(0,)]
    assert allocations(tmp_path) == {}
    assert 'it-bad' not in domains(lab, 'kvm1') + domains(lab, 'kvm2')


def test_fits_a_cluster_total_but_no_single_esxi_host(lab, cloud, template):
    cluster = ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere'))['nodes'][0]
    largest = cluster['largest_host_free']['memory_mb']
    assert cluster['free']['memory_mb'] > largest + 1024, 'the lab cluster is not fragmented enough for this test'
    ansible_module('multihv.cloud.flavor', dict(cloud, name='wide', vcpus=1, ram_mb=largest + 512, disk_gb=1))
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    result = ansible_module('multihv.cloud.instance', dict(cloud, name='it-wide', flavor='wide', image='tmpl', node=cluster['name']),
                            expect_failure=True)
    assert f'ClusterHostFitFilter removed {cluster["name"]}' in result['msg']
    assert 'nothing was created' in result['msg']


def test_boot_power_and_delete_on_vsphere_through_the_module(lab, cloud, template):
    clusters = ansible_module('multihv.cloud.compute_node_info', dict(cloud, hypervisor_type='vsphere'))['nodes']
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    # Scheduled: the image's hypervisor type alone sends it to a vSphere cluster.
    ansible_module('multihv.cloud.keypair', dict(cloud, name='it-key', public_key=KEY))
    args = dict(cloud, name='it-vsphere', flavor='tiny', image='tmpl', metadata={'role': 'e2e'}, hostname='legacy.example',
                key_name='it-key', user_data='#cloud-config\nbootcmd: [echo %s]\n' % SECRET)
    booted = ansible_module('multihv.cloud.instance', args)
    record = booted['instance']
    # cloud-init's VMware datasource finds the instance's identity, key, user_data and generated password.
    documents = vcsim_guest_documents(lab, 'it-vsphere')
    metadata = yaml.safe_load(documents['metadata'])
    assert (metadata['instance-id'], metadata['local-hostname'], metadata['public-keys']) == (record['uuid'], 'legacy.example', [KEY])
    assert SECRET in documents['userdata'] and record['admin_password'] in documents['userdata']
    assert SECRET not in booted['_output']
    hosts = dict((c['name'], [h['name'] for h in c['hosts']]) for c in clusters)
    assert booted['changed'] is True and record['node'] in hosts and record['state'] == 'running'
    assert record['host'] in hosts[record['node']]
    assert vcsim_vm(lab, 'it-vsphere') == ('poweredOn', record['host'])
    assert ansible_module('multihv.cloud.instance', args)['changed'] is False

    ansible_module('multihv.cloud.instance', dict(args, state='stopped'))
    assert vcsim_vm(lab, 'it-vsphere') == ('poweredOff', record['host'])
    info = ansible_module('multihv.cloud.instance_info', dict(cloud, names=['it-vsphere']))['instances'][0]
    assert (info['power_state'], info['host'], info['node']) == ('stopped', record['host'], record['node'])

    ansible_module('multihv.cloud.instance', dict(cloud, name='it-vsphere', state='absent'))
    assert vcsim_vm(lab, 'it-vsphere') is None


def test_runs_placing_one_image_at_once_take_turns(lab, cloud, tmp_path):
    """Three processes ready one new image on both hosts at once: without the registry lease one
    replaces the base another is still uploading, and that upload fails."""
    from ansible_collections.multihv.cloud.plugins.module_utils import _config  # pylint: disable=import-outside-toplevel
    from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver  # pylint: disable=import-outside-toplevel
    source = tmp_path / 'race.raw'  # large enough for the uploads to overlap
    source.write_bytes(pathlib.Path(lab.info['images']['tick_raw']).read_bytes().ljust(96 * 1024 * 1024, b'\0'))
    args = dict(cloud, name='it-race', hypervisor_type='kvm', source=str(source), format='raw')
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: ansible_module('multihv.cloud.image', args), range(3)))
        assert all(r['image']['locations'] == {'kvm1': 'present', 'kvm2': 'present'} for r in results)
        for host in lab.hosts:
            assert (pathlib.Path(lab.hosts[host]['local_dir']) / '_base' / 'it-race.raw').read_bytes() == source.read_bytes()
        assert ansible_module('multihv.cloud.image', args)['changed'] is False
    finally:
        for host in _config.load(cloud['cloud_file'], env={}).kvm_hosts:
            driver = LibvirtDriver(host)
            driver.remove_image('it-race')
            driver.close()


def test_fixed_ips_on_a_bridge_where_the_network_is(lab, cloud, tmp_path):
    """A network only on kvm2 (a bridge there): the scheduler sends its instances to kvm2, each NIC is on the bridge
    with its MAC, addresses are allocated and shown, a taken fixed IP is refused naming its holder, a delete frees it."""
    bridge = 'mhv-net%d' % (os.getpid() % 10000)  # stays down, no address, no uplink: nothing leaves it
    run('ip', 'link', 'add', bridge, 'type', 'bridge')
    try:
        ansible_module('multihv.cloud.network', dict(cloud, name='it-net', cidr='192.0.2.0/28', gateway='192.0.2.1',
                                                     backings=[{'backing': 'bridge:' + bridge, 'nodes': ['kvm2']}]))
        first = ansible_module('multihv.cloud.instance', dict(cloud, name='it-net-1', flavor='tiny', image='tick',
                                                              networks=[{'network': 'it-net'}]))['instance']
        assert first['node'] == 'kvm2' and first['addresses'] == {'it-net': ['192.0.2.2']}
        (nic,) = first['identity']['networks']
        conn = lab.connect('kvm2')
        try:
            xml = conn.lookupByName('it-net-1').XMLDesc()
        finally:
            conn.close()
        assert f"<source bridge='{bridge}'/>" in xml and f"<mac address='{nic['mac']}'/>" in xml
        second = ansible_module('multihv.cloud.instance', dict(cloud, name='it-net-2', flavor='tiny', image='tick', networks=[
            {'network': 'it-net', 'fixed_ip': '192.0.2.9'}]))['instance']
        assert second['addresses'] == {'it-net': ['192.0.2.9']}
        info = ansible_module('multihv.cloud.instance_info', dict(cloud, names=['it-net-1', 'it-net-2'], live=False))['instances']
        assert dict((i['name'], i['addresses']) for i in info) == {'it-net-1': {'it-net': ['192.0.2.2']}, 'it-net-2': {'it-net': ['192.0.2.9']}}

        taken = ansible_module('multihv.cloud.instance', dict(cloud, name='it-net-3', flavor='tiny', image='tick', networks=[
            {'network': 'it-net', 'fixed_ip': '192.0.2.9'}]), expect_failure=True)
        assert 'fixed_ip 192.0.2.9 on network it-net is taken by instance it-net-2; nothing was created' in taken['msg']
        refused = ansible_module('multihv.cloud.instance', dict(cloud, name='it-net-3', flavor='tiny', image='tick', node='kvm1',
                                                                networks=[{'network': 'it-net'}]), expect_failure=True)
        assert 'NetworkFilter removed kvm1 (network it-net: not there)' in refused['msg']
        assert registry_rows(tmp_path, "SELECT count(*) FROM instances WHERE name = 'it-net-3'") == [(0,)]

        ansible_module('multihv.cloud.instance', dict(cloud, name='it-net-2', state='absent'))
        assert registry_rows(tmp_path, 'SELECT address FROM ports') == [('192.0.2.2',)]
        again = ansible_module('multihv.cloud.instance', dict(cloud, name='it-net-3', flavor='tiny', image='tick', networks=[
            {'network': 'it-net', 'fixed_ip': '192.0.2.9'}]))['instance']
        assert again['addresses'] == {'it-net': ['192.0.2.9']}
    finally:
        for name in ('it-net-1', 'it-net-2', 'it-net-3'):
            ansible_module('multihv.cloud.instance', dict(cloud, name=name, state='absent'))
        run('ip', 'link', 'del', bridge, check=False)
