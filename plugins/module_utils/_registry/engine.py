# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's two engines: its URLs, their masking, connecting, and the SQL the engines
spell differently. Private to multihv.cloud: do not import.

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
``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

import datetime
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
MASK = '********'


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
    """Now as the registry stores timestamps: ISO-8601 UTC with microseconds and a Z, fixed width."""
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


def url_password(url):
    """The password in a URL's user info or password= query parameter, or None. A URL without its
    scheme (a mistake: user:password@host/db) is read as if it had one, so that it is masked too."""
    _scheme, sep, rest = str(url).partition('://')
    if not sep:
        rest = str(url)
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
        rest = text
    head = rest.split('?', 1)[0]
    at = head.rfind('@')
    if at >= 0 and ':' in head[:at]:
        user = head[:at].split(':', 1)[0]
        rest = '%s:%s%s' % (user, MASK, rest[at:])
    return '%s%s%s' % (scheme, sep, rest) if sep else rest


def scrub(text, url):
    """text (say, a driver's error message) without the URL's password in it, raw or URL-decoded."""
    text = str(text)
    secret = url_password(url)
    if secret:
        # Longest first, so that a form inside the other is not left half-masked.
        for form in sorted((secret, urllib.parse.unquote(secret)), key=len, reverse=True):
            text = text.replace(form, MASK)
    return text


def one_line(text):
    """text with its runs of white space (newlines of a driver's message too) as single spaces."""
    return ' '.join(str(text).split())


def db_errors():
    """The exception classes of the database drivers that are installed."""
    psycopg = sys.modules.get('psycopg')  # no psycopg loaded, no psycopg error possible
    return (sqlite3.Error, psycopg.Error) if psycopg is not None else (sqlite3.Error,)


def broken(conn):
    """True when a PostgreSQL connection was lost (the server restarted, the network cut it): psycopg
    marks it closed or broken once a statement found it gone, and it never works again. A SQLite
    connection is a file handle: never."""
    if isinstance(conn, sqlite3.Connection):
        return False
    return bool(getattr(conn, 'closed', False) or getattr(conn, 'broken', False))


def connect(url, create=True):
    """(dialect, connection) to the registry at url, whose schema is not looked at here.

    create=False (a reader): a SQLite file is neither created nor switched to WAL, and one that does not
    exist gives (SQLITE, None); see memory().
    RegistryError naming the (masked) URL when the URL is not supported or the connection fails;
    errors.MissingLibrary when a PostgreSQL registry has no psycopg to reach it.
    """
    engine, target = parse_url(url)
    if engine == 'sqlite':
        if not create and not os.path.isfile(target):
            return SQLITE, None
        return SQLITE, _connect_sqlite(url, target, create)
    return POSTGRESQL, _connect_postgresql(url)


def memory():
    """A connection to an empty SQLite database in memory: what a reader is given for a registry that does not
    exist yet, so that it reads it as empty without creating anything."""
    conn = sqlite3.connect(':memory:', isolation_level=None)
    conn.execute('PRAGMA foreign_keys = ON')
    return conn


def _connect_sqlite(url, path, create=True):
    """A connection to the SQLite file at path, created 0600 when missing (create=False: must exist, is not
    switched to WAL: a reader writes nothing)."""
    where = mask_url(url)
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        raise errors.RegistryError('registry %s: %s is a directory, not a registry file' % (where, path))
    if not os.path.isdir(directory):
        raise errors.RegistryError('registry %s: directory %s does not exist; nothing was created' % (where, directory))
    if create:
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
        if create:
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
    """An autocommit connection (a transaction says BEGIN itself) to the PostgreSQL registry at url."""
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
        raise errors.RegistryError('registry %s: cannot connect: %s' % (mask_url(url), one_line(scrub(exc, url)))) from None
