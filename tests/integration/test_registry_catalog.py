"""Flavors, images, server groups, instances and allocations in the registry, against real engines:
SQLite files in tmp_path and the test PostgreSQL server (MULTIHV_TEST_POSTGRES_URL; each test in a
schema of its own, dropped afterwards). Includes the upgrade of a version-1 registry and concurrent
claims from separate processes.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import SCHEMA_VERSION, Registry
from support.registries import ENGINES, private_url, query, released_together

KVM_CAPACITY = {'vcpus': 8, 'memory_mb': 4096, 'disk_gb': 100}

# A separate process that claims through the registry API only. It says "ready", waits for a
# line on stdin so that all of them start at once, claims one vCPU for each of its instances,
# and after each claim reads the node's total: the largest total any process ever saw is printed.
CLAIMER = r'''
import json, sys
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

url, node, capacity = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
uuids = sys.argv[4:]
with Registry.open(url) as registry:
    print('ready', flush=True)
    sys.stdin.readline()
    won, most = 0, 0
    for instance_uuid in uuids:
        if registry.claim(instance_uuid, node, 'kvm', {'vcpus': 1, 'memory_mb': 0, 'disk_gb': 0}, capacity):
            won += 1
        most = max(most, registry.allocations_by_node().get(node, {}).get('vcpus', 0))
    print(json.dumps({'won': won, 'most': most}), flush=True)
'''


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    """A registry URL no other test sees: a new file, or a new PostgreSQL schema."""
    yield from private_url(request.param, tmp_path, 'catalog_test')


@pytest.fixture
def registry(url):  # pylint: disable=redefined-outer-name
    with Registry.open(url) as opened:
        yield opened


def boot_record(registry, name, **fields):  # pylint: disable=redefined-outer-name
    """An instance row, as the instance core makes it before claiming."""
    record = dict(name=name, flavor='m1', image='tick', storage='local')
    record.update(fields)
    return registry.create_instance(**record)


def catalog(registry):  # pylint: disable=redefined-outer-name
    registry.set_flavor('m1', vcpus=2, ram_mb=512, disk_gb=1)
    registry.set_image('tick', hypervisor_type='kvm', properties={'format': 'qcow2'})
    registry.set_server_group('web', 'anti-affinity')


# -- the upgrade from version 1 ------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_version_1_registry_is_upgraded_to_the_latest_keeping_its_rows(url, monkeypatch):  # pylint: disable=redefined-outer-name
    with monkeypatch.context() as patched:
        patched.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:1])
        patched.setattr(schema, 'SCHEMA_VERSION', 1)
        with Registry.open(url) as old:
            assert old.schema_version() == 1
            # What a version-1 collection wrote (raw SQL: today's code knows columns v1 had not).
            with old.transaction():
                old._execute(  # pylint: disable=protected-access
                    "INSERT INTO nodes (name, hypervisor_type, enabled, created_at, updated_at) "
                    "VALUES ('kvm1', 'kvm', 0, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')")
            # What a version-1 collection wrote: a flavor and an instance naming a group v1 had no table for.
            old.set_flavor('m1', vcpus=1, ram_mb=64, disk_gb=0)
            with old.transaction():
                old._execute(  # pylint: disable=protected-access
                    "INSERT INTO instances (uuid, name, flavor, image, storage, server_group, state, created_at, updated_at) "
                    "VALUES ('u1', 'old1', 'm1', 'tick', 'local', 'legacy', 'active', '2024-01-01T00:00:00.000000Z', "
                    "'2024-01-01T00:00:00.000000Z')")
    assert 'server_groups' not in _tables(url)
    with Registry.open(url) as upgraded:
        assert upgraded.schema_version() == SCHEMA_VERSION == 6
        assert upgraded.get_node('kvm1')['enabled'] is False
        assert upgraded.get_node('kvm1')['down_since'] is None  # version 3's column, empty for old rows
        assert upgraded.get_node('kvm1')['down_probes'] == 0  # version 4's, zero for old rows
        assert upgraded.get_flavor('m1')['ram_mb'] == 64
        assert upgraded.get_instance(uuid='u1').server_group == 'legacy'
        assert upgraded.list_server_groups() == []
        assert upgraded.list_keypairs() == []  # version 5's table, empty
        # The member v1 recorded counts: the group, once made, cannot be deleted under it.
        upgraded.set_server_group('legacy', 'soft-affinity')
        with pytest.raises(errors.RegistryError, match='server group legacy still has members old1'):
            upgraded.delete_server_group('legacy')
    assert [row[0] for row in query(url, 'SELECT version FROM schema_version ORDER BY version')] == [1, 2, 3, 4, 5, 6]


def _tables(url):  # pylint: disable=redefined-outer-name
    if url.startswith('sqlite:'):
        return {row[0] for row in query(url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {row[0] for row in query(url, 'SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()')}


# -- flavors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_flavor_round_trip(registry):  # pylint: disable=redefined-outer-name
    assert registry.get_flavor('m1') is None and registry.list_flavors() == []
    before, after = registry.set_flavor('m1', vcpus=2, ram_mb=512, disk_gb=10, extra_specs={'aggregates': ['cattle']})
    assert before is None
    assert {k: after[k] for k in ('name', 'vcpus', 'ram_mb', 'disk_gb', 'extra_specs')} == {
        'name': 'm1', 'vcpus': 2, 'ram_mb': 512, 'disk_gb': 10, 'extra_specs': {'aggregates': ['cattle']}}
    assert after['created_at'] == after['updated_at'] and registry.get_flavor('m1') == after
    assert registry.set_flavor('m1', vcpus=2, extra_specs={'aggregates': ['cattle']}) == (after, after)  # nothing written
    time.sleep(0.002)
    before2, after2 = registry.set_flavor('m1', ram_mb=1024, extra_specs=None)
    assert before2 == after and after2['ram_mb'] == 1024 and after2['extra_specs'] is None and after2['vcpus'] == 2
    assert after2['updated_at'] > after['updated_at'] and after2['created_at'] == after['created_at']
    registry.set_flavor('a.tiny', vcpus=1, ram_mb=64, disk_gb=0)
    assert [f['name'] for f in registry.list_flavors()] == ['a.tiny', 'm1']
    assert registry.delete_flavor('m1') == after2
    assert registry.delete_flavor('m1') is None and registry.get_flavor('m1') is None


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_new_flavor_needs_its_resources(registry):  # pylint: disable=redefined-outer-name
    with pytest.raises(errors.RegistryError, match='flavor m1 does not exist and creating it needs ram_mb, disk_gb; nothing was written'):
        registry.set_flavor('m1', vcpus=2)
    assert registry.list_flavors() == []


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_used_flavor_keeps_its_resources_and_stays(registry):  # pylint: disable=redefined-outer-name
    catalog(registry)
    boot_record(registry, 'web1')
    boot_record(registry, 'web2')
    kept = registry.get_flavor('m1')
    with pytest.raises(errors.RegistryError) as caught:
        registry.set_flavor('m1', vcpus=4, extra_specs={'hypervisor_type': 'kvm'})
    assert ('flavor m1 is used by instance(s) web1, web2: its vcpus cannot change (flavors are immutable; make a new flavor '
            'and resize the instances to it); flavor m1 was left unchanged') in str(caught.value)
    with pytest.raises(errors.RegistryError, match=r'flavor m1 is used by instance\(s\) web1, web2; delete them or resize'):
        registry.delete_flavor('m1')
    assert registry.get_flavor('m1') == kept
    # extra_specs may change, and resources given unchanged are no change.
    assert registry.set_flavor('m1', vcpus=2, extra_specs={'hypervisor_type': 'kvm'})[1]['extra_specs'] == {'hypervisor_type': 'kvm'}
    for record in registry.list_instances(flavor='m1'):
        registry.delete_instance(record.uuid)
    assert registry.set_flavor('m1', vcpus=4)[1]['vcpus'] == 4
    assert registry.delete_flavor('m1')['vcpus'] == 4


# -- images ----------------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_image_round_trip(registry):  # pylint: disable=redefined-outer-name
    with pytest.raises(errors.RegistryError, match='image tick does not exist and creating it needs hypervisor_type'):
        registry.set_image('tick', properties={})
    properties = {'min_ram': 32, 'min_disk': 1, 'format': 'qcow2', 'source': '/srv/images/tick.qcow2'}
    before, after = registry.set_image('tick', hypervisor_type='kvm', properties=properties, locations={'kvm1': 'present'})
    assert before is None and after['properties'] == properties and after['locations'] == {'kvm1': 'present'}
    assert registry.get_image('tick') == after
    _before, after2 = registry.set_image('tick', locations={'kvm1': 'present', 'kvm2': 'present'})
    assert after2['locations'] == {'kvm1': 'present', 'kvm2': 'present'} and after2['properties'] == properties
    registry.set_image('legacy-template', hypervisor_type='vsphere', properties={'template': 'tmpl-01'})
    assert [(i['name'], i['hypervisor_type']) for i in registry.list_images()] == [('legacy-template', 'vsphere'), ('tick', 'kvm')]
    assert registry.delete_image('tick') == after2 and registry.delete_image('tick') is None


# -- server groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_server_group_round_trip_and_members_rules(registry):  # pylint: disable=redefined-outer-name
    before, after = registry.set_server_group('db', 'anti-affinity', rules={'max_server_per_host': 1})
    assert before is None and (after['name'], after['policy'], after['rules']) == ('db', 'anti-affinity', {'max_server_per_host': 1})
    assert registry.set_server_group('db', 'anti-affinity') == (after, after)
    assert registry.set_server_group('db', 'soft-anti-affinity')[1]['policy'] == 'soft-anti-affinity'
    registry.set_server_group('app', 'affinity')
    assert [g['name'] for g in registry.list_server_groups()] == ['app', 'db']

    registry.set_flavor('m1', vcpus=1, ram_mb=64, disk_gb=0)
    boot_record(registry, 'db2', server_group='db')
    boot_record(registry, 'db1', server_group='db')
    kept = registry.get_server_group('db')
    with pytest.raises(errors.RegistryError) as caught:
        registry.set_server_group('db', 'affinity')
    assert ('server group db has members db1, db2: its policy cannot change from soft-anti-affinity to affinity while it has '
            'members; server group db was left unchanged') in str(caught.value)
    with pytest.raises(errors.RegistryError, match='server group db still has members db1, db2; delete them or take them out'):
        registry.delete_server_group('db')
    assert registry.get_server_group('db') == kept
    # Rules may change with members; the policy given unchanged is no change.
    assert registry.set_server_group('db', 'soft-anti-affinity', rules=None)[1]['rules'] is None
    for member in registry.list_instances(server_group='db'):
        registry.update_instance(member.uuid, server_group=None)
    assert registry.delete_server_group('db')['name'] == 'db'
    assert registry.delete_server_group('db') is None


# -- instances -------------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_instance_round_trip(registry):  # pylint: disable=redefined-outer-name
    catalog(registry)
    identity = {'hostname': 'web1', 'macs': ['52:54:00:12:34:56'], 'ips': ['10.0.0.5'],
                'networks': [{'network': 'default', 'mac': '52:54:00:12:34:56'}], 'metadata': {'role': 'web'}}
    created = registry.create_instance(name='web1', flavor='m1', image='tick', storage='shared', identity=identity,
                                       ha=True, restart_priority=5, server_group='web')
    assert str(uuid.UUID(created.uuid)) == created.uuid
    assert created.state == 'building' and created.node is None and created.host is None
    assert created.identity == identity and created.ha is True and created.restart_priority == 5
    assert registry.get_instance(uuid=created.uuid) == created == registry.get_instance(name='web1')
    assert registry.get_instance(name='nope') is None and registry.get_instance(uuid='nope') is None

    other = boot_record(registry, 'web2', uuid='00000000-0000-4000-8000-000000000002', node='kvm2', host='kvm2')
    assert other.uuid == '00000000-0000-4000-8000-000000000002' and other.ha is False and other.restart_priority == 0

    time.sleep(0.002)
    before, after = registry.update_instance(created.uuid, node='kvm1', host='kvm1', state='active', ha=False)
    assert before == created
    assert (after.node, after.host, after.state, after.ha) == ('kvm1', 'kvm1', 'active', False)
    assert after.identity == identity and after.updated_at > created.updated_at
    assert registry.update_instance(created.uuid, state='active') == (after, after)

    assert [i.name for i in registry.list_instances()] == ['web1', 'web2']
    assert [i.name for i in registry.list_instances(node='kvm2')] == ['web2']
    assert [i.name for i in registry.list_instances(server_group='web')] == ['web1']
    assert [i.name for i in registry.list_instances(node='kvm1', server_group='web', flavor='m1')] == ['web1']
    assert registry.list_instances(node='kvm2', server_group='web') == []

    assert registry.delete_instance(created.uuid) == after
    assert registry.delete_instance(created.uuid) is None
    assert [i.name for i in registry.list_instances()] == ['web2']


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_instance_clashes_and_missing_referents_write_nothing(registry):  # pylint: disable=redefined-outer-name
    catalog(registry)
    web1 = boot_record(registry, 'web1')
    with pytest.raises(errors.RegistryError) as caught:
        boot_record(registry, 'web1')
    assert str(caught.value) == 'an instance named web1 already exists (uuid %s); nothing was created' % web1.uuid
    with pytest.raises(errors.RegistryError, match='an instance with uuid %s already exists \\(named web1\\)' % web1.uuid):
        boot_record(registry, 'web9', uuid=web1.uuid)
    with pytest.raises(errors.NotFound, match='no flavor named m9 in the registry; instance web2 was not created'):
        boot_record(registry, 'web2', flavor='m9')
    with pytest.raises(errors.NotFound, match='no server group named db in the registry; instance web2 was not created'):
        boot_record(registry, 'web2', server_group='db')
    assert [i.name for i in registry.list_instances()] == ['web1']

    web2 = boot_record(registry, 'web2')
    with pytest.raises(errors.RegistryError, match='an instance named web1 already exists \\(uuid %s\\); instance %s was left unchanged'
                       % (web1.uuid, web2.uuid)):
        registry.update_instance(web2.uuid, name='web1', state='active')
    with pytest.raises(errors.NotFound, match='no flavor named m9 in the registry; instance %s was left unchanged' % web2.uuid):
        registry.update_instance(web2.uuid, flavor='m9', state='active')
    with pytest.raises(errors.NotFound, match='no instance with uuid nope in the registry; nothing was changed'):
        registry.update_instance('nope', state='active')
    assert registry.get_instance(uuid=web2.uuid) == web2
    assert registry.update_instance(web2.uuid, name='web3')[1].name == 'web3'


# -- allocations -----------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_claim_fits_capacity_per_resource_and_writes_nothing_when_it_does_not(registry, url):  # pylint: disable=redefined-outer-name
    catalog(registry)
    first, second, third = (boot_record(registry, name).uuid for name in ('web1', 'web2', 'web3'))
    assert registry.get_node('kvm1') is None
    assert registry.claim(first, 'kvm1', 'kvm', {'vcpus': 4, 'memory_mb': 2048, 'disk_gb': 40}, KVM_CAPACITY) is True
    # The claim made the node's row, with the admin defaults.
    node = registry.get_node('kvm1')
    assert (node['hypervisor_type'], node['enabled'], node['forced_down']) == ('kvm', True, False)
    # Exactly full is allowed; one more of any resource is not.
    assert registry.claim(second, 'kvm1', 'kvm', {'vcpus': 5, 'memory_mb': 0, 'disk_gb': 0}, KVM_CAPACITY) is False
    assert registry.claim(second, 'kvm1', 'kvm', {'vcpus': 0, 'memory_mb': 2049, 'disk_gb': 0}, KVM_CAPACITY) is False
    assert registry.claim(second, 'kvm1', 'kvm', {'vcpus': 0, 'memory_mb': 0, 'disk_gb': 61}, KVM_CAPACITY) is False
    assert registry.list_allocations(instance_uuid=second) == []
    assert registry.claim(second, 'kvm1', 'kvm', {'vcpus': 4, 'memory_mb': 2048, 'disk_gb': 60}, KVM_CAPACITY) is True
    assert registry.allocations_by_node() == {'kvm1': {'vcpus': 8, 'memory_mb': 4096, 'disk_gb': 100, 'instances': 2}}

    # A failed claim on a node without a row leaves no row behind.
    assert registry.claim(third, 'kvm2', 'kvm', {'vcpus': 9, 'memory_mb': 1, 'disk_gb': 1}, KVM_CAPACITY) is False
    assert registry.get_node('kvm2') is None and query(url, "SELECT count(*) FROM nodes WHERE name = 'kvm2'") == [(0,)]

    # Claiming again replaces the instance's own allocation on that node instead of adding to it.
    assert registry.claim(first, 'kvm1', 'kvm', {'vcpus': 4, 'memory_mb': 2048, 'disk_gb': 40}, KVM_CAPACITY) is True
    assert registry.claim(first, 'kvm1', 'kvm', {'vcpus': 2, 'memory_mb': 1024, 'disk_gb': 40}, KVM_CAPACITY) is True
    assert registry.allocations_by_node()['kvm1'] == {'vcpus': 6, 'memory_mb': 3072, 'disk_gb': 100, 'instances': 2}

    # During a migration an instance holds its source and its destination; release(node=) frees one.
    assert registry.claim(first, 'kvm2', 'kvm', {'vcpus': 2, 'memory_mb': 1024, 'disk_gb': 40}, KVM_CAPACITY) is True
    assert [a['node'] for a in registry.list_allocations(instance_uuid=first)] == ['kvm1', 'kvm2']
    assert registry.release(first, node='kvm1') == 1
    assert registry.allocations_by_node() == {'kvm1': {'vcpus': 4, 'memory_mb': 2048, 'disk_gb': 60, 'instances': 1},
                                              'kvm2': {'vcpus': 2, 'memory_mb': 1024, 'disk_gb': 40, 'instances': 1}}
    assert registry.release(first) == 1 and registry.release(first) == 0
    # An instance's allocations go with it.
    registry.delete_instance(second)
    assert registry.allocations_by_node() == {} and query(url, 'SELECT count(*) FROM allocations') == [(0,)]


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_claim_needs_the_instance_first_and_the_nodes_own_hypervisor_type(registry):  # pylint: disable=redefined-outer-name
    catalog(registry)
    needs = {'vcpus': 1, 'memory_mb': 64, 'disk_gb': 1}
    with pytest.raises(errors.NotFound, match=r'no instance with uuid u-missing in the registry \(create_instance comes before claim\); '
                                              'nothing was claimed on node kvm1'):
        registry.claim('u-missing', 'kvm1', 'kvm', needs, KVM_CAPACITY)
    assert registry.get_node('kvm1') is None
    web1 = boot_record(registry, 'web1').uuid
    registry.set_node('vc1/DC1/Cluster-A', 'vsphere')
    with pytest.raises(errors.RegistryError, match='node vc1/DC1/Cluster-A is a vsphere node in the registry, not kvm; nothing was claimed'):
        registry.claim(web1, 'vc1/DC1/Cluster-A', 'kvm', needs, KVM_CAPACITY)
    assert registry.claim(web1, 'vc1/DC1/Cluster-A', 'vsphere', needs, KVM_CAPACITY) is True
    assert registry.get_node('vc1/DC1/Cluster-A')['hypervisor_type'] == 'vsphere'


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_a_claim_inside_a_failed_transaction_is_rolled_back(registry):  # pylint: disable=redefined-outer-name
    catalog(registry)
    with pytest.raises(RuntimeError):
        with registry.transaction():
            web1 = boot_record(registry, 'web1').uuid
            assert registry.claim(web1, 'kvm1', 'kvm', {'vcpus': 1, 'memory_mb': 1, 'disk_gb': 1}, KVM_CAPACITY)
            raise RuntimeError('spawn failed')
    assert registry.list_instances() == [] and registry.allocations_by_node() == {} and registry.get_node('kvm1') is None


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_concurrent_claims_never_overcommit_a_node(registry, url):  # pylint: disable=redefined-outer-name
    processes, per_process, capacity = 8, 20, {'vcpus': 100, 'memory_mb': 1000, 'disk_gb': 1000}
    registry.set_flavor('m1', vcpus=1, ram_mb=1, disk_gb=0)
    with registry.transaction():
        uuids = [boot_record(registry, 'claimer-%03d' % index).uuid for index in range(processes * per_process)]
    results = _claimers(url, 'kvm1', capacity, [uuids[i * per_process:(i + 1) * per_process] for i in range(processes)])
    assert sum(result['won'] for result in results) == 100
    assert max(result['most'] for result in results) <= 100
    assert registry.allocations_by_node() == {'kvm1': {'vcpus': 100, 'memory_mb': 0, 'disk_gb': 0, 'instances': 100}}
    assert query(url, "SELECT count(*), sum(vcpus) FROM allocations WHERE node = 'kvm1'") == [(100, 100)]


def _claimers(url, node, capacity, batches, timeout=60):  # pylint: disable=redefined-outer-name
    """Run one CLAIMER per batch of instance uuids, released at the same moment; their results."""
    outputs = released_together(CLAIMER, [[url, node, json.dumps(capacity)] + batch for batch in batches], timeout)
    return [json.loads(out) for out in outputs]
