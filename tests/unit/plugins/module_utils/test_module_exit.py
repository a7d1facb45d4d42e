"""A module process skips the interpreter's final garbage collection (issue 20: _args.session registers gc.freeze at
exit, which took 0.15-0.3 s of a compute_node_info run before): checked in a fresh interpreter, as a module runs."""

from __future__ import annotations

import os
import subprocess
import sys

import ansible_collections

CHILD = '''
import atexit, gc
# Registered first, so run last (atexit is LIFO): what the interpreter's final collection would see.
atexit.register(lambda: print('frozen at exit: %d' % gc.get_freeze_count()))
from ansible_collections.multihv.cloud.plugins.module_utils import _args
if MODE == 'session':
    _args._skip_final_collection()
    _args._skip_final_collection()  # a second session in one process registers nothing more
    print('exit handlers: %d' % __import__('atexit')._ncallbacks())
'''


def run(mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(p) for p in ansible_collections.__path__] + [os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, '-c', 'MODE = %r\n' % mode + CHILD], env=env, capture_output=True, text=True, check=True).stdout


def test_a_module_run_freezes_what_is_alive_at_exit_once():
    out = run('session')
    assert 'exit handlers: 2' in out  # the test's own handler and one gc.freeze
    frozen = int(out.split('frozen at exit: ')[1].split()[0])
    assert frozen > 1000  # every object alive at exit: the final collection has nothing to walk


def test_without_a_module_run_nothing_is_frozen():
    assert 'frozen at exit: 0' in run('none')
