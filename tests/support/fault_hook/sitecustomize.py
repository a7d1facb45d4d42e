"""A test-only injection point, loaded into the module's Python process through PYTHONPATH (the
collection's code knows nothing of it). MULTIHV_TEST_PAUSE names a function of the collection as
`module:Qualified.name` with `:before` or `:after`; when a call of it is reached, the file named by
MULTIHV_TEST_PAUSE_MARK is written and the process sleeps, so that the test kills the controller
exactly there (between two steps of an operation), or lets it go on after injecting a fault of its own.
With MULTIHV_TEST_PAUSE_SECONDS the process goes on by itself after that long (a slow step, to widen a race
window). Nothing happens when MULTIHV_TEST_PAUSE is unset."""

import importlib.abc
import os
import sys
import time

SPEC = os.environ.get('MULTIHV_TEST_PAUSE')


def _pause(mark):
    """Write mark, then wait until the test writes mark.go (it lets the run go on: Controller.resume),
    kills the process (Controller.kill) or MULTIHV_TEST_PAUSE_SECONDS (ten minutes) have passed."""
    with open(mark, 'w', encoding='utf-8') as out:
        out.write('%d\n' % os.getpid())
    deadline = time.monotonic() + float(os.environ.get('MULTIHV_TEST_PAUSE_SECONDS') or 600)
    while not os.path.exists(mark + '.go') and time.monotonic() < deadline:
        time.sleep(0.05)


def _wrap(function, when, mark):
    def paused(*args, **kwargs):
        if when == 'before':
            _pause(mark)
        result = function(*args, **kwargs)
        if when == 'after':
            _pause(mark)
        return result
    return paused


class _PatchingLoader(importlib.abc.Loader):
    """Runs the module with its own loader, then wraps the named function."""

    def __init__(self, loader, patcher):
        self.loader, self.patcher = loader, patcher

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        owner, name = module, self.patcher.qualname
        while '.' in name:
            head, name = name.split('.', 1)
            owner = getattr(owner, head)
        setattr(owner, name, _wrap(getattr(owner, name), self.patcher.when, self.patcher.mark))


class _Patcher(importlib.abc.MetaPathFinder):
    """Finds the named module through the other finders and patches it once it is loaded."""

    def __init__(self, module, qualname, when, mark):
        self.module, self.qualname, self.when, self.mark = module, qualname, when, mark

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, self)  # the finder's loader serves other modules too
                return spec
        return None


if SPEC:
    _module, _qualname, _when = SPEC.split(':')
    sys.meta_path.insert(0, _Patcher(_module, _qualname, _when, os.environ['MULTIHV_TEST_PAUSE_MARK']))
