# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one path to the registry's database: an open connection, its transactions, and the
reads and writes of rows of any table. Private to multihv.cloud: do not import.

Store is the base of the registry's parts (see registry.py); they speak SQL only through it.
"""

from __future__ import annotations

import contextlib
import re

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables

# Statements that change nothing when they run again: a read, or the start of a transaction.
_REPEATABLE = re.compile(r'\s*(SELECT|BEGIN)\b', re.IGNORECASE)


class Store:
    """One open registry: a connection and the dialect of its engine.

    Use as a context manager or close().
    """

    def __init__(self, conn, dialect, url):
        self._conn = conn
        self._dialect = dialect
        self._url = url
        self._depth = 0  # nesting of transaction(): inner ones join the outermost

    @property
    def url(self):
        """The registry URL with its password masked."""
        return engine.mask_url(self._url)

    @property
    def engine(self):
        """'sqlite' or 'postgresql'."""
        return self._dialect.name

    def close(self):
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*engine.db_errors()):
                conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # -- statements -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _failing(self, what):
        """Database errors become RegistryError naming the registry and what failed."""
        try:
            yield
        except engine.db_errors() as exc:
            raise errors.RegistryError('registry %s: cannot %s: %s' % (
                self.url, what, engine.one_line(engine.scrub(exc, self._url)))) from None

    def _cursor(self, sql, params):
        if self._conn is None:
            raise errors.RegistryError('registry %s is closed' % self.url)
        if not self._depth and engine.broken(self._conn):
            self._reconnect()
        cursor = self._conn.cursor()
        try:
            cursor.execute(self._dialect.sql(sql), tuple(params))
        except engine.db_errors():
            # A connection the server dropped (PostgreSQL restarted) is only found broken by the statement
            # that uses it. Outside a transaction, a read or a BEGIN changed nothing: it runs again once on a
            # new connection. A write's fate is unknown and a transaction's earlier statements are lost: those
            # fail, and the next statement reconnects.
            if self._depth or not engine.broken(self._conn) or not _REPEATABLE.match(sql):
                raise
            self._reconnect()
            cursor = self._conn.cursor()
            cursor.execute(self._dialect.sql(sql), tuple(params))
        return cursor

    def _reconnect(self):
        """A new connection in place of a broken one (RegistryError when the server cannot be reached yet:
        the broken one stays, and the next statement tries again)."""
        _dialect, conn = engine.connect(self._url)
        old, self._conn = self._conn, conn
        with contextlib.suppress(*engine.db_errors()):
            old.close()

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
            with contextlib.suppress(*engine.db_errors()):
                self._execute('ROLLBACK')
            raise
        self._depth = 0
        with self._failing('commit'):
            self._execute('COMMIT')

    # -- rows of any table ------------------------------------------------------------------

    def _get(self, table, key, lock=False):
        """One row by key, decoded, or None; lock: FOR UPDATE on PostgreSQL (see get_node)."""
        sql = 'SELECT %s FROM %s WHERE %s = ?' % (', '.join(table.columns), table.name, table.key)
        return tables.decode(table, self._row(sql + (self._dialect.for_update if lock else ''), (key,)))

    def _read(self, table, key, lock=False):
        """_get, with a database error named as reading that row (say, 'cannot read flavor m1')."""
        with self._failing('read %s %s' % (table.noun, key)):
            return self._get(table, key, lock)

    def _read_all(self, table):
        """Every row of table by name, with a database error named as listing them (say, 'cannot list flavors')."""
        with self._failing('list %ss' % table.noun):
            return self._list(table)

    def _list(self, table, filters=(), order='name'):
        """Rows whose columns equal the (column, value) filters whose value is not None, in `order`."""
        filters = [(column, value) for column, value in filters if value is not None]
        where = ' AND '.join('%s = ?' % column for column, _value in filters)
        sql = 'SELECT %s FROM %s%s ORDER BY %s' % (', '.join(table.columns), table.name, ' WHERE ' + where if where else '', order)
        return [tables.decode(table, row) for row in self._rows(sql, [value for _column, value in filters])]

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
                          tuple(changes.values()) + (now or engine.utcnow(), key))

    def _upsert(self, table, key, stored, guard=None):
        """Insert row key or update the stored fields given; (before, after).

        guard(key, before, changes) may refuse a change to an existing row: it runs
        with the row locked, before anything is written.
        """
        now = engine.utcnow()
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

    def _lock_existing(self, table, key, untouched):
        """Lock row key (so that it cannot change or go before this transaction ends);
        errors.NotFound saying what was left untouched when there is none."""
        sql = 'SELECT %s FROM %s WHERE %s = ?' % (table.key, table.name, table.key)
        if self._row(sql + self._dialect.for_update, (key,)) is None:
            raise errors.NotFound('no %s named %s in the registry; %s' % (table.noun, key, untouched))
