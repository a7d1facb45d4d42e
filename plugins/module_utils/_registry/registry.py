# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry: the cloud's state of record. Private to multihv.cloud: do not import.

Holds nodes' admin state, flavors, images, instances, migrations, allocations
and locks; never live resources (those come from the drivers each time).

Two engines, one code path:

- SQLite (default, embedded): ``sqlite:////abs/path.sqlite`` or
  ``sqlite:///relative.sqlite``. The file is created mode 0600, in WAL mode;
  every write transaction is BEGIN IMMEDIATE, so writers (several
  ansible-playbook processes) queue on the database lock (busy timeout 30 s)
  and never interleave a read-modify-write.
- PostgreSQL (shared mode: AWX, many controllers): ``postgresql://user:pw@host:port/db``
  (or ``postgres://``; libpq query parameters such as ``options=-csearch_path%3Dx``
  are passed through). Write transactions are READ COMMITTED and lock the rows
  they read-modify-write with SELECT ... FOR UPDATE.

Everything the two engines disagree on sits in _Dialect; the SQL elsewhere is
the common subset: TEXT, INTEGER, DOUBLE PRECISION, ``?`` placeholders and
``INSERT ... ON CONFLICT``. Conventions of the stored values:

- timestamps: TEXT, ISO-8601 UTC with microseconds and a Z, fixed width
  (2024-05-01T12:00:00.000000Z), so that text order is time order;
- booleans: INTEGER 0/1 (returned as bool);
- JSON documents: TEXT (returned decoded); NULL stays None.

Referents are checked where the rules of the cloud need them: an instance's
flavor and server group must exist (and stay while it uses them: a used
flavor's resources and a group's policy cannot change, neither can be deleted);
its image need not (Nova keeps instances whose image was deleted).

Booting an instance uses the registry in this order, so that two concurrent runs
never overcommit a node and a failed boot leaves a record to clean up:

1. create_instance(..., state='building'): the row allocations refer to;
2. claim(uuid, node, ...): atomic; False means the node is full (reschedule or
   delete_instance);
3. the driver spawns it;
4. update_instance(uuid, state='active', host=...), or on failure release(uuid)
   and update_instance(uuid, state='error') / delete_instance(uuid).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
import sys
import time
import urllib.parse
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors


def _psycopg():
    """psycopg, imported on first use: only a postgresql:// registry needs it, and it is
    heavy for the SQLite default (the inventory plugin's memory is measured)."""
    try:
        import psycopg  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    return psycopg


ACCEPTED_URLS = ('sqlite:////absolute/path.sqlite', 'sqlite:///relative/path.sqlite',
                 'postgresql://user:password@host:port/database')
BUSY_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10
# pg_advisory_xact_lock key that serialises schema creation/upgrade ('multihv\0' as a bigint).
SCHEMA_LOCK_KEY = 0x6d756c7469687600
MASK = '********'

