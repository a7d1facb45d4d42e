"""Bad input through real Ansible runs, against a registry of each test's own (no hypervisor needed: the
cloud is given inline with only its registry): each is refused with a message that says what was wrong,
before anything is done, and a batch returns its failures."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.lab import ansible_module


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    return {'cloud': {'registry': {'url': f'sqlite:///{tmp_path}/registry.sqlite'}}}


def with_catalog(cloud):
    """The cloud with flavor small and image tick in its registry."""
    with Registry.open(cloud['cloud']['registry']['url']) as registry:
        registry.set_flavor('small', vcpus=1, ram_mb=64, disk_gb=1)
        registry.set_image('tick', hypervisor_type='kvm')
    return cloud


def test_a_number_for_allocation_ratios_gets_a_validation_message(cloud, tmp_path):
    result = ansible_module('multihv.cloud.compute_node', dict(cloud, name='kvm1', allocation_ratios=2), expect_failure=True)
    assert "argument 'allocation_ratios' is of type int and we were unable to convert to dict" in result['msg']
    assert 'not iterable' not in result['_output'] and 'Traceback' not in result['_output']
    assert not (tmp_path / 'registry.sqlite').exists()


@pytest.mark.parametrize('module, args, message', [
    ('instance', {'name': 'a', 'flavor': 'small', 'image': 'tick', 'concurrency': 0},
     'concurrency must be at least 1, got 0; nothing was changed'),
    ('instance', {'name': 'a', 'flavor': 'small', 'image': 'tick', 'node': 'nosuch'},
     'node nosuch is not in the cloud file; nothing was created'),
    ('instance_ha', {'concurrency': 0}, 'concurrency must be at least 1, got 0; no node was looked at'),
    ('instance_ha', {'grace_period': -1}, 'grace_period must be at least 0, got -1; no node was looked at'),
])
def test_bounds_and_unknown_nodes_are_refused(cloud, module, args, message):
    result = ansible_module('multihv.cloud.' + module, dict(with_catalog(cloud), **args), expect_failure=True)
    assert result['msg'] == message
    with Registry.open(cloud['cloud']['registry']['url']) as registry:
        assert (registry.list_instances(), registry.list_nodes()) == ([], [])


def test_a_batch_refused_whole_returns_failures_and_instances(cloud):
    batch = [{'name': 'a', 'node': 'nosuch'}, {'name': 'b', 'flavor': 'huge'}]
    result = ansible_module('multihv.cloud.instance', dict(with_catalog(cloud), instances=batch, flavor='small', image='tick'),
                            expect_failure=True)
    assert result['instances'] == [] and result['changed'] is False
    assert result['failures'] == [{'name': 'a', 'msg': 'node nosuch is not in the cloud file; nothing was created'},
                                  {'name': 'b', 'msg': 'flavor huge does not exist; nothing was created'}]
    assert result['msg'].startswith('2 of 2 instances could not be booted: a: node nosuch is not in the cloud file')
