"""Event-Driven Ansible against the lab: ansible-rulebook (its rules engine on Java 17) runs the
collection's node_events source and instance_ha rulebook by their collection names, from the
collection installed where ANSIBLE_COLLECTIONS_PATH points (`make install`). kvm2 loses power;
nothing but the rulebook rebuilds its HA instance on kvm1.

Hosts fail and come back through the lab playbook (tests/lab/lab.yml, Lab.host_action), as `make lab-fail`
and `make lab-restore` do; neither installs the collection again under the running rulebook.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from support.cloud import boot, bring_back, console_log, domain_active, domains, registry_rows, wait_ticks
from support.lab import REPO, serial

FAILED_HOST, OTHER_HOST = 'kvm2', 'kvm1'


class Rulebook:
    """One ansible-rulebook process for a test, its output in a file; killed with its children at the end."""

    def __init__(self, tmp_path: pathlib.Path, rulebook: str, variables: dict, env: dict):
        self.dir = tmp_path / 'eda'
        self.dir.mkdir()
        (self.dir / 'inventory.yml').write_text(yaml.safe_dump({'all': {'hosts': {'localhost': {'ansible_connection': 'local'}}}}))
        (self.dir / 'vars.yml').write_text(yaml.safe_dump(variables))
        self.log = self.dir / 'ansible-rulebook.log'
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get('PATH', '')])
        # ansible-runner gives ansible-playbook a terminal: no colours in the log the test reads.
        self.env = dict(os.environ, PATH=path, ANSIBLE_NOCOLOR='1', **env)
        command = shutil.which('ansible-rulebook', path=path)
        if command is None:
            pytest.fail('ansible-rulebook is not installed: pip install -r requirements-dev.txt')
        if shutil.which('java', path=path) is None:
            pytest.fail('ansible-rulebook needs Java 17: install the packages bindep.txt lists (openjdk-17-jre-headless)')
        self.cmd = [command, '--rulebook', rulebook, '-i', str(self.dir / 'inventory.yml'), '--vars', str(self.dir / 'vars.yml'), '-v']
        self.proc = None

    def start(self):
        with open(self.log, 'wb') as out:
            # Its own session: ansible-rulebook starts ansible-runner and ansible-playbook, all stopped together.
            self.proc = subprocess.Popen(self.cmd, cwd=self.dir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors='replace') if self.log.exists() else ''

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.5):
        """Poll until predicate() is truthy while ansible-rulebook runs; fail with its output otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f'ansible-rulebook exited {self.proc.returncode} while waiting for {what}:\n{self.output()[-6000:]}')
            if time.monotonic() > deadline:
                pytest.fail(f'timed out after {timeout} s waiting for {what}; ansible-rulebook said:\n{self.output()[-6000:]}')
            time.sleep(interval)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        # What the group left behind (ansible-runner's children may outlive the leader briefly).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def rulebook(tmp_path, cloud, name, **variables):
    """ansible-rulebook running `name` against the test's cloud (cloud file and registry from the environment, as
    AWX injects them), stopped at the end whatever happens."""
    rb = Rulebook(tmp_path, name, variables, {'MULTIHV_CLOUD_FILE': cloud['cloud_file'], 'MULTIHV_REGISTRY_URL': cloud['registry_url']})
    rb.start()
    try:
        yield rb
    finally:
        rb.stop()


def test_the_source_sends_node_down_and_node_up(lab, cloud, tmp_path):
    watch = tmp_path / 'watch.yml'
    watch.write_text(yaml.safe_dump([{
        'name': 'Watch the nodes',
        'hosts': 'localhost',
        'sources': [{'multihv.cloud.node_events': {'interval': '{{ interval }}', 'emit_initial': True}}],
        'rules': [{'name': 'Every node event', 'condition': 'event.multihv is defined', 'action': {'print_event': {'pretty': False}}}],
    }], sort_keys=False))
    with rulebook(tmp_path, cloud, str(watch), interval=1) as rb:
        rb.wait(lambda: f"'event': 'node_up', 'node': '{FAILED_HOST}'" in rb.output(), 120, f'the initial node_up of {FAILED_HOST}')
        assert "'initial': True" in rb.output()
        with lab.power_loss(FAILED_HOST):
            rb.wait(lambda: f"'event': 'node_down', 'node': '{FAILED_HOST}'" in rb.output(), 60, f'node_down {FAILED_HOST}')
        rb.wait(lambda: rb.output().count(f"'event': 'node_up', 'node': '{FAILED_HOST}'") == 2, 60, f'node_up {FAILED_HOST}')
    out = rb.output()
    down = next(line for line in out.splitlines() if f"'event': 'node_down', 'node': '{FAILED_HOST}'" in line)
    assert "'hypervisor_type': 'kvm'" in down and "'initial': False" in down and 'did not answer' in down
    assert f"'event': 'node_down', 'node': '{OTHER_HOST}'" not in out


