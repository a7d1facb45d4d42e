"""The lab role (tests/lab/roles/lab) through real ansible-playbook runs of the lab playbook (tests/lab/lab.yml)."""

import re

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
