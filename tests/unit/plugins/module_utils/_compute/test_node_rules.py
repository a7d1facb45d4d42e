"""Per-VM HA overrides and server groups as node rules (issue 18 §3, §4), the orchestration on fake hypervisors and a real
SQLite registry: when the core syncs a node (once per node a task changed: a boot, a batch, a delete, new ha settings,
a migration, a drain), what it asks for (from the registry), that a failed or contradicted sync is a warning and leaves
the instance and its claim, that the reconciler's rules step puts it right, that check mode syncs nothing, and that
nodes without the capability are never asked."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._compute import node_rules as _node_rules
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import Capabilities
from support.fake_driver import FakeCloud, FakeWorld
from support.reconciling import run, second_pass_does_nothing


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """Two fake clusters c1 and c2 of one vCenter-like endpoint (they keep rules), a fake KVM-like node kvm (it keeps
    none); flavor small, images tmpl (clusters) and tick (kvm); groups apart (anti-affinity) and together (soft-affinity)."""
    world = FakeWorld()
    world.add_cluster('c1', hosts=3)
    world.add_cluster('c2', hosts=3)
    world.add_node('kvm')
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.image('tmpl', hypervisor_type='fakecluster', template='tmpl')
        made.image('tick')
        made.registry.set_server_group('apart', 'soft-anti-affinity')
        made.registry.set_server_group('together', 'soft-affinity')
        yield made


def task(cloud, check_mode=False, **params):
    """One instance task with the module's defaults (ha and restart_priority: not given)."""
    options = dict.fromkeys(_instance_tasks.PER_INSTANCE + ('name', 'instances'))
    options.update(state='present', storage='local', update_password='on_create', concurrency=4, image='tmpl', flavor='small')
    options.update(params)
    return _instance_tasks.run(cloud.context(), options, check_mode)


def syncs(cloud):
    return [call for call in cloud.world.calls if call[1] == 'sync_node_rules']


def test_a_boot_on_a_cluster_sets_its_override_from_ha_and_restart_priority(cloud):
    result = task(cloud, name='db-1', node='c1', ha=True, restart_priority=2)
    assert result['changed'] and 'warnings' not in result
    task(cloud, name='web-1', node='c1')  # ha and restart_priority not given: false and 0
    assert cloud.world.rules_on('c1') == ({'db-1': (True, 2), 'web-1': (False, 0)}, {})
    assert len(syncs(cloud)) == 2  # one per task (one node each)


def test_a_batch_syncs_each_node_once_and_a_group_of_two_on_one_node_becomes_a_rule(cloud):
    result = task(cloud, instances=[{'name': 'a-%d' % i, 'node': 'c1'} for i in range(3)] + [{'name': 'b-1', 'node': 'c2'}],
                  server_group='apart')
    assert result['failures'] == [] and 'warnings' not in result
    assert cloud.world.rules_on('c1')[1] == {'multihv-apart': ('anti-affinity', ['a-0', 'a-1', 'a-2'])}
    assert cloud.world.rules_on('c2')[1] == {}  # one member there: no rule
    assert sorted(syncs(cloud)) == [('vc', 'sync_node_rules')] * 2  # c1 and c2, once each, not once per instance


def test_members_going_edit_the_rule_and_the_last_but_one_removes_it(cloud):
    task(cloud, instances=[{'name': 'a-%d' % i} for i in range(3)], node='c1', server_group='together')
    assert cloud.world.rules_on('c1')[1] == {'multihv-together': ('affinity', ['a-0', 'a-1', 'a-2'])}
    task(cloud, name='a-0', state='absent')
    assert cloud.world.rules_on('c1') == ({'a-1': (False, 0), 'a-2': (False, 0)}, {'multihv-together': ('affinity', ['a-1', 'a-2'])})
    task(cloud, name='a-1', state='absent')
    assert cloud.world.rules_on('c1') == ({'a-2': (False, 0)}, {})


def test_new_ha_settings_of_an_existing_instance_are_recorded_and_synced_and_check_mode_changes_nothing(cloud):
    task(cloud, name='db-1', node='c1')
    before = len(syncs(cloud))
    checked = task(cloud, check_mode=True, name='db-1', ha=True, restart_priority=1)
    assert checked['changed'] is True and (checked['instance']['ha'], checked['instance']['restart_priority']) == (True, 1)
    record = cloud.registry.get_instance(name='db-1')
    assert (record.ha, record.restart_priority, len(syncs(cloud))) == (False, 0, before)

    result = task(cloud, name='db-1', ha=True, restart_priority=1)
    assert result['changed'] is True and (result['diff']['before']['ha'], result['diff']['after']['ha']) == (False, True)
    record = cloud.registry.get_instance(name='db-1')
    assert (record.ha, record.restart_priority) == (True, 1)
    assert cloud.world.rules_on('c1')[0] == {'db-1': (True, 1)}

    again = task(cloud, name='db-1', ha=True)  # the same: nothing changes, nothing is synced
    assert again['changed'] is False and len(syncs(cloud)) == before + 1
    kept = task(cloud, name='db-1')  # left out: kept
    assert kept['changed'] is False and cloud.registry.get_instance(name='db-1').ha is True


def test_a_migration_between_clusters_moves_the_override_and_the_rule(cloud):
    task(cloud, instances=[{'name': 'a-0'}, {'name': 'a-1'}], node='c1', server_group='together', ha=True)
    result = _migrations.migrate(cloud.context(), 'a-1', target_node='c2')
    assert result['instance']['node'] == 'c2' and 'warnings' not in result
    assert cloud.world.rules_on('c1') == ({'a-0': (True, 0)}, {})
    assert cloud.world.rules_on('c2') == ({'a-1': (True, 0)}, {})


