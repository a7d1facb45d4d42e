"""Per-instance cost and concurrency (issue 20), on fake hypervisors and a real registry: a list of instances is
deleted with the task's concurrency; a boot checks an image already in place without the image's exclusive lease
(placing a missing one still takes it); a node whose probe gave no answer in time is asked again before it counts
as down, and a refusal says that it did not answer within its timeout."""

from __future__ import annotations

import threading

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from support.fake_driver import FakeDriver, two_node_cloud

# A wait no correct run comes near: the barrier below breaks after it only when deletions run one at a time.
MEET_WITHIN = 20


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    with two_node_cloud(tmp_path) as made:
        yield made


def delete_task(cloud, names, concurrency):
    return instance_tasks.run(cloud.context(), {'instances': [{'name': n} for n in names], 'state': 'absent',
                                                'concurrency': concurrency}, False)


def test_a_list_of_instances_is_deleted_with_the_tasks_concurrency(cloud, monkeypatch):
    names = ['vm%d' % index for index in range(4)]
    for name in names:
        cloud.boot(name)
    meet = threading.Barrier(2, timeout=MEET_WITHIN)
    real_destroy = FakeDriver.destroy

    def destroy_in_pairs(driver, uuid, node, destroy_disks=True):
        meet.wait()  # two deletions must be under way at once, or this breaks (one at a time never meets)
        return real_destroy(driver, uuid, node, destroy_disks)

    monkeypatch.setattr(FakeDriver, 'destroy', destroy_in_pairs)
    result = delete_task(cloud, names, concurrency=2)
    assert result['changed'] is True and result['failures'] == []
    assert cloud.world.placed() == {} and cloud.nodes_of() == {} and cloud.allocations() == []


def test_deletions_that_fail_are_named_together_and_the_others_are_done(cloud):
    names = ['vm%d' % index for index in range(4)]
    for name in names:
        cloud.boot(name)
    # vm1 and vm2 are on nodes that stop answering; the others on the one that answers are deleted.
    on = dict((name, cloud.world.vm(name).node) for name in names)
    dead = [n for n in names if on[n] == on['vm1']]
    cloud.world.stop_answering(on['vm1'])
    with pytest.raises(errors.MultihvError, match=r'^%d of 4 instances could not be deleted \(the others were\): %s: '
                       % (len(dead), dead[0])) as caught:
        delete_task(cloud, names, concurrency=4)
    assert all(name in str(caught.value) for name in dead)
    assert sorted(cloud.nodes_of()) == dead


def test_a_boot_checks_an_image_already_on_its_node_without_the_images_lease(cloud):
    cloud.boot('first', node='fake1')  # places tick on fake1
    # Another run holds the image's lease (it places the image elsewhere, say): a boot from the image already
    # in place on fake1 does not wait for it.
    assert cloud.registry.take_lease('image:tick', 'another run (image upload)', 300) is not None
    uploads = list(cloud.world.uploads)
    record = _instances.boot_one(cloud.context(timeout=1), {'name': 'second', 'flavor': 'small', 'image': 'tick', 'node': 'fake1'})
    assert record.state == 'running' and cloud.world.uploads == uploads


def test_placing_an_image_missing_on_a_node_still_takes_the_images_lease(cloud):
    cloud.boot('first', node='fake1')
    assert cloud.registry.take_lease('image:tick', 'another run (image upload)', 300) is not None
    with pytest.raises(errors.LeaseHeld, match='lease image:tick is held by another run'):
        _instances.boot_one(cloud.context(timeout=1), {'name': 'second', 'flavor': 'small', 'image': 'tick', 'node': 'fake2'})
    assert ('fake2', 'tick') not in cloud.world.uploads and 'second' not in cloud.nodes_of()


def slow_probe(endpoints, times):
    """A FakeDriver.get_nodes whose endpoints named give no answer in time the first `times` times they are asked."""
    left = dict((endpoint, times) for endpoint in endpoints)
    real = FakeDriver.get_nodes

    def get_nodes(driver):
        name = driver.endpoint_name()
        if left.get(name):
            left[name] -= 1
            raise errors.NoAnswer('fake endpoint %s did not answer within 2 s' % name)
        return real(driver)
    return get_nodes


def test_a_probe_that_did_not_answer_in_time_is_asked_again_before_the_node_counts_as_down(cloud, monkeypatch):
    monkeypatch.setattr(FakeDriver, 'get_nodes', slow_probe(['fake1', 'fake2'], times=1))
    record = cloud.boot('vm1')
    assert record.state == 'running' and cloud.world.vm('vm1') is not None


def test_a_boot_refused_because_nodes_never_answered_says_they_did_not_answer_within_the_timeout(cloud, monkeypatch):
    monkeypatch.setattr(FakeDriver, 'get_nodes', slow_probe(['fake1', 'fake2'], times=100))
    with pytest.raises(errors.MultihvError) as caught:
        cloud.boot('vm1')
    message = str(caught.value)
    assert 'ComputeFilter removed fake1 (down: fake endpoint fake1 did not answer within 2 s (asked 2 times))' in message
    assert 'fake2 (down: fake endpoint fake2 did not answer within 2 s (asked 2 times))' in message
    assert cloud.nodes_of() == {}


def test_a_refusal_is_not_asked_again(cloud):
    cloud.world.stop_answering('fake1')
    calls = len(cloud.world.calls)
    cloud.context().views()
    assert cloud.world.calls[calls:].count(('fake1', 'get_nodes')) == 1
