"""Run a Python program (a kept AnsiballZ_<module>.py, or ansible-inventory) and write where its time went, by phase.

Used by fixed_cost.py; by hand: `.venv/bin/python tests/benchmarks/phases.py OUT.json PROGRAM [ARGS...]`.
It wraps builtins.__import__ and a few functions of the collection once their modules are imported, times
each call, and writes {phase: seconds} as JSON to OUT.json when the program exits. A phase's time is
exclusive (a nested phase's time is taken out of its caller's) and counted on the main thread only, so
the phases plus 'rest' add up to the program's wall time after the interpreter started; calls on worker
threads are summed apart under 'threads: <phase>' (they overlap the main thread's waiting).
Module imports happen from the AnsiballZ zip as under Ansible (compiled from source on every run).
"""

from __future__ import annotations

import builtins
import json
import runpy
import sys
import threading
import time

START = time.perf_counter()
_COLLECTION = 'ansible_collections.multihv.cloud.plugins.'
_MAIN = threading.main_thread()
_local = threading.local()
_times = {}

# (module, attribute path, phase): wrapped when the module is first imported.
TARGETS = [
    ('ansible.module_utils.basic', 'AnsibleModule.__init__', 'argument spec'),
    ('ansible.module_utils.basic', 'AnsibleModule.exit_json', 'exit_json'),
    (_COLLECTION + 'module_utils._args', 'load_cloud', 'cloud file'),
    (_COLLECTION + 'module_utils._config', 'load', 'cloud file'),
    (_COLLECTION + 'module_utils._registry.registry', 'Registry.open', 'registry open + schema check'),
    (_COLLECTION + 'module_utils._registry.registry', 'Registry.close', 'registry close'),
    (_COLLECTION + 'module_utils._drivers.kinds', 'drivers_for', 'drivers made'),
    (_COLLECTION + 'module_utils._drivers.libvirt.connection', 'HostConnection.open', 'endpoint open'),
    (_COLLECTION + 'module_utils._drivers.libvirt.connection', 'HostConnection.close', 'endpoint close'),
    (_COLLECTION + 'module_utils._drivers.vsphere.session', 'Session._login', 'endpoint open'),
    (_COLLECTION + 'module_utils._drivers.vsphere.session', 'Session.close', 'endpoint close'),
    (_COLLECTION + 'module_utils._compute.nodes', 'collect', 'node resources (endpoints)'),
    (_COLLECTION + 'module_utils._compute.leases', 'take', 'leases (fencing tokens)'),
    (_COLLECTION + 'module_utils._compute.instance_tasks', 'run', 'instance work'),
    (_COLLECTION + 'inventory.nodes', 'InventoryModule.parse', 'inventory parse'),
]
_pending = {}
for _module, _path, _phase in TARGETS:
    _pending.setdefault(_module, []).append((_path, _phase))


def _stack():
    stack = getattr(_local, 'stack', None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _enter(phase):
    _stack().append([phase, time.perf_counter(), 0.0])


def _leave():
    stack = _stack()
    phase, started, nested = stack.pop()
    total = time.perf_counter() - started
    key = phase if threading.current_thread() is _MAIN else 'threads: ' + phase
    _times[key] = _times.get(key, 0.0) + total - nested
    if stack:
        stack[-1][2] += total


def _timed(phase, function):
    def wrapper(*args, **kwargs):
        _enter(phase)
        try:
            return function(*args, **kwargs)
        finally:
            _leave()
    wrapper.__wrapped__ = function
    return wrapper


def _patch(module):
    for path, phase in _pending.pop(module.__name__, ()):
        owner = module
        *parents, name = path.split('.')
        for parent in parents:
            owner = getattr(owner, parent, None)
        if owner is None or not hasattr(owner, name):
            continue
        if isinstance(owner, type):  # the descriptor itself (a classmethod stays one), from the class that defines it
            raw = next(klass.__dict__[name] for klass in owner.__mro__ if name in klass.__dict__)
        else:
            raw = getattr(owner, name)
        if isinstance(raw, classmethod):
            setattr(owner, name, classmethod(_timed(phase, raw.__func__)))
        elif isinstance(raw, staticmethod):
            setattr(owner, name, staticmethod(_timed(phase, raw.__func__)))
        else:
            setattr(owner, name, _timed(phase, raw))


def _initializing(module):
    return getattr(getattr(module, '__spec__', None), '_initializing', False)


def _import_phase(name, globals_, level):
    if level and globals_:
        package = globals_.get('__package__') or ''
        name = package + '.' + name if name else package
    if name.startswith('ansible_collections.multihv.'):
        return 'import: multihv.cloud'
    top = name.split('.', 1)[0]
    if top == 'ansible':
        return 'import: ansible'
    if top in ('pyVmomi', 'pyVim', 'libvirt', 'libvirtmod', 'psycopg', 'yaml', 'cryptography', 'jinja2'):
        return 'import: ' + {'pyVim': 'pyVmomi', 'libvirtmod': 'libvirt'}.get(top, top)
    return 'import: other'


_real_import = builtins.__import__


def _import(name, globals=None, locals=None, fromlist=(), level=0):  # pylint: disable=redefined-builtin
    _enter(_import_phase(name, globals, level))
    try:
        return _real_import(name, globals, locals, fromlist, level)
    finally:
        _leave()
        if _pending:
            # A module is in sys.modules from the start of its execution: patch it once it has run.
            for module in [m for m in _pending if m in sys.modules and not _initializing(sys.modules[m])]:
                _patch(sys.modules[module])


def main():
    out, program = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    builtins.__import__ = _import
    try:
        runpy.run_path(program, run_name='__main__')
    except SystemExit:
        pass
    finally:
        builtins.__import__ = _real_import
        wall = time.perf_counter() - START
        main_phases = sum(v for k, v in _times.items() if not k.startswith('threads: '))
        result = dict(_times, rest=wall - main_phases, wall=wall)
        with open(out, 'w', encoding='utf-8') as handle:
            json.dump(result, handle)


if __name__ == '__main__':
    main()
