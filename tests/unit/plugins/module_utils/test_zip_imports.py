"""A module process compiles each of the collection's files once (issue 20: zipimport compiled every file it took from
Ansible's module zip twice, once to name it and once to run it). Checked in a fresh interpreter importing the
collection's module_utils from a zip laid out as an AnsiballZ payload, counting zipimport's compilations per file."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import zipfile

import pytest

MODULE_UTILS = pathlib.Path(__file__).resolve().parents[4] / 'plugins' / 'module_utils'
PACKAGE = 'ansible_collections/multihv/cloud/plugins/module_utils'

CHILD = '''
import collections, json, sys, zipimport
compiled = collections.Counter()
def counting_compile(source, path, *args, **kwargs):
    compiled[path.split('.zip/', 1)[1]] += 1
    return compile(source, path, *args, **kwargs)
zipimport.compile = counting_compile  # zipimport's _compile_source looks compile up in its own globals first
sys.path.insert(0, ZIP)
import importlib
for name in FIRST + ['ansible_collections.multihv.cloud.plugins.module_utils._compute.nodes']:
    importlib.import_module(name)
nodes = sys.modules['ansible_collections.multihv.cloud.plugins.module_utils._compute.nodes']
print(json.dumps({'compiled': compiled, 'file': nodes.__file__, 'hooks': [h.__name__ for h in sys.path_hooks]}))
'''


@pytest.fixture(scope='module')
def payload(tmp_path_factory):
    """The collection's module_utils in a zip, as an AnsiballZ payload holds them (sources, empty package inits)."""
    path = tmp_path_factory.mktemp('ansiballz') / 'payload.zip'
    with zipfile.ZipFile(path, 'w') as zip_file:
        for depth in range(1, 6):
            zip_file.writestr('/'.join(PACKAGE.split('/')[:depth]) + '/__init__.py', '')
        for source in MODULE_UTILS.rglob('*.py'):
            zip_file.write(source, '%s/%s' % (PACKAGE, source.relative_to(MODULE_UTILS).as_posix()))
    return str(path)


def run(payload, first):
    child = 'ZIP = %r\nFIRST = %r\n' % (payload, first) + CHILD
    result = subprocess.run([sys.executable, '-I', '-c', child], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_after_args_each_file_from_the_zip_is_compiled_once(payload):
    out = run(payload, ['ansible_collections.multihv.cloud.plugins.module_utils._args'])
    compiled = out['compiled']
    before = {PACKAGE + '/__init__.py', PACKAGE + '/_args.py', PACKAGE + '/_zip_imports.py'}  # compiled before it
    ours = [path for path in compiled if path.startswith(PACKAGE + '/') and path not in before]
    assert len(ours) > 10  # the node views, the drivers' interface and capabilities, _args's own imports
    assert {path: compiled[path] for path in ours if compiled[path] != 1} == {}
    assert '.zip/%s/_compute/nodes.py' % PACKAGE in out['file']  # the module knows its file as before
    assert 'CompileOnceImporter' in out['hooks']


def test_without_it_zipimport_compiles_each_file_twice(payload):
    """The reason for _zip_imports: when a Python stops compiling twice, this fails and the importer can go."""
    out = run(payload, ['ansible_collections.multihv.cloud.plugins.module_utils._config'])
    nodes = '%s/_compute/nodes.py' % PACKAGE
    assert out['compiled'][nodes] == 2
    assert 'CompileOnceImporter' not in out['hooks']


def test_outside_a_zip_the_import_system_is_left_as_it_is():
    from ansible_collections.multihv.cloud.plugins.module_utils import _zip_imports
    hooks, cache = list(sys.path_hooks), dict(sys.path_importer_cache)
    _zip_imports.install()
    assert sys.path_hooks == hooks and sys.path_importer_cache == cache
