"""The registry module through real Ansible runs, on a SQLite file and on a PostgreSQL schema of the test's own.

What the module did is read back from the database itself (support.registries.query), not from its result.
"""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine as _engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import SCHEMA_VERSION, Registry
from support.lab import ansible_module
from support.registries import ENGINES, private_url, query

MODULE = 'multihv.cloud.registry'


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    """A registry URL no other test sees; SQLite's in a directory that does not exist yet."""
    if request.param == 'sqlite':
        yield 'sqlite:///%s/var/multihv/registry.sqlite' % tmp_path
        return
    yield from private_url(request.param, tmp_path, 'registry_module_test')


def options(tmp_path, url):  # pylint: disable=redefined-outer-name
    """A cloud file with only the registry in it: given as registry_url (a no_log option), the url
    returned would be hidden by Ansible."""
    cloud_file = tmp_path / 'cloud.yml'
    cloud_file.write_text('registry:\n  url: "%s"\n' % url)
    return {'cloud_file': str(cloud_file)}


def versions(url):  # pylint: disable=redefined-outer-name
    """The versions recorded in the registry's schema_version table; [] when there is no such table."""
    if url.startswith('sqlite:'):
        exists = query(url, "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'")[0][0]
    else:
        exists = query(url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() "
                            "AND table_name = 'schema_version'")[0][0]
    return [row[0] for row in query(url, 'SELECT version FROM schema_version ORDER BY version')] if exists else []


def test_creates_the_registry_once_and_check_mode_writes_nothing(tmp_path, url):  # pylint: disable=redefined-outer-name
    args = options(tmp_path, url)
    engine = 'sqlite' if url.startswith('sqlite:') else 'postgresql'
    path = _engine.parse_url(url)[1] if engine == 'sqlite' else None
    expected = {'changed': True, 'engine': engine, 'url': url, 'schema_version': SCHEMA_VERSION, 'previous_version': 0}

    checked = ansible_module(MODULE, args, check=True)
    assert {key: checked[key] for key in expected} == expected
    if engine == 'sqlite':
        directory = pathlib.Path(path).parent
        assert not directory.exists(), 'check mode created the directory'
    else:
        assert versions(url) == [], 'check mode wrote'

    created = ansible_module(MODULE, args)
    assert {key: created[key] for key in expected} == expected
    assert versions(url) == list(range(1, SCHEMA_VERSION + 1))
    if engine == 'sqlite':
        assert directory.stat().st_mode & 0o777 == 0o750
        assert pathlib.Path(path).stat().st_mode & 0o777 == 0o600

    again = ansible_module(MODULE, args)
    assert again['changed'] is False
    assert (again['schema_version'], again['previous_version']) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert ansible_module(MODULE, args, check=True)['changed'] is False


def test_upgrades_an_older_schema_and_refuses_a_newer_one(tmp_path, monkeypatch):
    url = 'sqlite:///%s/registry.sqlite' % tmp_path  # pylint: disable=redefined-outer-name
    args = dict(options(tmp_path, url), registry_url=url)  # the option overrides the file's (the same here)
    # A registry made by the collection one schema version ago.
    with monkeypatch.context() as patch:
        patch.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:-1])
        patch.setattr(schema, 'SCHEMA_VERSION', SCHEMA_VERSION - 1)
        Registry.open(url).close()
    assert versions(url) == list(range(1, SCHEMA_VERSION))

    checked = ansible_module(MODULE, args, check=True)
    assert (checked['changed'], checked['previous_version'], checked['schema_version']) == (True, SCHEMA_VERSION - 1, SCHEMA_VERSION)
    assert versions(url) == list(range(1, SCHEMA_VERSION)), 'check mode upgraded'
    upgraded = ansible_module(MODULE, args)
    assert (upgraded['changed'], upgraded['previous_version'], upgraded['schema_version']) == (True, SCHEMA_VERSION - 1, SCHEMA_VERSION)
    assert versions(url) == list(range(1, SCHEMA_VERSION + 1))

    query(url, "INSERT INTO schema_version (version, applied_at) VALUES (%d, '2099-01-01T00:00:00.000000Z')" % (SCHEMA_VERSION + 1))
    for check in (True, False):
        refused = ansible_module(MODULE, args, check=check, expect_failure=True)
        assert ("registry schema %d is newer than this collection's %d; upgrade the collection (the registry was left untouched)"
                % (SCHEMA_VERSION + 1, SCHEMA_VERSION)) in refused['msg']
    assert versions(url) == list(range(1, SCHEMA_VERSION + 2))
