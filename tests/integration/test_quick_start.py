"""The README's quick start, as a user with a real estate would follow it: its first playbook, taken from the README
text itself, run with ansible-playbook -i localhost, against the lab; and what a module says when Ansible runs it with a
Python that lacks the collection's requirements (the system Python, as an inventory's localhost gets by discovery)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from support.cloud import domains, registry_rows
from support.lab import REPO, ansible_module, run

BEGIN = '<!-- quick-start-playbook'
END = '<!-- /quick-start-playbook -->'
SYSTEM_PYTHON = '/usr/bin/python3'


def readme_playbook() -> str:
    """The YAML between the README's quick-start markers, without its code fence."""
    text = (REPO / 'README.md').read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, 'the README must hold one quick-start playbook between its markers'
    block = text[text.index(BEGIN):text.index(END)].split('\n', 1)[1].strip()
    assert block.startswith('```yaml\n') and block.endswith('```'), 'the quick-start playbook must be one ```yaml block'
    return block[len('```yaml\n'):-len('```')]


def test_the_readme_first_playbook_boots_an_instance_with_localhost_in_the_inventory(lab, tmp_path):
    playbook = tmp_path / 'first.yml'
    playbook.write_text(readme_playbook())
    registry = tmp_path / 'registry.sqlite'
    # The lab is the user's estate; the registry is this test's own (MULTIHV_REGISTRY_URL overrides the cloud file's)
    # and the image the lab's tiny guest, under the name the other lab tests give it (one base file per name on a host).
    env = {'MULTIHV_CLOUD_FILE': str(lab.dir / 'multihv-cloud.yml'), 'MULTIHV_REGISTRY_URL': f'sqlite:///{registry}',
           'ANSIBLE_FORCE_COLOR': '0', 'ANSIBLE_NOCOLOR': '1'}
    try:
        # -v: every task's result is shown, so the instance task's no_log is what keeps its admin password out.
        result = run('ansible-playbook', '-v', '-i', 'localhost,', str(playbook), '-e', 'image=tick',
                     '-e', f'image_file={lab.info["images"]["tick_qcow2"]}', env=env)
        out = result.stdout
        assert re.search(r'localhost\s*: ok=\d+\s+changed=4\s+unreachable=0\s+failed=0', out), out
        for host in lab.hosts:  # compute_node_info read every KVM host live
            assert f'"msg": "{host} (kvm) is up, free: ' in out, out
        placed = re.search(r'"msg": "first-1 is running on node (\S+)"', out)
        assert placed and placed.group(1) in lab.hosts, out
        assert 'first-1' in domains(lab, placed.group(1))
        assert registry_rows(tmp_path, 'SELECT name, node, state FROM instances') == [('first-1', placed.group(1), 'running')]
        assert 'admin_password' not in out and "'no_log: true' was specified for this result" in out, out
    finally:
        if registry.exists():
            ansible_module('multihv.cloud.instance', {'cloud_file': env['MULTIHV_CLOUD_FILE'], 'registry_url': env['MULTIHV_REGISTRY_URL'],
                                                      'name': 'first-1', 'state': 'absent'})


def test_a_module_run_by_a_python_without_the_requirements_says_which_python_and_how_to_choose(tmp_path):
    lacking = subprocess.run([SYSTEM_PYTHON, '-c', 'import libvirt'], capture_output=True, check=False).returncode != 0 \
        and subprocess.run([SYSTEM_PYTHON, '-c', 'import pyVmomi'], capture_output=True, check=False).returncode != 0
    if not lacking:
        pytest.skip(f'{SYSTEM_PYTHON} has libvirt-python or pyVmomi: it is not the Python this test needs')
    # A KVM host nobody listens for: the module must stop at the missing library, before any connection.
    cloud = tmp_path / 'cloud.yml'
    cloud.write_text('kvm_hosts:\n  - {name: kvm1, uri: "qemu+tcp://127.0.0.1:1/system"}\n'
                     f'registry: {{url: "sqlite:///{tmp_path}/registry.sqlite"}}\n')
    playbook = tmp_path / 'nodes.yml'
    playbook.write_text(
        '- hosts: localhost\n'
        '  connection: local\n'
        '  gather_facts: false\n'
        '  tasks:\n'
        '    - multihv.cloud.compute_node_info:\n'
        f'        cloud_file: {cloud}\n')
    result = run('ansible-playbook', '-i', 'localhost,', str(playbook), '-e', f'ansible_python_interpreter={SYSTEM_PYTHON}',
                 check=False, env={'ANSIBLE_STDOUT_CALLBACK': 'minimal'})
    assert result.returncode == 2 and 'localhost | FAILED! => ' in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    outcome = json.loads(result.stdout.split('localhost | FAILED! => ', 1)[1])
    message = outcome['msg']
    assert 'deserialization' not in message, message
    assert re.match(r'(libvirt-python|PyYAML) is required ', message), message
    assert f'the Python that runs this ({SYSTEM_PYTHON} on ' in message and 'cannot import it' in message, message
    assert 'pip install -r requirements.txt' in message, message
    assert 'ansible_python_interpreter set to "{{ ansible_playbook_python }}"' in message, message
    assert not (tmp_path / 'registry.sqlite').exists()  # a reader: it created nothing on its way to failing
