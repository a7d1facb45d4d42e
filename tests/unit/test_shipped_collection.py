"""What `ansible-galaxy collection build` ships: the product, and none of the test equipment.

The lab (its role, playbook, vCenter simulator launcher in Go, the scripts that make host namespaces
and kill their processes, the guest image maker), the demo and the tests live in this repository
under tests/ and never reach a user who installs the collection from Galaxy. The build is made from
this checkout with the ansible-galaxy of the virtualenv (or the one on PATH)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tarfile

import pytest
from support import REPO


# What the product is made of: a user installing the collection gets at least these.
PRODUCT = (
    'MANIFEST.json', 'FILES.json', 'README.md', 'LICENSE', 'meta/runtime.yml', 'meta/execution-environment.yml',
    'requirements.txt', 'bindep.txt',
    'plugins/modules/instance.py', 'plugins/modules/compute_node.py', 'plugins/inventory/nodes.py',
    'plugins/module_utils/_config.py', 'plugins/doc_fragments/cloud.py',
    'roles/controller/tasks/main.yml', 'roles/kvm_host/tasks/main.yml', 'roles/kvm_host/meta/argument_specs.yml',
    'roles/vsphere_cluster/tasks/main.yml',
    'playbooks/site.yml', 'playbooks/boot.yml', 'playbooks/drain_node.yml', 'playbooks/evacuate_node.yml',
    'playbooks/instance_ha.yml', 'playbooks/reconcile.yml', 'plugins/modules/reconcile.py',
    'extensions/eda/plugins/event_source/node_events.py', 'extensions/eda/rulebooks/instance_ha.yml',
    'docs/awx.md', 'docs/eda.md',
)

# Test equipment, by path (glob patterns on the member's path in the tarball).
EQUIPMENT = (
    'tests', 'tests/*',                              # the suite, the lab, the demo, benchmarks
    'roles/lab', 'roles/lab/*',                      # the lab role where it used to be
    'playbooks/lab.yml', 'playbooks/demo.yml',       # the lab and demo playbooks where they used to be
    'extensions/molecule', 'extensions/molecule/*',  # Molecule scenarios
    '*.go', '*/vcsim', '*/vcsim/*',                  # the vCenter simulator launcher and its build
    '*kvm-host', '*vcsim-ctl', '*vcsim-template',    # host namespaces, killing their processes
    '*build-image.sh', '*tick.asm',                  # the guest image maker
    '.lab', '.lab/*', '.venv', '.venv/*', '.build', '.build/*', '.ci', '.ci/*',
    'Makefile', 'pytest.ini', 'requirements-dev.txt', '.gitignore',
    '*.tar.gz', '*__pycache__*', '*.pyc',
)

# What only the lab's own code says: a shipped file that says it carries lab code, or runs the lab by the
# role, playbook or path it had in the collection (docs may name tests/lab/..., the lab's place in the repo).
LAB_WORDS = re.compile(r'unshare|nsenter|package main|govmomi/simulator|multihv\.cloud\.(lab|demo)\b'
                       r'|(?<![\w./-])(roles/lab|playbooks/(lab|demo)\.yml)\b')


def ansible_galaxy() -> str:
    venv = REPO / '.venv' / 'bin' / 'ansible-galaxy'
    found = shutil.which('ansible-galaxy') or (str(venv) if venv.is_file() else None)
    if not found:
        pytest.fail('ansible-galaxy is neither on PATH nor in .venv/bin: run `make deps`')
    return found


@pytest.fixture(scope='module')
def tarball(tmp_path_factory) -> tarfile.TarFile:
    out = tmp_path_factory.mktemp('build')
    result = subprocess.run([ansible_galaxy(), 'collection', 'build', '--output-path', str(out), str(REPO)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f'ansible-galaxy collection build failed:\n{result.stdout}\n{result.stderr}'
    built = list(out.glob('multihv-cloud-*.tar.gz'))
    assert len(built) == 1, (built, result.stdout)
    with tarfile.open(built[0]) as tar:
        yield tar


@pytest.fixture(scope='module')
def members(tarball) -> dict[str, tarfile.TarInfo]:
    return {m.name.removeprefix('./').rstrip('/'): m for m in tarball.getmembers()}


def test_the_product_is_shipped(members):
    missing = [path for path in PRODUCT if path not in members or not members[path].isfile()]
    assert not missing, f'the built collection lacks {missing}'


def test_no_test_equipment_is_shipped(members):
    shipped = sorted(name for name in members if any(fnmatch.fnmatchcase(name, pattern) for pattern in EQUIPMENT))
    assert not shipped, f'the built collection ships test equipment: {shipped}'


def test_no_shipped_file_carries_or_runs_the_lab(tarball, members):
    offenders = []
    for name, member in sorted(members.items()):
        if not member.isfile():
            continue
        text = tarball.extractfile(member).read().decode('utf-8', errors='replace')
        offenders += [f'{name}: {word}' for word in sorted({found.group() for found in LAB_WORDS.finditer(text)})]
    assert not offenders, f'shipped files with lab code or lab references: {offenders}'


def test_the_license_is_the_gpl_3_text(tarball, members):
    manifest = json.loads(tarball.extractfile(members['MANIFEST.json']).read())
    assert manifest['collection_info']['license'] == ['GPL-3.0-or-later']
    shipped = tarball.extractfile(members['LICENSE']).read()
    assert shipped == (REPO / 'LICENSE').read_bytes()
    text = shipped.decode()
    assert text.lstrip().startswith('GNU GENERAL PUBLIC LICENSE') and 'Version 3, 29 June 2007' in text
    assert 'END OF TERMS AND CONDITIONS' in text and 'How to Apply These Terms to Your New Programs' in text
