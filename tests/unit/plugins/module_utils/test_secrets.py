"""Secrets the modules hold but must never show: the inline cloud's argument spec (only its secret keys
no_log, every key of a cloud file accepted), the secrets the cloud file and the environment bring
(_args.secrets: what a module adds to Ansible's no_log values), and the environment a fence or power
status command runs in (a minimal one plus the host's fence_environment, never the controller's)."""

from __future__ import annotations

import json
import types

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import fencing
from ansible_collections.multihv.cloud.plugins.modules import flavor as flavor_module
from support import modules

# A cloud with every key a cloud file knows (README, "Pointing the collection at a real cloud").
FULL = {
    'vcenters': [{'name': 'vc1', 'hostname': 'vc1.example.com', 'port': 8443, 'username': 'auto@vsphere.local',
                  'password': 'Vc-Secret-1', 'validate_certs': False, 'clusters': ['DC1/C1'], 'availability_zone': 'legacy',
                  'aggregates': ['ha'], 'cluster_settings': {'C1': {'availability_zone': 'gold'}}, 'timeout': 60}],
    'kvm_hosts': [{'name': 'kvm1', 'uri': 'qemu+tls://kvm1.example.com/system', 'availability_zone': 'cattle',
                   'aggregates': ['scale'], 'instance_path': '/var/lib/libvirt/instances', 'shared_instance_path': '/srv/shared',
                   'shared_with': ['kvm1'], 'migration_address': '10.0.0.1',
                   'fence_command': 'ipmitool -P Bmc-Secret-2 chassis power off',
                   'power_status_command': 'ipmitool -P Bmc-Secret-2 chassis power status',
                   'fence_environment': ['IPMI_PASSWORD'], 'timeout': 5}],
    'registry': {'url': 'postgresql://cloud:Reg-Secret-3@db/multihv', 'lease_seconds': 60},
    'defaults': {'allocation_ratios': {'cpu': 8, 'ram': 1.5, 'disk': 1}, 'reserved_host_memory_mb': {'kvm': 1024, 'vsphere': 0}},
}
SECRETS = {'Vc-Secret-1', 'ipmitool -P Bmc-Secret-2 chassis power off', 'ipmitool -P Bmc-Secret-2 chassis power status',
           'postgresql://cloud:Reg-Secret-3@db/multihv'}


def validate(cloud):
    return ArgumentSpecValidator(_args.argument_spec(name={'type': 'str'})).validate({'cloud': cloud, 'name': 'm1.small'})


def test_the_inline_cloud_takes_every_key_of_a_cloud_file_and_hides_only_its_secrets():
    result = validate(FULL)
    assert result.error_messages == []
    assert result._no_log_values == SECRETS  # pylint: disable=protected-access  # what Ansible masks
    # What Ansible hands the module reads as the same cloud (the keys left out come as None).
    given, validated = _config.parse(FULL, env={}), _config.parse(result.validated_parameters['cloud'], env={})
    assert validated == given
    assert validated.kvm_hosts[0].timeout == 5.0 and validated.defaults.allocation_ratios['cpu'] == 8.0
    assert validate({'registry': {'url': 'sqlite:////tmp/r.sqlite'}})._no_log_values == {'sqlite:////tmp/r.sqlite'}  # pylint: disable=protected-access


def test_the_inline_cloud_refuses_an_unknown_key_and_hides_a_numeric_password():
    result = validate({'vcenters': [{'name': 'vc1', 'hostname': 'h', 'username': 'u', 'password': 7391824, 'pasword': 1}]})
    assert 'cloud.vcenters.pasword' in ' '.join(result.error_messages)
    assert '7391824' in result._no_log_values  # pylint: disable=protected-access


def test_secrets_are_the_passwords_from_file_and_environment_and_the_fence_environment_values():
    data = {'vcenters': [{'name': 'vc1', 'hostname': 'h', 'username': 'u', 'password': 'In-File'},
                         {'name': 'vc-2', 'hostname': 'h', 'username': 'u'}, {'name': 'vc3', 'hostname': 'h', 'username': 'u'}],
            'kvm_hosts': [{'name': 'kvm1', 'uri': 'qemu:///system', 'fence_environment': ['IPMI_PASSWORD', 'UNSET']}],
            'registry': {'url': 'sqlite:////tmp/r.sqlite'}}
    env = {'MULTIHV_VCENTER_PASSWORD': 'From-Env', 'MULTIHV_VCENTER_VC_2_PASSWORD': 'Only-Vc-2', 'IPMI_PASSWORD': 'Bmc-Pw',
           'MULTIHV_REGISTRY_URL': 'postgresql://cloud:p%40ss-Word@db/multihv', 'UNRELATED': 'shown'}
    config = _config.parse(data, env=env)
    assert _args.secrets(config, env) == {'In-File', 'Only-Vc-2', 'From-Env', 'Bmc-Pw', 'p%40ss-Word', 'p@ss-Word'}
    assert _args.secrets(_config.parse({'registry': {'url': 'sqlite:////tmp/r.sqlite'}}, env={}), {}) == set()


