"""The playbook multihv.cloud.reconcile in check mode through ansible-playbook, against this checkout
(a collection path made of a link to it) and a cloud file that names only a registry: the module loads,
the action group carries the cloud file, an instance whose node no endpoint serves is reported
unknown, and nothing in the registry changes."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support import REPO

PLAYBOOK = shutil.which('ansible-playbook', path=str(pathlib.Path(sys.executable).parent)) or shutil.which('ansible-playbook')


def dump(path):
    conn = sqlite3.connect(str(path))
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return dict((t, sorted(map(repr, conn.execute('SELECT * FROM %s' % t)))) for t in tables)
    finally:
        conn.close()


@pytest.mark.skipif(PLAYBOOK is None, reason='ansible-playbook is not installed')
def test_the_reconcile_playbook_in_check_mode_reports_and_writes_nothing(tmp_path):
    (tmp_path / 'ansible_collections' / 'multihv').mkdir(parents=True)
    (tmp_path / 'ansible_collections' / 'multihv' / 'cloud').symlink_to(REPO)
    database = tmp_path / 'registry.sqlite'
    with Registry.open('sqlite:///%s' % database) as registry:
        registry.set_flavor('small', vcpus=1, ram_mb=512, disk_gb=1, extra_specs={})
        registry.create_instance(name='far', node='kvm9', host='kvm9', flavor='small', image='tick', storage='local', state='running')
    cloud_file = tmp_path / 'cloud.yml'
    cloud_file.write_text('registry:\n  url: sqlite:///%s\n' % database)
    before = dump(database)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path), MULTIHV_CLOUD_FILE=str(cloud_file), ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal',
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    done = subprocess.run([PLAYBOOK, '--check', str(REPO / 'playbooks' / 'reconcile.yml')], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # minimal: 'localhost | SUCCESS => {...}' per task; the first is the reconciler's.
    result = json.JSONDecoder().raw_decode(done.stdout, done.stdout.index('=> ') + 3)[0]
    assert (result['changed'], result['actions'], result['orphans']) == (False, [], [])
    assert [(u['name'], u['node']) for u in result['unknown']] == [('far', 'kvm9')]
    assert 'no endpoint in the cloud file serves node kvm9' in result['unknown'][0]['reason']
    assert dump(database) == before
