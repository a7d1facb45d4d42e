"""evacuate, the clean-up of a node that comes back (compute_node), and instance_ha, against the lab:
kvm2 loses power (Lab.power_loss: the lab's fail action) with instances on it, they are rebuilt on
kvm1, kvm2 comes back (its domains defined and shut off) and loses its stale copies.

The lab's cloud file gives each KVM host a fence_command that kills it (`kvm-host kill`).
"""

from __future__ import annotations

import pathlib
import subprocess
import time

import pytest
import yaml

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from support.cloud import allocations, boot, bring_back, console_log, domain_active, domains, registry_rows, ticks, wait_ticks
from support.faults import heartbeat
from support.lab import ansible_module, serial, wait_for


# A Linux bridge for the guests' NICs, so that their MACs are there to compare. It stays down
# and has no address and no uplink: nothing leaves it.
BRIDGE = 'mhv-evac0'


@pytest.fixture
def bridge(cloud):  # pylint: disable=redefined-outer-name
    """The registry network evac (a subnet of the documentation range), the bridge on every KVM host."""
    subprocess.run(['ip', 'link', 'add', BRIDGE, 'type', 'bridge'], check=True)
    try:
        ansible_module('multihv.cloud.network', dict(cloud, name='evac', cidr='192.0.2.0/24',
                                                     backings=[{'backing': 'bridge:' + BRIDGE, 'hypervisor_type': 'kvm'}]))
        yield 'evac'
    finally:
        subprocess.run(['ip', 'link', 'del', BRIDGE], check=False)


def evacuate(cloud, expect_failure=False, **args):
    return ansible_module('multihv.cloud.evacuate', dict(cloud, **args), expect_failure=expect_failure)


# The lab hosts write storage heartbeats; a pass waits on a failed host until its last one is this old.
HEARTBEAT_TIMEOUT = 5


def ha_pass(cloud, expect_failure=False, check=False, **args):
    args.setdefault('heartbeat_timeout', HEARTBEAT_TIMEOUT)
    return ansible_module('multihv.cloud.instance_ha', dict(cloud, **args), expect_failure=expect_failure, check=check)


def heartbeat_aged(lab, host):
    """Wait until the last storage heartbeat of a host that lost its power is older than HEARTBEAT_TIMEOUT."""
    wait_for(lambda: time.time() - (heartbeat(lab, host) or 0) > HEARTBEAT_TIMEOUT + 1, 30, f'the heartbeat of {host} to age')


def running_copies(lab, name):
    """The lab hosts on which a domain called name runs (a host that is down runs nothing)."""
    return [host for host in lab.hosts if lab.answers(host) and name in domains(lab, host) and domain_active(lab, host, name)]


def domain_macs(lab, host, name):
    conn = lab.connect(host)
    try:
        return domxml.parse_domain(conn.lookupByName(name).XMLDesc(0)).macs
    finally:
        conn.close()


def without_fencing(lab, tmp_path):
    """A copy of the lab's cloud file whose hosts have no fence_command."""
    data = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    for host in data['kvm_hosts']:
        host.pop('fence_command', None)
    path = tmp_path / 'unfenced.yml'
    path.write_text(yaml.safe_dump(data))
    return str(path)


REFUSED = [
    ({'node': 'kvm2'}, 'node kvm2 answers (its hypervisor is reachable): evacuation starts second copies'),
    ({'node': 'vcsim/DC0/DC0_C0'}, 'vSphere HA restarts the VMs of a failed ESXi host'),
    ({'node': 'kvm9'}, 'node kvm9 is not in the cloud'),
    ({'node': 'kvm2', 'target_node': 'kvm2'}, 'target_node kvm2 is the failed node itself'),
    ({'node': 'kvm2', 'target_node': 'vcsim/DC0/DC0_C0'}, 'KVM instances are rebuilt on KVM nodes only'),
    ({'node': 'kvm2', 'instances': ['nobody']}, 'node kvm2 has no running or stopped instance nobody'),
]


def test_refused_evacuations_change_nothing(lab, cloud, tmp_path):
    boot(cloud, 'ev-refused', node='kvm2')
    for args, message in REFUSED:
        refused = evacuate(cloud, expect_failure=True, **args)
        assert message in refused['msg'] and 'othing was evacuated' in refused['msg'], args
    assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]
    assert registry_rows(tmp_path, 'SELECT node, state FROM instances') == [('kvm2', 'running')]
    assert registry_rows(tmp_path, 'SELECT count(*) FROM nodes WHERE forced_down = 1') == [(0,)]
    assert domain_active(lab, 'kvm2', 'ev-refused')


