"""Networks and ports in the registry (schema v6) on a real SQLite file: the addressing rules, networks
kept while instances hold addresses on them, and port allocation (fixed IPs, the lowest free address,
exhaustion, unique MACs, freed with the instance). Concurrency on both engines is in
tests/integration/test_registry_networks.py."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import addressing
from ansible_collections.multihv.cloud.plugins.module_utils._registry import registry
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables

UUID_A = '0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01'
UUID_B = '0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a02'


# -- the addressing rules ------------------------------------------------------------------------


@pytest.mark.parametrize('fields, message', [
    ({'cidr': '192.0.2.1/24'}, "cidr must be an IPv4 or IPv6 subnet in CIDR form (192.0.2.0/24, 2001:db8::/64), got '192.0.2.1/24'"),
    ({'cidr': 'tenant'}, "cidr must be an IPv4 or IPv6 subnet in CIDR form"),
    ({'cidr': '192.0.2.0/24', 'gateway': '198.51.100.1'}, 'gateway 198.51.100.1 is not a host address of 192.0.2.0/24'),
    ({'cidr': '192.0.2.0/24', 'gateway': '192.0.2.255'}, 'gateway 192.0.2.255 is not a host address of 192.0.2.0/24'),
    ({'cidr': '192.0.2.0/24', 'gateway': 'router'}, "gateway must be an IP address, got 'router'"),
    ({'cidr': '192.0.2.0/24', 'allocation_start': '192.0.3.1'}, 'allocation_start 192.0.3.1 is not a host address'),
    ({'cidr': '192.0.2.0/24', 'allocation_end': '192.0.2.0'}, 'allocation_end 192.0.2.0 is not a host address'),
    ({'cidr': '192.0.2.0/24', 'allocation_start': '192.0.2.200', 'allocation_end': '192.0.2.100'},
     'allocation_start 192.0.2.200 is after allocation_end 192.0.2.100'),
    ({'cidr': '2001:db8::/64', 'gateway': '192.0.2.1'}, 'gateway 192.0.2.1 is not a host address of 2001:db8::/64'),
])
def test_a_subnet_that_does_not_hold_together_is_refused_saying_why(fields, message):
    with pytest.raises(errors.MultihvError, match=re.escape(message)) as caught:
        addressing.Subnet('tenant', **dict(fields, untouched='network tenant was left unchanged'))
    assert str(caught.value).startswith('network tenant: ') and str(caught.value).endswith('network tenant was left unchanged')


def test_default_ranges_are_the_hosts_of_the_subnet():
    assert [str(a) for a in addressing.default_range(addressing.subnet('192.0.2.0/24', '', ''))] == ['192.0.2.1', '192.0.2.254']
    assert [str(a) for a in addressing.default_range(addressing.subnet('192.0.2.0/31', '', ''))] == ['192.0.2.0', '192.0.2.1']
    assert [str(a) for a in addressing.default_range(addressing.subnet('2001:db8::/64', '', ''))] == [
        '2001:db8::1', '2001:db8::ffff:ffff:ffff:ffff']


def test_first_free_skips_the_gateway_and_what_is_taken_and_ends_at_the_range():
    net = addressing.Subnet('t', '192.0.2.0/29', gateway='192.0.2.1')
    assert net.first_free(set()) == '192.0.2.2'
    assert net.first_free({'192.0.2.2', '192.0.2.3'}) == '192.0.2.4'
    assert net.first_free({'192.0.2.%d' % n for n in range(2, 7)}) is None and net.range_size() == 5
    top = addressing.Subnet('top', '255.255.255.252/30')
    assert top.first_free({'255.255.255.253'}) == '255.255.255.254' and top.first_free({'255.255.255.253', '255.255.255.254'}) is None
    v6 = addressing.Subnet('v6', '2001:db8::/64', gateway='2001:db8::1')
    assert v6.first_free({'2001:db8::2'}) == '2001:db8::3'


@pytest.mark.parametrize('ip, message', [
    ('198.51.100.7', 'networks[0].fixed_ip 198.51.100.7 is outside network t (192.0.2.0/24)'),
    ('192.0.2.0', 'is the network or broadcast address of network t'),
    ('192.0.2.255', 'is the network or broadcast address of network t'),
    ('192.0.2.1', 'networks[0].fixed_ip 192.0.2.1 is the gateway of network t'),
    ('2001:db8::5', 'is outside network t'),
    ('192.0.2.x', "networks[0].fixed_ip must be an IP address, got '192.0.2.x'"),
])
def test_a_fixed_ip_must_be_a_host_address_of_the_subnet_other_than_its_gateway(ip, message):
    net = addressing.Subnet('t', '192.0.2.0/24', gateway='192.0.2.1')
    with pytest.raises(errors.MultihvError, match=re.escape(message)):
        net.check_fixed(ip, 'networks[0].fixed_ip', 'nothing was created')
    assert net.check_fixed('192.0.2.9', 'f', '') == '192.0.2.9'


def test_stable_macs_are_kept_and_a_second_derivation_differs():
    assert addressing.stable_mac(UUID_A, 0) == addressing.stable_mac(UUID_A, 0)
    assert addressing.stable_mac(UUID_A, 0) != addressing.stable_mac(UUID_A, 1)
    assert addressing.stable_mac(UUID_A, 0, 1) != addressing.stable_mac(UUID_A, 0)
    assert all(addressing.MAC.match(addressing.stable_mac(UUID_A, 0, n)) for n in range(5))


# -- the schema ----------------------------------------------------------------------------------


def test_version_6_adds_networks_and_ports_with_their_unique_constraints():
    assert schema.NETWORKS_VERSION == 6 == schema.MIGRATIONS[5][0]
    networks, ports = schema.MIGRATIONS[5][1]
    table = re.match(r'CREATE TABLE networks \((.*)\)$', networks).group(1)
    assert [column.split()[0] for column in table.split(',')] == list(tables.NETWORKS.columns)
    assert 'mac TEXT NOT NULL UNIQUE' in ports and 'UNIQUE (network, address)' in ports
    assert 'REFERENCES instances (uuid) ON DELETE CASCADE' in ports and 'REFERENCES networks (name)' in ports


@pytest.fixture(name='reg')
def registry_fixture(tmp_path):
    url = 'sqlite:///%s' % (tmp_path / 'r.sqlite')
    with registry.Registry.open(url) as opened:
        opened.set_flavor('small', vcpus=1, ram_mb=1024, disk_gb=1)
        yield opened


def network(reg, name='tenant', cidr='192.0.2.0/24', **fields):
    start, end = (str(a) for a in addressing.default_range(addressing.subnet(cidr, '', '')))
    fields.setdefault('allocation_start', start)
    fields.setdefault('allocation_end', end)
    return reg.set_network(name, cidr=cidr, **fields)[1]


def instance(reg, name, uuid=None):
    return reg.create_instance(name=name, flavor='small', image='tick', storage='local', **({'uuid': uuid} if uuid else {}))


def test_set_get_list_and_delete_networks(reg):
    assert reg.get_network('tenant') is None and reg.list_networks() == []
    made = network(reg, gateway='192.0.2.1', dns_servers=['192.0.2.53'], backings=[{'backing': 'default'}])
    assert (made['cidr'], made['gateway'], made['dns_servers'], made['allocation_start'], made['allocation_end']) == (
        '192.0.2.0/24', '192.0.2.1', ['192.0.2.53'], '192.0.2.1', '192.0.2.254')
    assert made['backings'] == [{'backing': 'default'}] and reg.get_network('tenant') == made
    assert reg.set_network('tenant', gateway='192.0.2.1') == (made, made)  # nothing to write: updated_at stays
    before, after = reg.set_network('tenant', allocation_start='192.0.2.100')
    assert before == made and after['allocation_start'] == '192.0.2.100'
    network(reg, 'other', '2001:db8::/64')
    assert [n['name'] for n in reg.list_networks()] == ['other', 'tenant']
    assert reg.delete_network('tenant') == after and reg.delete_network('tenant') is None


def test_the_registry_refuses_a_network_that_does_not_hold_together(reg):
    with pytest.raises(errors.RegistryError, match='network n does not exist and creating it needs allocation_start, allocation_end'):
        reg.set_network('n', cidr='192.0.2.0/24')
    network(reg)
    with pytest.raises(errors.RegistryError, match='gateway 198.51.100.1 is not a host address of 192.0.2.0/24; network tenant was left'):
        reg.set_network('tenant', gateway='198.51.100.1')
    assert reg.get_network('tenant')['gateway'] is None


def test_a_network_whose_addresses_instances_hold_keeps_its_cidr_and_stays(reg):
    network(reg)
    web = instance(reg, 'web-1')
    (port,) = reg.allocate_ports(web.uuid, [{'network': 'tenant'}])
    assert port['address'] == '192.0.2.1'
    with pytest.raises(errors.RegistryError, match='network tenant is used by instance.s. web-1; delete them first; network tenant was left untouched'):
        reg.delete_network('tenant')
    with pytest.raises(errors.RegistryError, match='network tenant has ports of instance.s. web-1: its cidr cannot change'):
        reg.set_network('tenant', cidr='198.51.100.0/24', allocation_start='198.51.100.1', allocation_end='198.51.100.254')
    with pytest.raises(errors.RegistryError, match='gateway 192.0.2.1 is the address of instance web-1'):
        reg.set_network('tenant', gateway='192.0.2.1')
    assert reg.set_network('tenant', gateway='192.0.2.254')[1]['gateway'] == '192.0.2.254'  # a free one may be
    assert reg.network_users('tenant') == ['web-1']
    reg.delete_instance(web.uuid)  # its port goes with it, in the same statement
    assert reg.list_ports() == [] and reg.network_users('tenant') == []
    assert reg.delete_network('tenant')['name'] == 'tenant'


# -- allocation ----------------------------------------------------------------------------------


def test_ports_get_the_lowest_free_address_and_stable_macs_in_nic_order(reg):
    network(reg, gateway='192.0.2.1', allocation_start='192.0.2.1', allocation_end='192.0.2.20')
    network(reg, 'v6', '2001:db8::/64')
    web = instance(reg, 'web-1', UUID_A)
    ports = reg.allocate_ports(web.uuid, [{'network': 'tenant'}, {'network': 'v6'}, {'network': 'tenant', 'fixed_ip': '192.0.2.3'}])
    assert ports == [
        {'network': 'tenant', 'mac': addressing.stable_mac(UUID_A, 0), 'address': '192.0.2.2'},  # the gateway is skipped
        {'network': 'v6', 'mac': addressing.stable_mac(UUID_A, 1), 'address': '2001:db8::1'},
        {'network': 'tenant', 'mac': addressing.stable_mac(UUID_A, 2), 'address': '192.0.2.3'}]
    assert [(p['nic'], p['address']) for p in reg.list_ports(instance_uuid=web.uuid)] == [(0, '192.0.2.2'), (1, '2001:db8::1'), (2, '192.0.2.3')]
    db = instance(reg, 'db-1')
    assert reg.allocate_ports(db.uuid, [{'network': 'tenant'}])[0]['address'] == '192.0.2.4'
    # Freed with its instance: the next one gets the lowest again.
    reg.delete_instance(web.uuid)
    assert reg.allocate_ports(instance(reg, 'web-2').uuid, [{'network': 'tenant'}])[0]['address'] == '192.0.2.2'


def test_a_fixed_ip_taken_or_outside_is_refused_naming_the_holder_and_nothing_is_written(reg):
    network(reg, gateway='192.0.2.1')
    network(reg, 'second', '198.51.100.0/24')
    web = instance(reg, 'web-1')
    reg.allocate_ports(web.uuid, [{'network': 'tenant', 'fixed_ip': '192.0.2.10'}])
    db = instance(reg, 'db-1')
    for nics, error, message in [
        ([{'network': 'second'}, {'network': 'tenant', 'fixed_ip': '192.0.2.10'}], errors.RegistryError,
         'instance db-1: networks[1].fixed_ip 192.0.2.10 on network tenant is taken by instance web-1; nothing was created'),
        ([{'network': 'tenant', 'fixed_ip': '198.51.100.3'}], errors.MultihvError,
         'instance db-1: networks[0].fixed_ip 198.51.100.3 is outside network tenant (192.0.2.0/24); nothing was created'),
        ([{'network': 'tenant', 'fixed_ip': '192.0.2.1'}], errors.MultihvError, 'is the gateway of network tenant'),
        ([{'network': 'nowhere'}], errors.NotFound, 'network nowhere does not exist; create it with multihv.cloud.network; nothing was created'),
        ([{'network': 'tenant', 'mac': 'zz'}], errors.MultihvError, "networks[0].mac must be a MAC address of the form 52:54:00:12:34:56, got 'zz'"),
    ]:
        with pytest.raises(error, match=re.escape(message)):
            reg.allocate_ports(db.uuid, nics, 'nothing was created')
        assert reg.list_ports(instance_uuid=db.uuid) == []  # the first NIC's port went with the transaction
    assert [p['address'] for p in reg.list_ports(network='second')] == []


def test_an_exhausted_range_is_refused_saying_so(reg):
    network(reg, 'tiny', '192.0.2.0/30')  # hosts .1 and .2
    for name in ('a', 'b'):
        reg.allocate_ports(instance(reg, name).uuid, [{'network': 'tiny'}])
    with pytest.raises(errors.RegistryError, match=re.escape('network tiny has no free address left in its allocation range 192.0.2.1 - 192.0.2.2 (2 in use)')):
        reg.allocate_ports(instance(reg, 'c').uuid, [{'network': 'tiny'}])
    # A fixed IP outside the range but inside the subnet is refused too here: a /30 has nothing else.
    assert reg.port_holder('tiny', '192.0.2.2') == 'b'


def test_macs_are_unique_a_taken_one_is_refused_naming_the_holder_and_a_derived_one_is_derived_again(reg):
    network(reg)
    first = instance(reg, 'first', UUID_A)
    # first holds the MAC the next instance's NIC 0 would be derived to.
    reg.allocate_ports(first.uuid, [{'network': 'tenant', 'mac': addressing.stable_mac(UUID_B, 0).upper()}])
    assert reg.list_ports()[0]['mac'] == addressing.stable_mac(UUID_B, 0)  # stored in lower case
    second = instance(reg, 'second', UUID_B)
    taken = 'instance second: networks[0].mac %s is taken by instance first' % addressing.stable_mac(UUID_B, 0)
    with pytest.raises(errors.RegistryError, match=re.escape(taken)):
        reg.allocate_ports(second.uuid, [{'network': 'tenant', 'mac': addressing.stable_mac(UUID_B, 0)}])
    (port,) = reg.allocate_ports(second.uuid, [{'network': 'tenant'}])
    assert port['mac'] == addressing.stable_mac(UUID_B, 0, 1)
    # The database itself refuses a duplicate, whatever the code above it does.
    with sqlite3.connect(reg._url[len('sqlite:///'):]) as raw:  # pylint: disable=protected-access
        with pytest.raises(sqlite3.IntegrityError, match='UNIQUE constraint failed: ports.mac'):
            raw.execute("INSERT INTO ports VALUES (?, 5, 'tenant', ?, '192.0.2.77', 'now')", (UUID_A, port['mac']))
        with pytest.raises(sqlite3.IntegrityError, match='UNIQUE constraint failed: ports.network, ports.address'):
            raw.execute("INSERT INTO ports VALUES (?, 5, 'tenant', '52:54:00:00:00:77', ?, 'now')", (UUID_A, port['address']))


def test_an_instance_is_recorded_before_its_ports_and_has_them_once(reg):
    network(reg)
    with pytest.raises(errors.NotFound, match='create_instance comes before allocate_ports'):
        reg.allocate_ports(UUID_A, [{'network': 'tenant'}])
    web = instance(reg, 'web-1')
    reg.allocate_ports(web.uuid, [{'network': 'tenant'}])
    with pytest.raises(errors.RegistryError, match='instance web-1 has ports already'):
        reg.allocate_ports(web.uuid, [{'network': 'tenant'}])
    assert reg.allocate_ports(web.uuid, []) == []


def test_threads_allocating_on_one_sqlite_file_never_share_an_address(tmp_path):
    """Each thread its own connection, as concurrent ansible-playbook runs would be."""
    url = 'sqlite:///%s' % (tmp_path / 'r.sqlite')
    with registry.Registry.open(url) as reg:
        reg.set_flavor('small', vcpus=1, ram_mb=1024, disk_gb=1)
        network(reg, 'tenant', '192.0.2.0/26')
        uuids = [instance(reg, 'i%d' % n).uuid for n in range(12)]
    barrier = threading.Barrier(len(uuids))
    got, failed = {}, []

    def allocate(inst_uuid):
        with registry.Registry.open(url) as mine:
            barrier.wait()
            try:
                got[inst_uuid] = mine.allocate_ports(inst_uuid, [{'network': 'tenant'}, {'network': 'tenant'}])
            except errors.MultihvError as exc:  # pragma: no cover - the assertion below shows it
                failed.append(str(exc))
    threads = [threading.Thread(target=allocate, args=(u,)) for u in uuids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failed == [] and len(got) == 12
    addresses = [p['address'] for ports in got.values() for p in ports]
    macs = [p['mac'] for ports in got.values() for p in ports]
    assert len(set(addresses)) == len(addresses) == 24 and len(set(macs)) == 24
    assert sorted(addresses, key=lambda a: int(a.rsplit('.', 1)[1])) == ['192.0.2.%d' % n for n in range(1, 25)]


def test_a_registry_older_than_networks_opened_as_it_is_has_none_and_is_not_written(tmp_path, monkeypatch):
    url = 'sqlite:///%s' % (tmp_path / 'old.sqlite')
    with monkeypatch.context() as patched:
        patched.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:5])
        patched.setattr(schema, 'SCHEMA_VERSION', 5)
        registry.Registry.open(url).close()
    with registry.Registry.open(url, upgrade=False) as old:
        assert old.get_network('n') is None and old.list_networks() == [] and old.list_ports() == []
        assert old.network_users('n') == [] and old.port_holder('n', '192.0.2.1') is None and old.delete_network('n') is None
        assert old.schema_version() == 5
