"""What the inventory benchmarks share: the collection they measure and the environment of an
ansible-inventory run."""

from __future__ import annotations

import os
import shutil

from support import REPO


def snapshot_collection(tmp):
    """ANSIBLE_COLLECTIONS_PATH holding a copy of this checkout's plugins/ and meta/, so that edits made while the
    benchmark runs (or a concurrent `make install`) cannot change what is measured."""
    root = tmp / 'collections'
    dest = root / 'ansible_collections' / 'multihv' / 'cloud'
    dest.mkdir(parents=True)
    for name in ('plugins', 'meta'):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    shutil.copy2(REPO / 'galaxy.yml', dest / 'galaxy.yml')
    return root


def child_env(tmp, collections_path):
    """The environment of an ansible-inventory run: none of the caller's ANSIBLE_* or MULTIHV_* settings, a private
    ANSIBLE_HOME, collections only from `collections_path` (and the interpreter's site-packages), failures as errors."""
    env = dict((key, value) for key, value in os.environ.items() if not key.startswith(('ANSIBLE_', 'MULTIHV_')))
    env.update({
        'ANSIBLE_HOME': str(tmp / 'ansible-home'),
        'ANSIBLE_COLLECTIONS_PATH': str(collections_path),
        'ANSIBLE_NOCOLOR': '1',
        'ANSIBLE_INVENTORY_UNPARSED_FAILED': '1',
        'ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED': '1',
    })
    return env
