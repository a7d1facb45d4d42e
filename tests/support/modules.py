"""Run a module's main() in-process with given options and read its JSON result, on every ansible-core the
collection admits: ansible.module_utils.testing.patch_module_args came with 2.19; before it, modules read their
options from basic._ANSIBLE_ARGS."""

from __future__ import annotations

import contextlib
import json

import pytest
from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    patch_module_args = None


@contextlib.contextmanager
def _module_args(args):
    if patch_module_args is not None:
        with patch_module_args(args):
            yield
        return
    saved = basic._ANSIBLE_ARGS
    basic._ANSIBLE_ARGS = json.dumps({'ANSIBLE_MODULE_ARGS': args}).encode()
    try:
        yield
    finally:
        basic._ANSIBLE_ARGS = saved


def run_module(capsys, module, args):
    """module.main() with args (check mode and diff as _ansible_check_mode / _ansible_diff); its result."""
    with _module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)
