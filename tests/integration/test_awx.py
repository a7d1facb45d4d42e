"""AWX support, run the way AWX runs it (docs/awx.md).

The multihv.cloud credential type (docs/awx/credential_type.yml) is validated and rendered as AWX does
(Jinja2 in a sandbox over the credential's inputs, the file injector written under the job's env/,
`tower.filename` its path). With its environment, ansible-runner runs an inventory update of
docs/awx/inventory/nodes.multihv.yml and a job of the boot job template (docs/awx/job_templates.yml: its
project wrapper, its survey answers as AWX turns them into extra variables, the inventory update's output as
the job's inventory). The cloud file carries no secret: the registry URL (PostgreSQL, with a password) and the
vCenter password reach the collection through the credential's environment only, and appear in none of the
files the runs leave behind but ansible-runner's own records of that environment.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import stat
import tempfile
import urllib.parse
import uuid

import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from support.lab import REPO, ansible_module, run
from support.registries import PG_URL, private_url, query

AWX = REPO / 'docs' / 'awx'
# What AWX shows instead of a secret input (awx.main.constants.HIDDEN_PASSWORD).
HIDDEN = '**********'


def load(name):
    return yaml.safe_load((AWX / name).read_text())


# -- AWX's handling of a custom credential type -------------------------------------------------


class _Namespace:
    """AWX's `tower` namespace of the injector templates (tower.filename, tower.filename.<name>)."""


def awx_validate(credential_type):
    """What AWX checks when the credential type is created (CredentialTypeInputField / InjectorField)."""
    assert credential_type['kind'] in ('cloud', 'net'), 'custom credential types are of kind cloud or net'
    fields = credential_type['inputs']['fields']
    ids = [field['id'] for field in fields]
    assert len(set(ids)) == len(ids) and 'tower' not in ids
    for field in fields:
        assert re.fullmatch(r'[a-zA-Z_]+[a-zA-Z0-9_]*', field['id']) and field.get('label')
        assert set(field) <= {'id', 'label', 'type', 'help_text', 'multiline', 'secret', 'ask_at_runtime', 'default', 'format', 'choices'}
        if field.get('type', 'string') != 'string':
            assert not {'choices', 'multiline', 'format', 'secret'} & set(field)
    assert set(credential_type['inputs'].get('required', [])) <= set(ids)
    injectors = credential_type['injectors']
    assert set(injectors) <= {'file', 'env', 'extra_vars'}
    tower = _Namespace()
    files = list(injectors.get('file', {}))
    assert all(re.fullmatch(r'template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?', label) for label in files)
    if 'template' in files:
        assert len(files) == 1, 'one unnamed file injector, or named ones only'
        tower.filename = 'EXAMPLE_FILENAME'
    elif files:
        tower.filename = _Namespace()
        for label in files:
            setattr(tower.filename, label.split('.', 1)[1], 'EXAMPLE_FILENAME')
    namespace = dict({i: 'EXAMPLE' for i in ids}, tower=tower)
    strict = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    for kind, templates in injectors.items():
        for key, template in templates.items():
            strict.from_string(template).render(namespace)  # an undefined field or a bad template raises
            if kind == 'env':
                assert re.fullmatch(r'[a-zA-Z_]+[a-zA-Z0-9_]*', key) and not key.startswith('ANSIBLE_') and template.isascii()


def awx_inject(credential_type, inputs, private_data_dir):
    """(env, safe_env) of one credential as AWX's CredentialType.inject_credential makes them: inputs that are empty
    are left out of the template namespace, secret ones are hidden in safe_env (what AWX stores as the job's
    environment), file injectors are written in private_data_dir/env and named by tower.filename."""
    secret = {field['id'] for field in credential_type['inputs']['fields'] if field.get('secret')}
    tower = _Namespace()
    namespace, safe = {'tower': tower}, {'tower': tower}
    for key, value in inputs.items():
        if key in secret:
            safe[key] = HIDDEN
        elif value:
            safe[key] = value
        if value:
            namespace[key] = value
    sandbox = ImmutableSandboxedEnvironment()
    (private_data_dir / 'env').mkdir(parents=True, exist_ok=True)
    for label, template in credential_type['injectors'].get('file', {}).items():
        handle, path = tempfile.mkstemp(dir=private_data_dir / 'env')
        with os.fdopen(handle, 'w') as out:
            out.write(sandbox.from_string(template).render(**namespace))
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        if '.' not in label:
            tower.filename = path
        else:
            if not hasattr(tower, 'filename'):
                tower.filename = _Namespace()
            setattr(tower.filename, label.split('.', 1)[1], path)
    env, safe_env = {}, {}
    for key, template in credential_type['injectors'].get('env', {}).items():
        env[key] = sandbox.from_string(template).render(**namespace)
        safe_env[key] = sandbox.from_string(template).render(**safe)
    return env, safe_env


