"""The registry's pure logic: URL parsing and masking, the dialect layer, the schema list, node field encoding."""

from __future__ import annotations

import functools
import re
import sqlite3

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import registry
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


@pytest.mark.parametrize('url, expected', [
    ('sqlite:////var/lib/multihv/registry.sqlite', ('sqlite', '/var/lib/multihv/registry.sqlite')),
    ('sqlite:///registry.sqlite', ('sqlite', 'registry.sqlite')),
    ('sqlite:///state/registry.sqlite', ('sqlite', 'state/registry.sqlite')),
    ('SQLite:////r.sqlite', ('sqlite', '/r.sqlite')),
    ('postgresql://cloud:pw@db.example:5432/multihv', ('postgresql', 'postgresql://cloud:pw@db.example:5432/multihv')),
    ('postgres://cloud@db/multihv?sslmode=require', ('postgresql', 'postgres://cloud@db/multihv?sslmode=require')),
])
def test_parse_url_accepts_the_documented_forms(url, expected):
    assert engine.parse_url(url) == expected


@pytest.mark.parametrize('url', [
    'mysql://cloud:s3cret@db/multihv',
    'cloud:s3cret@db/multihv',       # the scheme forgotten: the password is masked all the same
    'postgresql//cloud:s3cret@db/multihv',
    'sqlite://relative.sqlite',      # two slashes: the path would be the "host"
    'sqlite:///',                    # no path
    'sqlite:////',                   # the root directory
    '/var/lib/multihv/registry.sqlite',
    'postgresql://',
    'registry.sqlite',
])
def test_parse_url_rejects_others_naming_the_url_and_the_accepted_forms(url):
    with pytest.raises(errors.RegistryError) as caught:
        engine.parse_url(url)
    message = str(caught.value)
    assert 'sqlite:////absolute/path.sqlite' in message and 'postgresql://user:password@host:port/database' in message
    assert 's3cret' not in message
    assert engine.mask_url(url) in message


@pytest.mark.parametrize('url', ['', None, 42])
def test_parse_url_without_a_url(url):
    with pytest.raises(errors.RegistryError, match='no registry URL given; use sqlite:'):
        engine.parse_url(url)


@pytest.mark.parametrize('url, masked', [
    ('postgresql://cloud:s3cret@db:5432/multihv', 'postgresql://cloud:********@db:5432/multihv'),
    ('postgresql://cloud@db/multihv', 'postgresql://cloud@db/multihv'),
    ('postgresql://db/multihv', 'postgresql://db/multihv'),
    ('postgresql://cloud:p@ss/w:rd@db/multihv', 'postgresql://cloud:********@db/multihv'),
    ('postgresql://cloud:%40s3cret@db/multihv?sslmode=require', 'postgresql://cloud:********@db/multihv?sslmode=require'),
    ('postgresql://cloud@db/multihv?sslmode=require&password=s3cret', 'postgresql://cloud@db/multihv?sslmode=require&password=********'),
    ('postgresql://cloud@db/multihv?password=s3cret&x=1', 'postgresql://cloud@db/multihv?password=********&x=1'),
    ('sqlite:////var/lib/r.sqlite', 'sqlite:////var/lib/r.sqlite'),
    ('not a url', 'not a url'),
    ('cloud:s3cret@db/multihv', 'cloud:********@db/multihv'),
])
def test_mask_url_hides_the_password_only(url, masked):
    assert engine.mask_url(url) == masked


def test_scrub_removes_the_password_raw_and_url_decoded():
    url = 'postgresql://cloud:p%40ss-word@db/multihv'
    text = engine.scrub('FATAL: password "p@ss-word" (p%40ss-word) rejected', url)
    assert 'ss-word' not in text
    assert text == 'FATAL: password "********" (********) rejected'
    assert engine.scrub('no secret here', 'postgresql://cloud@db/x') == 'no secret here'