def test_evacuation_then_recovery_of_the_failed_host(lab, cloud, tmp_path, bridge):  # pylint: disable=redefined-outer-name
    shared = [boot(cloud, f'ev-shared-{n}', node='kvm2', restart_priority=n, ha=(n == 1)) for n in range(3)]
    local = boot(cloud, 'ev-local', node='kvm2', storage='local', networks=[{'network': bridge}])
    # ev-shared-0 waits for its resize when kvm2 fails: evacuated with its new flavor, the resize confirmed.
    ansible_module('multihv.cloud.flavor', dict(cloud, name='tiny-wide', vcpus=2, ram_mb=48, disk_gb=2))
    resized = ansible_module('multihv.cloud.instance', dict(cloud, name='ev-shared-0', flavor='tiny-wide', image='tick'))['instance']
    assert (resized['state'], resized['node']) == ('verify_resize', 'kvm2')
    kept = pathlib.Path(lab.info['shared_instance_path']) / f"{resized['uuid']}.resize.qcow2"
    assert kept.exists()
    logs = dict((r['name'], console_log(lab, r)) for r in shared)
    for log in logs.values():
        wait_ticks(log, count=4)
    wait_ticks(console_log(lab, local), count=2)
    boots = dict((name, len(serial(log))) for name, log in logs.items())

    with lab.power_loss('kvm2'):
        last = dict((name, ticks(log)[-1]) for name, log in logs.items())
        # Down, but not fenced nor forced down: refused.
        unfenced = evacuate(dict(cloud, cloud_file=without_fencing(lab, tmp_path)), node='kvm2', expect_failure=True)
        assert 'neither forced down nor fenceable' in unfenced['msg']
        planned = ansible_module('multihv.cloud.evacuate', dict(cloud, node='kvm2'), check=True)
        assert planned['changed'] is True and planned['fencing'] == 'would fence'
        assert [e['name'] for e in planned['evacuations']] == ['ev-shared-1', 'ev-shared-2', 'ev-local', 'ev-shared-0']
        assert set(e['dest_node'] for e in planned['evacuations']) == {'kvm1'}
        assert registry_rows(tmp_path, "SELECT count(*) FROM migrations WHERE migration_type = 'evacuation'") == [(0,)]

        result = evacuate(cloud, node='kvm2', concurrency=2)
        assert result['changed'] is True and result['fencing'] == 'fenced'
        assert result['failures'] == [] and result['unplaced'] == []
        by_name = dict((e['name'], e) for e in result['evacuations'])
        assert [e['name'] for e in result['evacuations']] == ['ev-shared-1', 'ev-shared-2', 'ev-local', 'ev-shared-0']
        assert set((e['status'], e['dest_node']) for e in result['evacuations']) == {('done', 'kvm1')}
        assert [by_name[r['name']]['disk'] for r in shared] == ['kept'] * 3 and by_name['ev-local']['disk'] == 'rebuilt'
        assert all('admin_password' not in by_name[r['name']] for r in shared)
        password = by_name['ev-local']['admin_password']
        assert len(password) >= 16
        assert password.encode() not in (tmp_path / 'registry.sqlite').read_bytes(), 'the new password was stored'

        # Every instance runs on kvm1 with its identity; the shared ones found their disk's data.
        assert dict(registry_rows(tmp_path, 'SELECT name, node FROM instances')) == dict.fromkeys(by_name, 'kvm1')
        assert allocations(tmp_path) == {'kvm1': 3 * 32 + 48}
        assert registry_rows(tmp_path, "SELECT DISTINCT migration_type, status, source_node FROM migrations ORDER BY 1") == [
            ('evacuation', 'done', 'kvm2'), ('resize', 'completed', 'kvm2')]
        assert registry_rows(tmp_path, "SELECT flavor, state FROM instances WHERE name = 'ev-shared-0'") == [('tiny-wide', 'running')]
        assert by_name['ev-shared-0']['resize'] and not kept.exists(), 'the copy of the old disk stayed beside the shared disk'
        for record in shared:
            log, count = logs[record['name']], boots[record['name']] + 1
            wait_for(lambda log=log, count=count: len(serial(log)) == count and serial(log)[-1].ticks, 60, f'the restart of {record["name"]}')
            persisted = serial(log)[-1].persisted
            assert persisted is not None and persisted >= last[record['name']] - 2, 'the shared disk\'s data was lost'
        local_log = console_log(lab, local, 'kvm1')
        wait_for(lambda: serial(local_log) and serial(local_log)[-1].ticks, 60, 'the rebuild of ev-local')
        assert serial(local_log)[-1].persisted is None, 'the local instance kept data it cannot have'
        assert by_name['ev-local']['instance']['uuid'] == local['uuid']
        assert domain_macs(lab, 'kvm1', 'ev-local') == local['identity']['macs'] and local['identity']['macs']
        assert by_name['ev-local']['instance']['addresses'] == local['addresses'] == {'evac': ['192.0.2.1']}
        node = ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=['kvm2']))['nodes'][0]
        assert (node['state'], node['forced_down']) == ('down', True)

        again = evacuate(cloud, node='kvm2')
        assert again['changed'] is False and again['evacuations'] == [] and again['fencing'] == 'forced_down'
        # While kvm2 is still down it cannot be brought back: its stale copies are there.
        early = ansible_module('multihv.cloud.compute_node', dict(cloud, name='kvm2', enabled=True, forced_down=False),
                               expect_failure=True)
        assert 'stale copies must be destroyed' in early['msg'] and 'it does not answer' in early['msg']

    # kvm2 is back with its old domains defined (shut off): one running copy of each, on kvm1.
    names = sorted(by_name)
    assert sorted(domains(lab, 'kvm2')) == names
    assert all(running_copies(lab, name) == ['kvm1'] for name in names)
    stale_local = pathlib.Path(lab.hosts['kvm2']['local_dir']) / (local['uuid'] + '.qcow2')
    assert stale_local.exists()

    checked = bring_back(cloud, 'kvm2', check=True)
    assert checked['changed'] is True and sorted(c['name'] for c in checked['cleaned']) == names
    assert sorted(domains(lab, 'kvm2')) == names

    back = bring_back(cloud, 'kvm2')
    assert back['changed'] is True and (back['node']['enabled'], back['node']['forced_down']) == (True, False)
    cleaned = dict((c['name'], c) for c in back['cleaned'])
    assert sorted(cleaned) == names and all(c['destroyed'] for c in cleaned.values())
    assert [n for n, c in cleaned.items() if c['disks_removed']] == ['ev-local']
    assert domains(lab, 'kvm2') == [] and not stale_local.exists()
    assert all(running_copies(lab, name) == ['kvm1'] for name in names)
    for record in shared:  # their shared disks stayed: the rebuilt instances go on
        log = logs[record['name']]
        wait_ticks(log, after=ticks(log)[-1])
    assert registry_rows(tmp_path, 'SELECT DISTINCT status FROM migrations') == [('completed',)]
    assert bring_back(cloud, 'kvm2')['changed'] is False