def survey_extra_vars(template, answers):
    """The extra variables of a job launched from the template with these survey answers: the template's own,
    then each answer, or the question's default (AWX passes a textarea or text answer as one string)."""
    extra_vars = dict(template.get('extra_vars') or {})
    for question in template['survey_spec']['spec']:
        variable = question['variable']
        if variable in answers:
            extra_vars[variable] = answers[variable]
        elif 'default' in question:
            extra_vars[variable] = question['default']
        else:
            assert not question['required'], f'the survey needs an answer for {variable}'
    return extra_vars


def files_with_secrets(root, secrets, envvars, injected):
    """Files under root that hold one of the secrets, leaving out ansible-runner's own records of the environment
    it was given: env/envvars (the envvars argument as JSON, unless suppress_env_files, which AWX sets) and
    artifacts/<ident>/command (command line, cwd and the whole process environment), checked to hold them only
    as values of the variables the credential injected."""
    found = []
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
        text = path.read_text(errors='replace')
        if not any(secret in text for secret in secrets):
            continue
        relative = path.relative_to(root)
        if relative == pathlib.Path('env', 'envvars'):
            assert json.loads(text) == envvars
        elif relative.parts[0] == 'artifacts' and relative.name == 'command':
            record = json.loads(text)
            rest = json.dumps([record['command'], record['cwd'], {k: v for k, v in record['env'].items() if k not in injected}])
            assert not any(secret in rest for secret in secrets), f'{relative} has a secret outside the injected variables'
        else:
            found.append(str(relative))
    return found


def remove_image_files(lab, image):
    """The image's base files in the lab hosts' storage pools: state=absent removes the image's record only."""
    for host in lab.hosts:
        conn = lab.connect(host)
        try:
            for pool in conn.listAllStoragePools():
                pool.refresh(0)
                for volume in pool.listAllVolumes():
                    if volume.name().startswith(image + '.'):
                        volume.delete(0)
        finally:
            conn.close()


# -- the definitions themselves, no lab needed --------------------------------------------------


def test_credential_types_are_valid_and_name_what_the_collection_reads(tmp_path):
    main = load('credential_type.yml')
    awx_validate(main)
    env, safe_env = awx_inject(main, {'cloud_file': 'kvm_hosts: []\n', 'registry_url': 'postgresql://u:pw-1@db/x',
                                      'vcenter_password': 'pw-2'}, tmp_path)
    assert not any('pw-' in value for value in safe_env.values()), 'a secret input is not marked secret: true'
    # The cloud file may hold a fence command's BMC password: AWX must store it encrypted and never show it.
    assert all(field.get('secret') for field in main['inputs']['fields']), 'an input of the credential is not secret'
    cloud_file = next(value for value in env.values() if value.startswith(str(tmp_path / 'env')))
    assert pathlib.Path(cloud_file).read_text() == 'kvm_hosts: []\n'
    assert _config.find(env=env) == cloud_file
    cloud = _config.parse({'vcenters': [{'name': 'vc1', 'hostname': 'vc1.example.com', 'username': 'u'}]}, env=env)
    assert cloud.registry_url == 'postgresql://u:pw-1@db/x' and cloud.vcenters[0].password == 'pw-2'

    one = load('credential_type_vcenter.yml')
    awx_validate(one)
    env, safe_env = awx_inject(one, {'password': 'pw-3'}, tmp_path)
    (variable,) = list(env)
    name = re.fullmatch(r'MULTIHV_VCENTER_(\w+)_PASSWORD', variable).group(1).lower()
    cloud = _config.parse({'vcenters': [{'name': name, 'hostname': 'h', 'username': 'u', 'password': 'in-file'}],
                           'registry': {'url': 'sqlite:////x'}}, env=dict(env, MULTIHV_VCENTER_PASSWORD='other'))
    assert cloud.vcenters[0].password == 'pw-3' and safe_env[variable] == HIDDEN


