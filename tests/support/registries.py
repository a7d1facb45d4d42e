"""Registries for integration tests on both engines: a SQLite file, or a PostgreSQL schema of
its own on the test server (MULTIHV_TEST_POSTGRES_URL; `make test` starts it), and processes
released at the same moment to hit one registry concurrently."""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import subprocess
import sys
import uuid

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine as _engine

try:
    import psycopg
except ImportError:
    psycopg = None

PG_URL = os.environ.get('MULTIHV_TEST_POSTGRES_URL')
ENGINES = ['sqlite', pytest.param('postgresql', marks=pytest.mark.skipif(
    not PG_URL, reason='MULTIHV_TEST_POSTGRES_URL unset: run through `make test`'))]


def in_schema(url, schema):
    """url with libpq's options=-csearch_path=schema: every table the registry makes lands there."""
    return '%s%soptions=-csearch_path%%3D%s' % (url, '&' if '?' in url else '?', schema)


def private_url(engine, tmp_path, prefix):
    """Yield a registry URL no other test sees: a new file, or a new PostgreSQL schema (dropped after)."""
    if engine == 'sqlite':
        yield 'sqlite:///' + str(tmp_path / 'registry.sqlite')
        return
    schema = '%s_%s' % (prefix, uuid.uuid4().hex[:12])
    with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute('CREATE SCHEMA %s' % schema)
    try:
        yield in_schema(PG_URL, schema)
    finally:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute('DROP SCHEMA %s CASCADE' % schema)


@contextlib.contextmanager
def raw(url):
    """A plain connection to the registry's database, bypassing the code under test."""
    if url.startswith('sqlite:'):
        conn = sqlite3.connect(url[len('sqlite:///'):], isolation_level=None)
    else:
        conn = psycopg.connect(url, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def query(url, sql):
    with raw(url) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def released_together(script, argument_lists, timeout=60):
    """Run `python -c script ARGS...` once per argument list; each says 'ready' and waits for a line
    on stdin, so that all of them are released at the same moment. Their stdout, stripped, in order."""
    tree = pathlib.Path(_engine.__file__).parents[6]  # <tree>/ansible_collections/multihv/cloud/plugins/module_utils/_registry
    assert (tree / 'ansible_collections').is_dir()
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = [subprocess.Popen([sys.executable, '-c', script] + list(args), env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for args in argument_lists]
    try:
        for proc in started:
            assert proc.stdout.readline().strip() == 'ready', proc.stderr.read()
        for proc in started:
            proc.stdin.write('go\n')
            proc.stdin.flush()
        results = []
        for proc in started:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            results.append(out.strip())
        return results
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
