"""network through real Ansible runs, against a registry of each test's own (no hypervisor needed: the
cloud is given inline with only its registry). Instances that hold addresses are recorded directly
through the registry API, as the instance core does before it claims and spawns."""

from __future__ import annotations

import sqlite3

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.lab import ansible_module


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    return {'cloud': {'registry': {'url': f'sqlite:///{tmp_path}/registry.sqlite'}}}


def url(cloud):
    return cloud['cloud']['registry']['url']


def stored(cloud):
    """Every network row, timestamps included: what 'nothing written' is checked against."""
    with Registry.open(url(cloud)) as registry:
        return registry.list_networks()


def holding(cloud, name, nics):
    """Record instance name with ports on nics, as a boot does before its claim."""
    with Registry.open(url(cloud)) as registry:
        if registry.get_flavor('small') is None:
            registry.set_flavor('small', vcpus=1, ram_mb=1024, disk_gb=1)
            registry.set_image('tick', hypervisor_type='kvm')
        record = registry.create_instance(name=name, flavor='small', image='tick', storage='local')
        return registry.allocate_ports(record.uuid, nics)


NETWORK = {'name': 'tenant', 'cidr': '192.0.2.0/24', 'gateway': '192.0.2.1', 'dns_servers': ['192.0.2.53'],
           'allocation_start': '192.0.2.100', 'allocation_end': '192.0.2.199',
           'backings': [{'backing': 'bridge:br-tenant', 'hypervisor_type': 'kvm'}, {'backing': 'tenant-pg', 'endpoints': ['vcsim']}]}
SHOWN = dict(NETWORK, backings=[
    {'backing': 'bridge:br-tenant', 'nodes': [], 'aggregates': [], 'endpoints': [], 'hypervisor_type': 'kvm'},
    {'backing': 'tenant-pg', 'nodes': [], 'aggregates': [], 'endpoints': ['vcsim'], 'hypervisor_type': None}])


def test_network_create_idempotent_update_and_delete_with_check_mode_and_diff(cloud):
    args = dict(cloud, **NETWORK)
    checked = ansible_module('multihv.cloud.network', args, check=True, diff=True)
    assert checked['changed'] is True and checked['network'] == SHOWN
    assert '+    "cidr": "192.0.2.0/24",' in checked['_output']
    assert stored(cloud) == [], 'check mode wrote'

    created = ansible_module('multihv.cloud.network', args)
    assert created['changed'] is True and created['network'] == SHOWN
    again = ansible_module('multihv.cloud.network', args, diff=True)
    assert again['changed'] is False and again['network'] == SHOWN
    rows = stored(cloud)

    wider = dict(cloud, name='tenant', allocation_end='192.0.2.250')  # the other settings are kept
    checked = ansible_module('multihv.cloud.network', wider, check=True, diff=True)
    assert checked['changed'] is True and checked['network'] == dict(SHOWN, allocation_end='192.0.2.250')
    assert '-    "allocation_end": "192.0.2.199",' in checked['_output'] and '+    "allocation_end": "192.0.2.250",' in checked['_output']
    assert stored(cloud) == rows, 'check mode wrote'
    assert ansible_module('multihv.cloud.network', wider)['changed'] is True
    assert ansible_module('multihv.cloud.network', wider)['changed'] is False

    gone = dict(cloud, name='tenant', state='absent')
    assert ansible_module('multihv.cloud.network', gone, check=True)['changed'] is True and len(stored(cloud)) == 1
    assert ansible_module('multihv.cloud.network', gone)['network'] is None and stored(cloud) == []
    assert ansible_module('multihv.cloud.network', gone)['changed'] is False


@pytest.mark.parametrize('args, message', [
    ({'cidr': '192.0.2.0/33'}, 'network bad: cidr must be an IPv4 or IPv6 subnet in CIDR form'),
    ({'cidr': '192.0.2.0/24', 'allocation_start': '192.0.2.200', 'allocation_end': '192.0.2.100'},
     'allocation_start 192.0.2.200 is after allocation_end 192.0.2.100'),
    ({'backings': [{'nodes': ['kvm1']}]}, 'missing required arguments: backing found in backings'),
])
def test_bad_networks_are_refused_saying_why(cloud, args, message):
    """A few through Ansible (its argument spec included); the core's unit tests have every refusal."""
    refused = ansible_module('multihv.cloud.network', dict(cloud, name='bad', **args), expect_failure=True)
    assert message in refused['msg']
    assert stored(cloud) == []


def test_a_network_in_use_keeps_its_cidr_and_stays_and_boots_are_refused_clearly(cloud):
    ansible_module('multihv.cloud.network', dict(cloud, **NETWORK))
    holding(cloud, 'web-1', [{'network': 'tenant', 'fixed_ip': '192.0.2.10'}])
    rows = stored(cloud)
    refused = ansible_module('multihv.cloud.network', dict(cloud, name='tenant', state='absent'), expect_failure=True)
    assert 'network tenant is used by instance(s) web-1; delete them first; network tenant was left untouched' in refused['msg']
    refused = ansible_module('multihv.cloud.network', dict(cloud, name='tenant', cidr='198.51.100.0/24'), expect_failure=True)
    assert 'network tenant has ports of instance(s) web-1: its cidr cannot change' in refused['msg']
    assert stored(cloud) == rows

    # The instance module refuses before anything is recorded (check mode too).
    boot = dict(cloud, name='web-2', flavor='small', image='tick')
    nowhere = ansible_module('multihv.cloud.instance', dict(boot, networks=[{'network': 'nowhere'}]), expect_failure=True)
    assert 'networks[0]: network nowhere does not exist; create it with multihv.cloud.network; nothing was created' in nowhere['msg']
    for check in (True, False):
        taken = ansible_module('multihv.cloud.instance', dict(boot, networks=[{'network': 'tenant', 'fixed_ip': '192.0.2.10'}]),
                               check=check, expect_failure=True)
        assert 'networks[0].fixed_ip 192.0.2.10 on network tenant is taken by instance web-1; nothing was created' in taken['msg']
    outside = ansible_module('multihv.cloud.instance', dict(boot, networks=[{'network': 'tenant', 'fixed_ip': '10.1.1.1'}]),
                             check=True, expect_failure=True)
    assert 'networks[0].fixed_ip 10.1.1.1 is outside network tenant (192.0.2.0/24); nothing was created' in outside['msg']
    with Registry.open(url(cloud)) as registry:
        assert [i.name for i in registry.list_instances()] == ['web-1'] and len(registry.list_ports()) == 1


def test_check_mode_on_a_registry_older_than_networks_writes_nothing(cloud, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:5])
        patched.setattr(schema, 'SCHEMA_VERSION', 5)
        Registry.open(url(cloud)).close()
    checked = ansible_module('multihv.cloud.network', dict(cloud, **NETWORK), check=True)
    assert checked['changed'] is True and checked['network'] == SHOWN
    with sqlite3.connect(url(cloud)[len('sqlite:///'):]) as conn:
        assert conn.execute('SELECT max(version) FROM schema_version').fetchone() == (5,)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('networks', 'ports')").fetchone() == (0,)