def test_job_templates_match_the_project_and_the_playbooks():
    for template in load('job_templates.yml')['multihv_job_templates']:
        wrapper = yaml.safe_load((AWX / template['playbook']).read_text())
        assert len(wrapper) == 1 and set(wrapper[0]) == {'ansible.builtin.import_playbook'}, template['name']
        collection_playbook = wrapper[0]['ansible.builtin.import_playbook']
        plays = yaml.safe_load((REPO / 'playbooks' / (collection_playbook.split('.')[-1] + '.yml')).read_text())
        variables = {name for play in plays for name in play.get('vars') or {}}
        asked = set(template.get('extra_vars') or {})
        asked |= {q['variable'] for q in (template.get('survey_spec') or {}).get('spec', [])}
        assert asked <= variables, f"{template['name']}: {sorted(asked - variables)} are not variables of {collection_playbook}"
        assert template.get('survey_enabled', False) is bool(template.get('survey_spec')), template['name']


def test_execution_environment_build_context(tmp_path):
    from bindep.depends import Depends  # pylint: disable=import-outside-toplevel
    context = tmp_path / 'context'
    run('ansible-builder', 'create', '--file', str(AWX / 'execution-environment.yml'), '--context', str(context),
        '--output-filename', 'Containerfile')
    containerfile = (context / 'Containerfile').read_text()
    definition = load('execution-environment.yml')
    assert f'ARG EE_BASE_IMAGE="{definition["images"]["base_image"]["name"]}"' in containerfile
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core>=2.19,<2.20 ansible-runner>=2.4,<2.5"' in containerfile
    assert (context / '_build' / 'requirements.txt').read_text() == (REPO / 'requirements.txt').read_text()
    bindep = (context / '_build' / 'bindep.txt').read_text()
    assert bindep == (REPO / 'bindep.txt').read_text()
    # What the builder stage asks bindep for: the final image gets the default profile, the builder stage `compile`.
    depends = Depends(bindep)
    for platform in (['platform:rpm', 'platform:redhat', 'platform:centos'], ['platform:dpkg', 'platform:debian']):
        final = {rule[0] for rule in depends.active_rules(platform + ['default'])}
        builder = {rule[0] for rule in depends.active_rules(platform + ['compile'])}
        assert final and final < builder, platform
        assert not final & {'gcc', 'libvirt-devel', 'libvirt-dev', 'pkgconf-pkg-config', 'pkg-config'}, final
        lab_and_test = {rule[0] for rule in depends.active_rules(platform + ['lab', 'test'])} - final
        assert not (final | builder) & lab_and_test, platform


# -- against the lab ----------------------------------------------------------------------------


