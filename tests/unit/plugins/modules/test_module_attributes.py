"""Each module's `attributes` (check_mode, diff_mode, idempotent) as ansible-doc shows them: the shared fragment only
says what an attribute means, every module says its own support (community.general's way), and what a module claims
matches what its code does."""

from __future__ import annotations

import ast

import pytest
import yaml

from ansible_collections.multihv.cloud.plugins.doc_fragments.cloud import ModuleDocFragment
from support import REPO

MODULES = sorted((REPO / 'plugins' / 'modules').glob('*.py'))
SUPPORT = ('full', 'partial', 'none', 'N/A')
FRAGMENT_PREFIX = 'multihv.cloud.cloud'


def documentation(path):
    """(DOCUMENTATION as data, the module's source)."""
    source = path.read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == 'DOCUMENTATION':
            return yaml.safe_load(node.value.value), source
    raise AssertionError('%s has no DOCUMENTATION' % path.name)


def attributes(doc):
    """The attributes as ansible-doc merges them: a fragment's keys first, the module's win (as plugin_docs.merge_fragment)."""
    merged = {}
    for name in doc.get('extends_documentation_fragment', []):
        if not name.startswith(FRAGMENT_PREFIX + '.'):
            continue
        fragment = yaml.safe_load(getattr(ModuleDocFragment, name.rsplit('.', 1)[1].upper()))
        for key, value in (fragment.get('attributes') or {}).items():
            merged.setdefault(key, {}).update(value)
    for key, value in (doc.get('attributes') or {}).items():
        merged.setdefault(key, {}).update(value)
    return merged


def test_the_shared_fragment_says_what_attributes_mean_and_claims_no_support():
    shared = yaml.safe_load(ModuleDocFragment.ATTRIBUTES)['attributes']
    assert sorted(shared) == ['check_mode', 'diff_mode', 'idempotent']
    assert all('support' not in value and value['description'] for value in shared.values())
    assert not hasattr(ModuleDocFragment, 'ACTION'), 'the fragment that claimed full diff support for every module is back'


@pytest.mark.parametrize('path', MODULES, ids=[p.stem for p in MODULES])
def test_every_module_says_its_own_support_and_its_code_matches(path):
    doc, source = documentation(path)
    attrs = attributes(doc)
    assert FRAGMENT_PREFIX + '.attributes' in doc['extends_documentation_fragment']
    for key in ('check_mode', 'diff_mode', 'idempotent'):
        assert attrs.get(key, {}).get('support') in SUPPORT, '%s: %s has no support level' % (path.stem, key)
        assert attrs[key].get('description'), '%s: %s is not described' % (path.stem, key)
        if attrs[key]['support'] == 'partial':
            assert attrs[key].get('details'), '%s: partial %s without details' % (path.stem, key)
    # The words of the old shared fragment, true of compute_node only.
    if path.stem != 'compute_node':
        assert "node's admin state" not in yaml.safe_dump(attrs), path.stem
    supports_check = 'supports_check_mode=True' in source or '_args.run_evacuation(' in source  # run_evacuation: it does
    assert supports_check == (attrs['check_mode']['support'] != 'none'), path.stem
    # A module that claims diff support builds a diff: through _args.exit_with, or itself when diff mode is on.
    builds_diff = 'exit_with(' in source or 'module._diff' in source
    assert builds_diff == (attrs['diff_mode']['support'] in ('full', 'partial')), path.stem
    if path.stem.endswith('_info'):
        assert (attrs['check_mode']['support'], attrs['diff_mode']['support']) == ('full', 'N/A')
