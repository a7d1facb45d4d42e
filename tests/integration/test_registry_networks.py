"""Port allocation against real engines under concurrency: processes released at the same moment
allocate on one SQLite file or one PostgreSQL schema, and no address or MAC is ever given twice.

PostgreSQL cases need MULTIHV_TEST_POSTGRES_URL (`make test` starts the server); each runs in a schema
of its own, dropped afterwards.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.registries import ENGINES, private_url, query, released_together

# A process that boots instances the way the core does (record, then ports) through the registry's API.
WORKER = r'''
import json, sys
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

url, action, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
nics = json.loads(sys.argv[5])
with Registry.open(url) as registry:
    print('ready', flush=True)
    sys.stdin.readline()
    results = []
    for i in range(count):
        record = registry.create_instance(name='%s-%d' % (tag, i), flavor='small', image='tick', storage='local')
        try:
            results.append(registry.allocate_ports(record.uuid, nics, 'instance %s-%d has no ports' % (tag, i)))
        except errors.MultihvError as exc:
            results.append('refused: %s' % exc)
    print(json.dumps(results), flush=True)
'''


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    """A registry with flavor small and the networks tenant (a /26) and other (a /24)."""
    for made in private_url(request.param, tmp_path, 'networks_test'):
        with Registry.open(made) as registry:
            registry.set_flavor('small', vcpus=1, ram_mb=1024, disk_gb=1)
            registry.set_network('tenant', cidr='192.0.2.0/26', allocation_start='192.0.2.1', allocation_end='192.0.2.62')
            registry.set_network('other', cidr='198.51.100.0/24', allocation_start='198.51.100.1', allocation_end='198.51.100.254')
        yield made


def run(url, nics, processes, count):
    outputs = released_together(WORKER, [[url, 'boot', 'p%d' % n, str(count), json.dumps(nics)] for n in range(processes)], timeout=120)
    return [result for output in outputs for result in json.loads(output)]


def test_concurrent_boots_never_get_one_address_or_one_mac(url):
    results = run(url, [{'network': 'tenant'}, {'network': 'tenant'}], processes=4, count=6)
    assert [r for r in results if isinstance(r, str)] == []
    addresses = [port['address'] for ports in results for port in ports]
    macs = [port['mac'] for ports in results for port in ports]
    assert len(addresses) == 48 and len(set(addresses)) == 48 and len(set(macs)) == 48
    # Lowest free first: together they filled the bottom of the range without a gap.
    assert sorted(addresses, key=lambda a: int(a.rsplit('.', 1)[1])) == ['192.0.2.%d' % n for n in range(1, 49)]
    assert query(url, 'SELECT count(*), count(DISTINCT address), count(DISTINCT mac) FROM ports') == [(48, 48, 48)]


def test_one_fixed_ip_asked_for_by_concurrent_boots_goes_to_one_and_the_others_are_told_who_has_it(url):
    results = run(url, [{'network': 'other'}, {'network': 'tenant', 'fixed_ip': '192.0.2.40'}], processes=4, count=1)
    won = [r for r in results if not isinstance(r, str)]
    refused = [r for r in results if isinstance(r, str)]
    assert len(won) == 1 and len(refused) == 3
    holder = query(url, "SELECT i.name FROM ports p JOIN instances i ON i.uuid = p.instance_uuid WHERE p.address = '192.0.2.40'")[0][0]
    for message in refused:
        assert 'networks[1].fixed_ip 192.0.2.40 on network tenant is taken by instance %s' % holder in message
        assert message.endswith('has no ports')
    # The refused ones kept nothing, not even their first NIC's address on the other network.
    assert query(url, 'SELECT count(*) FROM ports') == [(2,)]


def test_one_mac_asked_for_on_different_networks_goes_to_one(url):
    """Different networks do not queue on one network's lock: the unique constraint on mac decides."""
    outputs = released_together(WORKER, [
        [url, 'boot', 'p%d' % n, '1', json.dumps([{'network': 'tenant' if n % 2 else 'other', 'mac': '52:54:00:ab:cd:ef'}])]
        for n in range(4)], timeout=120)
    results = [result for output in outputs for result in json.loads(output)]
    assert len([r for r in results if not isinstance(r, str)]) == 1
    assert all('networks[0].mac 52:54:00:ab:cd:ef is taken by instance' in r for r in results if isinstance(r, str))
    assert query(url, 'SELECT count(*) FROM ports') == [(1,)]