@pytest.fixture
def registry_url(tmp_path):
    """A PostgreSQL registry of this test's own, its URL carrying a password (the server trusts loopback)."""
    if not PG_URL:
        pytest.skip('MULTIHV_TEST_POSTGRES_URL unset: run through `make test`')
    for url in private_url('postgresql', tmp_path, 'awx_test'):
        parts = urllib.parse.urlsplit(url)
        netloc = f'{parts.username or "postgres"}:awx-{uuid.uuid4().hex}@{parts.hostname}:{parts.port or 5432}'
        yield urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def test_job_and_inventory_update_through_ansible_runner(lab, registry_url, tmp_path, monkeypatch):
    import ansible_runner  # pylint: disable=import-outside-toplevel
    # Nothing but the credential may give the collection its cloud file, registry or passwords.
    for key in [k for k in os.environ if k.startswith('MULTIHV_') and k not in ('MULTIHV_LAB_DIR', 'MULTIHV_TEST_POSTGRES_URL')]:
        monkeypatch.delenv(key)
    # The lab's cloud file less its secrets: the vCenter password and the registry.
    lab_cloud = yaml.safe_load((lab.dir / 'multihv-cloud.yml').read_text())
    (vcenter_password,) = sorted({vcenter.pop('password') for vcenter in lab_cloud['vcenters']})
    lab_cloud.pop('registry')
    secrets = (vcenter_password, urllib.parse.urlsplit(registry_url).password)
    cloud_file = yaml.safe_dump(lab_cloud)
    assert not any(secret in cloud_file for secret in secrets)

    credential_type = load('credential_type.yml')
    inputs = {'cloud_file': cloud_file, 'registry_url': registry_url, 'vcenter_password': vcenter_password}
    base_env = {'ANSIBLE_COLLECTIONS_PATH': os.environ['ANSIBLE_COLLECTIONS_PATH'], 'PATH': os.environ['PATH'],
                # AWX's inventory updates fail when the source cannot be parsed (STANDARD_INVENTORY_UPDATE_ENV).
                'ANSIBLE_INVENTORY_UNPARSED_FAILED': 'True', 'ANSIBLE_NOCOLOR': '1'}

    def inventory_update(name, credential_inputs):
        """ansible-inventory as AWX runs it for a source from a project: (rc, its JSON or None, output)."""
        private = tmp_path / name
        shutil.copytree(AWX / 'inventory', private / 'project' / 'inventory')
        injected, safe_env = awx_inject(credential_type, credential_inputs, private)
        assert not any(secret in json.dumps(safe_env) for secret in secrets)
        env = dict(injected, **base_env)
        source, output = private / 'project' / 'inventory' / 'nodes.multihv.yml', private / 'artifacts' / 'output.json'
        output.parent.mkdir(parents=True)
        response, error, rc = ansible_runner.run_command(
            executable_cmd='ansible-inventory', private_data_dir=str(private), envvars=env, quiet=True, timeout=120,
            cmdline_args=['--list', '--export', '-i', str(source), '--playbook-dir', str(source.parent), '--output', str(output)])
        assert files_with_secrets(private, secrets, env, injected) == []
        return rc, (json.loads(output.read_text()) if rc == 0 else None), f'{response}\n{error}'

    rc, inventory, said = inventory_update('inventory_update', inputs)
    assert rc == 0, said[-3000:]
    nodes = inventory['_meta']['hostvars']
    vsphere, up = set(inventory['hypervisor_vsphere']['hosts']), set(inventory['state_up']['hosts'])
    assert len(vsphere) == lab.info['vcsim']['clusters'] * lab.info['vcsim']['datacenters'] and vsphere <= up
    assert set(inventory['hypervisor_kvm']['hosts']) == set(lab.hosts)
    # The source's compose: a plain boolean AWX can use as the enabled variable.
    assert nodes['kvm1']['multihv_schedulable'] is True and 'kvm1' in inventory['schedulable']['hosts']

    rc, without, said = inventory_update('inventory_update_without_password', dict(inputs, vcenter_password=''))
    assert (rc != 0 and 'has no password' in said) or not set(without.get('hypervisor_vsphere', {}).get('hosts', [])) & set(
        without.get('state_up', {}).get('hosts', [])), 'the vSphere nodes were up without the injected password'

    # The job: flavor and image first, in the test's registry, then the boot job template's job.
    suffix = uuid.uuid4().hex[:8]
    flavor, image, instance = f'awx-tiny-{suffix}', f'awx-tick-{suffix}', f'awx-{suffix}'
    setup = {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': registry_url}
    template = next(t for t in load('job_templates.yml')['multihv_job_templates'] if t['playbook'] == 'boot.yml')
    job = tmp_path / 'job'
    (job / 'project').mkdir(parents=True)
    shutil.copy(AWX / template['playbook'], job / 'project')
    # AWX gives a job its inventory as a script that prints what the inventory update imported.
    (job / 'inventory').mkdir()
    script = job / 'inventory' / 'hosts'
    script.write_text('#! /usr/bin/env python3\nprint(%r)\n' % json.dumps(inventory))
    script.chmod(0o700)
    injected, _safe_env = awx_inject(credential_type, inputs, job)
    env = dict(injected, **base_env)
    # A survey's textarea answer is one string.
    extra_vars = survey_extra_vars(template, {'multihv_instances': instance, 'multihv_flavor': flavor, 'multihv_image': image})
    try:
        ansible_module('multihv.cloud.flavor', dict(setup, name=flavor, vcpus=1, ram_mb=32, disk_gb=1))
        ansible_module('multihv.cloud.image', dict(setup, name=image, hypervisor_type='kvm', source=lab.info['images']['tick_qcow2']))
        result = ansible_runner.run(private_data_dir=str(job), playbook=template['playbook'], inventory=str(script),
                                    envvars=env, extravars=extra_vars, ident='1', quiet=True, timeout=300)
        stdout = (job / 'artifacts' / '1' / 'stdout').read_text(errors='replace')
        assert (result.status, result.rc) == ('successful', 0), stdout[-4000:]
        booted = next(e['event_data']['res'] for e in result.events
                      if e['event'] == 'runner_on_ok' and e['event_data'].get('task') == 'Boot the instances')
        assert [i['name'] for i in booted['instances']] == [instance], booted
        record = booted['instances'][0]
        assert record['node'] in lab.hosts
        conn = lab.connect(record['node'])
        try:
            domain = conn.lookupByUUIDString(record['uuid'])
            assert domain.name() == instance and domain.isActive() == 1
        finally:
            conn.close()
        assert files_with_secrets(job, secrets, env, injected) == []
    finally:
        # Whatever the job booted goes, whatever it was called.
        for (name,) in query(registry_url, 'SELECT name FROM instances'):
            ansible_module('multihv.cloud.instance', dict(setup, name=name, state='absent'))
        remove_image_files(lab, image)
