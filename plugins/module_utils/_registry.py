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
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The bootstrap table, outside MIGRATIONS because it says which of them ran: one row per applied version.
SCHEMA_VERSION_TABLE = 'CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)'

# Admin-state columns of nodes besides name and hypervisor_type, by kind of value.
NODE_FIELDS = ('enabled', 'disabled_reason', 'forced_down', 'availability_zone', 'aggregates',
               'allocation_ratios', 'reserved', 'reserved_for_failover')
NODE_BOOLS = ('enabled', 'forced_down', 'reserved_for_failover')
NODE_JSON = {'aggregates': list, 'allocation_ratios': dict, 'reserved': dict}
NODE_COLUMNS = ('name', 'hypervisor_type') + NODE_FIELDS + ('created_at', 'updated_at')


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


def utcnow():
    """Now as the registry stores timestamps (see the module docstring)."""
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


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


def _encode_node_field(field, value):
    """A node field as stored; TypeError for a value of the wrong kind (a caller's bug)."""
    if value is None:
        if field in NODE_BOOLS:
            raise TypeError('node field %s must be true or false, not None' % field)
        return None
    if field in NODE_BOOLS:
        if not isinstance(value, bool):
            raise TypeError('node field %s must be a bool, got %r' % (field, value))
        # int, not bool: psycopg would send a PostgreSQL boolean to an INTEGER column.
        return int(value)
    if field in NODE_JSON:
        if not isinstance(value, NODE_JSON[field]):
            raise TypeError('node field %s must be a %s or None, got %r' % (field, NODE_JSON[field].__name__, value))
        return json.dumps(value, sort_keys=True)
    if not isinstance(value, str):
        raise TypeError('node field %s must be a string or None, got %r' % (field, value))
    return value


def _decode_node(row):
    """A nodes row (column -> stored value) as Python: bools and decoded JSON."""
    if row is None:
        return None
    node = dict(row)
    for field in NODE_BOOLS:
        node[field] = bool(node[field])
    for field in NODE_JSON:
        if node[field] is not None:
            node[field] = json.loads(node[field])
    return node


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
    def open(cls, url):
        """Connect to the registry at url, creating or upgrading its schema."""
        engine, target = parse_url(url)
        if engine == 'sqlite':
            registry = cls(_connect_sqlite(url, target), SQLITE, url)
        else:
            registry = cls(_connect_postgresql(url), POSTGRESQL, url)
        try:
            registry._ensure_schema()
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

    def _ensure_schema(self):
        """Create or upgrade the schema; a no-op (no write, no lock) when it is current."""
        migrations, latest = MIGRATIONS, SCHEMA_VERSION  # read once: tests patch them
        with self._failing('read the schema version'):
            version = self._schema_version()
        self._refuse_newer(version, latest)
        if version == latest:
            return
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

    def _refuse_newer(self, version, latest):
        if version > latest:
            raise errors.RegistryError(
                'registry %s: registry schema %d is newer than this collection\'s %d; upgrade the collection '
                '(the registry was left untouched)' % (self.url, version, latest))

    # -- nodes ------------------------------------------------------------------------------

    def get_node(self, name, lock=False):
        """A node's admin state as a dict, or None when it has none.

        lock=True inside transaction(): keep the row locked until the
        transaction ends, for a read-modify-write (PostgreSQL FOR UPDATE;
        SQLite's transaction holds the write lock already).
        """
        with self._failing('read node %s' % name):
            return self._get_node(name, lock)

    def _get_node(self, name, lock):
        sql = 'SELECT %s FROM nodes WHERE name = ?' % ', '.join(NODE_COLUMNS)
        return _decode_node(self._row(sql + (self._dialect.for_update if lock else ''), (name,)))

    def list_nodes(self):
        """Every node with admin state, by name."""
        with self._failing('list nodes'):
            rows = self._rows('SELECT %s FROM nodes ORDER BY name' % ', '.join(NODE_COLUMNS))
        return [_decode_node(row) for row in rows]

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
                return self._set_node(name, stored)

    def _set_node(self, name, stored):
        now = utcnow()
        before = self._get_node(name, lock=True)
        if before is None:
            inserted = self._execute('INSERT INTO nodes (name, hypervisor_type, created_at, updated_at) VALUES (?, ?, ?, ?) '
                                     'ON CONFLICT (name) DO NOTHING', (name, stored['hypervisor_type'], now, now))
            if not inserted:
                # PostgreSQL: another transaction inserted it after our read; change theirs.
                before = self._get_node(name, lock=True)
        # Compare stored forms, so that a value already there is not written (and updated_at stays).
        current = self._row('SELECT %s FROM nodes WHERE name = ?' % ', '.join(stored), (name,))
        changes = dict((column, value) for column, value in stored.items() if current[column] != value)
        if changes:
            assignments = ', '.join('%s = ?' % column for column in changes)
            self._execute('UPDATE nodes SET %s, updated_at = ? WHERE name = ?' % assignments,
                          tuple(changes.values()) + (now, name))
        return before, self._get_node(name, lock=False)


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


__all__ = ['Registry', 'MIGRATIONS', 'SCHEMA_VERSION', 'mask_url', 'parse_url']
