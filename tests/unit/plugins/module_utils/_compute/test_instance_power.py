"""instance state started / stopped asks the hypervisor, not the registry (issue 14 §3): after a host
lost power and came back, a VM recorded running but shut off is started, in check mode too."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from support.fake_driver import FakeCloud, FakeWorld


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    world = FakeWorld()
    world.add_node('fake1')
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tick')
        yield cloud


def task(cloud, state, check_mode=False):
    return instance_tasks.run(cloud.context(), {'name': 'vm1', 'state': state}, check_mode)


def test_started_starts_a_vm_the_registry_says_runs_but_that_is_shut_off(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.world.power_loss('fake1')
    cloud.world.answer_again('fake1')
    assert cloud.registry.get_instance(name='vm1').state == 'running'
    assert task(cloud, 'started', check_mode=True)['changed'] is True
    assert cloud.world.vm('vm1').power == 'stopped'  # check mode started nothing
    assert task(cloud, 'started')['changed'] is True
    assert cloud.world.vm('vm1').power == 'running'
    assert task(cloud, 'started')['changed'] is False


def test_stopped_on_a_vm_already_off_corrects_the_record_without_a_power_call(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.world.vm('vm1').power = 'stopped'
    calls = len(cloud.world.calls)
    result = task(cloud, 'stopped')
    assert (result['changed'], result['instance']['state']) == (True, 'stopped')
    assert ('fake1', 'set_power') not in cloud.world.calls[calls:]
    assert task(cloud, 'stopped')['changed'] is False


def test_a_vm_missing_from_its_node_is_an_error_that_says_so(cloud):
    record = cloud.boot('vm1', node='fake1')
    del cloud.world.vms[('fake1', record.uuid)]
    with pytest.raises(errors.NotFound, match='node fake1 has no VM of instance vm1'):
        _instances.set_power(cloud.context(), record, 'started')
