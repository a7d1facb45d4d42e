"""The registry against real engines: SQLite files in tmp_path and the test PostgreSQL server.

PostgreSQL cases need MULTIHV_TEST_POSTGRES_URL (`make test` starts the server;
tests/postgres.sh start /var/tmp/multihv-cloud-postgres by hand); each runs in
a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import SCHEMA_VERSION, Registry
from support.registries import ENGINES, PG_URL, private_url, query, raw, released_together

TABLES = {'schema_version', 'nodes', 'flavors', 'images', 'server_groups', 'keypairs', 'networks', 'ports', 'instances', 'migrations',
          'allocations', 'locks'}
SECRET = 'S3cret-pw'

# A separate process that acts on the registry through its API only. It says
# "ready", then waits for a line on stdin, so that all of them start at once.
WORKER = r'''
import sys
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

url, action, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if action == 'open':
    print('ready', flush=True)
    sys.stdin.readline()
    with Registry.open(url) as registry:
        print('version', registry.schema_version(), flush=True)
elif action == 'lease':
    # A read-modify-write of a plain file that only the lease keeps whole.
    import time
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
    counter = sys.argv[4]
    with Registry.open(url) as registry:
        print('ready', flush=True)
        sys.stdin.readline()
        for i in range(count):
            with _leases.held(registry, 'counter-file', 30, 'the counter was not incremented'):
                value = int(open(counter).read())
                time.sleep(0.002)
                open(counter, 'w').write(str(value + 1))
        print('done', flush=True)
elif action == 'increment':
    with Registry.open(url) as registry:
        print('ready', flush=True)
        sys.stdin.readline()
        for i in range(count):
            with registry.transaction():
                node = registry.get_node('counter', lock=True)
                reserved = dict(node['reserved'], vcpus=node['reserved']['vcpus'] + 1)
                registry.set_node('counter', 'kvm', reserved=reserved)
        print('done', flush=True)
'''


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    """A registry URL no other test sees: a new file, or a new PostgreSQL schema."""
    yield from private_url(request.param, tmp_path, 'registry_test')


def tables(url):
    if url.startswith('sqlite:'):
        return {row[0] for row in query(url, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {row[0] for row in query(url, 'SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()')}


def sqlite_path(url):
    return pathlib.Path(url[len('sqlite:///'):])


def workers(url, action, processes, count=0, timeout=60, extra=()):
    """Run `processes` WORKERs released at the same moment; their outputs."""
    return released_together(WORKER, [[url, action, str(count)] + list(extra)] * processes, timeout)


# -- opening and the schema ------------------------------------------------------------------


def test_sqlite_file_is_created_private_in_wal_mode(tmp_path):
    path = tmp_path / 'registry.sqlite'
    old_umask = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        with Registry.open('sqlite:///' + str(path)) as registry:
            assert registry.engine == 'sqlite'
            registry.set_node('kvm1', 'kvm')
            for name in ('registry.sqlite', 'registry.sqlite-wal', 'registry.sqlite-shm'):
                assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        os.umask(old_umask)
    assert query('sqlite:///' + str(path), 'PRAGMA journal_mode') == [('wal',)]


def test_sqlite_relative_url_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Registry.open('sqlite:///state.sqlite') as registry:
        assert registry.schema_version() == SCHEMA_VERSION
    assert (tmp_path / 'state.sqlite').stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_schema_is_created_once_and_reopening_changes_nothing(url):
    with Registry.open(url) as registry:
        assert registry.schema_version() == SCHEMA_VERSION
    assert tables(url) >= TABLES
    history = query(url, 'SELECT version, applied_at FROM schema_version ORDER BY version')
    assert [row[0] for row in history] == list(range(1, SCHEMA_VERSION + 1))
    for attempt in range(2):
        with Registry.open(url) as registry:
            assert registry.schema_version() == SCHEMA_VERSION, attempt
    assert query(url, 'SELECT version, applied_at FROM schema_version ORDER BY version') == history


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_version_0_registry_is_upgraded_keeping_what_was_there(url):
    # Version 0 by hand: the bootstrap table with no version applied, and some foreign data.
    with raw(url) as conn:
        conn.execute(schema.SCHEMA_VERSION_TABLE)
        conn.execute('CREATE TABLE keep_me (n INTEGER)')
        conn.execute('INSERT INTO keep_me (n) VALUES (42)')
    with Registry.open(url) as registry:
        assert registry.schema_version() == SCHEMA_VERSION
        assert registry.list_nodes() == []
    assert tables(url) >= TABLES | {'keep_me'}
    assert query(url, 'SELECT n FROM keep_me') == [(42,)]


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_upgrade_applies_newer_migrations_in_order_and_keeps_rows(url, monkeypatch):
    with Registry.open(url) as registry:
        registry.set_node('kvm1', 'kvm', disabled_reason='old', enabled=False)
    # Two versions this collection does not have yet; the second needs the first.
    monkeypatch.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS + [
        (SCHEMA_VERSION + 1, ['ALTER TABLE nodes ADD COLUMN note TEXT']),
        (SCHEMA_VERSION + 2, ["UPDATE nodes SET note = 'was ' || disabled_reason"]),
    ])
    monkeypatch.setattr(schema, 'SCHEMA_VERSION', SCHEMA_VERSION + 2)
    with Registry.open(url) as registry:
        assert registry.schema_version() == SCHEMA_VERSION + 2
        node = registry.get_node('kvm1')
        assert node['enabled'] is False and node['disabled_reason'] == 'old'
    assert query(url, 'SELECT note FROM nodes') == [('was old',)]
    assert [row[0] for row in query(url, 'SELECT version FROM schema_version ORDER BY version')] == list(range(1, SCHEMA_VERSION + 3))


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_failed_upgrade_is_rolled_back_whole(url, monkeypatch):
    Registry.open(url).close()
    monkeypatch.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS + [
        (SCHEMA_VERSION + 1, ['CREATE TABLE added_then_undone (n INTEGER)']),
        (SCHEMA_VERSION + 2, ['ALTER TABLE no_such_table ADD COLUMN n INTEGER']),
    ])
    monkeypatch.setattr(schema, 'SCHEMA_VERSION', SCHEMA_VERSION + 2)
    with pytest.raises(errors.RegistryError, match='cannot upgrade the schema to version %d' % (SCHEMA_VERSION + 2)):
        Registry.open(url)
    assert 'added_then_undone' not in tables(url)
    assert query(url, 'SELECT max(version) FROM schema_version') == [(SCHEMA_VERSION,)]


def _snapshot(url):
    rows = (query(url, 'SELECT version, applied_at FROM schema_version ORDER BY version'),
            query(url, 'SELECT * FROM nodes ORDER BY name'), sorted(tables(url)))
    if url.startswith('sqlite:'):
        return rows + (hashlib.sha256(sqlite_path(url).read_bytes()).hexdigest(),)
    return rows


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_newer_registry_is_refused_and_left_untouched(url):
    with Registry.open(url) as registry:
        registry.set_node('kvm1', 'kvm')
    with raw(url) as conn:
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%d, '2099-01-01T00:00:00.000000Z')"
                     % (SCHEMA_VERSION + 1))
    before = _snapshot(url)
    with pytest.raises(errors.RegistryError) as caught:
        Registry.open(url)
    assert ("registry schema %d is newer than this collection's %d; upgrade the collection"
            % (SCHEMA_VERSION + 1, SCHEMA_VERSION)) in str(caught.value)
    assert engine.mask_url(url) in str(caught.value)
    assert _snapshot(url) == before


# -- nodes -----------------------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_set_node_get_node_list_nodes_round_trip(url):
    with Registry.open(url) as registry:
        assert registry.get_node('kvm1') is None and registry.list_nodes() == []
        before, after = registry.set_node('kvm1', 'kvm', enabled=False, disabled_reason='maintenance',
                                          aggregates=['ssd', 'gpu'], allocation_ratios={'cpu': 8.0, 'ram': 1.5},
                                          reserved={'vcpus': 2, 'memory_mb': 1024, 'disk_gb': 10})
        assert before is None
        assert after['name'] == 'kvm1' and after['hypervisor_type'] == 'kvm'
        assert after['enabled'] is False and after['forced_down'] is False and after['reserved_for_failover'] is False
        assert after['disabled_reason'] == 'maintenance' and after['availability_zone'] is None
        assert after['aggregates'] == ['ssd', 'gpu'] and after['allocation_ratios'] == {'cpu': 8.0, 'ram': 1.5}
        assert after['reserved'] == {'vcpus': 2, 'memory_mb': 1024, 'disk_gb': 10}
        assert after['created_at'] == after['updated_at'] and after['created_at'].endswith('Z')
        assert registry.get_node('kvm1') == after

        # Only the fields given change; before is the row as it was.
        time.sleep(0.002)
        before2, after2 = registry.set_node('kvm1', 'kvm', enabled=True, disabled_reason=None, forced_down=True,
                                            availability_zone='az2', reserved_for_failover=True)
        assert before2 == after
        assert after2['enabled'] is True and after2['forced_down'] is True and after2['reserved_for_failover'] is True
        assert after2['disabled_reason'] is None and after2['availability_zone'] == 'az2'
        assert after2['aggregates'] == ['ssd', 'gpu'] and after2['reserved'] == after['reserved']
        assert after2['created_at'] == after['created_at'] and after2['updated_at'] > after['updated_at']

        # Values already stored: nothing written, updated_at kept.
        before3, after3 = registry.set_node('kvm1', 'kvm', enabled=True, aggregates=['ssd', 'gpu'])
        assert before3 == after3 == after2

        registry.set_node('cluster/dc/c1', 'vsphere', aggregates=[], allocation_ratios=None)
        nodes = registry.list_nodes()
        assert [n['name'] for n in nodes] == ['cluster/dc/c1', 'kvm1']
        assert nodes[0]['aggregates'] == [] and nodes[0]['enabled'] is True and nodes[1] == after2
    # And from a new connection.
    with Registry.open(url) as registry:
        assert registry.get_node('kvm1') == after2


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_transaction_rolls_back_on_error_and_nested_ones_join(url):
    with Registry.open(url) as registry:
        with pytest.raises(RuntimeError):
            with registry.transaction():
                registry.set_node('kvm1', 'kvm')
                with registry.transaction():
                    registry.set_node('kvm2', 'kvm')
                raise RuntimeError('boom')
        assert registry.list_nodes() == []
        with registry.transaction():
            registry.set_node('kvm1', 'kvm', enabled=False)
            with registry.transaction():
                registry.set_node('kvm2', 'kvm')
        assert [n['name'] for n in registry.list_nodes()] == ['kvm1', 'kvm2']


# -- registries that cannot be opened --------------------------------------------------------


def test_sqlite_in_a_missing_directory_creates_nothing(tmp_path):
    missing = tmp_path / 'missing'
    with pytest.raises(errors.RegistryError, match='directory %s does not exist' % missing):
        Registry.open('sqlite:///%s/registry.sqlite' % missing)
    assert not missing.exists()


def test_sqlite_path_that_is_a_directory(tmp_path):
    with pytest.raises(errors.RegistryError, match='%s is a directory' % tmp_path):
        Registry.open('sqlite:///' + str(tmp_path))


def test_sqlite_file_that_is_not_a_registry(tmp_path):
    path = tmp_path / 'notes.txt'
    path.write_text('not a database, but long enough to have a header ' * 20)
    with pytest.raises(errors.RegistryError, match='cannot open %s: file is not a database' % path):
        Registry.open('sqlite:///' + str(path))
    assert path.read_text().startswith('not a database')


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere')
def test_sqlite_in_a_read_only_directory(tmp_path):
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    with pytest.raises(errors.RegistryError, match='cannot create %s/registry.sqlite' % locked):
        Registry.open('sqlite:///%s/registry.sqlite' % locked)
    assert not list(locked.iterdir())


@pytest.mark.skipif(not PG_URL, reason='MULTIHV_TEST_POSTGRES_URL unset: run through `make test`')
@pytest.mark.parametrize('host_port, database, expected', [
    ('127.0.0.1:1', 'multihv', 'port 1 failed'),
    (None, 'no_such_registry_db', 'database "no_such_registry_db" does not exist'),
])
def test_postgresql_that_cannot_be_reached_names_it_without_the_password(host_port, database, expected):
    host_port = host_port or PG_URL.split('@', 1)[1].split('/', 1)[0]
    url = 'postgresql://postgres:%s@%s/%s' % (SECRET, host_port, database)
    started = time.monotonic()
    with pytest.raises(errors.RegistryError) as caught:
        Registry.open(url)
    message = str(caught.value)
    assert message.startswith('registry postgresql://postgres:********@%s/%s: cannot connect: ' % (host_port, database))
    assert expected in message and SECRET not in message
    assert time.monotonic() - started < 10


# -- concurrent writers ----------------------------------------------------------------------


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_concurrent_read_modify_write_loses_no_update(url):
    with Registry.open(url) as registry:
        registry.set_node('counter', 'kvm', reserved={'vcpus': 0})
    assert workers(url, 'increment', processes=8, count=50) == ['done'] * 8
    with Registry.open(url) as registry:
        assert registry.get_node('counter')['reserved'] == {'vcpus': 400}


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_processes_opening_a_fresh_registry_at_once_all_succeed(url):
    if url.startswith('sqlite:'):
        assert not sqlite_path(url).exists()
    assert workers(url, 'open', processes=4) == ['version %d' % SCHEMA_VERSION] * 4
    assert [row[0] for row in query(url, 'SELECT version FROM schema_version ORDER BY version')] == list(range(1, SCHEMA_VERSION + 1))
    if url.startswith('sqlite:'):
        assert sqlite_path(url).stat().st_mode & 0o777 == 0o600


# -- leases ------------------------------------------------------------------------------------


def test_lease_is_held_renewed_released_and_taken_over_when_expired(url):
    with Registry.open(url) as registry:
        assert registry.acquire_lease('image:tick', 'a', 30) is True
        assert registry.acquire_lease('image:tick', 'b', 30) is False
        assert registry.lease_holder('image:tick')['owner'] == 'a'
        assert registry.acquire_lease('image:tick', 'a', 30) is True  # renewed
        assert registry.release_lease('image:tick', 'b') is False
        assert registry.release_lease('image:tick', 'a') is True
        assert registry.lease_holder('image:tick') is None
        assert registry.acquire_lease('image:tick', 'b', 0.05) is True
        assert registry.acquire_lease('image:tick', 'a', 30) is False
        time.sleep(0.1)
        assert registry.acquire_lease('image:tick', 'a', 30) is True  # b died: its lease ran out


def test_held_lease_that_never_comes_free_names_its_holder(url):
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
    with Registry.open(url) as registry:
        registry.acquire_lease('migrate:x', 'someone-else', 60)
        with pytest.raises(errors.MultihvError, match='lease migrate:x is held by someone-else until .*; nothing moved'):
            with _leases.held(registry, 'migrate:x', 0.2, 'nothing moved'):
                pytest.fail('the block ran without the lease')


@pytest.mark.parametrize('url', ENGINES, indirect=True)
def test_lease_keeps_processes_out_of_each_other(url, tmp_path):
    counter = tmp_path / 'counter'
    counter.write_text('0')
    assert workers(url, 'lease', processes=6, count=15, extra=[str(counter)], timeout=120) == ['done'] * 6
    assert counter.read_text() == '90'


# -- migrations ---------------------------------------------------------------------------------


def test_migration_records_follow_a_move(url):
    with Registry.open(url) as registry:
        first = registry.create_migration(instance_uuid='u-1', migration_type='live', status='accepted', source_node='kvm1',
                                          source_host='kvm1', dest_node='kvm2', dest_host='kvm2')
        assert (first.status, first.stats, first.error) == ('accepted', None, None) and len(first.id) == 36
        running = registry.update_migration(first.id, status='running', stats={'data_total': 10, 'data_remaining': 4})
        assert running.stats == {'data_total': 10, 'data_remaining': 4}
        done = registry.update_migration(first.id, status='completed', stats={'data_total': 10, 'data_remaining': 0},
                                         finished_at='2026-01-01T00:00:00.000000Z')
        other = registry.create_migration(instance_uuid='u-2', migration_type='cold', status='failed', error='target down')
        assert registry.get_migration(first.id) == done
        assert [m.id for m in registry.list_migrations()] == [first.id, other.id]
        assert registry.list_migrations(instance_uuid='u-2') == [other]
        assert registry.list_migrations(status='completed') == [done]
        with pytest.raises(ValueError, match='migration status must be one of'):
            registry.update_migration(first.id, status='finished')
        with pytest.raises(errors.NotFound, match='no migration nope'):
            registry.update_migration('nope', status='failed')
        assert registry.get_migration(first.id).status == 'completed'