def test_dialects_spell_placeholders_and_row_locks_their_way():
    sql = "SELECT name FROM nodes WHERE name = ? AND disabled_reason LIKE 'maint%' AND hypervisor_type = ?"
    assert engine.SQLITE.sql(sql) == sql
    assert engine.POSTGRESQL.sql(sql) == (
        "SELECT name FROM nodes WHERE name = %s AND disabled_reason LIKE 'maint%%' AND hypervisor_type = %s")
    assert engine.SQLITE.for_update == '' and engine.POSTGRESQL.for_update == ' FOR UPDATE'
    assert engine.SQLITE.begin == 'BEGIN IMMEDIATE' and engine.POSTGRESQL.begin == 'BEGIN'


def test_migrations_are_ordered_and_in_the_common_sql_subset():
    versions = [version for version, statements in schema.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert schema.SCHEMA_VERSION == versions[-1]
    dialect_only = re.compile(r'\b(SERIAL|AUTOINCREMENT|BOOLEAN|JSONB?|DATETIME|TIMESTAMPTZ|TIMESTAMP|NOW|PRAGMA|BYTEA|BLOB)\b|\?|%|;',
                              re.IGNORECASE)
    for version, statements in schema.MIGRATIONS:
        assert statements, version
        for statement in statements:
            assert not dialect_only.search(statement), (version, statement)


def test_the_first_schema_has_every_table_of_record():
    created = set(re.findall(r'CREATE TABLE (\w+)', ' '.join(schema.MIGRATIONS[0][1])))
    assert created == {'nodes', 'flavors', 'images', 'instances', 'migrations', 'allocations', 'locks'}


def test_timestamps_are_fixed_width_iso8601_utc():
    first, second = engine.utcnow(), engine.utcnow()
    assert re.match(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$', first)
    assert first <= second


def test_node_fields_are_encoded_as_stored_and_decoded_back():
    encode = functools.partial(tables.encode, tables.NODES)
    assert encode('enabled', False) == 0 and encode('forced_down', True) == 1
    assert not isinstance(encode('forced_down', True), bool)
    assert encode('aggregates', ['b', 'a']) == '["b", "a"]'
    assert encode('reserved', {'vcpus': 2, 'memory_mb': 512}) == '{"memory_mb": 512, "vcpus": 2}'
    assert encode('allocation_ratios', None) is None
    assert encode('disabled_reason', 'maintenance') == 'maintenance'
    row = dict((column, None) for column in tables.NODE_COLUMNS)
    row.update(enabled=1, forced_down=0, reserved_for_failover=1, aggregates='["a"]', reserved='{"vcpus": 2}')
    node = tables.decode(tables.NODES, row)
    assert node['enabled'] is True and node['forced_down'] is False and node['reserved_for_failover'] is True
    assert node['aggregates'] == ['a'] and node['reserved'] == {'vcpus': 2} and node['allocation_ratios'] is None
    assert tables.decode(tables.NODES, None) is None


@pytest.mark.parametrize('field, value', [
    ('enabled', 'yes'), ('enabled', 1), ('enabled', None), ('aggregates', 'a,b'), ('reserved', [1]),
    ('allocation_ratios', 4.0), ('availability_zone', 3),
])
def test_node_fields_of_the_wrong_kind_are_a_type_error(field, value):
    with pytest.raises(TypeError, match=field):
        tables.encode(tables.NODES, field, value)


def test_set_node_refuses_unknown_fields_before_touching_the_database():
    closed = registry.Registry(None, engine.SQLITE, 'sqlite:////nowhere.sqlite')
    with pytest.raises(TypeError, match='unknown node field.*colour.*known: enabled'):
        closed.set_node('kvm1', 'kvm', colour='blue')
    with pytest.raises(TypeError, match='hypervisor_type must be a non-empty string'):
        closed.set_node('kvm1', None, enabled=True)


def test_a_closed_registry_says_so():
    closed = registry.Registry(None, engine.POSTGRESQL, 'postgresql://cloud:s3cret@db/multihv')
    with pytest.raises(errors.RegistryError, match=r'registry postgresql://cloud:\*+@db/multihv is closed'):
        closed.get_node('kvm1')


def test_postgresql_without_psycopg_is_a_missing_library(monkeypatch):
    monkeypatch.setattr(engine, '_psycopg', lambda: None)
    with pytest.raises(errors.MissingLibrary) as caught:
        registry.Registry.open('postgresql://cloud:s3cret@db/multihv')
    assert caught.value.library == 'psycopg'
    assert 'postgresql://cloud:********@db/multihv' in str(caught.value) and 's3cret' not in str(caught.value)


class _Dropped:
    """A PostgreSQL connection whose server restarted: its next statement fails, and psycopg marks it broken."""

    def __init__(self):
        self.broken = False
        self.statements = []

    def cursor(self):
        return self

    def execute(self, sql, params=()):
        self.statements.append(sql)
        self.broken = True
        raise sqlite3.OperationalError('server closed the connection unexpectedly')

    def close(self):
        pass


@pytest.fixture(name='dropped')
def dropped_fixture(tmp_path, monkeypatch):
    """A registry whose connection the server dropped; connecting again gives a working one (counted)."""
    url = 'sqlite:///%s' % (tmp_path / 'r.sqlite')
    opened = registry.Registry.open(url)
    opened.set_flavor('m1', vcpus=1, ram_mb=512, disk_gb=1)
    real_connect, connects = engine.connect, []

    def connect(target):
        connects.append(target)
        return real_connect(target)
    monkeypatch.setattr(engine, 'connect', connect)
    opened.close()
    opened = registry.Registry.open(url)
    opened._conn, opened.connects = _Dropped(), connects  # pylint: disable=protected-access
    connects.clear()
    yield opened
    opened.close()


def test_a_read_on_a_dropped_connection_reconnects_once_and_answers(dropped):
    assert dropped.get_flavor('m1')['vcpus'] == 1
    assert len(dropped.connects) == 1 and engine.broken(dropped._conn) is False  # pylint: disable=protected-access


def test_a_transaction_on_a_dropped_connection_begins_again_on_a_new_one(dropped):
    dropped.set_flavor('m2', vcpus=2, ram_mb=512, disk_gb=1)
    assert dropped.get_flavor('m2')['vcpus'] == 2 and len(dropped.connects) == 1


def test_a_write_outside_a_transaction_is_not_repeated_but_the_next_statement_reconnects(dropped):
    lost = dropped._conn  # pylint: disable=protected-access
    with pytest.raises(sqlite3.OperationalError):
        dropped._execute("UPDATE flavors SET vcpus = 3 WHERE name = 'm1'")  # pylint: disable=protected-access
    assert lost.statements == ["UPDATE flavors SET vcpus = 3 WHERE name = 'm1'"] and dropped.connects == []
    assert dropped.get_flavor('m1')['vcpus'] == 1 and len(dropped.connects) == 1


def test_a_registry_server_still_down_is_named_and_tried_again_by_the_next_statement(dropped, monkeypatch):
    def refused(url):
        raise errors.RegistryError('registry %s: cannot connect: connection refused' % url)
    monkeypatch.setattr(engine, 'connect', refused)
    with pytest.raises(errors.RegistryError, match='cannot connect: connection refused'):
        dropped.get_flavor('m1')
    assert isinstance(dropped._conn, _Dropped)  # pylint: disable=protected-access


def test_a_sqlite_connection_is_never_broken(tmp_path):
    with registry.Registry.open('sqlite:///%s' % (tmp_path / 'r.sqlite')) as opened:
        assert engine.broken(opened._conn) is False  # pylint: disable=protected-access


def test_a_reader_of_a_registry_that_does_not_exist_reads_it_as_empty_and_creates_nothing(tmp_path):
    path = tmp_path / 'fresh.sqlite'
    with registry.Registry.open('sqlite:///%s' % path, upgrade=False) as empty:
        assert empty.list_flavors() == [] and empty.list_instances() == [] and empty.list_networks() == []
        assert empty.schema_version() == 0 and empty.found_version == 0
        with empty.another() as other:  # a worker's connection: the same, still nothing on disk
            assert other.list_nodes() == []
        with pytest.raises(errors.RegistryError, match='opened to read only'):
            empty.upgrade_schema()
    assert not path.exists()
    # Nor its directory.
    with registry.Registry.open('sqlite:///%s/missing/r.sqlite' % tmp_path, upgrade=False) as empty:
        assert empty.list_keypairs() == []
    assert not (tmp_path / 'missing').exists()


def test_a_reader_of_an_empty_registry_file_leaves_it_as_it_is(tmp_path):
    path = tmp_path / 'empty.sqlite'
    path.touch()
    with registry.Registry.open('sqlite:///%s' % path, upgrade=False) as empty:
        assert empty.list_flavors() == [] and empty.schema_version() == 0
    assert path.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ['empty.sqlite']


def test_a_reader_of_a_current_registry_reads_it_and_a_writer_records_the_version_it_found(tmp_path):
    url = 'sqlite:///%s' % (tmp_path / 'r.sqlite')
    with registry.Registry.open(url) as created:
        assert created.found_version == 0
        created.set_flavor('m1', vcpus=1, ram_mb=512, disk_gb=1)
    with registry.Registry.open(url) as again:
        assert again.found_version == schema.SCHEMA_VERSION
    with registry.Registry.open(url, upgrade=False) as reader:
        assert reader.found_version == reader.schema_version() == schema.SCHEMA_VERSION
        assert [f['name'] for f in reader.list_flavors()] == ['m1']


def test_a_reader_of_an_older_sqlite_registry_reads_an_upgraded_copy_and_leaves_the_file_as_it_is(tmp_path, monkeypatch):
    path = tmp_path / 'old.sqlite'
    url = 'sqlite:///%s' % path
    with monkeypatch.context() as patched:
        patched.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:2])
        patched.setattr(schema, 'SCHEMA_VERSION', 2)
        with registry.Registry.open(url) as old:
            old.set_flavor('m1', vcpus=1, ram_mb=512, disk_gb=1)
    with sqlite3.connect(path) as conn:  # a node as version 2 stored it (set_node writes today's columns)
        conn.execute("INSERT INTO nodes (name, hypervisor_type, enabled, created_at, updated_at) VALUES ('kvm1', 'kvm', 0, 'x', 'x')")
    with sqlite3.connect(path) as conn:
        conn.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    stored = path.read_bytes()
    with registry.Registry.open(url, upgrade=False) as reader:
        assert reader.schema_version() == reader.found_version == 2
        # Columns of later versions read as their defaults (down_since came with version 3), tables as empty.
        node = reader.get_node('kvm1')
        assert (node['enabled'], node['down_since'], node['down_probes']) == (False, None, 0)
        assert [f['name'] for f in reader.list_flavors()] == ['m1'] and reader.list_keypairs() == [] and reader.list_ports() == []
        with pytest.raises(errors.RegistryError, match='opened to read only'):
            reader.upgrade_schema()
    assert path.read_bytes() == stored
    with registry.Registry.open(url) as upgraded:
        assert upgraded.found_version == 2 and upgraded.schema_version() == schema.SCHEMA_VERSION


def test_a_reader_of_a_registry_whose_copy_cannot_be_upgraded_reads_it_as_it_is(tmp_path):
    path = tmp_path / 'r.sqlite'
    url = 'sqlite:///%s' % path
    with registry.Registry.open(url) as made:
        made.set_flavor('m1', vcpus=1, ram_mb=512, disk_gb=1)
    with sqlite3.connect(path) as conn:  # by hand: the last version's row gone, its tables still there
        conn.execute('DELETE FROM schema_version WHERE version = ?', (schema.SCHEMA_VERSION,))
    with registry.Registry.open(url, upgrade=False) as reader:
        assert reader.schema_version() == schema.SCHEMA_VERSION - 1
        assert [f['name'] for f in reader.list_flavors()] == ['m1']
