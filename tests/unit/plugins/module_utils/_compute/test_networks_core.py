"""Networks in the core: the network module's work (idempotent, check mode, refusals), where a network
exists (backings and their selectors), what a guest is given, and, on fake hypervisors with a real
registry, boots that allocate addresses, the scheduler's NetworkFilter, and addresses kept through
migrations, rebuilds and evacuations and freed by deletes."""

from __future__ import annotations

import re
import sqlite3

import pytest


from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import Candidate, NoValidHost, Request, Scheduler
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestNic
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from ansible_collections.multihv.cloud.plugins.modules import network as network_module
from support.fake_driver import two_node_cloud
from support import modules

UUID_A = '0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01'


@pytest.fixture(name='reg')
def registry_fixture(tmp_path):
    with Registry.open('sqlite:///%s' % (tmp_path / 'r.sqlite')) as opened:
        opened.set_flavor('small', vcpus=1, ram_mb=1024, disk_gb=1)
        yield opened


# -- the network module's work -------------------------------------------------------------------

TENANT = {'cidr': '192.0.2.0/24', 'gateway': '192.0.2.1', 'dns_servers': ['192.0.2.53'],
          'backings': [{'backing': 'bridge:br0', 'hypervisor_type': 'kvm'}, {'backing': 'pg-tenant'}]}
SHOWN = {'name': 'tenant', 'cidr': '192.0.2.0/24', 'gateway': '192.0.2.1', 'dns_servers': ['192.0.2.53'],
         'allocation_start': '192.0.2.1', 'allocation_end': '192.0.2.254',
         'backings': [{'backing': 'bridge:br0', 'nodes': [], 'aggregates': [], 'endpoints': [], 'hypervisor_type': 'kvm'},
                      {'backing': 'pg-tenant', 'nodes': [], 'aggregates': [], 'endpoints': [], 'hypervisor_type': None}]}


def test_core_creates_keeps_updates_and_deletes_with_check_mode(reg):
    assert _networks.set_network(reg, 'tenant', 'present', TENANT, check_mode=True) == (True, None, SHOWN)
    assert reg.get_network('tenant') is None
    assert _networks.set_network(reg, 'tenant', 'present', TENANT) == (True, None, SHOWN)
    stored = reg.get_network('tenant')
    assert _networks.set_network(reg, 'tenant', 'present', TENANT) == (False, SHOWN, SHOWN)
    assert _networks.set_network(reg, 'tenant', 'present', {'cidr': '192.0.2.0/24'}) == (False, SHOWN, SHOWN)  # others kept
    assert reg.get_network('tenant') == stored  # nothing written: updated_at stays
    narrower = dict(SHOWN, allocation_start='192.0.2.100', allocation_end='192.0.2.199', gateway=None, dns_servers=[])
    change = {'allocation_start': '192.0.2.100', 'allocation_end': '192.0.2.199', 'gateway': '', 'dns_servers': []}
    assert _networks.set_network(reg, 'tenant', 'present', change, check_mode=True) == (True, SHOWN, narrower)
    assert reg.get_network('tenant') == stored
    assert _networks.set_network(reg, 'tenant', 'present', change) == (True, SHOWN, narrower)
    # A new cidr takes its own default range.
    moved = _networks.set_network(reg, 'tenant', 'present', {'cidr': '2001:db8::/64'})[2]
    assert (moved['allocation_start'], moved['allocation_end']) == ('2001:db8::1', '2001:db8::ffff:ffff:ffff:ffff')
    assert _networks.set_network(reg, 'tenant', 'absent', {}, check_mode=True) == (True, moved, None)
    assert reg.get_network('tenant') is not None
    assert _networks.set_network(reg, 'tenant', 'absent', {}) == (True, moved, None)
    assert _networks.set_network(reg, 'tenant', 'absent', {}) == (False, None, None)


