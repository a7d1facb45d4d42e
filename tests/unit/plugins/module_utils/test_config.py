"""The cloud file: parsing, defaults, secrets from the environment, and errors that name file and key."""

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils._errors import ConfigError

REGISTRY = {'url': 'sqlite:////tmp/r.sqlite'}
VCENTER = {'name': 'vc1', 'hostname': 'vc.example.com', 'username': 'auto@vsphere.local'}
KVM = {'name': 'kvm1', 'uri': 'qemu+tcp://10.0.0.1/system'}


def parse(data, env=None):
    return _config.parse(data, 'cloud.yml', env or {})


def test_defaults():
    cloud = parse({'vcenters': [dict(VCENTER, password='pw')], 'kvm_hosts': [KVM], 'registry': REGISTRY})
    assert cloud.defaults.allocation_ratios == {'cpu': 4.0, 'ram': 1.0, 'disk': 1.0}
    assert cloud.defaults.reserved_host_memory_mb == {'kvm': 512, 'vsphere': 0}
    vcenter = cloud.vcenters[0]
    assert (vcenter.port, vcenter.validate_certs, vcenter.clusters) == (443, True, [])
    assert vcenter.node_name('DC1', 'C1') == 'vc1/DC1/C1'
    assert cloud.kvm_hosts[0].instance_path == '/var/lib/libvirt/instances'


def test_the_lease_lifetime_is_the_registry_s_and_thirty_seconds_by_default():
    assert parse({'registry': REGISTRY}).lease_seconds == 30.0
    assert parse({'registry': dict(REGISTRY, lease_seconds=8)}).lease_seconds == 8.0


def test_password_from_environment_and_never_in_repr():
    env = {'MULTIHV_VCENTER_PASSWORD': 'all', 'MULTIHV_VCENTER_VC_2_PASSWORD': 'only-vc-2'}
    cloud = parse({'vcenters': [VCENTER, dict(VCENTER, name='vc-2')], 'registry': REGISTRY}, env)
    assert [v.password for v in cloud.vcenters] == ['all', 'only-vc-2']
    assert 'only-vc-2' not in repr(cloud)


def test_missing_password_names_the_ways_to_give_it():
    with pytest.raises(ConfigError, match=r'cloud.yml: vcenters\[0\] has no password.*MULTIHV_VCENTER_VC1_PASSWORD'):
        parse({'vcenters': [VCENTER], 'registry': REGISTRY})


def test_registry_url_from_environment():
    assert parse({}, {'MULTIHV_REGISTRY_URL': 'postgresql://db/x'}).registry_url == 'postgresql://db/x'
    with pytest.raises(ConfigError, match='registry.url is required'):
        parse({})


def test_cluster_settings_override_placement():
    vcenter = dict(VCENTER, password='p', availability_zone='legacy', aggregates=['ha'],
                   cluster_settings={'C2': {'availability_zone': 'gold', 'aggregates': ['ha', 'gold']}})
    cloud = parse({'vcenters': [vcenter], 'registry': REGISTRY})
    assert cloud.vcenters[0].placement('C1') == ('legacy', ['ha'])
    assert cloud.vcenters[0].placement('C2') == ('gold', ['ha', 'gold'])


@pytest.mark.parametrize('data, message', [
    ({'kvm_hosts': [dict(KVM, uri='http://x')]}, r'kvm_hosts\[0\].uri must be a libvirt QEMU URI'),
    ({'kvm_hosts': [dict(KVM, bogus=1)]}, r'unknown key kvm_hosts\[0\].bogus'),
    ({'kvm_hosts': [dict(KVM, instance_path='relative')]}, r'kvm_hosts\[0\].instance_path must be an absolute path'),
    ({'kvm_hosts': [{'uri': KVM['uri']}]}, r'kvm_hosts\[0\].name is required'),
    ({'kvm_hosts': [dict(KVM, power_status_command='ipmi "status')]}, r'kvm_hosts\[0\].power_status_command is not a command line'),
    ({'kvm_hosts': [dict(KVM, fence_command="ipmi 'off")]}, r'kvm_hosts\[0\].fence_command is not a command line'),
    ({'kvm_hosts': [dict(KVM, name='a b')]}, r'kvm_hosts\[0\].name must be letters'),
    ({'kvm_hosts': KVM}, r'kvm_hosts must be a list, got a mapping'),
    ({'kvm_hosts': [KVM, KVM]}, r'the name kvm1 is used twice'),
    ({'vcenters': [dict(VCENTER, password='p', port='443')]}, r'vcenters\[0\].port must be an integer, got a string'),
    ({'vcenters': [dict(VCENTER, password='p', validate_certs='no')]}, r'vcenters\[0\].validate_certs must be true or false'),
    ({'defaults': {'allocation_ratios': {'cpu': 0}}}, r'defaults.allocation_ratios.cpu must be greater than 0'),
    ({'defaults': {'allocation_ratios': {'gpu': 2}}}, r'unknown key defaults.allocation_ratios.gpu'),
    ({'registry': dict(REGISTRY, lease_seconds=2)}, r'registry.lease_seconds must be at least 6 \(a heartbeat renews'),
    ({'registry': dict(REGISTRY, lease_seconds='30')}, r'registry.lease_seconds must be a number'),
    ({'surprise': 1}, r'unknown key surprise'),
    (['not', 'a', 'mapping'], r'the file must be a mapping, got a list'),
])
def test_bad_input_names_file_key_and_expectation(data, message):
    if isinstance(data, dict):
        data.setdefault('registry', REGISTRY)
    with pytest.raises(ConfigError, match='^cloud.yml: ' + message):
        parse(data)