# The schema, one entry per version, applied in order inside one transaction.
# Only the SQL both engines accept: no BOOLEAN, SERIAL, AUTOINCREMENT or JSONB
# (see the module docstring for how values are stored). A new version is a new
# entry at the end; an entry, once released, never changes.
MIGRATIONS = [
    (1, [
        'CREATE TABLE nodes ('
        ' name TEXT PRIMARY KEY,'
        ' hypervisor_type TEXT NOT NULL,'
        ' enabled INTEGER NOT NULL DEFAULT 1,'
        ' disabled_reason TEXT,'
        ' forced_down INTEGER NOT NULL DEFAULT 0,'
        ' availability_zone TEXT,'
        ' aggregates TEXT,'
        ' allocation_ratios TEXT,'
        ' reserved TEXT,'
        ' reserved_for_failover INTEGER NOT NULL DEFAULT 0,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE TABLE flavors ('
        ' name TEXT PRIMARY KEY,'
        ' vcpus INTEGER NOT NULL,'
        ' ram_mb INTEGER NOT NULL,'
        ' disk_gb INTEGER NOT NULL,'
        ' extra_specs TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE TABLE images ('
        ' name TEXT PRIMARY KEY,'
        ' hypervisor_type TEXT NOT NULL,'
        ' properties TEXT,'
        ' locations TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE TABLE instances ('
        ' uuid TEXT PRIMARY KEY,'
        ' name TEXT NOT NULL UNIQUE,'
        ' node TEXT,'
        ' host TEXT,'
        ' flavor TEXT NOT NULL,'
        ' image TEXT NOT NULL,'
        ' storage TEXT NOT NULL,'
        ' identity TEXT,'
        ' ha INTEGER NOT NULL DEFAULT 0,'
        ' restart_priority INTEGER NOT NULL DEFAULT 0,'
        ' server_group TEXT,'
        ' state TEXT NOT NULL,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE INDEX instances_node ON instances (node)',
        # id is a uuid4 made by the caller: no SERIAL/AUTOINCREMENT dialect split.
        'CREATE TABLE migrations ('
        ' id TEXT PRIMARY KEY,'
        ' instance_uuid TEXT NOT NULL,'
        ' migration_type TEXT NOT NULL,'
        ' status TEXT NOT NULL,'
        ' source_node TEXT,'
        ' source_host TEXT,'
        ' dest_node TEXT,'
        ' dest_host TEXT,'
        ' error TEXT,'
        ' stats TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL,'
        ' started_at TEXT,'
        ' finished_at TEXT)',
        'CREATE INDEX migrations_instance ON migrations (instance_uuid)',
        'CREATE INDEX migrations_status ON migrations (status)',
        # An allocation dies with its instance; node is a name, not a key of nodes,
        # because a node without admin state has no row there.
        'CREATE TABLE allocations ('
        ' instance_uuid TEXT NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,'
        ' node TEXT NOT NULL,'
        ' vcpus INTEGER NOT NULL,'
        ' memory_mb INTEGER NOT NULL,'
        ' disk_gb INTEGER NOT NULL,'
        ' created_at TEXT NOT NULL,'
        ' PRIMARY KEY (instance_uuid, node))',
        'CREATE INDEX allocations_node ON allocations (node)',
        'CREATE TABLE locks ('
        ' name TEXT PRIMARY KEY,'
        ' owner TEXT NOT NULL,'
        ' expires_at TEXT NOT NULL)',
    ]),
    (2, [
        # Members are instances.server_group (a name): v1 rows stay as they are.
        'CREATE TABLE server_groups ('
        ' name TEXT PRIMARY KEY,'
        ' policy TEXT NOT NULL,'
        ' rules TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        # Who uses a flavor or a group is asked before either changes or goes.
        'CREATE INDEX instances_flavor ON instances (flavor)',
        'CREATE INDEX instances_server_group ON instances (server_group)',
    ]),
    (3, [
        # When instance HA first saw the node unreachable (NULL: reachable, or never watched):
        # its grace period counts from there, across passes and controllers.
        'ALTER TABLE nodes ADD COLUMN down_since TEXT',
        # Evacuations whose stale copies wait for their node to come back are found by source.
        'CREATE INDEX migrations_source ON migrations (source_node)',
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The bootstrap table, outside MIGRATIONS because it says which of them ran: one row per applied version.
SCHEMA_VERSION_TABLE = 'CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)'

# Admin-state columns of nodes besides name and hypervisor_type, by kind of value.
NODE_FIELDS = ('enabled', 'disabled_reason', 'forced_down', 'availability_zone', 'aggregates',
               'allocation_ratios', 'reserved', 'reserved_for_failover', 'down_since')
NODE_BOOLS = ('enabled', 'forced_down', 'reserved_for_failover')
NODE_JSON = {'aggregates': list, 'allocation_ratios': dict, 'reserved': dict}
NODE_COLUMNS = ('name', 'hypervisor_type') + NODE_FIELDS + ('created_at', 'updated_at')

# The catalog and the instances. Nova's names; a flavor's resources are fixed once instances use it.
FLAVOR_FIELDS = ('vcpus', 'ram_mb', 'disk_gb', 'extra_specs')
FLAVOR_RESOURCES = ('vcpus', 'ram_mb', 'disk_gb')
IMAGE_FIELDS = ('hypervisor_type', 'properties', 'locations')
SERVER_GROUP_FIELDS = ('policy', 'rules')
# The same as the scheduler's GROUP_POLICIES (a unit test says so); not imported: the registry sits below the core.
SERVER_GROUP_POLICIES = ('affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity')
INSTANCE_FIELDS = ('name', 'node', 'host', 'flavor', 'image', 'storage', 'identity', 'ha', 'restart_priority',
                   'server_group', 'state')
STORAGE_MODES = ('shared', 'local')
ALLOCATION_RESOURCES = ('vcpus', 'memory_mb', 'disk_gb')
# Messages name at most this many instances, then say how many more.
NAMES_SHOWN = 10


class _Table:
    """A table of record as the code sees it: its key, each field's kind of value, and
    the fields a new row needs (NOT NULL without a default).

    kinds: {field: 'str' | 'int' | 'bool' | list | dict (JSON)}, in column order.
    Every int and bool column is NOT NULL; a str column is nullable unless required.
    """

    def __init__(self, name, noun, key, kinds, required=()):
        self.name = name
        self.noun = noun
        self.key = key
        self.kinds = kinds
        self.fields = tuple(kinds)
        self.required = tuple(required)
        self.columns = (key,) + self.fields + ('created_at', 'updated_at')


NODES = _Table('nodes', 'node', 'name', dict(
    [('hypervisor_type', 'str')]
    + [(field, 'bool' if field in NODE_BOOLS else NODE_JSON.get(field, 'str')) for field in NODE_FIELDS]),
    required=('hypervisor_type',))
FLAVORS = _Table('flavors', 'flavor', 'name', {'vcpus': 'int', 'ram_mb': 'int', 'disk_gb': 'int', 'extra_specs': dict},
                 required=FLAVOR_RESOURCES)
IMAGES = _Table('images', 'image', 'name', {'hypervisor_type': 'str', 'properties': dict, 'locations': dict},
                required=('hypervisor_type',))
SERVER_GROUPS = _Table('server_groups', 'server group', 'name', {'policy': 'str', 'rules': dict}, required=('policy',))
INSTANCES = _Table('instances', 'instance', 'uuid', {
    'name': 'str', 'node': 'str', 'host': 'str', 'flavor': 'str', 'image': 'str', 'storage': 'str', 'identity': dict,
    'ha': 'bool', 'restart_priority': 'int', 'server_group': 'str', 'state': 'str',
}, required=('name', 'flavor', 'image', 'storage', 'state'))
# Nova's migration statuses; the last three are final. 'done' is Nova's too: an evacuation whose
# instance runs on the destination while its stale copy on the failed source still waits to be
# destroyed (then it becomes completed).
MIGRATION_STATUSES = ('accepted', 'preparing', 'running', 'done', 'completed', 'failed', 'cancelled')
MIGRATIONS_TABLE = _Table('migrations', 'migration', 'id', {
    'instance_uuid': 'str', 'migration_type': 'str', 'status': 'str', 'source_node': 'str', 'source_host': 'str',
    'dest_node': 'str', 'dest_host': 'str', 'error': 'str', 'stats': dict, 'started_at': 'str', 'finished_at': 'str',
}, required=('instance_uuid', 'migration_type', 'status'))


class _Dialect:
    """What SQLite and PostgreSQL spell differently; the one place that knows."""

    def __init__(self, name, placeholder, begin, for_update, table_exists):
        self.name = name
        self.placeholder = placeholder
        self.begin = begin
        self.for_update = for_update
        self.table_exists = table_exists

    def sql(self, text):
        """Common SQL (``?`` placeholders, no literal ``?``) in this engine's paramstyle."""
        if self.placeholder == '?':
            return text
        return text.replace('%', '%%').replace('?', self.placeholder)


# BEGIN IMMEDIATE takes SQLite's write lock at once, so that two writers never
# both read and then one fails to upgrade its lock (SQLITE_BUSY mid-transaction).
SQLITE = _Dialect('sqlite', '?', 'BEGIN IMMEDIATE', '',
                  "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?")
POSTGRESQL = _Dialect('postgresql', '%s', 'BEGIN', ' FOR UPDATE',
                      'SELECT count(*) AS n FROM (SELECT to_regclass(?) AS t) AS r WHERE r.t IS NOT NULL')


TIMESTAMP_FORMAT = '%Y-%m-%dT%H:%M:%S.%fZ'  # sorts as text in both databases


def utcnow():
    """Now as the registry stores timestamps (see the module docstring)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_url(url):
    """(engine, target): ('sqlite', file path) or ('postgresql', the URL for libpq).

    RegistryError naming the (masked) URL and the accepted forms otherwise.
    """
    if not isinstance(url, str) or not url:
        raise errors.RegistryError('no registry URL given; use %s' % ' or '.join(ACCEPTED_URLS))
    scheme, sep, rest = url.partition('://')
    scheme = scheme.lower()
    if sep and scheme == 'sqlite' and rest.startswith('/') and len(rest) > 1 and not rest.endswith('/'):
        # sqlite:/// + a file path: a fourth slash makes the path absolute.
        return 'sqlite', rest[1:]
    if sep and scheme in ('postgresql', 'postgres') and rest:
        return 'postgresql', url
    raise errors.RegistryError('registry URL %s is not supported; use %s' % (mask_url(url), ' or '.join(ACCEPTED_URLS)))


def _password(url):
    """The password in a URL's user info or password= query parameter, or None."""
    scheme, sep, rest = str(url).partition('://')
    if not sep:
        return None
    # The user info ends at the last @ before the query: a password may hold '/' but not an unencoded '?'.
    head = rest.split('?', 1)[0]
    at = head.rfind('@')
    if at >= 0 and ':' in head[:at]:
        return head[:at].split(':', 1)[1] or None
    found = re.search(r'[?&]password=([^&#]*)', rest)
    return (found.group(1) or None) if found else None


def mask_url(url):
    """The URL with any password replaced by a mask, fit for messages and logs."""
    text = str(url)
    text = re.sub(r'([?&]password=)[^&#]*', r'\1' + MASK, text)
    scheme, sep, rest = text.partition('://')
    if not sep:
        return text
    head = rest.split('?', 1)[0]
    at = head.rfind('@')
    if at >= 0 and ':' in head[:at]:
        user = head[:at].split(':', 1)[0]
        rest = '%s:%s%s' % (user, MASK, rest[at:])
    return '%s://%s' % (scheme, rest)


def scrub(text, url):
    """text (say, a driver's error message) without the URL's password in it, raw or URL-decoded."""
    text = str(text)
    secret = _password(url)
    if secret:
        # Longest first, so that a form inside the other is not left half-masked.
        for form in sorted((secret, urllib.parse.unquote(secret)), key=len, reverse=True):
            text = text.replace(form, MASK)
    return text


def _db_errors():
    """The exception classes of the database drivers that are installed."""
    psycopg = sys.modules.get('psycopg')  # no psycopg loaded, no psycopg error possible
    return (sqlite3.Error, psycopg.Error) if psycopg is not None else (sqlite3.Error,)


def _encode(table, field, value):
    """A field of table as stored; TypeError for a value of the wrong kind (a caller's bug)."""
    kind = table.kinds[field]
    what = '%s field %s' % (table.noun, field)
    if value is None:
        if kind == 'bool':
            raise TypeError('%s must be true or false, not None' % what)
        if kind == 'int' or field in table.required:
            raise TypeError('%s must be given, not None' % what)
        return None
    if kind == 'bool':
        if not isinstance(value, bool):
            raise TypeError('%s must be a bool, got %r' % (what, value))
        # int, not bool: psycopg would send a PostgreSQL boolean to an INTEGER column.
        return int(value)
    if kind == 'int':
        # bool is an int to Python, never to a reader of the record.
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError('%s must be an integer, got %r' % (what, value))
        return value
    if kind in (list, dict):
        if not isinstance(value, kind):
            raise TypeError('%s must be a %s or None, got %r' % (what, kind.__name__, value))
        return json.dumps(value, sort_keys=True)
    if not isinstance(value, str):
        raise TypeError('%s must be a string or None, got %r' % (what, value))
    if not value and field in table.required:
        raise TypeError('%s must be a non-empty string' % what)
    return value


def _encode_fields(table, fields):
    """{column: stored value} of the fields given; TypeError naming unknown fields or values of the wrong kind."""
    unknown = sorted(set(fields) - set(table.fields))
    if unknown:
        raise TypeError('unknown %s field(s) %s; known: %s' % (table.noun, ', '.join(unknown), ', '.join(table.fields)))
    return dict((field, _encode(table, field, value)) for field, value in fields.items())


def _decode(table, row):
    """A row of table (column -> stored value) as Python: bools and decoded JSON."""
    if row is None:
        return None
    decoded = dict(row)
    for field, kind in table.kinds.items():
        if kind == 'bool':
            decoded[field] = bool(decoded[field])
        elif kind in (list, dict) and decoded[field] is not None:
            decoded[field] = json.loads(decoded[field])
    return decoded


def _encode_node_field(field, value):
    """A node field as stored; TypeError for a value of the wrong kind (a caller's bug)."""
    return _encode(NODES, field, value)


def _decode_node(row):
    """A nodes row (column -> stored value) as Python: bools and decoded JSON."""
    return _decode(NODES, row)


def _amounts(what, amounts):
    """{vcpus, memory_mb, disk_gb} as non-negative ints; TypeError for anything else (a caller's bug)."""
    if not isinstance(amounts, dict) or set(amounts) != set(ALLOCATION_RESOURCES):
        raise TypeError('%s must be a dict of exactly %s, got %r' % (what, ', '.join(ALLOCATION_RESOURCES), amounts))
    for resource, amount in amounts.items():
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise TypeError('%s.%s must be a non-negative integer, got %r' % (what, resource, amount))
    return dict(amounts)


def name_list(names):
    """Instance names for a message: the first few, then how many more."""
    names = list(names)
    shown = ', '.join(names[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        shown += ' and %d more' % (len(names) - NAMES_SHOWN)
    return shown


class Registry:
    """One open registry: a connection and the dialect of its engine.

    Open with Registry.open(url); use as a context manager or close().
    """

    def __init__(self, conn, dialect, url):
        self._conn = conn
        self._dialect = dialect
        self._url = url
        self._depth = 0  # nesting of transaction(): inner ones join the outermost

    @property
    def url(self):
        """The registry URL with its password masked."""
        return mask_url(self._url)

    @property
    def engine(self):
        """'sqlite' or 'postgresql'."""
        return self._dialect.name

    @classmethod
    def open(cls, url, upgrade=True):
        """Connect to the registry at url, creating or upgrading its schema.

        upgrade=False leaves the schema as it is (a reader that must not write, such as
        check mode; schema_version() says what it is, upgrade_schema() upgrades it later).
        A schema newer than the collection's is refused either way.
        """
        engine, target = parse_url(url)
        if engine == 'sqlite':
            registry = cls(_connect_sqlite(url, target), SQLITE, url)
        else:
            registry = cls(_connect_postgresql(url), POSTGRESQL, url)
        try:
            if upgrade:
                registry._ensure_schema()
            else:
                registry._refuse_newer(registry.schema_version(), SCHEMA_VERSION)
        except BaseException:
            registry.close()
            raise
        return registry

    def close(self):
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*_db_errors()):
                conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- the one path to the database -------------------------------------------------------

    @contextlib.contextmanager
    def _failing(self, what):
        """Database errors become RegistryError naming the registry and what failed."""
        try:
            yield
        except _db_errors() as exc:
            raise errors.RegistryError('registry %s: cannot %s: %s' % (self.url, what, _one_line(scrub(exc, self._url)))) from None

    def _cursor(self, sql, params):
        if self._conn is None:
            raise errors.RegistryError('registry %s is closed' % self.url)
        cursor = self._conn.cursor()
        cursor.execute(self._dialect.sql(sql), tuple(params))
        return cursor

    def _execute(self, sql, params=()):
        """Run one statement; the number of rows it changed."""
        with contextlib.closing(self._cursor(sql, params)) as cursor:
            return cursor.rowcount

    def _rows(self, sql, params=()):
        with contextlib.closing(self._cursor(sql, params)) as cursor:
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _row(self, sql, params=()):
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    @contextlib.contextmanager
    def transaction(self):
        """One write transaction; nested uses join the outermost one (no savepoints).

        SQLite: BEGIN IMMEDIATE, so concurrent writers queue for the whole
        transaction. PostgreSQL: READ COMMITTED; methods that read-modify-write
        lock their rows (get_node(lock=True), set_node).
        """
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with self._failing('begin a transaction'):
            self._execute(self._dialect.begin)
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            # The original error matters more than a failed rollback (say, the connection is gone).
            with contextlib.suppress(*_db_errors()):
                self._execute('ROLLBACK')
            raise
        self._depth = 0
        with self._failing('commit'):
            self._execute('COMMIT')

    # -- schema -----------------------------------------------------------------------------

    def schema_version(self):
        """The schema version of the registry (0: none yet)."""
        with self._failing('read the schema version'):
            return self._schema_version()

    def _schema_version(self):
        if not self._row(self._dialect.table_exists, ('schema_version',))['n']:
            return 0
        return self._row('SELECT max(version) AS version FROM schema_version')['version'] or 0

    def upgrade_schema(self):
        """Create or upgrade the schema (what open() does unless upgrade=False); the version
        it had before (0: none), the current one when nothing was done."""
        return self._ensure_schema()

    def _ensure_schema(self):
        """Create or upgrade the schema; a no-op (no write, no lock) when it is current.
        The version found (under the lock when it upgraded)."""
        migrations, latest = MIGRATIONS, SCHEMA_VERSION  # read once: tests patch them
        with self._failing('read the schema version'):
            version = self._schema_version()
        self._refuse_newer(version, latest)
        if version == latest:
            return version
        with self.transaction():
            with self._failing('upgrade the schema from version %d to %d' % (version, latest)):
                if self._dialect is POSTGRESQL:
                    # SQLite's BEGIN IMMEDIATE already serialises; PostgreSQL needs a lock
                    # before CREATE TABLE IF NOT EXISTS, which races on its catalog.
                    self._execute('SELECT pg_advisory_xact_lock(?)', (SCHEMA_LOCK_KEY,))
                self._execute(SCHEMA_VERSION_TABLE)
                # Read again under the lock: another process may have upgraded meanwhile.
                version = self._schema_version()
            self._refuse_newer(version, latest)
            for target, statements in migrations:
                if target <= version:
                    continue
                with self._failing('upgrade the schema to version %d' % target):
                    for statement in statements:
                        self._execute(statement)
                    self._execute('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)', (target, utcnow()))
        return version

    def _refuse_newer(self, version, latest):
        if version > latest:
            raise errors.RegistryError(
                'registry %s: registry schema %d is newer than this collection\'s %d; upgrade the collection '
                '(the registry was left untouched)' % (self.url, version, latest))

    # -- rows of any table ------------------------------------------------------------------

    def _get(self, table, key, lock=False):
        """One row by key, decoded, or None; lock: FOR UPDATE on PostgreSQL (see get_node)."""
        sql = 'SELECT %s FROM %s WHERE %s = ?' % (', '.join(table.columns), table.name, table.key)
        return _decode(table, self._row(sql + (self._dialect.for_update if lock else ''), (key,)))

    def _list(self, table, filters=(), order='name'):
        """Rows whose columns equal the (column, value) filters whose value is not None, in `order`."""
        filters = [(column, value) for column, value in filters if value is not None]
        where = ' AND '.join('%s = ?' % column for column, _value in filters)
        sql = 'SELECT %s FROM %s%s ORDER BY %s' % (', '.join(table.columns), table.name, ' WHERE ' + where if where else '', order)
        return [_decode(table, row) for row in self._rows(sql, [value for _column, value in filters])]

    def _changes(self, table, key, stored):
        """The stored values that differ from the row's: compared in stored form, so that
        a value already there is not written (and updated_at stays)."""
        if not stored:
            return {}
        current = self._row('SELECT %s FROM %s WHERE %s = ?' % (', '.join(stored), table.name, table.key), (key,))
        return dict((column, value) for column, value in stored.items() if current[column] != value)

    def _write(self, table, key, changes, now=None):
        if changes:
            assignments = ', '.join('%s = ?' % column for column in changes)
            self._execute('UPDATE %s SET %s, updated_at = ? WHERE %s = ?' % (table.name, assignments, table.key),
                          tuple(changes.values()) + (now or utcnow(), key))

    def _upsert(self, table, key, stored, guard=None):
        """Insert row key or update the stored fields given; (before, after).

        guard(key, before, changes) may refuse a change to an existing row: it runs
        with the row locked, before anything is written.
        """
        now = utcnow()
        before = self._get(table, key, lock=True)
        if before is None:
            missing = [field for field in table.required if field not in stored]
            if missing:
                raise errors.RegistryError('%s %s does not exist and creating it needs %s; nothing was written'
                                           % (table.noun, key, ', '.join(missing)))
            columns = (table.key,) + table.required + ('created_at', 'updated_at')
            values = (key,) + tuple(stored[field] for field in table.required) + (now, now)
            inserted = self._execute('INSERT INTO %s (%s) VALUES (%s) ON CONFLICT (%s) DO NOTHING' % (
                table.name, ', '.join(columns), ', '.join('?' * len(columns)), table.key), values)
            if not inserted:
                # PostgreSQL: another transaction inserted it after our read; change theirs.
                before = self._get(table, key, lock=True)
        changes = self._changes(table, key, stored)
        if changes and before is not None and guard is not None:
            guard(key, before, changes)
        self._write(table, key, changes, now)
        return before, self._get(table, key)

    def _delete(self, table, key, guard=None):
        """Delete row key; the row as it was, or None when there was none. guard(key, before) may refuse."""
        before = self._get(table, key, lock=True)
        if before is None:
            return None
        if guard is not None:
            guard(key, before)
        self._execute('DELETE FROM %s WHERE %s = ?' % (table.name, table.key), (key,))
        return before

    def _instance_names(self, column, value):
        """Names of the instances whose column (flavor, server_group) is value, sorted."""
        return [row['name'] for row in self._rows('SELECT name FROM instances WHERE %s = ? ORDER BY name' % column, (value,))]

    def _lock_existing(self, table, key, untouched):
        """Lock row key (so that it cannot change or go before this transaction ends);
        errors.NotFound saying what was left untouched when there is none."""
        sql = 'SELECT %s FROM %s WHERE %s = ?' % (table.key, table.name, table.key)
        if self._row(sql + self._dialect.for_update, (key,)) is None:
            raise errors.NotFound('no %s named %s in the registry; %s' % (table.noun, key, untouched))

    # -- nodes ------------------------------------------------------------------------------

    def get_node(self, name, lock=False):
        """A node's admin state as a dict, or None when it has none.

        lock=True inside transaction(): keep the row locked until the
        transaction ends, for a read-modify-write (PostgreSQL FOR UPDATE;
        SQLite's transaction holds the write lock already).
        """
        with self._failing('read node %s' % name):
            return self._get(NODES, name, lock)

    def list_nodes(self):
        """Every node with admin state, by name."""
        with self._failing('list nodes'):
            return self._list(NODES)

    def set_node(self, name, hypervisor_type, **fields):
        """Insert node name or update only the fields given; returns (before, after).

        before is None for a new node. hypervisor_type is stored too (the
        cloud file is its source of truth). Nothing is written (and after ==
        before) when every given value is already stored. Fields: see
        NODE_FIELDS; TypeError for an unknown field or a value of the wrong kind.
        """
        if not isinstance(hypervisor_type, str) or not hypervisor_type:
            raise TypeError('hypervisor_type must be a non-empty string, got %r' % (hypervisor_type,))
        unknown = sorted(set(fields) - set(NODE_FIELDS))
        if unknown:
            raise TypeError('unknown node field(s) %s; known: %s' % (', '.join(unknown), ', '.join(NODE_FIELDS)))
        stored = dict((field, _encode_node_field(field, value)) for field, value in fields.items())
        stored['hypervisor_type'] = hypervisor_type
        with self.transaction():
            with self._failing('set node %s' % name):
                return self._upsert(NODES, name, stored)

    # -- flavors ----------------------------------------------------------------------------

    def get_flavor(self, name, lock=False):
        """A flavor as a dict (name, vcpus, ram_mb, disk_gb, extra_specs, timestamps), or None; lock: see get_node."""
        with self._failing('read flavor %s' % name):
            return self._get(FLAVORS, name, lock)

    def list_flavors(self):
        """Every flavor, by name."""
        with self._failing('list flavors'):
            return self._list(FLAVORS)

    def set_flavor(self, name, **fields):
        """Insert flavor name or update only the fields given (FLAVOR_FIELDS); (before, after).

        A new flavor needs vcpus, ram_mb and disk_gb. Once instances use a flavor
        its vcpus, ram_mb and disk_gb are fixed (Nova's flavors are immutable: a
        resize moves an instance to another flavor); extra_specs may change.
        RegistryError naming the instances otherwise, with nothing written.
        """
        stored = _encode_fields(FLAVORS, fields)
        with self.transaction():
            with self._failing('set flavor %s' % name):
                return self._upsert(FLAVORS, name, stored, guard=self._keep_used_flavor)

    def _keep_used_flavor(self, name, before, changes):
        resized = [field for field in FLAVOR_RESOURCES if field in changes]
        users = self._instance_names('flavor', name) if resized else []
        if users:
            raise errors.RegistryError(
                'flavor %s is used by instance(s) %s: its %s cannot change (flavors are immutable; make a new flavor and '
                'resize the instances to it); flavor %s was left unchanged' % (name, name_list(users), ', '.join(resized), name))

    def delete_flavor(self, name):
        """Delete flavor name; the flavor as it was, or None when there was none.

        RegistryError naming the instances that use it, with nothing deleted.
        """
        with self.transaction():
            with self._failing('delete flavor %s' % name):
                return self._delete(FLAVORS, name, guard=self._keep_flavor_in_use)

    def _keep_flavor_in_use(self, name, before):
        users = self._instance_names('flavor', name)
        if users:
            raise errors.RegistryError('flavor %s is used by instance(s) %s; delete them or resize them to another flavor '
                                       'first; flavor %s was left untouched' % (name, name_list(users), name))

    # -- images -----------------------------------------------------------------------------

    def get_image(self, name, lock=False):
        """An image as a dict, or None; lock: see get_node.

        hypervisor_type: kvm (a disk file) or vsphere (a template VM); properties:
        {min_ram, min_disk, format, source, ...}; locations: {node: where the image
        is on that node (a volume path, a template's name)}.
        """
        with self._failing('read image %s' % name):
            return self._get(IMAGES, name, lock)

    def list_images(self):
        """Every image, by name."""
        with self._failing('list images'):
            return self._list(IMAGES)

    def set_image(self, name, **fields):
        """Insert image name or update only the fields given (IMAGE_FIELDS); (before, after).

        A new image needs hypervisor_type. properties and locations are replaced
        whole, not merged.
        """
        stored = _encode_fields(IMAGES, fields)
        with self.transaction():
            with self._failing('set image %s' % name):
                return self._upsert(IMAGES, name, stored)

    def delete_image(self, name):
        """Delete image name; the image as it was, or None. Instances booted from it keep
        their record, as in Nova; rebuilding them (evacuation without shared storage) needs it back."""
        with self.transaction():
            with self._failing('delete image %s' % name):
                return self._delete(IMAGES, name)

    # -- server groups ----------------------------------------------------------------------

    def get_server_group(self, name, lock=False):
        """A server group as a dict (name, policy, rules, timestamps), or None; lock: see get_node."""
        with self._failing('read server group %s' % name):
            return self._get(SERVER_GROUPS, name, lock)

    def list_server_groups(self):
        """Every server group, by name."""
        with self._failing('list server groups'):
            return self._list(SERVER_GROUPS)

    def set_server_group(self, name, policy, **fields):
        """Insert server group name or update it; (before, after).

        policy: one of SERVER_GROUP_POLICIES (ValueError otherwise); fields: rules
        (a dict, e.g. Nova's max_server_per_host, or None). The policy of a group
        with members cannot change (they were placed under the old one):
        RegistryError naming them, with nothing written.
        """
        if policy not in SERVER_GROUP_POLICIES:
            raise ValueError('unknown server group policy %r; known: %s' % (policy, ', '.join(SERVER_GROUP_POLICIES)))
        unknown = sorted(set(fields) - {'rules'})
        if unknown:
            raise TypeError('unknown server group field(s) %s; known: policy, rules' % ', '.join(unknown))
        stored = _encode_fields(SERVER_GROUPS, dict(fields, policy=policy))
        with self.transaction():
            with self._failing('set server group %s' % name):
                return self._upsert(SERVER_GROUPS, name, stored, guard=self._keep_policy_of_members)

    def _keep_policy_of_members(self, name, before, changes):
        members = self._instance_names('server_group', name) if 'policy' in changes else []
        if members:
            raise errors.RegistryError(
                'server group %s has members %s: its policy cannot change from %s to %s while it has members; '
                'server group %s was left unchanged' % (name, name_list(members), before['policy'], changes['policy'], name))

    def delete_server_group(self, name):
        """Delete server group name; the group as it was, or None.

        RegistryError naming its members while it has any, with nothing deleted.
        """
        with self.transaction():
            with self._failing('delete server group %s' % name):
                return self._delete(SERVER_GROUPS, name, guard=self._keep_group_with_members)

    def _keep_group_with_members(self, name, before):
        members = self._instance_names('server_group', name)
        if members:
            raise errors.RegistryError('server group %s still has members %s; delete them or take them out of the group '
                                       'first; server group %s was left untouched' % (name, name_list(members), name))

    # -- instances --------------------------------------------------------------------------

    def get_instance(self, uuid=None, name=None, lock=False):
        """The instance with this uuid, or this name (give one), as a dict; None when there is none.

        Fields: INSTANCE_FIELDS plus uuid and timestamps; identity is a dict
        (hostname, macs, ips, networks, metadata), ha a bool. lock: see get_node.
        """
        if (uuid is None) == (name is None):
            raise TypeError('get_instance needs uuid or name, not both or neither')
        with self._failing('read instance %s' % (uuid or name)):
            if uuid is not None:
                return self._get(INSTANCES, uuid, lock)
            row = self._row('SELECT uuid FROM instances WHERE name = ?', (name,))
            return self._get(INSTANCES, row['uuid'], lock) if row else None

    def list_instances(self, node=None, server_group=None, flavor=None):
        """The instances on node, in server_group, of flavor (the filters given), by name."""
        with self._failing('list instances'):
            return self._list(INSTANCES, (('node', node), ('server_group', server_group), ('flavor', flavor)))

    def create_instance(self, **fields):
        """Record a new instance; returns it.

        Needs name, flavor, image and storage (shared or local); uuid is made
        (uuid4) when not given, state is 'building' when not given. The flavor
        and the server group (when given) must exist: errors.NotFound. A name
        or uuid already recorded: RegistryError naming the other instance.
        Nothing is written on any error. See the module docstring for the order
        create_instance, claim, spawn, update_instance.
        """
        fields = dict(fields)
        uuid = fields.pop('uuid', None) or str(uuidlib.uuid4())
        if not isinstance(uuid, str):
            raise TypeError('instance uuid must be a string, got %r' % (uuid,))
        fields.setdefault('state', 'building')
        stored = _encode_fields(INSTANCES, fields)
        missing = [field for field in INSTANCES.required if field not in stored]
        if missing:
            raise TypeError('create_instance needs %s' % ', '.join(missing))
        _check_storage(stored)
        with self.transaction():
            with self._failing('create instance %s' % stored['name']):
                return self._create_instance(uuid, stored)

    def _create_instance(self, uuid, stored):
        untouched = 'instance %s was not created' % stored['name']
        self._lock_referents(stored, untouched)
        now = utcnow()
        columns = ('uuid',) + tuple(stored) + ('created_at', 'updated_at')
        # No conflict target: a clash on uuid or on name does nothing, and is named below.
        inserted = self._execute('INSERT INTO instances (%s) VALUES (%s) ON CONFLICT DO NOTHING' % (
            ', '.join(columns), ', '.join('?' * len(columns))), (uuid,) + tuple(stored.values()) + (now, now))
        if not inserted:
            self._refuse_clash(uuid, stored['name'], 'nothing was created')
        return self._get(INSTANCES, uuid)

    def _lock_referents(self, stored, untouched):
        """The flavor and server group an instance is to have must exist and stay while this transaction runs."""
        if stored.get('flavor') is not None:
            self._lock_existing(FLAVORS, stored['flavor'], untouched)
        if stored.get('server_group') is not None:
            self._lock_existing(SERVER_GROUPS, stored['server_group'], untouched)

    def _refuse_clash(self, uuid, name, untouched):
        """RegistryError naming the instance that already has this name (another uuid) or this uuid."""
        named = self._row('SELECT uuid FROM instances WHERE name = ? AND uuid <> ?', (name, uuid))
        if named:
            raise errors.RegistryError('an instance named %s already exists (uuid %s); %s' % (name, named['uuid'], untouched))
        same = self._row('SELECT name FROM instances WHERE uuid = ?', (uuid,))
        if same:
            raise errors.RegistryError('an instance with uuid %s already exists (named %s); %s' % (uuid, same['name'], untouched))
        raise errors.RegistryError('instance %s (uuid %s) clashes with another record; %s' % (name, uuid, untouched))

    def update_instance(self, uuid, **fields):
        """Change only the fields given (INSTANCE_FIELDS) of instance uuid; (before, after).

        errors.NotFound when there is no such instance, or when a new flavor or
        server group does not exist; RegistryError when the new name is another
        instance's. Nothing is written on any error.
        """
        stored = _encode_fields(INSTANCES, fields)  # uuid is not a field: an instance keeps it
        _check_storage(stored)
        with self.transaction():
            with self._failing('update instance %s' % uuid):
                return self._update_instance(uuid, stored)

    def _update_instance(self, uuid, stored):
        untouched = 'instance %s was left unchanged' % uuid
        before = self._get(INSTANCES, uuid, lock=True)
        if before is None:
            raise errors.NotFound('no instance with uuid %s in the registry; nothing was changed' % uuid)
        changes = self._changes(INSTANCES, uuid, stored)
        if 'name' in changes:
            named = self._row('SELECT uuid FROM instances WHERE name = ? AND uuid <> ?', (changes['name'], uuid))
            if named:
                raise errors.RegistryError('an instance named %s already exists (uuid %s); %s' % (changes['name'], named['uuid'], untouched))
        self._lock_referents(changes, untouched)
        self._write(INSTANCES, uuid, changes)
        return before, self._get(INSTANCES, uuid)

    def delete_instance(self, uuid):
        """Delete instance uuid and its allocations (ON DELETE CASCADE); the instance as it was, or None.
        Its migrations stay: they are the history of the moves."""
        with self.transaction():
            with self._failing('delete instance %s' % uuid):
                return self._delete(INSTANCES, uuid)

    # -- migrations -------------------------------------------------------------------------

    def create_migration(self, **fields):
        """Record a move of an instance (instance_uuid, migration_type, status and the optional
        MIGRATIONS_TABLE fields); returns it, with a new uuid4 id."""
        stored = _encode_fields(MIGRATIONS_TABLE, fields)
        missing = [field for field in MIGRATIONS_TABLE.required if field not in stored]
        if missing:
            raise TypeError('create_migration needs %s' % ', '.join(missing))
        _check_migration_status(stored)
        migration_id = str(uuidlib.uuid4())
        now = utcnow()
        columns = ('id',) + tuple(stored) + ('created_at', 'updated_at')
        with self.transaction():
            with self._failing('record a migration of instance %s' % stored['instance_uuid']):
                self._execute('INSERT INTO migrations (%s) VALUES (%s)' % (', '.join(columns), ', '.join('?' * len(columns))),
                              (migration_id,) + tuple(stored.values()) + (now, now))
                return self._get(MIGRATIONS_TABLE, migration_id)

    def update_migration(self, migration_id, **fields):
        """Change the fields given of migration migration_id; the record after."""
        stored = _encode_fields(MIGRATIONS_TABLE, fields)
        _check_migration_status(stored)
        with self.transaction():
            with self._failing('update migration %s' % migration_id):
                if self._get(MIGRATIONS_TABLE, migration_id, lock=True) is None:
                    raise errors.NotFound('no migration %s in the registry; nothing was changed' % migration_id)
                self._write(MIGRATIONS_TABLE, migration_id, stored)
                return self._get(MIGRATIONS_TABLE, migration_id)

    def get_migration(self, migration_id):
        with self._failing('read migration %s' % migration_id):
            return self._get(MIGRATIONS_TABLE, migration_id)

    def list_migrations(self, instance_uuid=None, status=None, source_node=None, migration_type=None):
        """Migrations matching the filters given, oldest first."""
        filters = (('instance_uuid', instance_uuid), ('status', status), ('source_node', source_node), ('migration_type', migration_type))
        with self._failing('list migrations'):
            return self._list(MIGRATIONS_TABLE, filters, order='created_at, id')

    # -- leases ---------------------------------------------------------------------------

    def acquire_lease(self, name, owner, seconds):
        """Hold lease `name` for `owner` for `seconds` from now when it is free, expired or the
        owner's already (then it is renewed); True when held. A lease is a row, not a database
        lock: it outlives this transaction and guards work on hypervisors (an image upload, a
        migration) between processes; one whose holder died ends when it expires."""
        now = datetime.datetime.now(datetime.timezone.utc)
        expires = (now + datetime.timedelta(seconds=seconds)).strftime(TIMESTAMP_FORMAT)
        with self.transaction():
            with self._failing('take lease %s' % name):
                row = self._row('SELECT owner, expires_at FROM locks WHERE name = ?' + self._dialect.for_update, (name,))
                if row is None:
                    # PostgreSQL: another transaction may insert it first; then it is theirs.
                    return bool(self._execute('INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?) '
                                              'ON CONFLICT (name) DO NOTHING', (name, owner, expires)))
                if row['owner'] != owner and row['expires_at'] > now.strftime(TIMESTAMP_FORMAT):
                    return False
                self._execute('UPDATE locks SET owner = ?, expires_at = ? WHERE name = ?', (owner, expires, name))
                return True

    def release_lease(self, name, owner):
        """Give lease `name` up if `owner` holds it; True when it did."""
        with self.transaction():
            with self._failing('release lease %s' % name):
                return bool(self._execute('DELETE FROM locks WHERE name = ? AND owner = ?', (name, owner)))

    def lease_holder(self, name):
        """{owner, expires_at} of lease `name`, or None when nobody holds it (expired ones included)."""
        with self._failing('read lease %s' % name):
            return self._row('SELECT owner, expires_at FROM locks WHERE name = ?', (name,))

    # -- allocations ------------------------------------------------------------------------

    def claim(self, instance_uuid, node, hypervisor_type, resources, capacity):
        """Allocate resources ({vcpus, memory_mb, disk_gb}) on node to the instance if
        they fit its capacity (the same keys: (physical - reserved) x ratio); True when
        they did, False (and nothing written) when they did not.

        Atomic: in one transaction the node's row is locked (created with
        hypervisor_type if it has none; PostgreSQL SELECT ... FOR UPDATE, SQLite's
        BEGIN IMMEDIATE already serialises writers), the node's allocations are
        summed, and the allocation is written only if sum + resources <= capacity
        for each resource: concurrent claims on one node queue, so that none
        overcommits it. The instance's own allocation on that node, if any, is
        replaced, not counted (a claim is idempotent). The instance must be
        recorded first (errors.NotFound): create_instance, claim, spawn, update.
        """
        needs = _amounts('resources', resources)
        limits = _amounts('capacity', capacity)
        if not isinstance(hypervisor_type, str) or not hypervisor_type:
            raise TypeError('hypervisor_type must be a non-empty string, got %r' % (hypervisor_type,))
        with self.transaction():
            with self._failing('claim resources on node %s for instance %s' % (node, instance_uuid)):
                return self._claim(instance_uuid, node, hypervisor_type, needs, limits)

    def _claim(self, instance_uuid, node, hypervisor_type, needs, limits):
        if self._row('SELECT uuid FROM instances WHERE uuid = ?', (instance_uuid,)) is None:
            raise errors.NotFound('no instance with uuid %s in the registry (create_instance comes before claim); '
                                  'nothing was claimed on node %s' % (instance_uuid, node))
        created = self._lock_node(node, hypervisor_type)
        held = self._row('SELECT COALESCE(SUM(vcpus), 0) AS vcpus, COALESCE(SUM(memory_mb), 0) AS memory_mb, '
                         'COALESCE(SUM(disk_gb), 0) AS disk_gb FROM allocations WHERE node = ? AND instance_uuid <> ?',
                         (node, instance_uuid))
        if any(int(held[resource]) + needs[resource] > limits[resource] for resource in ALLOCATION_RESOURCES):
            if created:
                # Nothing written: the row this claim made for the lock goes too.
                self._execute('DELETE FROM nodes WHERE name = ?', (node,))
            return False
        self._execute('INSERT INTO allocations (instance_uuid, node, vcpus, memory_mb, disk_gb, created_at) '
                      'VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_uuid, node) DO UPDATE SET '
                      'vcpus = excluded.vcpus, memory_mb = excluded.memory_mb, disk_gb = excluded.disk_gb',
                      (instance_uuid, node) + tuple(needs[resource] for resource in ALLOCATION_RESOURCES) + (utcnow(),))
        return True

    def _lock_node(self, name, hypervisor_type):
        """Lock node name's row, making it (admin defaults) if there is none; True when made here."""
        row = self._row('SELECT hypervisor_type FROM nodes WHERE name = ?' + self._dialect.for_update, (name,))
        created = False
        if row is None:
            now = utcnow()
            created = bool(self._execute('INSERT INTO nodes (name, hypervisor_type, created_at, updated_at) VALUES (?, ?, ?, ?) '
                                         'ON CONFLICT (name) DO NOTHING', (name, hypervisor_type, now, now)))
            # Inserted here: locked already. Not: another transaction made it; wait for its lock.
            row = self._row('SELECT hypervisor_type FROM nodes WHERE name = ?' + self._dialect.for_update, (name,))
        if row['hypervisor_type'] != hypervisor_type:
            raise errors.RegistryError('node %s is a %s node in the registry, not %s; nothing was claimed'
                                       % (name, row['hypervisor_type'], hypervisor_type))
        return created

    def release(self, instance_uuid, node=None):
        """Delete the instance's allocations (on node only, when given: a finished
        migration's source); how many there were."""
        sql, params = 'DELETE FROM allocations WHERE instance_uuid = ?', (instance_uuid,)
        if node is not None:
            sql, params = sql + ' AND node = ?', params + (node,)
        with self.transaction():
            with self._failing('release the allocations of instance %s' % instance_uuid):
                return self._execute(sql, params)

    def list_allocations(self, instance_uuid=None, node=None):
        """Allocations (instance_uuid, node, vcpus, memory_mb, disk_gb, created_at) of the instance / on the node given."""
        filters = [(column, value) for column, value in (('instance_uuid', instance_uuid), ('node', node)) if value is not None]
        where = ' AND '.join('%s = ?' % column for column, _value in filters)
        sql = 'SELECT instance_uuid, node, vcpus, memory_mb, disk_gb, created_at FROM allocations%s ORDER BY node, instance_uuid' % (
            ' WHERE ' + where if where else '')
        with self._failing('list allocations'):
            return self._rows(sql, [value for _column, value in filters])

    def allocations_by_node(self):
        """{node: {vcpus, memory_mb, disk_gb, instances}}: what the allocations hold on each node that has any."""
        with self._failing('sum allocations'):
            rows = self._rows('SELECT node, SUM(vcpus) AS vcpus, SUM(memory_mb) AS memory_mb, SUM(disk_gb) AS disk_gb, '
                              'COUNT(*) AS instances FROM allocations GROUP BY node ORDER BY node')
        return dict((row['node'], dict((key, int(row[key])) for key in ALLOCATION_RESOURCES + ('instances',))) for row in rows)


def _check_migration_status(stored):
    if 'status' in stored and stored['status'] not in MIGRATION_STATUSES:
        raise ValueError('migration status must be one of %s, got %r' % (', '.join(MIGRATION_STATUSES), stored['status']))


def _check_storage(stored):
    if 'storage' in stored and stored['storage'] not in STORAGE_MODES:
        raise ValueError('instance storage must be one of %s, got %r' % (', '.join(STORAGE_MODES), stored['storage']))


def _connect_sqlite(url, path):
    """A connection to the SQLite file at path, created 0600 when missing."""
    where = mask_url(url)
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        raise errors.RegistryError('registry %s: %s is a directory, not a registry file' % (where, path))
    if not os.path.isdir(directory):
        raise errors.RegistryError('registry %s: directory %s does not exist; nothing was created' % (where, directory))
    _create_private(where, path)
    # mode=rw: SQLite must never create the file itself, with the umask's permissions.
    uri = 'file:%s?mode=rw' % urllib.parse.quote(path)
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise errors.RegistryError('registry %s: cannot open %s: %s' % (where, path, exc)) from None
    try:
        conn.execute('PRAGMA busy_timeout = %d' % (BUSY_TIMEOUT_S * 1000))
        conn.execute('PRAGMA foreign_keys = ON')
        _wal(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise errors.RegistryError('registry %s: cannot open %s: %s' % (where, path, exc)) from None
    return conn


def _create_private(where, path):
    """Create an empty registry file, mode 0600, before SQLite opens it: only its owner may read the cloud's records."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise errors.RegistryError('registry %s: cannot create %s: %s; nothing was created' % (where, path, exc.strerror)) from None
    os.close(fd)


def _wal(conn):
    """Switch to WAL (readers do not block the writer); persistent, so a no-op after the first time."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute('PRAGMA journal_mode = WAL').fetchall()
            return
        except sqlite3.OperationalError as exc:
            # Two processes switching a fresh file at once: the loser may get "locked" without the busy handler.
            if 'locked' not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _connect_postgresql(url):
    """An autocommit connection (transaction() says BEGIN) to the PostgreSQL registry at url."""
    psycopg = _psycopg()
    if psycopg is None:
        raise errors.MissingLibrary('psycopg', 'for the registry at %s' % mask_url(url))
    options = {'autocommit': True}
    # Settings in the URL win over ours.
    if 'connect_timeout=' not in url:
        options['connect_timeout'] = CONNECT_TIMEOUT_S
    if 'application_name=' not in url:
        options['application_name'] = 'multihv.cloud'
    try:
        return psycopg.connect(url, **options)
    except psycopg.Error as exc:
        raise errors.RegistryError('registry %s: cannot connect: %s' % (mask_url(url), _one_line(scrub(exc, url)))) from None


def _one_line(text):
    return ' '.join(str(text).split())


__all__ = ['Registry', 'MIGRATIONS', 'MIGRATION_STATUSES', 'SCHEMA_VERSION', 'SERVER_GROUP_POLICIES', 'mask_url', 'parse_url']
