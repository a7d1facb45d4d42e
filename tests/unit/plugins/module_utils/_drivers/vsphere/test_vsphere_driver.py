"""The vSphere driver's pure logic: the join of a PropertyCollector answer into nodes,
the cluster filter, the answers from configuration alone (serves, placement), refusals made
before any I/O, error mapping. No vCenter here (tests/integration has those)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import VCenter
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationTarget, NodePlacement, call_within
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import capabilities, properties, vmomi
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import (
    NO_USABLE_HOST, build_nodes, datacenter_of, datastore_entry, mounted_by,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import Record
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.session import Session

GIB = 1024 ** 3
MIB = 1024 ** 2
UUID = '6f1c1d0e-3c57-4a4b-9f55-2b0e0f1d2c3a'


def vcenter(**kwargs):
    return VCenter(name='vc1', hostname='vc1.example.com', username='svc@vsphere.local', password='s3cret', **kwargs)


def host(moid, name, cluster, threads=16, memory_mb=65536, usage_mb=1000, state='connected', maintenance=False, datastores=None):
    props = {
        'name': name, 'parent': cluster, 'runtime.connectionState': state, 'runtime.inMaintenanceMode': maintenance,
        'summary.hardware.numCpuThreads': threads, 'summary.hardware.memorySize': memory_mb * MIB,
        'summary.quickStats.overallMemoryUsage': usage_mb,
    }
    if datastores is not None:  # unset like any property without a value
        props['datastore'] = datastores
    return Record('HostSystem', moid, props)


def vm(moid, on_host, cpus=2, memory_mb=4096, power='poweredOn', template=False):
    return Record('VirtualMachine', moid, {
        'runtime.host': on_host, 'runtime.powerState': power,
        'summary.config.numCpu': cpus, 'summary.config.memorySizeMB': memory_mb, 'summary.config.template': template,
    })


def datastore(moid, name, capacity_gb, free_gb, accessible=True):
    return Record('Datastore', moid, {'summary.name': name, 'summary.capacity': capacity_gb * GIB,
                                      'summary.freeSpace': free_gb * GIB, 'summary.accessible': accessible})


def inventory():
    """Two datacenters; prod has cluster A in a nested host folder and cluster B; lab
    has cluster A too (same name, other datacenter) and a standalone host."""
    return [
        Record('Datacenter', 'datacenter-1', {'name': 'prod'}),
        Record('Datacenter', 'datacenter-2', {'name': 'lab'}),
        Record('Folder', 'group-d1', {}),  # the root folder has no parent
        Record('Folder', 'folder-h1', {'parent': 'datacenter-1'}),  # prod's host folder
        Record('Folder', 'folder-nested', {'parent': 'folder-h1'}),
        Record('Folder', 'folder-h2', {'parent': 'datacenter-2'}),
        Record('ClusterComputeResource', 'domain-c1', {
            'name': 'A', 'parent': 'folder-nested', 'datastore': ['ds-shared', 'ds-local1', 'ds-shared'],
            'configurationEx.dasConfig.enabled': True, 'configurationEx.drsConfig.enabled': False}),
        Record('ClusterComputeResource', 'domain-c2', {'name': 'B', 'parent': 'folder-h1', 'datastore': ['ds-shared', 'ds-dead']}),
        Record('ClusterComputeResource', 'domain-c3', {'name': 'A', 'parent': 'folder-h2', 'datastore': []}),
        Record('ComputeResource', 'domain-s1', {}),
        # Which hosts mount which datastore: esx2 does not mount local1; esx5 mounts nothing
        # (property unset); the standalone host mounts shared, but belongs to no cluster.
        host('host-1', 'esx1', 'domain-c1', usage_mb=1000, datastores=['ds-local1', 'ds-shared']),
        host('host-2', 'esx2', 'domain-c1', threads=8, memory_mb=32768, usage_mb=30000, datastores=['ds-shared', 'ds-shared']),
        host('host-3', 'esx3', 'domain-c1', state='notResponding', usage_mb=None, datastores=['ds-shared']),
        host('host-4', 'esx4', 'domain-c2', maintenance=True, datastores=['ds-shared', 'ds-dead']),
        host('host-5', 'esx5', 'domain-c2', state='disconnected'),
        host('host-9', 'esx-standalone', 'domain-s1', datastores=['ds-shared']),
        datastore('ds-shared', 'shared', 1000, 400),
        datastore('ds-local1', 'local1', 100.5, 50.5),
        datastore('ds-dead', 'dead', 500, 500, accessible=False),
        # esx1: two powered-on VMs, one powered off, one suspended, one template
        vm('vm-1', 'host-1', cpus=4, memory_mb=8192),
        vm('vm-2', 'host-1', cpus=2, memory_mb=2048),
        vm('vm-3', 'host-1', cpus=8, memory_mb=16384, power='poweredOff'),
        vm('vm-4', 'host-1', power='suspended'),
        vm('vm-5', 'host-1', power='poweredOff', template=True),
        # esx2: configured memory beyond what quickStats says is used
        vm('vm-6', 'host-2', cpus=8, memory_mb=31000),
        # esx3 (not responding) still holds its VM
        vm('vm-7', 'host-3', cpus=1, memory_mb=1024),
        vm('vm-8', 'host-9'),  # on the standalone host: no node
        vm('vm-9', None),  # no host (orphaned): counted nowhere
    ]


def nodes_by_name(vc=None, records=None):
    return dict((n.name, n) for n in build_nodes(vc or vcenter(), inventory() if records is None else records))


def test_one_node_per_cluster_named_vcenter_datacenter_cluster():
    nodes = build_nodes(vcenter(), inventory())
    assert [n.name for n in nodes] == ['vc1/lab/A', 'vc1/prod/A', 'vc1/prod/B']
    assert all(n.hypervisor_type == 'vsphere' and n.state == 'up' for n in nodes)
    a = nodes[1]
    assert [h.name for h in a.hosts] == ['esx1', 'esx2', 'esx3']
    assert a.extra == {
        'moid': 'domain-c1', 'vcenter': 'vc1', 'datacenter': 'prod', 'cluster': 'A', 'ha_enabled': True, 'drs_enabled': False,
        'datastores': [
            {'name': 'local1', 'capacity_gb': 100, 'free_gb': 50, 'accessible': True, 'hosts': ['esx1']},
            {'name': 'shared', 'capacity_gb': 1000, 'free_gb': 400, 'accessible': True, 'hosts': ['esx1', 'esx2', 'esx3']},
        ],
    }


def test_host_resources_count_powered_on_vms_and_every_instance():
    esx1, esx2, esx3 = nodes_by_name()['vc1/prod/A'].hosts
    assert (esx1.vcpus, esx1.memory_mb, esx1.vcpus_used, esx1.memory_mb_used, esx1.instances) == (16, 65536, 6, 10240, 4)
    assert esx1.connection_state == 'connected' and esx1.usable
    assert (esx2.vcpus_used, esx2.memory_mb_used, esx2.instances) == (8, 31000, 1)
    assert (esx3.connection_state, esx3.usable, esx3.instances, esx3.vcpus_used) == ('notResponding', False, 1, 1)


def test_free_memory_is_ram_minus_the_larger_of_reported_usage_and_configured_vms():
    esx1, esx2, esx3 = nodes_by_name()['vc1/prod/A'].hosts
    assert esx1.memory_mb_free == 65536 - 10240  # VMs configured 10240 > quickStats 1000
    assert esx2.memory_mb_free == 32768 - 31000  # VMs configured 31000 > quickStats 30000
    assert esx3.memory_mb_free == 65536 - 1024  # no quickStats (not responding): configured VMs
    usage_dominates = build_nodes(vcenter(), [
        Record('Datacenter', 'dc', {'name': 'd'}), Record('ClusterComputeResource', 'c', {'name': 'c', 'parent': 'dc'}),
        host('h', 'h', 'c', memory_mb=4096, usage_mb=5000), vm('v', 'h', memory_mb=100)])[0].hosts[0]
    assert usage_dominates.memory_mb_free == 0  # floored


def test_node_capacity_counts_usable_hosts_only():
    a = nodes_by_name()['vc1/prod/A']
    assert (a.vcpus, a.memory_mb) == (16 + 8, 65536 + 32768)
    assert a.vcpus_used == 6 + 8 + 1  # what runs, wherever it runs
    assert a.instances == 6
    assert a.largest_host_free_memory_mb == 65536 - 10240
    assert a.largest_host_free_vcpus == 10
    assert a.reason is None


def test_datastores_count_once_each_and_inaccessible_ones_not_at_all():
    nodes = nodes_by_name()
    a = nodes['vc1/prod/A']
    assert (a.disk_gb, a.disk_gb_free) == (1100, 450)  # shared listed twice, counted once; bytes summed then floored
    b = nodes['vc1/prod/B']
    assert (b.disk_gb, b.disk_gb_free) == (1000, 400)
    assert [d['accessible'] for d in b.extra['datastores']] == [False, True]
    assert (nodes['vc1/lab/A'].disk_gb, nodes['vc1/lab/A'].extra['datastores']) == (0, [])


def test_datastores_name_the_cluster_hosts_that_mount_them():
    nodes = nodes_by_name()
    # Every host of the cluster whatever its state, each once, the standalone host not at all.
    assert [(d['name'], d['hosts']) for d in nodes['vc1/prod/A'].extra['datastores']] == [
        ('local1', ['esx1']), ('shared', ['esx1', 'esx2', 'esx3'])]
    assert [(d['name'], d['accessible'], d['hosts']) for d in nodes['vc1/prod/B'].extra['datastores']] == [
        ('dead', False, ['esx4']), ('shared', True, ['esx4'])]
    # A datastore attached to the cluster that no host reports mounting still shows, with no hosts.
    records = [r for r in inventory() if r.moid not in ('host-1',)]
    (a,) = build_nodes(vcenter(clusters=['prod/A']), records)
    assert [(d['name'], d['hosts']) for d in a.extra['datastores']] == [('local1', []), ('shared', ['esx2', 'esx3'])]


def test_mounted_by_lists_each_host_once_per_datastore():
    assert mounted_by([
        {'name': 'h2', 'datastore': ['ds-b', 'ds-a', 'ds-a']}, {'name': 'h1', 'datastore': ['ds-a']}, {'name': 'h3'},
    ]) == {'ds-a': ['h2', 'h1'], 'ds-b': ['h2']}
    assert datastore_entry({'summary.name': 'x'}, ['h2', 'h1']) == {
        'name': 'x', 'capacity_gb': 0, 'free_gb': 0, 'accessible': True, 'hosts': ['h1', 'h2']}


def test_a_cluster_without_a_usable_host_is_up_with_no_capacity_and_says_why():
    b = nodes_by_name()['vc1/prod/B']
    assert b.state == 'up' and b.reason == NO_USABLE_HOST
    assert (b.vcpus, b.memory_mb, b.largest_host_free_memory_mb, b.largest_host_free_vcpus) == (0, 0, 0, 0)
    empty = nodes_by_name()['vc1/lab/A']
    assert (empty.hosts, empty.reason) == ([], NO_USABLE_HOST)


def test_unset_ha_and_drs_flags_read_as_disabled():
    b = nodes_by_name()['vc1/prod/B']
    assert (b.extra['ha_enabled'], b.extra['drs_enabled']) == (False, False)


def test_cluster_filter_by_name_or_datacenter_and_name():
    assert sorted(nodes_by_name(vcenter(clusters=['B']))) == ['vc1/prod/B']
    assert sorted(nodes_by_name(vcenter(clusters=['A']))) == ['vc1/lab/A', 'vc1/prod/A']  # a bare name matches in every datacenter
    assert sorted(nodes_by_name(vcenter(clusters=['prod/A', 'B']))) == ['vc1/prod/A', 'vc1/prod/B']


def test_cluster_filter_entry_matching_nothing_names_it_and_what_exists():
    with pytest.raises(errors.NotFound) as caught:
        build_nodes(vcenter(clusters=['B', 'prod/C']), inventory())
    assert str(caught.value) == ('vCenter vc1 has no cluster prod/C (clusters filter of the cloud file); '
                                 'it has lab/A, prod/A, prod/B')
    with pytest.raises(errors.NotFound, match='it has no cluster'):
        build_nodes(vcenter(clusters=['A']), [])


def test_filtered_out_clusters_leave_their_hosts_and_vms_out():
    (b,) = build_nodes(vcenter(clusters=['B']), inventory())
    assert [h.name for h in b.hosts] == ['esx4', 'esx5']


def test_datacenter_walk_stops_on_a_parent_cycle():
    assert datacenter_of('f1', {'f1': 'f2', 'f2': 'f1'}, {'dc': 'x'}) is None
    assert datacenter_of('f1', {'f1': 'f2', 'f2': 'dc'}, {'dc': 'x'}) == 'x'
    (node,) = build_nodes(vcenter(), [Record('ClusterComputeResource', 'c', {'name': 'lost', 'parent': 'nowhere'})])
    assert node.name == 'vc1/?/lost'


def test_plain_replaces_managed_object_references_by_their_ids():
    class Ref:  # what pyVmomi gives for a managed object reference
        def __init__(self, moid):
            self._moId = moid

    assert properties.plain(Ref('host-1')) == 'host-1'
    assert properties.plain([Ref('ds-1'), Ref('ds-2')]) == ['ds-1', 'ds-2']
    assert properties.plain(42) == 42 and properties.plain('poweredOn') == 'poweredOn'


def test_every_property_kind_used_is_retrieved():
    assert set(properties.PROPERTIES) == {'Datacenter', 'Folder', 'ClusterComputeResource', 'HostSystem', 'VirtualMachine', 'Datastore'}
    # Whole objects (configurationEx, summary) would multiply what crosses the wire.
    assert all('.' in path or path in ('name', 'parent', 'datastore') for paths in properties.PROPERTIES.values() for path in paths)
    # Which hosts mount a datastore comes with the hosts, in the same retrieval.
    assert 'datastore' in properties.PROPERTIES['HostSystem'] and 'datastore' in properties.PROPERTIES['ClusterComputeResource']


def test_node_names_come_from_qualified_filter_entries_only():
    assert VSphereDriver(vcenter()).node_names() == []
    assert VSphereDriver(vcenter(clusters=['prod/A', 'B', '/x', 'y/'])).node_names() == ['vc1/prod/A']
    assert VSphereDriver(vcenter()).endpoint_name() == 'vc1'


def test_the_driver_declares_the_vsphere_type_and_its_capabilities():
    driver = VSphereDriver(vcenter())
    assert driver.hypervisor_type == capabilities.HYPERVISOR_TYPE == 'vsphere'
    assert driver.capabilities is capabilities.CAPABILITIES
    assert driver.capabilities.hosts_in_node and not driver.capabilities.evacuation


@pytest.mark.parametrize('node, served', [
    ('vc1/prod/A', True),
    ('vc1/lab/B', True),
    ('vc1/prod', False),  # a datacenter, no cluster
    ('vc1/prod/A/x', False),  # a slash too many
    ('vc1', False),
    ('vc10/prod/A', False),  # another vCenter whose name starts alike
    ('vc2/prod/A', False),
    ('kvm1', False),
])
def test_serves_its_own_vcenter_datacenter_cluster_names_only(node, served):
    assert VSphereDriver(vcenter()).serves(node) is served


def test_placement_is_the_vcenter_zone_and_aggregates_unless_the_cluster_overrides_them():
    vc = vcenter(port=8443, availability_zone='az1', aggregates=['gold', 'ha'],
                 cluster_settings={'B': {'availability_zone': 'az2', 'aggregates': ['legacy']}, 'C': {'aggregates': []}})
    driver = VSphereDriver(vc)
    sdk = 'https://vc1.example.com:8443/sdk'
    assert driver.placement('vc1/prod/A') == NodePlacement(availability_zone='az1', aggregates=('gold', 'ha'), endpoint=sdk)
    assert driver.placement('vc1/prod/B') == NodePlacement(availability_zone='az2', aggregates=('legacy',), endpoint=sdk)
    assert driver.placement('vc1/lab/C') == NodePlacement(availability_zone='az1', aggregates=(), endpoint=sdk)
    assert VSphereDriver(vcenter()).placement('vc1/prod/A') == NodePlacement('nova', (), 'https://vc1.example.com:443/sdk')
    with pytest.raises(errors.NotFound, match=r'^node vc2/prod/A is not a cluster of vCenter vc1 \(vcenter/datacenter/cluster\)$'):
        driver.placement('vc2/prod/A')


def offline_driver(monkeypatch):
    """A driver whose vCenter must not be asked: a session run fails the test."""
    driver = VSphereDriver(vcenter())

    def run(*_args):
        raise AssertionError('the vCenter was asked')

    monkeypatch.setattr(driver.session, 'run', run)
    return driver


def test_destroy_refuses_to_keep_the_disks_before_asking_the_vcenter(monkeypatch):
    driver = offline_driver(monkeypatch)
    with pytest.raises(errors.DriverError) as caught:
        driver.destroy(UUID, 'vc1/prod/A', destroy_disks=False)
    assert str(caught.value) == ('instance %s on node vc1/prod/A: vSphere VMs are destroyed with their disks, they cannot be kept; '
                                 'nothing was destroyed' % UUID)
    with pytest.raises(AssertionError, match='the vCenter was asked'):
        driver.destroy(UUID, 'vc1/prod/A')  # with its disks, the default: goes to the vCenter


def test_migrate_refuses_an_unknown_mode_before_asking_the_vcenter(monkeypatch):
    driver = offline_driver(monkeypatch)
    with pytest.raises(errors.DriverError, match=r'^unknown migration mode teleport for instance %s \(expected live, block, cold\); '
                                                 r'nothing moved$' % UUID):
        driver.migrate(UUID, 'vc1/prod/A', MigrationTarget(driver, 'vc1/prod/B'), 'teleport', None)


def test_close_without_a_connection_is_a_no_op():
    VSphereDriver(vcenter()).close()


def test_missing_pyvmomi_is_reported_when_used(monkeypatch):
    monkeypatch.setattr(vmomi, 'HAS_PYVMOMI', False)
    driver = VSphereDriver(vcenter(clusters=['dc/c']))
    assert driver.node_names() == ['vc1/dc/c']  # no library needed for that
    with pytest.raises(errors.MissingLibrary, match='^pyvmomi is required for the vSphere nodes of vCenter vc1'):
        driver.get_nodes()


@pytest.mark.parametrize('exc, kind, text', [
    (ConnectionRefusedError(111, 'Connection refused'), errors.Unreachable, 'did not answer: Connection refused'),
    (socket.gaierror(-2, 'Name or service not known'), errors.Unreachable, 'cannot resolve vc1.example.com: Name or service not known'),
    (socket.timeout('timed out'), errors.Unreachable, 'no reply within 30.0 s'),
    (ssl.SSLCertVerificationError(1, 'certificate verify failed'), errors.DriverError, 'does not verify'),
    (ssl.SSLError(1, 'wrong version number'), errors.DriverError, 'failed the TLS handshake'),
])
def test_network_failures_map_to_errors(exc, kind, text):
    error = Session(vcenter())._failure(exc)  # pylint: disable=protected-access
    assert type(error) is kind  # pylint: disable=unidiomatic-typecheck
    assert str(error).startswith('vCenter vc1 at vc1.example.com:443 ')
    assert text in str(error)
    assert 's3cret' not in str(error)


def test_a_call_that_overstays_its_deadline_is_unreachable_at_the_deadline():
    started = time.monotonic()
    with pytest.raises(errors.Unreachable, match='^vCenter X did not answer within 0.2 s$'):
        call_within(0.2, 'vCenter X', lambda: time.sleep(5))
    assert time.monotonic() - started < 2


def test_a_call_within_its_deadline_returns_or_raises_as_is():
    assert call_within(5, 'x', lambda: 7) == 7

    def fails():
        raise KeyError('k')

    with pytest.raises(KeyError):
        call_within(5, 'x', fails)