def test_search_order(tmp_path, monkeypatch):
    explicit = tmp_path / 'explicit.yml'
    assert _config.find(str(explicit), {'MULTIHV_CLOUD_FILE': '/env.yml'}) == str(explicit)
    assert _config.find(None, {'MULTIHV_CLOUD_FILE': '/env.yml'}) == '/env.yml'
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    (tmp_path / 'multihv-cloud.yml').write_text('registry: {url: "sqlite:////x"}\n')
    assert _config.find(None, {}) == './multihv-cloud.yml'


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match='cannot read cloud file .*missing.yml'):
        _config.load(str(tmp_path / 'missing.yml'), env={})
    bad = tmp_path / 'bad.yml'
    bad.write_text('kvm_hosts: [\n')
    with pytest.raises(ConfigError, match='cloud file .*bad.yml is not valid YAML'):
        _config.load(str(bad), env={})
    wrong = tmp_path / 'wrong.yml'
    wrong.write_text('registry: {url: "sqlite:////x"}\nkvm_hosts: [{name: k, uri: "qemu:///system", timeout: fast}]\n')
    with pytest.raises(ConfigError, match=r'wrong.yml: kvm_hosts\[0\].timeout must be a number'):
        _config.load(str(wrong), env={})


SECRET = 'S3cret-In-The-File'


@pytest.mark.parametrize('data, message', [
    ({'vcenters': [dict(VCENTER, password=7391824)]}, r'vcenters\[0\].password must be a string, got an integer$'),
    ({'vcenters': [dict(VCENTER, password=[SECRET])]}, r'vcenters\[0\].password must be a string, got a list$'),
    ({'registry': {'url': {'postgresql': SECRET}}}, r'registry.url must be a string, got a mapping$'),
    ({'kvm_hosts': [dict(KVM, fence_command="ipmitool -P %s 'off" % SECRET)]},
     r'kvm_hosts\[0\].fence_command is not a command line \(No closing quotation\)$'),
    ({'kvm_hosts': [dict(KVM, power_status_command=['ipmitool', '-P', SECRET])]},
     r'kvm_hosts\[0\].power_status_command must be a string, got a list$'),
    ({'kvm_hosts': [dict(KVM, uri='qemu+tcp://root:%s@kvm1/nowhere' % SECRET)]},
     r"kvm_hosts\[0\].uri must be a libvirt QEMU URI .* got 'qemu\+tcp://root:\*\*\*\*\*\*\*\*@kvm1/nowhere'$"),
    ({'kvm_hosts': [dict(KVM, uri='qemu+ssh://root:%s@kvm1/system' % SECRET)]},
     r"kvm_hosts\[0\].uri must not hold a password .* got 'qemu\+ssh://root:\*\*\*\*\*\*\*\*@kvm1/system'$"),
])
def test_an_error_names_a_secret_key_never_its_value(data, message):
    data.setdefault('registry', REGISTRY)
    with pytest.raises(ConfigError, match='^cloud.yml: ' + message) as caught:
        parse(data)
    assert SECRET not in str(caught.value) and '7391824' not in str(caught.value)


def test_a_yaml_error_gives_its_position_not_the_line(tmp_path):
    bad = tmp_path / 'bad.yml'
    bad.write_text('vcenters:\n  - name: vc1\n    password: %s: x\n' % SECRET)
    with pytest.raises(ConfigError, match=r'bad.yml is not valid YAML: mapping values are not allowed here at line 3, column') as caught:
        _config.load(str(bad), env={})
    assert SECRET not in str(caught.value)


def test_fence_environment_names_variables():
    cloud = parse({'kvm_hosts': [dict(KVM, fence_environment=['IPMI_PASSWORD'])], 'registry': REGISTRY})
    assert cloud.kvm_hosts[0].fence_environment == ['IPMI_PASSWORD']
    assert parse({'kvm_hosts': [KVM], 'registry': REGISTRY}).kvm_hosts[0].fence_environment == []
    with pytest.raises(ConfigError, match=r"kvm_hosts\[0\].fence_environment\[0\] must be the name of an environment variable .* got 'A=b'"):
        parse({'kvm_hosts': [dict(KVM, fence_environment=['A=b'])], 'registry': REGISTRY})