def test_one_instance_ha_pass_recovers_a_failed_host(lab, cloud, tmp_path):
    first = boot(cloud, 'ha-first', node='kvm2', ha=True, restart_priority=10)
    boot(cloud, 'ha-second', node='kvm2', ha=True, restart_priority=5)
    boot(cloud, 'ha-not', node='kvm2')
    quiet = ha_pass(cloud, grace_period=0)
    assert quiet['changed'] is False and quiet['down'] == [] and quiet['waiting'] == []
    # kvm1 has room for one more instance only: the higher priority gets it.
    node = ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=['kvm1']))['nodes'][0]
    ansible_module('multihv.cloud.compute_node', dict(cloud, name='kvm1', reserved={'memory_mb': node['physical']['memory_mb'] - 48}))
    log = console_log(lab, first)
    wait_ticks(log, count=3)

    with lab.power_loss('kvm2'):
        waiting = ha_pass(cloud, grace_period=600)
        # Nothing recovered yet, but the pass recorded kvm2's down mark: a change.
        assert waiting['changed'] is True and [(w['node'], w['down_probes']) for w in waiting['waiting']] == [('kvm2', 1)]
        assert registry_rows(tmp_path, "SELECT forced_down FROM nodes WHERE name = 'kvm2'") == [(0,)]
        heartbeat_aged(lab, 'kvm2')
        # The next pass is the second to find kvm2 down (check mode counts it without recording it).
        assert ha_pass(cloud, grace_period=0, min_down_probes=2, check=True)['changed'] is True
        assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]

        result = ha_pass(cloud, grace_period=1, min_down_probes=2)
        assert result['changed'] is True
        assert [(d['node'], d['fencing']) for d in result['down']] == [('kvm2', 'fenced')]
        assert [(r['name'], r['dest_node']) for r in result['recovered']] == [('ha-first', 'kvm1')]
        assert [u['name'] for u in result['unplaced']] == ['ha-second'] and 'no node can take' in result['unplaced'][0]['msg']
        assert dict(registry_rows(tmp_path, 'SELECT name, node FROM instances')) == {
            'ha-first': 'kvm1', 'ha-second': 'kvm2', 'ha-not': 'kvm2'}
        assert allocations(tmp_path) == {'kvm1': 32, 'kvm2': 64}  # kvm1 holds no more than its capacity
        assert running_copies(lab, 'ha-first') == ['kvm1']
        wait_for(lambda: len(serial(log)) == 2 and serial(log)[-1].ticks, 60, 'the restart of ha-first: %r' % log.read_text()[-600:])

        second = ha_pass(cloud, grace_period=1, min_down_probes=2)  # enough probes recorded: nothing new to write
        assert second['changed'] is False and second['recovered'] == [] and [u['name'] for u in second['unplaced']] == ['ha-second']

    back = bring_back(cloud, 'kvm2')
    assert [c['name'] for c in back['cleaned']] == ['ha-first'] and running_copies(lab, 'ha-first') == ['kvm1']
    cleared = ha_pass(cloud, grace_period=0)
    # The pass's reconciler records what the power loss left of the instances that stayed on kvm2: shut off.
    assert sorted((a['kind'], a['name'], a['does']) for a in cleared['reconciled']) == [
        ('power', 'ha-not', 'record it stopped'), ('power', 'ha-second', 'record it stopped')], cleared['reconciled']
    assert cleared['cleared'] == ['kvm2'] and (cleared['down'], cleared['recovered'], cleared['failures']) == ([], [], [])
    assert ha_pass(cloud, grace_period=0)['changed'] is False
    assert registry_rows(tmp_path, "SELECT down_since FROM nodes WHERE name = 'kvm2'") == [(None,)]
