"""Bad input refused with a clear message before anything is done, on fake hypervisors and a real registry:
concurrency and grace_period bounds (instance, evacuate, instance_ha), an unknown node as migrate words it,
a batch whose instances are refused (failures, not only a message), and options with suboptions given a value
of the wrong kind (ansible-core's own validation, not a TypeError)."""

from __future__ import annotations

import re

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.multihv.cloud.plugins.module_utils import _argspec
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from support.fake_driver import two_node_cloud


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    with two_node_cloud(tmp_path) as made:
        yield made


def task(cloud, check_mode=False, **params):
    """One instance task with the module's defaults."""
    options = dict.fromkeys(_instance_tasks.PER_INSTANCE + ('name', 'instances'))
    options.update(state='present', storage='local', update_password='on_create', ha=False, restart_priority=0, concurrency=4)
    options.update(params)
    return _instance_tasks.run(cloud.context(), options, check_mode)


def registry_rows(cloud):
    """Every row of the tables a task could write, to show that nothing was."""
    return ([i.as_dict() for i in cloud.registry.list_instances()], cloud.registry.list_allocations(), cloud.registry.list_nodes())


@pytest.mark.parametrize('params', [{'name': 'a'}, {'instances': [{'name': 'a'}, {'name': 'b'}]}])
@pytest.mark.parametrize('concurrency', [0, -1])
def test_instance_refuses_a_concurrency_below_one_and_boots_nothing(cloud, params, concurrency):
    with pytest.raises(errors.MultihvError) as caught:
        task(cloud, flavor='small', image='tick', concurrency=concurrency, **params)
    assert str(caught.value) == 'concurrency must be at least 1, got %d; nothing was changed' % concurrency
    assert cloud.world.vms == {} and registry_rows(cloud) == ([], [], [])


def test_evacuate_and_instance_ha_refuse_bad_bounds_before_looking_at_a_node(cloud):
    cloud.boot('ha-one', node='fake1', ha=True)
    cloud.world.power_loss('fake1')
    before, calls = registry_rows(cloud), len(cloud.world.calls)
    with pytest.raises(errors.MultihvError, match=r'^concurrency must be at least 1, got 0; nothing was evacuated$'):
        _evacuation.evacuate(cloud.context(), 'fake1', concurrency=0)
    with pytest.raises(errors.MultihvError, match=r'^concurrency must be at least 1, got 0; no node was looked at$'):
        _instance_ha.run_pass(cloud.context(), grace_period=0, concurrency=0)
    with pytest.raises(errors.MultihvError, match=r'^grace_period must be at least 0, got -5; no node was looked at$'):
        _instance_ha.run_pass(cloud.context(), grace_period=-5)
    assert registry_rows(cloud) == before and len(cloud.world.calls) == calls  # no down_since, no fence, no probe


def test_an_unknown_node_is_refused_in_the_words_of_migrate(cloud):
    with pytest.raises(errors.NotFound) as booted:
        task(cloud, name='a', flavor='small', image='tick', node='nosuch')
    assert str(booted.value) == 'node nosuch is not in the cloud file; nothing was created'
    with pytest.raises(errors.NotFound) as checked:
        task(cloud, check_mode=True, name='a', flavor='small', image='tick', node='nosuch')
    assert str(checked.value) == str(booted.value)
    cloud.boot('b', node='fake1')
    with pytest.raises(errors.NotFound) as moved:
        _migrations.migrate(cloud.context(), 'b', target_node='nosuch')
    assert str(moved.value).startswith('node nosuch is not in the cloud file; ')
    assert cloud.nodes_of() == {'b': 'fake1'}


