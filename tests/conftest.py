"""Make this checkout importable as ansible_collections.multihv.cloud.

The repo root is the collection root; a symlink tree in a temporary directory
gives Python the ansible_collections/multihv/cloud path it expects.
"""

import atexit
import pathlib
import shutil
import sys
import tempfile

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_TREE = pathlib.Path(tempfile.mkdtemp(prefix='multihv-collections-'))
(_TREE / 'ansible_collections' / 'multihv').mkdir(parents=True)
(_TREE / 'ansible_collections' / 'multihv' / 'cloud').symlink_to(_ROOT)
atexit.register(shutil.rmtree, _TREE, True)
sys.path.insert(0, str(_TREE))
