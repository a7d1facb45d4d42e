"""Make this checkout importable as ansible_collections.multihv.cloud.

The repo root is the collection root; a symlink tree in a temporary directory
gives Python the ansible_collections/multihv/cloud path it expects.
"""

import atexit
import os
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

# `make test` runs the integration tests on pytest-xdist workers, each on a lab and a PostgreSQL server of its
# own, so that a test that disturbs a whole lab (a host's power loss, libvirtd stopped, PostgreSQL restarted,
# lab-up again) never disturbs another worker's test. MULTIHV_LAB_DIRS and MULTIHV_TEST_POSTGRES_URLS list one
# per worker: worker gwN takes the N-th of each as MULTIHV_LAB_DIR and MULTIHV_TEST_POSTGRES_URL, here, before
# tests/support reads them. Without xdist (or without the lists) nothing changes.
_WORKER = os.environ.get('PYTEST_XDIST_WORKER')
if _WORKER:
    for _many, _one in (('MULTIHV_LAB_DIRS', 'MULTIHV_LAB_DIR'), ('MULTIHV_TEST_POSTGRES_URLS', 'MULTIHV_TEST_POSTGRES_URL')):
        _choices = os.environ.get(_many, '').split()
        if _choices:
            _index = int(_WORKER.removeprefix('gw'))
            if _index >= len(_choices):
                raise RuntimeError(f'pytest-xdist worker {_WORKER} has no entry in {_many} ({len(_choices)} listed): '
                                   'run no more workers than labs')
            os.environ[_one] = _choices[_index]