def test_the_rulebook_rebuilds_the_ha_instances_of_a_failed_host(lab, cloud, tmp_path):
    record = boot(cloud, 'eda-ha', node=FAILED_HOST, ha=True, restart_priority=10)
    boot(cloud, 'eda-not-ha', node=FAILED_HOST)
    log = console_log(lab, record)
    wait_ticks(log, count=3)

    # The rulebook by its collection name: its source, its playbook and the module come from the installed collection.
    brought_back = False
    try:
        # The lab hosts write storage heartbeats: the passes wait until the failed host's last one is heartbeat_timeout old.
        with rulebook(tmp_path, cloud, 'multihv.cloud.instance_ha', interval=1, grace_period=3, heartbeat_timeout=5) as rb:
            # The first read of the nodes is done (the rulebook sends the initial states, which start nothing when up).
            rb.wait(lambda: f'node_events: node_up {FAILED_HOST}' in rb.output(), 120, 'the first read of the nodes')
            with lab.power_loss(FAILED_HOST):
                rb.wait(lambda: registry_rows(tmp_path, "SELECT node FROM instances WHERE name = 'eda-ha'") == [(OTHER_HOST,)],
                        240, f'eda-ha recorded on {OTHER_HOST}')
                rb.wait(lambda: 'eda-ha' in domains(lab, OTHER_HOST) and domain_active(lab, OTHER_HOST, 'eda-ha'), 60,
                        f'eda-ha running on {OTHER_HOST}')
                rb.wait(lambda: 'PLAY RECAP' in rb.output(), 60, 'the end of the playbook')
                # It runs there: its shared disk booted again.
                rb.wait(lambda: len(serial(log)) == 2 and serial(log)[-1].ticks, 60, 'the restart of eda-ha')
            rb.wait(lambda: f'{FAILED_HOST} answers again' in rb.output(), 60, f'the node_up of {FAILED_HOST}')
        out = rb.output()
        assert f'node_events: node_down {FAILED_HOST}' in out
        summary = out[out.index('TASK [Show what the HA pass did'):]
        assert '"recovered": {' in summary and '"eda-ha": "kvm1"' in summary, summary[:3000]
        assert 'admin_password' not in out
        assert dict(registry_rows(tmp_path, 'SELECT name, node FROM instances')) == {'eda-ha': OTHER_HOST, 'eda-not-ha': FAILED_HOST}
        assert registry_rows(tmp_path, f"SELECT forced_down FROM nodes WHERE name = '{FAILED_HOST}'") == [(1,)]
        assert registry_rows(tmp_path, 'SELECT migration_type, source_node, dest_node FROM migrations') == [
            ('evacuation', FAILED_HOST, OTHER_HOST)]

        # Back in service by hand: the stale copy on the failed host goes first.
        back = bring_back(cloud, FAILED_HOST)
        brought_back = True
        assert 'eda-ha' in [c['name'] for c in back['cleaned']]
        assert 'eda-ha' not in domains(lab, FAILED_HOST) and domain_active(lab, OTHER_HOST, 'eda-ha')
    finally:
        if not brought_back:  # whatever failed, the lab host keeps no stale copy for the next test
            with contextlib.suppress(BaseException):
                lab.host_action('restore', FAILED_HOST)
                bring_back(cloud, FAILED_HOST)


def test_the_collection_ships_the_eda_content():
    """What ansible-rulebook looks for in an installed collection is in the build (nothing in galaxy.yml leaves it out)."""
    root = pathlib.Path(os.environ.get('ANSIBLE_COLLECTIONS_PATH', REPO / '.build' / 'collections').split(os.pathsep)[0])
    installed = root / 'ansible_collections' / 'multihv' / 'cloud'
    for path in ('extensions/eda/plugins/event_source/node_events.py', 'extensions/eda/rulebooks/instance_ha.yml',
                 'playbooks/instance_ha.yml'):
        assert (installed / path).read_bytes() == (REPO / path).read_bytes(), f'{installed / path} is not this checkout\'s: make install'
