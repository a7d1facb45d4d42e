"""The lab role (tests/lab/roles/lab) through real ansible-playbook runs of the lab playbook (tests/lab/lab.yml)."""

import json
import os
import pathlib
import re

import pytest

from support.lab import LAB_PLAYBOOK, LAB_ROLES, run


def test_lab_up_is_idempotent(lab):
    result = run('ansible-playbook', str(LAB_PLAYBOOK), '-e', f'lab_dir={lab.dir}', '-e', 'lab_action=up', *lab.role_vars())
    recap = re.search(r'localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0', result.stdout)
    assert recap, result.stdout[-2000:]
    assert recap.group(1) == '0', result.stdout[-4000:]


def test_cloud_file_describes_the_lab(lab):
    import yaml  # pylint: disable=import-outside-toplevel
    cloud = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    assert [h['name'] for h in cloud['kvm_hosts']] == list(lab.hosts)
    assert [h['uri'] for h in cloud['kvm_hosts']] == [lab.uri(h) for h in lab.hosts]
    assert cloud['vcenters'][0]['port'] == lab.info['vcsim']['port']
    assert cloud['registry']['url'].startswith('sqlite:///')
    assert (lab.dir / 'multihv-cloud.yml').stat().st_mode & 0o077 == 0


def test_unknown_host_fails_clearly_and_changes_nothing(lab):
    result = run('ansible-playbook', str(LAB_PLAYBOOK), '-e', f'lab_dir={lab.dir}', '-e', 'lab_action=fail',
                 '-e', 'lab_host=no-such-host', check=False)
    assert result.returncode != 0
    assert 'no-such-host is neither a lab KVM host' in result.stdout
    for name in lab.hosts:
        lab.connect(name).close()


def test_role_documentation_renders():
    result = run('ansible-doc', '-t', 'role', '--roles-path', str(LAB_ROLES), 'lab')
    for option in ('lab_action', 'lab_kvm_hosts', 'lab_vcsim_delay_ms'):
        assert option in result.stdout


def test_each_worker_has_a_lab_and_a_postgresql_server_of_its_own(lab):
    """`make test` runs these tests on pytest-xdist workers, each on one lab of MULTIHV_LAB_DIRS (tests/conftest.py):
    this worker's lab is its own entry, and no two labs share a port, a migration port range (the lab hosts' and
    the TLS test's hosts' after them) or a bridge, so that a test that disturbs its lab disturbs no other worker."""
    dirs = os.environ.get('MULTIHV_LAB_DIRS', '').split()
    worker = os.environ.get('PYTEST_XDIST_WORKER')
    if not dirs or not worker:
        pytest.skip('not run by `make test` on several workers (MULTIHV_LAB_DIRS, pytest-xdist)')
    index = int(worker.removeprefix('gw'))
    assert lab.dir == pathlib.Path(dirs[index])
    urls = os.environ['MULTIHV_TEST_POSTGRES_URLS'].split()
    assert os.environ['MULTIHV_TEST_POSTGRES_URL'] == urls[index] and len(set(urls)) == len(urls) == len(dirs)
    ports, bridges = [], []
    for directory in dirs:
        info = json.loads((pathlib.Path(directory) / 'lab.json').read_text())
        hosts = info['kvm_hosts']
        ports += [host['port'] for host in hosts] + [info['vcsim']['port'], int(info['vcsim']['control_url'].rsplit(':', 1)[1])]
        # Host i listens for migrations on base + 100 (i - 1) .. + 99; test_migration_tls adds as many hosts after them.
        ports += range(hosts[0]['migration_port'], hosts[0]['migration_port'] + 200 * len(hosts))
        bridges.append(info['bridge'])
    assert len(set(ports)) == len(ports), 'two labs share a port'
    assert len(set(bridges)) == len(bridges), bridges
