"""The PostgreSQL server the test command starts for the registry's shared mode."""

import os

import psycopg
import pytest

URL = os.environ.get('MULTIHV_TEST_POSTGRES_URL')


@pytest.mark.skipif(not URL, reason='MULTIHV_TEST_POSTGRES_URL unset: run through `make test`')
def test_postgres_is_up_on_loopback_and_writable():
    assert '@127.0.0.1:' in URL
    with psycopg.connect(URL, connect_timeout=5) as conn:
        conn.execute('CREATE TEMP TABLE probe (n int)')
        conn.execute('INSERT INTO probe VALUES (41), (1)')
        assert conn.execute('SELECT sum(n) FROM probe').fetchone() == (42,)
        assert conn.execute("SELECT current_setting('listen_addresses')").fetchone() == ('127.0.0.1',)