@pytest.mark.parametrize('fields, message', [
    ({}, 'network tenant does not exist; give cidr to create it; nothing was created'),
    ({'cidr': '192.0.2.7/24'}, "network tenant: cidr must be an IPv4 or IPv6 subnet in CIDR form"),
    ({'cidr': '192.0.2.0/24', 'gateway': '10.0.0.1'}, 'network tenant: gateway 10.0.0.1 is not a host address of 192.0.2.0/24; nothing was created'),
    ({'cidr': '192.0.2.0/24', 'allocation_start': '192.0.2.9', 'allocation_end': '192.0.2.8'}, 'allocation_start 192.0.2.9 is after allocation_end 192.0.2.8'),
    ({'cidr': '192.0.2.0/24', 'allocation_end': '192.0.3.8'}, 'allocation_end 192.0.3.8 is not a host address of 192.0.2.0/24'),
    ({'cidr': '192.0.2.0/24', 'dns_servers': ['dns.example']}, "network tenant: dns_servers[0] must be an IP address, got 'dns.example'"),
    ({'cidr': '192.0.2.0/24', 'backings': [{'nodes': ['kvm1']}]}, 'network tenant: backings[0].backing must be a libvirt network'),
    ({'cidr': '192.0.2.0/24', 'backings': [{'backing': 'x', 'node': ['kvm1']}]}, 'backings[0] has unknown key(s) node'),
    ({'cidr': '192.0.2.0/24', 'backings': [{'backing': 'x', 'aggregates': 'gold'}]}, 'backings[0].aggregates must be a list of names'),
    ({'cidr': '192.0.2.0/24', 'mtu': 9000}, 'unknown network setting(s) mtu; network tenant was left unchanged'),
])
def test_core_refusals_say_what_was_wrong_and_write_nothing(reg, fields, message):
    with pytest.raises(errors.MultihvError, match=re.escape(message)):
        _networks.set_network(reg, 'tenant', 'present', fields)
    assert reg.list_networks() == []


def test_core_refuses_while_instances_hold_addresses_in_check_mode_too(reg):
    _networks.set_network(reg, 'tenant', 'present', TENANT)
    web = reg.create_instance(name='web-1', flavor='small', image='tick', storage='local')
    reg.allocate_ports(web.uuid, [{'network': 'tenant', 'fixed_ip': '192.0.2.10'}])
    for check_mode in (True, False):
        with pytest.raises(errors.MultihvError, match='network tenant is used by instance.s. web-1; delete them first'):
            _networks.set_network(reg, 'tenant', 'absent', {}, check_mode=check_mode)
        with pytest.raises(errors.MultihvError, match='network tenant has ports of instance.s. web-1: its cidr cannot change'):
            _networks.set_network(reg, 'tenant', 'present', {'cidr': '198.51.100.0/24'}, check_mode=check_mode)
        with pytest.raises(errors.MultihvError, match='gateway 192.0.2.10 is the address of instance web-1'):
            _networks.set_network(reg, 'tenant', 'present', {'gateway': '192.0.2.10'}, check_mode=check_mode)
    with pytest.raises(errors.MultihvError, match='state absent takes no network settings, got cidr; network tenant was left untouched'):
        _networks.set_network(reg, 'tenant', 'absent', {'cidr': '192.0.2.0/24'})
    assert _networks.set_network(reg, 'tenant', 'present', {'allocation_start': '192.0.2.50'})[0] is True  # the rest may change


def run_module(capsys, url, check=False, diff=False, **options):
    args = dict(options, cloud={'registry': {'url': url}}, _ansible_check_mode=check, _ansible_diff=diff)
    return modules.run_module(capsys, network_module, args)


