"""Faults for the fault suite: a controller (ansible-playbook running one module task) that is killed
with SIGKILL, with its whole process group, as AWX loses a job's pod; optionally paused first at an
exact step by the test-only hook in support/fault_hook (see its sitecustomize)."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import time

from support.lab import REPO, wait_for

HOOK = pathlib.Path(__file__).resolve().parent / 'fault_hook'
MODULE_UTILS = 'ansible_collections.multihv.cloud.plugins.module_utils.'


class Controller:
    """One ansible-playbook run of `module` with `args`, started in a session of its own."""

    def __init__(self, tmp_path: pathlib.Path, module: str, args: dict, pause: str | None = None, name: str = 'run'):
        self.mark = tmp_path / f'{name}.paused'
        playbook = tmp_path / f'{name}.yml'
        playbook.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': [{module: args}]}]))
        env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK='default')
        if pause:
            env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(HOOK), env.get('PYTHONPATH')])),
                       MULTIHV_TEST_PAUSE=MODULE_UTILS + pause, MULTIHV_TEST_PAUSE_MARK=str(self.mark))
        self.log = tmp_path / f'{name}.log'
        with open(self.log, 'w', encoding='utf-8') as out:
            self.process = subprocess.Popen(['ansible-playbook', '-i', 'localhost,', '-c', 'local', str(playbook)], cwd=REPO,
                                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.started = time.monotonic()

    def paused(self, timeout: float = 120):
        """Wait until the hook paused the module at its step (fail if the run ended first)."""
        def there():
            if self.process.poll() is not None:
                raise AssertionError(f'the run ended before it reached its pause:\n{self.output()}')
            return self.mark.exists()
        wait_for(there, timeout, f'the controller to pause ({self.mark.name})')
        return self

    def kill(self):
        """SIGKILL the controller and every process it started (the module's Python too)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def wait(self, timeout: float = 600) -> int:
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors='replace')[-4000:]