def test_load_cloud_adds_the_secrets_to_the_module_s_no_log_values(tmp_path, monkeypatch):
    monkeypatch.setenv('MULTIHV_VCENTER_PASSWORD', 'From-Env-2')
    module = types.SimpleNamespace(no_log_values=set(), params={
        'cloud': {'vcenters': [{'name': 'vc1', 'hostname': 'h', 'username': 'u'}], 'registry': {'url': 'sqlite:////tmp/r.sqlite'}},
        'cloud_file': None,
        'registry_url': 'postgresql://cloud:Option-Pw@db/x'})
    config = _args.load_cloud(module)
    assert config.registry_url == 'postgresql://cloud:Option-Pw@db/x'
    assert module.no_log_values == {'From-Env-2', 'Option-Pw'}


def run_flavor(capsys, **args):
    return modules.run_module(capsys, flavor_module, args)


def test_flavor_with_an_inline_cloud_returns_the_flavor_unmasked_and_masks_an_environment_password(tmp_path, capsys, monkeypatch):
    cloud = {'registry': {'url': 'sqlite:///%s' % (tmp_path / 'r.sqlite'), 'lease_seconds': 60},
             'defaults': {'allocation_ratios': {'cpu': 1}},
             'vcenters': [{'name': 'vc1', 'hostname': 'vc1.example.com', 'username': 'u', 'password': 'In-Line-Pw'}]}
    result = run_flavor(capsys, cloud=cloud, name='m1.small', vcpus=1, ram_mb=60, disk_gb=1)
    assert result['flavor'] == {'name': 'm1.small', 'vcpus': 1, 'ram_mb': 60, 'disk_gb': 1, 'extra_specs': {}}
    assert result['invocation']['module_args']['cloud']['vcenters'][0]['password'] == 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER'
    assert result['invocation']['module_args']['cloud']['registry']['lease_seconds'] == 60
    # A password from the environment is masked wherever it shows, as a no_log option's value is.
    monkeypatch.setenv('MULTIHV_VCENTER_PASSWORD', 'Env-Pw-77')
    del cloud['vcenters'][0]['password']
    result = run_flavor(capsys, cloud=cloud, name='Env-Pw-77', vcpus=1, ram_mb=60, disk_gb=1)
    assert result['flavor']['name'] == 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER' and 'Env-Pw-77' not in json.dumps(result)


# -- fence and power status commands ---------------------------------------------------------------


def test_a_fence_command_gets_a_minimal_environment_and_what_its_host_names():
    controller = {'PATH': '/usr/bin:/bin', 'HOME': '/root', 'LANG': 'C.UTF-8', 'IPMI_PASSWORD': 'Bmc-Pw',
                  'MULTIHV_VCENTER_PASSWORD': 'Vc-Pw', 'MULTIHV_REGISTRY_URL': 'postgresql://u:Reg-Pw@db/x',
                  'AWS_SECRET_ACCESS_KEY': 'Aws-Pw'}
    assert fencing.environment('kvm2', ('IPMI_PASSWORD',), controller) == {
        'PATH': '/usr/bin:/bin', 'HOME': '/root', 'LANG': 'C.UTF-8', 'IPMI_PASSWORD': 'Bmc-Pw', 'MULTIHV_NODE': 'kvm2'}
    assert fencing.environment('kvm2', (), controller) == {'PATH': '/usr/bin:/bin', 'HOME': '/root', 'LANG': 'C.UTF-8',
                                                           'MULTIHV_NODE': 'kvm2'}
    with pytest.raises(errors.MultihvError, match='node kvm2 cannot be fenced: its fence_environment names IPMI_USER, which '
                                                  'the controller\'s environment does not set; nothing was evacuated'):
        fencing.environment('kvm2', ('IPMI_PASSWORD', 'IPMI_USER'), controller)


def test_fence_and_power_status_commands_run_in_that_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('MULTIHV_VCENTER_PASSWORD', 'Vc-Pw')
    monkeypatch.setenv('MULTIHV_REGISTRY_URL', 'postgresql://u:Reg-Pw@db/x')
    monkeypatch.setenv('IPMI_PASSWORD', 'Bmc-Pw')
    seen = tmp_path / 'env'
    fencing.power_off('kvm2', "sh -c 'env > %s'" % seen, "sh -c 'env >> %s; echo off'" % seen, ('IPMI_PASSWORD',))
    lines = seen.read_text().splitlines()
    assert lines.count('IPMI_PASSWORD=Bmc-Pw') == 2 and lines.count('MULTIHV_NODE=kvm2') == 2
    assert not [line for line in lines if 'Vc-Pw' in line or 'Reg-Pw' in line]