def test_module_check_mode_on_an_older_registry_neither_writes_nor_upgrades(tmp_path, monkeypatch, capsys):
    url = 'sqlite:///%s' % (tmp_path / 'old.sqlite')
    with monkeypatch.context() as patched:
        patched.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:5])
        patched.setattr(schema, 'SCHEMA_VERSION', 5)
        Registry.open(url).close()
    checked = run_module(capsys, url, check=True, diff=True, name='tenant', cidr='192.0.2.0/24')
    assert checked['changed'] is True and checked['network']['allocation_end'] == '192.0.2.254'
    assert checked['diff'] == {'before': {}, 'after': checked['network']}
    with sqlite3.connect(str(tmp_path / 'old.sqlite')) as conn:
        assert conn.execute('SELECT max(version) FROM schema_version').fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'networks'").fetchone() == (0,)
    made = run_module(capsys, url, name='tenant', cidr='192.0.2.0/24', backings=[{'backing': 'default'}])
    assert made['changed'] is True and made['network']['backings'] == [
        {'backing': 'default', 'nodes': [], 'aggregates': [], 'endpoints': [], 'hypervisor_type': None}]
    assert run_module(capsys, url, name='tenant', cidr='192.0.2.0/24', backings=[{'backing': 'default'}])['changed'] is False


# -- where a network is --------------------------------------------------------------------------

BACKINGS = [
    {'backing': 'pinned', 'nodes': ['kvm9']},
    {'backing': 'gold-kvm', 'aggregates': ['gold', 'silver'], 'hypervisor_type': 'kvm'},
    {'backing': 'vc-a-pg', 'endpoints': ['vc-a']},
]
ROW = {'name': 'n', 'cidr': '192.0.2.0/24', 'gateway': None, 'dns_servers': [], 'allocation_start': '192.0.2.1',
       'allocation_end': '192.0.2.254', 'backings': BACKINGS}


@pytest.mark.parametrize('node, backing', [
    (_networks.NodeFacts('kvm9', 'kvm', 'kvm9', ()), 'pinned'),  # the first match wins
    (_networks.NodeFacts('kvm1', 'kvm', 'kvm1', ('silver',)), 'gold-kvm'),  # one of the aggregates is enough
    (_networks.NodeFacts('vc-a/dc/c', 'vsphere', 'vc-a', ('silver',)), 'vc-a-pg'),  # every key set must match
    (_networks.NodeFacts('kvm2', 'kvm', 'kvm2', ('bronze',)), None),
    (_networks.NodeFacts('vc-b/dc/c', 'vsphere', 'vc-b', ()), None),
])
def test_the_first_backing_whose_selector_matches_is_the_network_on_that_node(node, backing):
    assert _networks.backing_on(ROW, node) == backing
    everywhere = dict(ROW, backings=ROW['backings'] + [{'backing': 'fallback'}])
    assert _networks.backing_on(everywhere, node) == (backing or 'fallback')
    assert _networks.backing_on(dict(ROW, backings=[]), node) is None


def test_guest_nics_carry_the_prefix_gateway_and_dns_and_legacy_nics_have_no_address(reg):
    _networks.set_network(reg, 'tenant', 'present', TENANT)
    _networks.set_network(reg, 'v6', 'present', {'cidr': '2001:db8::/64'})
    identity = {'networks': [{'network': 'tenant', 'mac': '52:54:00:00:00:01', 'address': '192.0.2.7'},
                             {'network': 'v6', 'mac': '52:54:00:00:00:02', 'address': '2001:db8::7'},
                             {'network': 'bridge:old', 'mac': '52:54:00:00:00:03'}]}
    assert _networks.guest_nics(reg, identity) == [
        GuestNic('52:54:00:00:00:01', '192.0.2.7/24', '192.0.2.1', ('192.0.2.53',)),
        GuestNic('52:54:00:00:00:02', '2001:db8::7/64'), GuestNic('52:54:00:00:00:03')]


