"""The HA pass runs the reconciler's HA steps first (instance_ha.run_pass -> reconcile.run_for_ha), on fake
hypervisors and a real registry: an evacuation a killed pass left half done is finished, not started again;
power states are synced; check mode plans and writes nothing; a reconciler action that cannot be carried out
does not fail the pass."""

from __future__ import annotations

import copy
import datetime

from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT
from support.fake_driver import FakeCloud, FakeWorld


def make_cloud(tmp_path):
    """fake1 (fenceable), fake2 and fake3 sharing 'shared'; flavor small, image tick."""
    world = FakeWorld()
    world.add_node('fake1', fence_command='true')
    world.add_node('fake2')
    world.add_node('fake3')
    cloud = FakeCloud(world, tmp_path)
    cloud.flavor('small')
    cloud.image('tick')
    return cloud


def seen_down(cloud, node, seconds=120, probes=5, forced_down=False):
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=seconds)
    cloud.registry.set_node(node, 'fake', down_since=since.strftime(TIMESTAMP_FORMAT), down_probes=probes, forced_down=forced_down)


def ha_pass(cloud, **options):
    """A pass whose reconciler takes work left unwritten for 0 s as interrupted (the tests' records are fresh)."""
    options.setdefault('settle_seconds', 0)
    options.setdefault('grace_period', 60)
    return _instance_ha.run_pass(cloud.context(), **options)


def half_evacuated(cloud, name='ha1'):
    """HA instance `name` on fake1, which lost its power; a pass fenced it, forced it down, claimed fake2, recorded the
    evacuation and rebuilt the VM there, then its controller died before it wrote the outcome."""
    record = cloud.boot(name, node='fake1', ha=True)
    cloud.world.power_loss('fake1')
    seen_down(cloud, 'fake1', forced_down=True)
    view = cloud.context().view('fake2')
    assert cloud.registry.claim(record.uuid, 'fake2', 'fake', {'vcpus': 1, 'memory_mb': 1024, 'disk_gb': 1}, view.capacity)
    migration = cloud.registry.create_migration(instance_uuid=record.uuid, migration_type='evacuation', status='running',
                                                source_node='fake1', source_host='fake1', dest_node='fake2', dest_host='fake2')
    vm = copy.deepcopy(cloud.world.vm(name))
    vm.node, vm.host, vm.power = 'fake2', 'fake2', 'running'
    cloud.world.vms[('fake2', vm.uuid)] = vm
    return record, migration


def vms_of(cloud, uuid):
    return sorted(node for node, vm_uuid in cloud.world.vms if vm_uuid == uuid)


def test_an_evacuation_a_killed_pass_left_is_finished_by_the_next_pass_not_started_again(tmp_path):
    with make_cloud(tmp_path) as cloud:
        record, migration = half_evacuated(cloud)
        result = ha_pass(cloud)
        assert [(a['kind'], a['name'], a['node']) for a in result['reconciled']] == [('migration', 'ha1', 'fake2')]
        assert result['changed'] is True and result['recovered'] == [] and result['failures'] == []
        assert cloud.registry.get_migration(migration.id).status == 'done'  # its stale copy waits on fake1
        assert len(cloud.registry.list_migrations(migration_type='evacuation')) == 1
        assert cloud.nodes_of() == {'ha1': 'fake2'} and cloud.allocations() == [('ha1', 'fake2')]
        assert vms_of(cloud, record.uuid) == ['fake1', 'fake2']  # fake1's stopped copy: clean_stale's, when it is back
        again = ha_pass(cloud)
        assert (again['changed'], again['reconciled'], again['recovered']) == (False, [], [])


def test_check_mode_plans_the_reconciler_s_actions_and_leaves_their_instances_out(tmp_path):
    with make_cloud(tmp_path) as cloud:
        record, migration = half_evacuated(cloud)
        before = (cloud.registry.get_instance(uuid=record.uuid), cloud.registry.list_allocations(), vms_of(cloud, record.uuid))
        result = ha_pass(cloud, check_mode=True)
        assert [(a['kind'], a['name']) for a in result['reconciled']] == [('migration', 'ha1')] and 'error' not in result['reconciled'][0]
        assert result['changed'] is True and result['recovered'] == []  # not planned twice: the reconciler's first
        assert cloud.registry.get_migration(migration.id).status == 'running'
        assert (cloud.registry.get_instance(uuid=record.uuid), cloud.registry.list_allocations(), vms_of(cloud, record.uuid)) == before


def test_the_pass_syncs_power_states_of_the_nodes_that_answer(tmp_path):
    with make_cloud(tmp_path) as cloud:
        cloud.boot('off', node='fake2')
        cloud.world.vm('off').power = 'stopped'
        result = ha_pass(cloud)
        assert [(a['kind'], a['name'], a['does']) for a in result['reconciled']] == [('power', 'off', 'record it stopped')]
        assert result['changed'] is True and cloud.registry.get_instance(name='off').state == 'stopped'
        assert ha_pass(cloud)['changed'] is False


def test_unsettled_work_is_left_to_its_run(tmp_path):
    with make_cloud(tmp_path) as cloud:
        half_evacuated(cloud)
        result = ha_pass(cloud, settle_seconds=_reconcile.SETTLE_SECONDS)  # written just now: maybe a live run's
        assert result['reconciled'] == []


def test_a_reconciler_action_that_cannot_be_carried_out_is_reported_and_the_pass_goes_on(tmp_path, monkeypatch):
    with make_cloud(tmp_path) as cloud:
        cloud.boot('off', node='fake2')
        cloud.world.vm('off').power = 'stopped'
        ha = cloud.boot('ha-one', node='fake1', ha=True)
        cloud.world.power_loss('fake1')
        seen_down(cloud, 'fake1')
        plan = _reconcile.survey_and_plan

        def racing(ctx, *args):
            made = plan(ctx, *args)
            cloud.registry.update_instance(cloud.registry.get_instance(name='off').uuid, host='fake2-moved')  # another run wrote
            return made
        monkeypatch.setattr(_reconcile, 'survey_and_plan', racing)
        result = ha_pass(cloud)
        assert 'records changed since the pass read them' in result['reconciled'][0]['error'] and result['failures'] == []
        assert [(d['node'], d['fencing']) for d in result['down']] == [('fake1', 'fenced')]
        assert cloud.nodes_of()['ha-one'] != 'fake1' and len(vms_of(cloud, ha.uuid)) == 2  # rebuilt; its stopped copy stays on fake1
