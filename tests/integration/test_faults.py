"""The fault suite: inject a fault into a running operation, run the reconciler, check the invariants
(support/invariants). The README's fault table says what each of these shows."""

from __future__ import annotations

import time

from support import invariants
from support.cloud import boot, console_log, registry_rows, wait_ticks
import pytest

from support.faults import Controller, scrub
from support.lab import ansible_module, qemu_processes, wait_for

# A killed controller's lease ends within its lifetime (30 s); the reconciler also waits until
# the interrupted work's records have been quiet for twice that (reconcile.SETTLE_SECONDS).
SETTLED_AFTER = 62


@pytest.fixture(autouse=True)
def scrubbed(lab, tmp_path):
    yield
    scrub(lab, tmp_path)


def reconcile(cloud, **args):
    return ansible_module('multihv.cloud.reconcile', dict(cloud, **args))


def url(tmp_path):
    return f'sqlite:///{tmp_path}/registry.sqlite'


def test_controller_killed_mid_boot(lab, cloud, tmp_path):
    run = Controller(tmp_path, 'multihv.cloud.instance', dict(cloud, name='kill-boot', flavor='tiny', image='tick', node='kvm1'),
                     pause='_compute.instances:spawn_in_state:after').paused()
    (inst_uuid, state), = registry_rows(tmp_path, "SELECT uuid, state FROM instances WHERE name = 'kill-boot'")
    assert state == 'building'
    run.kill()
    killed = time.monotonic()
    assert qemu_processes('kill-boot'), 'the VM was not running when the controller died'
    early = reconcile(cloud)
    assert not [a for a in early['actions'] if a['uuid'] == inst_uuid], 'the reconciler acted before the work settled'
    time.sleep(max(0, SETTLED_AFTER - (time.monotonic() - killed)))
    result = reconcile(cloud)
    assert [(a['kind'], a['uuid']) for a in result['actions']] == [('build', inst_uuid)]
    assert registry_rows(tmp_path, "SELECT state FROM instances WHERE name = 'kill-boot'") == [('error',)]
    invariants.assert_hold(lab, url(tmp_path))
    assert reconcile(cloud)['changed'] is False