def test_the_network_filter_keeps_nodes_with_every_network_and_the_backing_asked_for():
    nodes = [Candidate('a', 'kvm', capacity={'vcpus': 8, 'memory_mb': 8192, 'disk_gb': 10}, networks={'t': 'br0'}),
             Candidate('b', 'kvm', capacity={'vcpus': 8, 'memory_mb': 4096, 'disk_gb': 10}, networks={'t': 'br1', 'u': 'br2'})]
    assert Scheduler(nodes).place(Request(1, 512, networks=(('t', None),)))[0] == 'a'
    assert Scheduler(nodes).place(Request(1, 512, networks=(('t', 'br1'),)))[0] == 'b'
    assert Scheduler(nodes).place(Request(1, 512, networks=(('t', None), ('u', None))))[0] == 'b'
    with pytest.raises(NoValidHost) as caught:
        Scheduler(nodes).place(Request(1, 512, networks=(('t', 'br9'), ('v', None))))
    assert caught.value.rejected['NetworkFilter'] == ['a', 'b']
    assert 'NetworkFilter removed a, b (networks t with backing br9, v: not there)' in str(caught.value)


# -- on fake hypervisors -------------------------------------------------------------------------


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 and fake2 sharing 'shared' (fake1 fenceable); tenant on both (bridge:br1 / bridge:br2), edge on fake2 only."""
    with two_node_cloud(tmp_path) as made:
        made.network('tenant', gateway='192.0.2.1',
                     backings=[{'backing': 'bridge:br1', 'nodes': ['fake1']}, {'backing': 'bridge:br2', 'endpoints': ['fake2']}])
        made.network('edge', '198.51.100.0/24', backings=[{'backing': 'edge-net', 'nodes': ['fake2']}])
        yield made


def ports(cloud):
    names = dict((i.uuid, i.name) for i in cloud.registry.list_instances())
    return sorted((names[p['instance_uuid']], p['network'], p['address']) for p in cloud.registry.list_ports())


def test_a_boot_allocates_addresses_and_spawns_on_the_nodes_backing(cloud):
    web = cloud.boot('web', node='fake1', uuid=UUID_A, networks=[{'network': 'tenant'}, {'network': 'tenant', 'fixed_ip': '192.0.2.50'}])
    macs = [_instances.stable_mac(UUID_A, 0), _instances.stable_mac(UUID_A, 1)]
    assert web.identity['networks'] == [{'network': 'tenant', 'mac': macs[0], 'address': '192.0.2.2'},
                                        {'network': 'tenant', 'mac': macs[1], 'address': '192.0.2.50'}]
    assert web.identity['macs'] == macs and web.as_dict()['addresses'] == {'tenant': ['192.0.2.2', '192.0.2.50']}
    assert cloud.world.vm('web').networks == [{'network': 'bridge:br1', 'mac': macs[0]}, {'network': 'bridge:br1', 'mac': macs[1]}]
    # The scheduler puts an instance on edge where edge is.
    assert cloud.boot('edgy', networks=[{'network': 'edge'}]).node == 'fake2'
    assert cloud.world.vm('edgy').networks[0]['network'] == 'edge-net'
    assert ports(cloud) == [('edgy', 'edge', '198.51.100.1'), ('web', 'tenant', '192.0.2.2'), ('web', 'tenant', '192.0.2.50')]


def nothing_left_of(cloud, name):
    assert cloud.registry.get_instance(name=name) is None and name not in [n for n, _node in cloud.allocations()]
    assert cloud.world.vm(name) is None and name not in [p[0] for p in ports(cloud)]


@pytest.mark.parametrize('params, error, message', [
    ({'networks': [{'network': 'nowhere'}]}, errors.NotFound,
     'networks[0]: network nowhere does not exist; create it with multihv.cloud.network; nothing was created'),
    ({'networks': [{'network': 'tenant', 'fixed_ip': '198.51.100.9'}]}, errors.MultihvError,
     'networks[0].fixed_ip 198.51.100.9 is outside network tenant (192.0.2.0/24); nothing was created'),
    ({'networks': [{'network': 'tenant', 'fixed_ip': '192.0.2.5'}]}, errors.MultihvError,
     'networks[0].fixed_ip 192.0.2.5 on network tenant is taken by instance first; nothing was created'),
    ({'networks': [{'network': 'tenant', 'mac': '52:54:00:aa:00:01'}]}, errors.MultihvError,
     'networks[0].mac 52:54:00:aa:00:01 is taken by instance first; nothing was created'),
    ({'networks': [{'network': 'tenant', 'fixed_ip': '192.0.2.9'}, {'network': 'tenant', 'fixed_ip': '192.0.2.9'}]}, errors.MultihvError,
     'networks[1].fixed_ip 192.0.2.9 on network tenant is asked for by networks[0] too; nothing was created'),
    ({'networks': [{'network': 'edge'}], 'node': 'fake1'}, errors.MultihvError,
     'NetworkFilter removed fake1 (network edge: not there); nothing was created'),
    ({'networks': [{'network': 'tenant', 'addr': '192.0.2.9'}]}, errors.MultihvError, 'networks[0] has unknown key(s) addr'),
])
def test_a_refused_boot_leaves_nothing_behind(cloud, params, error, message):
    cloud.boot('first', networks=[{'network': 'tenant', 'fixed_ip': '192.0.2.5', 'mac': '52:54:00:AA:00:01'}])
    with pytest.raises(error, match=re.escape(message)):
        cloud.boot('second', **params)
    nothing_left_of(cloud, 'second')
    # Check mode (the plan) refuses the same way.
    with pytest.raises(error, match=re.escape(message)):
        _instance_tasks.run(cloud.context(), dict(params, name='second', flavor='small', image='tick', state='present'), check_mode=True)


def test_a_failed_spawn_frees_its_ports_and_an_unconfirmed_one_keeps_them_with_its_record(cloud):
    cloud.world.fail_spawn()
    with pytest.raises(errors.DriverError, match='injected spawn failure'):
        cloud.boot('a', networks=[{'network': 'tenant'}])
    nothing_left_of(cloud, 'a')
    cloud.world.fail_spawn(error=errors.Unreachable('fake1 did not answer'), leave_behind=True, stop_answering=True)
    with pytest.raises(errors.SpawnUnconfirmed):
        cloud.boot('b', node='fake1', networks=[{'network': 'tenant'}])
    assert ports(cloud) == [('b', 'tenant', '192.0.2.2')] and cloud.registry.get_instance(name='b').state == 'building'


def test_a_concurrent_batch_gets_distinct_addresses_and_a_delete_frees_them(cloud):
    records, failures = _instances.boot_many(cloud.context(), [
        {'name': 'b%d' % n, 'flavor': 'small', 'image': 'tick', 'networks': [{'network': 'tenant'}]} for n in range(6)], concurrency=4)
    assert failures == [] and len(records) == 6
    addresses = sorted(r.identity['networks'][0]['address'] for r in records)
    assert addresses == sorted('192.0.2.%d' % n for n in range(2, 8))
    freed = cloud.registry.get_instance(name='b3')
    _instances.delete(cloud.context(), freed)
    assert freed.identity['networks'][0]['address'] not in [p[2] for p in ports(cloud)]
    # The lowest free address is the one freed (.8 is the next never used).
    assert cloud.boot('again', networks=[{'network': 'tenant'}]).identity['networks'][0]['address'] == freed.identity['networks'][0]['address']


def test_an_evacuation_keeps_the_addresses_and_uses_the_targets_backing(cloud):
    web = cloud.boot('web', node='fake1', storage='shared', networks=[{'network': 'tenant', 'fixed_ip': '192.0.2.77'}])
    cloud.world.power_loss('fake1')
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    assert [(e['name'], e['dest_node']) for e in result['evacuations']] == [('web', 'fake2')]
    after = cloud.registry.get_instance(name='web')
    assert after.identity['networks'] == web.identity['networks'] and after.as_dict()['addresses'] == {'tenant': ['192.0.2.77']}
    assert cloud.world.vm('web', 'fake2').networks == [{'network': 'bridge:br2', 'mac': web.identity['macs'][0]}]
    assert ports(cloud) == [('web', 'tenant', '192.0.2.77')]


def test_an_evacuation_goes_only_where_the_networks_are(cloud):
    cloud.world.add_node('fake3')  # tenant has no backing there
    cloud.boot('web', node='fake1', storage='shared', networks=[{'network': 'tenant'}])
    cloud.boot('filler', node='fake2', flavor=cloud.flavor('huge', vcpus=8, ram_mb=8192)['name'])
    cloud.world.power_loss('fake1')
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    (unplaced,) = result['unplaced']
    assert 'NetworkFilter removed fake3 (network tenant: not there)' in unplaced['msg']
    assert cloud.registry.get_instance(name='web').node == 'fake1'


def test_a_migration_keeps_the_nics_so_it_needs_the_same_backing_on_the_target(cloud):
    web = cloud.boot('web', node='fake1', storage='shared', networks=[{'network': 'tenant'}])
    with pytest.raises(errors.MultihvError, match=re.escape('NetworkFilter removed fake2 (network tenant with backing bridge:br1: not there)')):
        _migrations.migrate(cloud.context(), 'web', 'live')
    assert cloud.registry.list_migrations() == [] and cloud.world.vm('web').node == 'fake1'
    # Once tenant is bridge:br1 on fake2 too, the move goes, and the addresses with it.
    _networks.set_network(cloud.registry, 'tenant', 'present', {'backings': [{'backing': 'bridge:br1'}]})
    moved = _migrations.migrate(cloud.context(), 'web', 'live')
    assert moved['instance']['node'] == 'fake2' and moved['instance']['identity'] == web.identity
    assert moved['instance']['addresses'] == {'tenant': ['192.0.2.2']}


def test_a_rebuild_keeps_the_addresses_and_one_on_a_node_the_network_left_is_refused_untouched(cloud):
    web = cloud.boot('web', node='fake1', networks=[{'network': 'tenant'}])
    rebuilt = _instances.rebuild(cloud.context(), web)
    assert rebuilt.identity == web.identity and cloud.world.vm('web').networks[0]['network'] == 'bridge:br1'
    _networks.set_network(cloud.registry, 'tenant', 'present', {'backings': [{'backing': 'bridge:br2', 'nodes': ['fake2']}]})
    with pytest.raises(errors.MultihvError, match='network tenant has no backing on node fake1'):
        _instances.rebuild(cloud.context(), rebuilt)
    assert cloud.world.vm('web').power == 'running' and cloud.registry.get_instance(name='web').state == 'running'


def test_an_existing_instance_asked_for_other_nics_is_refused(cloud):
    cloud.boot('web', networks=[{'network': 'tenant', 'fixed_ip': '192.0.2.9'}])
    same = dict(name='web', flavor='small', image='tick', state='present', networks=[{'network': 'tenant', 'fixed_ip': '192.0.2.9'}])
    assert _instance_tasks.run(cloud.context(), same, check_mode=False)['changed'] is False
    for networks in ([{'network': 'tenant', 'fixed_ip': '192.0.2.10'}], [{'network': 'edge'}], []):
        with pytest.raises(errors.MultihvError, match=re.escape('instance web exists with other NICs (tenant 192.0.2.9)')):
            _instance_tasks.run(cloud.context(), dict(same, networks=networks), check_mode=False)


def test_a_network_in_use_cannot_be_deleted_until_its_instances_are(cloud):
    web = cloud.boot('web', networks=[{'network': 'tenant'}])
    with pytest.raises(errors.MultihvError, match='network tenant is used by instance.s. web; delete them first'):
        _networks.set_network(cloud.registry, 'tenant', 'absent', {})
    _instances.delete(cloud.context(), web)
    assert _networks.set_network(cloud.registry, 'tenant', 'absent', {})[0] is True
