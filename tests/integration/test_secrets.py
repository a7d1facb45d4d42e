"""No secret in any output: the error paths of the cloud file and of the modules, run with known secrets in the
cloud file, the inline cloud option and the environment, through one real ansible-playbook run (-vvv, so that
results and their invocation are shown, and Ansible's log file), one ansible-inventory run over bad and good
sources, and the EDA source's log. Every output is searched for every secret; each case also checks that its
error path really ran. No lab: hypervisors are addresses where nothing listens."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest
import yaml

from ansible_collections.multihv.cloud.extensions.eda.plugins.event_source import node_events
from support.lab import ansible_module, run

VC_PW = 'Vc-Secret-2718'
VC_NUM = 7391824  # an unquoted numeric password: YAML reads it as an integer
REG_PW = 'Reg-Secret-4821'
BMC_PW = 'Bmc-Secret-5519'
URI_PW = 'Uri-Secret-8080'
ENV_VC = 'Env-Vc-Secret-3307'     # MULTIHV_VCENTER_PASSWORD: no vCenter of these clouds uses it
ENV_VC2 = 'Env-Vc2-Secret-6607'   # MULTIHV_VCENTER_VC2_PASSWORD
IPMI_PW = 'Ipmi-Secret-1414'      # named by a host's fence_environment
SECRETS = (VC_PW, str(VC_NUM), REG_PW, BMC_PW, URI_PW, ENV_VC, ENV_VC2, IPMI_PW)
NOWHERE = 'qemu+tcp://127.0.0.1:1/system'  # nothing listens: the host is down at once


def vcenter(**keys):
    return dict({'name': 'vc1', 'hostname': '127.0.0.1', 'port': 1, 'username': 'u', 'clusters': ['DC0/C0'], 'timeout': 2}, **keys)


def kvm(**keys):
    return dict({'name': 'kvm1', 'uri': NOWHERE}, **keys)


def clouds(tmp):
    """{name: (cloud definition or YAML text, what its error says)}: one error path of the cloud file each."""
    registry = {'url': f'sqlite:///{tmp}/registry.sqlite'}
    return {
        'numeric_password': ({'vcenters': [vcenter(password=VC_NUM)], 'registry': registry}, 'password must be a string, got an integer'),
        'list_password': ({'vcenters': [vcenter(password=[VC_PW])], 'registry': registry}, 'password must be a string, got a list'),
        'bad_yaml': ('vcenters:\n  - name: vc1\n    password: %s: x\n' % VC_PW, 'is not valid YAML: mapping values are not allowed here at line 3'),
        'fence_quote': ({'kvm_hosts': [kvm(fence_command="ipmitool -P %s 'off" % BMC_PW)], 'registry': registry},
                        'fence_command is not a command line (No closing quotation)'),
        'uri_password': ({'kvm_hosts': [kvm(uri='qemu+tcp://root:%s@127.0.0.1:1/system' % URI_PW)], 'registry': registry},
                         "uri must not hold a password"),
        'registry_no_scheme': ({'registry': {'url': 'cloud:%s@db/multihv' % REG_PW}}, 'registry URL cloud:********@db/multihv is not supported'),
        'registry_down': ({'registry': {'url': 'postgresql://cloud:%s@127.0.0.1:1/multihv' % REG_PW}}, 'cannot connect'),
    }


def write(tmp, name, definition):
    path = tmp / f'{name}.yml'
    path.write_text(definition if isinstance(definition, str) else yaml.safe_dump(definition))
    return str(path)


def leaks(text):
    """The lines of text that hold a secret (what a failed assertion shows)."""
    return [line[:300] for line in text.splitlines() if any(secret in line for secret in SECRETS)]


@pytest.fixture(name='env')
def env_fixture(tmp_path):
    """The runs' environment: the secrets the environment may give, none of the caller's MULTIHV_* settings."""
    env = dict((key, value) for key, value in os.environ.items() if not key.startswith('MULTIHV_'))
    env.update({'MULTIHV_VCENTER_PASSWORD': ENV_VC, 'MULTIHV_VCENTER_VC2_PASSWORD': ENV_VC2, 'IPMI_PASSWORD': IPMI_PW,
                'ANSIBLE_NOCOLOR': '1', 'ANSIBLE_LOG_PATH': str(tmp_path / 'ansible.log'), 'ANSIBLE_HOME': str(tmp_path / 'home')})
    return env


def test_no_secret_in_the_output_of_modules_inventory_and_eda(tmp_path, env, monkeypatch, caplog):
    cases = clouds(tmp_path)
    files = dict((name, write(tmp_path, name, definition)) for name, (definition, _said) in cases.items())
    registry = {'url': f'sqlite:///{tmp_path}/registry.sqlite'}
    # A down KVM host whose fence command shows what it was given; a vCenter and a KVM host that do not answer.
    fence_file = write(tmp_path, 'fence', {'registry': registry, 'kvm_hosts': [kvm(
        fence_command="sh -c 'env > %s/fence.env; echo \"bmc: $IPMI_PASSWORD vc: $MULTIHV_VCENTER_PASSWORD\" >&2; exit 3'" % tmp_path,
        fence_environment=['IPMI_PASSWORD'])]})
    down_file = write(tmp_path, 'down', {'registry': registry, 'kvm_hosts': [kvm()],
                                         'vcenters': [vcenter(password=VC_PW), vcenter(name='vc2')]})
    inline = {'vcenters': [vcenter(password=VC_PW)], 'registry': dict(registry, lease_seconds=60),
              'defaults': {'allocation_ratios': {'cpu': 1}}}

    tasks = [{'name': f'cloud file {name}', 'multihv.cloud.flavor': {'cloud_file': path, 'name': 'm1.small'}, 'ignore_errors': True}
             for name, path in files.items()]
    tasks += [
        {'name': 'fence', 'multihv.cloud.evacuate': {'cloud_file': fence_file, 'node': 'kvm1'}, 'ignore_errors': True},
        {'name': 'nodes down', 'multihv.cloud.compute_node_info': {'cloud_file': down_file}, 'register': 'down'},
        {'name': 'inline flavor', 'multihv.cloud.flavor': {'cloud': inline, 'name': 'm1.small', 'vcpus': 1, 'ram_mb': 60, 'disk_gb': 1},
         'register': 'flavor'},
        {'name': 'inline bad fence', 'multihv.cloud.flavor': {'cloud': {'registry': registry, 'kvm_hosts': [
            kvm(fence_command="ipmitool -P %s 'off" % BMC_PW)]}, 'name': 'm1.small'}, 'ignore_errors': True},
        {'name': 'inline no hostname', 'multihv.cloud.flavor': {'cloud': {'registry': registry, 'vcenters': [
            {'name': 'vc1', 'username': 'u', 'password': VC_NUM}]}, 'name': 'm1.small'}, 'ignore_errors': True},
        {'name': 'results', 'ansible.builtin.copy': {'content': '{{ {"flavor": flavor, "down": down} | to_json }}',
                                                     'dest': str(tmp_path / 'results.json')}},
    ]
    playbook = tmp_path / 'secrets.yml'
    playbook.write_text(yaml.safe_dump([{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}], sort_keys=False))
    # The implicit localhost: the modules run with ansible-playbook's own Python.
    played = run('ansible-playbook', '-vvv', str(playbook), env=env, check=False)
    output = played.stdout + played.stderr + (tmp_path / 'ansible.log').read_text()
    assert played.returncode == 0, output[-4000:]
    for name, (_definition, said) in cases.items():
        assert said in output, f'{name}: its error path did not run ({said!r} not in the output)'
    assert 'fencing node kvm1 failed: sh exited 3 (bmc: ******** vc:)' in output
    fence_env = (tmp_path / 'fence.env').read_text()
    assert f'IPMI_PASSWORD={IPMI_PW}' in fence_env and 'MULTIHV_VCENTER' not in fence_env and 'MULTIHV_NODE=kvm1' in fence_env
    assert "missing required arguments: hostname found in cloud -> vcenters" in output
    assert 'kvm_hosts[0].fence_command is not a command line' in output
    results = json.loads((tmp_path / 'results.json').read_text())
    # Only the secret keys of an inline cloud are no_log: the flavor comes back as it is.
    assert {k: results['flavor']['flavor'][k] for k in ('name', 'vcpus', 'ram_mb')} == {'name': 'm1.small', 'vcpus': 1, 'ram_mb': 60}
    assert sorted(node['state'] for node in results['down']['nodes']) == ['down', 'down', 'down']
    assert leaks(output) == [] and leaks(json.dumps(results)) == []
    # A registry URL from the environment (as AWX injects it) whose server does not answer. Not a task of the playbook
    # above: its environment keyword would show in ansible-playbook -vvv's own command lines.
    failed = ansible_module('multihv.cloud.registry', {'cloud_file': fence_file}, expect_failure=True,
                            env=dict(env, MULTIHV_REGISTRY_URL='postgresql://cloud:%s@127.0.0.1:1/x' % REG_PW))
    assert 'registry postgresql://cloud:********@127.0.0.1:1/x: cannot connect' in failed['msg'] and leaks(json.dumps(failed)) == []

    # The inventory plugin: every bad cloud file, an inline cloud, and the down nodes (their reasons).
    sources = tmp_path / 'inventory'
    sources.mkdir()
    for name, path in dict(files, down=down_file).items():
        (sources / f'{name}.multihv.yml').write_text(yaml.safe_dump({'plugin': 'multihv.cloud.nodes', 'cloud_file': path}))
    (sources / 'inline.multihv.yml').write_text(yaml.safe_dump({'plugin': 'multihv.cloud.nodes', 'cloud': {
        'registry': registry, 'kvm_hosts': [kvm(fence_command="ipmitool -P %s 'off" % BMC_PW)]}}))
    listed = run('ansible-inventory', '-vvv', '-i', str(sources), '--list', env=env, check=False)
    output = listed.stdout + listed.stderr
    for name, (_definition, said) in cases.items():
        if name != 'registry_down':  # the inventory reads the registry only when the cloud file is good
            assert said in output, f'inventory {name}: its error path did not run'
    assert 'vc2/DC0/C0' in output and leaks(output) == []

    # The EDA source logs a read that fails (a bad cloud file) and goes on.
    for key, value in env.items():
        if key.startswith('MULTIHV_') or key == 'IPMI_PASSWORD':
            monkeypatch.setenv(key, value)
    caplog.set_level(logging.DEBUG, logger='multihv.cloud.node_events')
    for name, path in files.items():
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(asyncio.wait_for(node_events.main(asyncio.Queue(), {'cloud_file': path, 'interval': 0.05}), 0.3))
        assert cases[name][1] in caplog.text, f'EDA {name}: its error path did not run'
    assert leaks(caplog.text) == []