def test_a_drain_syncs_its_node_and_each_target_once(cloud):
    task(cloud, instances=[{'name': 'a-%d' % i} for i in range(3)], node='c1', server_group='apart')
    before = len(syncs(cloud))
    result = _migrations.drain(cloud.context(), 'c1')
    assert result['failures'] == [] and [m['dest_node'] for m in result['migrations']] == ['c2'] * 3
    assert len(syncs(cloud)) == before + 2
    assert cloud.world.rules_on('c1') == ({}, {})
    assert cloud.world.rules_on('c2')[1] == {'multihv-apart': ('anti-affinity', ['a-0', 'a-1', 'a-2'])}


def test_a_failed_sync_is_a_warning_the_instance_stands_and_the_reconciler_sets_it(cloud):
    cloud.world.fail_rules('c1', errors.Unreachable('fake vCenter did not answer'))
    result = task(cloud, name='db-1', node='c1', ha=True)
    assert result['instance']['state'] == 'running'
    assert result['warnings'] == ['the HA overrides and DRS rules of node c1 were not brought up to date: fake vCenter did not '
                                  'answer; multihv.cloud.reconcile (or the next task that changes an instance there) sets them']
    assert cloud.allocations() == [('db-1', 'c1')] and cloud.world.rules_on('c1') == ({}, {})

    planned = run(cloud, check_mode=True)
    assert [(a['kind'], a['node']) for a in planned['actions']] == [('rules', 'c1')]
    assert cloud.world.rules_on('c1') == ({}, {})  # check mode: planned only
    done = run(cloud)
    assert [(a['kind'], a['node'], a['does']) for a in done['actions']] == [('rules', 'c1', 'set them (one reconfiguration)')]
    assert 'instance db-1: ha True, restart priority 0' in done['actions'][0]['found']
    assert cloud.world.rules_on('c1') == ({'db-1': (True, 0)}, {})
    second_pass_does_nothing(cloud)


def test_a_rule_that_contradicts_a_foreign_one_is_refused_and_nothing_of_the_node_changes(cloud):
    task(cloud, instances=[{'name': 'a-0'}, {'name': 'a-1'}], node='c1', server_group='together')
    rules = cloud.world.rules_on('c1')
    cloud.world.add_foreign_rule('c1', 'keep-apart', 'anti-affinity', ['a-0', 'a-1'])
    result = task(cloud, name='a-2', node='c1', server_group='together')
    assert result['instance']['state'] == 'running'  # the boot stands
    (warning,) = result['warnings']
    assert 'rule multihv-together (affinity) contradicts rule keep-apart (anti-affinity); nothing was changed' in warning
    assert cloud.world.rules_on('c1') == rules  # a-2 got no override either: nothing of c1 changed
    failed = run(cloud)
    assert [(f['kind'], f['node']) for f in failed['failures']] == [('rules', 'c1')] and 'keep-apart' in failed['failures'][0]['error']


def test_nodes_without_the_capability_are_never_asked(cloud, tmp_path):
    result = task(cloud, name='cattle', node='kvm', image='tick', ha=True, server_group='apart')
    assert result['changed'] and 'warnings' not in result and syncs(cloud) == []
    assert _node_rules.sync(cloud.context(), 'kvm') is None
    world = FakeWorld()
    world.add_node('kvm1')
    (tmp_path / 'kvm-only').mkdir()
    with FakeCloud(world, tmp_path / 'kvm-only') as only:
        only.flavor('small')
        only.image('tick')
        only.boot('cattle', ha=True)
        assert run(only)['actions'] == [] and syncs(only) == []  # a cloud without such nodes: no I/O for the step either
    assert Capabilities(hypervisor_type='x', label='x', node_noun='x').node_rules is False  # a driver says so, or it keeps none


def test_an_instance_without_a_vm_is_skipped_and_one_being_built_is_left_to_its_run(cloud):
    task(cloud, name='db-1', node='c1')
    cloud.registry.create_instance(name='lost', node='c1', storage='local', image='tmpl', flavor='small', server_group='apart',
                                   state='error')
    building = cloud.registry.create_instance(name='half', node='c1', storage='local', image='tmpl', flavor='small', state='building')
    cloud.world.add_foreign_vm('c1', 'half', uuid=building.uuid).marked = True  # its VM is there, the boot not done
    done = _node_rules.sync(cloud.context(), 'c1')
    assert done.skipped == ['instance lost: no VM of it on the node yet'] and done.changes == []


def test_what_the_registry_asks_of_a_node(cloud):
    task(cloud, instances=[{'name': 'a-0', 'ha': True, 'restart_priority': -1}, {'name': 'a-1'}], node='c1', server_group='apart')
    task(cloud, name='solo', node='c1')
    instances, groups = _node_rules.wanted(cloud.registry, 'c1')
    assert sorted((i.name, i.ha, i.restart_priority) for i in instances) == [('a-0', True, -1), ('a-1', False, 0), ('solo', False, 0)]
    assert [(g.name, g.policy, len(g.members)) for g in groups] == [('apart', 'soft-anti-affinity', 2)]


def test_a_power_change_syncs_nothing_and_a_rebuild_gives_the_new_vm_its_override(cloud):
    task(cloud, name='db-1', node='c1', ha=True)
    before = len(syncs(cloud))
    assert task(cloud, name='db-1', state='stopped')['changed'] is True
    assert len(syncs(cloud)) == before  # nothing the node's HA or DRS know changed
    cloud.world.ha_overrides.clear()  # what a new VM has: no override
    task(cloud, name='db-1', state='rebuilt')
    assert len(syncs(cloud)) == before + 1 and cloud.world.rules_on('c1')[0] == {'db-1': (True, 0)}