@pytest.mark.parametrize('check_mode', [False, True])
def test_a_batch_whose_instances_are_all_refused_returns_its_failures(cloud, check_mode):
    result = task(cloud, check_mode, flavor='small', instances=[
        {'name': 'a', 'node': 'nosuch', 'image': 'tick'}, {'name': 'b', 'flavor': 'huge', 'image': 'tick'}, {'name': 'c'}])
    assert result['changed'] is False and result['instances'] == []
    assert result['failures'] == [
        {'name': 'c', 'msg': 'instance c does not exist: image is required to boot it; nothing was changed'},
        {'name': 'a', 'msg': 'node nosuch is not in the cloud file; nothing was created'},
        {'name': 'b', 'msg': 'flavor huge does not exist; nothing was created'}]
    assert cloud.world.vms == {} and registry_rows(cloud) == ([], [], [])


def test_a_batch_boots_the_instances_its_plan_does_not_refuse(cloud):
    cloud.flavor('big', vcpus=64)
    result = task(cloud, instances=[{'name': 'a'}, {'name': 'b', 'flavor': 'big'}, {'name': 'c'}], flavor='small', image='tick')
    assert result['changed'] is True and [i['name'] for i in result['instances']] == ['a', 'c']
    assert [(f['name'], f['msg'].split(':')[0]) for f in result['failures']] == [('b', 'cannot place instance b')]
    assert sorted(cloud.world.placed()) == ['a', 'c'] and sorted(cloud.nodes_of()) == ['a', 'c']

    checked = task(cloud, check_mode=True, instances=[{'name': 'a'}, {'name': 'b', 'flavor': 'big'}, {'name': 'd'}],
                   flavor='small', image='tick')
    assert checked['changed'] is True and [f['name'] for f in checked['failures']] == ['b']
    assert [i['name'] for i in checked['instances']] == ['a', 'd'] and checked['instances'][1]['state'] == 'would be built'


# ---------------------------------------------------------------- options with suboptions

SPEC = {
    'allocation_ratios': {'type': 'dict', 'options': {'cpu': {'type': 'float'}, 'ram': {'type': 'float'}}},
    'ha': {'type': 'dict', 'options': {'enabled': {'type': 'bool'},
                                       'admission_control': {'type': 'dict', 'options': {'failover_level': {'type': 'int'}}}}},
    'networks': {'type': 'list', 'elements': 'dict', 'options': {'network': {'type': 'str', 'required': True},
                                                                 'qos': {'type': 'dict', 'options': {'rate': {'type': 'int'}}}}},
}


@pytest.mark.parametrize('params, message', [
    ({'allocation_ratios': 2}, "argument 'allocation_ratios' is of type int and we were unable to convert to dict"),
    ({'allocation_ratios': True}, "argument 'allocation_ratios' is of type bool and we were unable to convert to dict"),
    ({'allocation_ratios': [1.5]}, "argument 'allocation_ratios' is of type list and we were unable to convert to dict"),
    ({'ha': {'admission_control': 3}}, "argument 'admission_control' is of type int found in 'ha'. and we were unable to convert to dict"),
    ({'networks': [{'network': 'a'}, {'network': 'b', 'qos': 7}]},
     "argument 'qos' is of type int found in 'networks'. and we were unable to convert to dict"),
])
def test_a_value_that_is_no_mapping_gets_ansibles_own_type_error(params, message):
    with pytest.raises(TypeError, match='is not iterable'):  # ansible-core as it is, with the spec unguarded
        ArgumentSpecValidator(SPEC).validate(params)
    result = ArgumentSpecValidator(_argspec.guarded(SPEC, params)).validate(params)
    # ansible-core before 2.19 names the type as "<class 'int'>"
    assert message in re.sub(r"<class '(\w+)'>", r'\1', ' '.join(result.error_messages))


def test_well_formed_values_keep_every_check_of_their_suboptions():
    params = {'allocation_ratios': {'cpu': 'x'}, 'ha': {'admission_control': {'failover_level': 'two'}}, 'networks': [{}]}
    assert _argspec.guarded(SPEC, params) == SPEC
    errors_ = ' '.join(ArgumentSpecValidator(_argspec.guarded(SPEC, params)).validate(params).error_messages)
    assert "argument 'cpu' is of type" in errors_ and "argument 'failover_level' is of type" in errors_
    assert 'missing required arguments: network' in errors_
