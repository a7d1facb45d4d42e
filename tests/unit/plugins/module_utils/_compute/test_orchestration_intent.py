"""Intent before action (issue 14, section 2): a migration or an evacuation is recorded before its
target's resources are claimed, so that a controller killed between the two steps never leaves an
allocation that no record explains, and a claim that fails is recorded on the migration. On fake
hypervisors and a real registry; the kill is an exception no handler of the core catches."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationControls
from support.fake_driver import two_node_cloud


class ControllerKilled(BaseException):
    """The controller's process ends here (an AWX job cancelled): nothing after this step runs."""


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    with two_node_cloud(tmp_path) as made:
        yield made


def killed_at(monkeypatch, registry, method):
    """The controller dies when it calls registry.<method>."""
    def die(*_args, **_kwargs):
        raise ControllerKilled(method)
    monkeypatch.setattr(registry, method, die)


def start(cloud, operation):
    """Run operation ('migrate' vm1 to fake2, or 'evacuate' fake1 after its power loss)."""
    if operation == 'migrate':
        return _migrations.migrate(cloud.context(), 'vm1', target_node='fake2')
    cloud.world.power_loss('fake1')
    return _evacuation.evacuate(cloud.context(), 'fake1')


def explained(cloud):
    """Every allocation is the instance's on its recorded node, or its active migration's target."""
    records = dict((i.uuid, i) for i in cloud.registry.list_instances())
    targets = set((m.instance_uuid, m.dest_node) for m in cloud.registry.list_migrations() if m.status in reconcile.ACTIVE)
    for allocation in cloud.registry.list_allocations():
        key = (allocation['instance_uuid'], allocation['node'])
        assert records[key[0]].node == key[1] or key in targets, 'allocation %s on %s has no record that explains it' % key


@pytest.mark.parametrize('operation', ['migrate', 'evacuate'])
def test_a_controller_killed_as_it_records_the_move_has_claimed_nothing(cloud, monkeypatch, operation):
    cloud.boot('vm1', node='fake1', storage='shared')
    killed_at(monkeypatch, cloud.registry, 'create_migration')
    with pytest.raises(ControllerKilled):
        start(cloud, operation)
    assert cloud.allocations() == [('vm1', 'fake1')]
    assert cloud.registry.list_migrations() == []


@pytest.mark.parametrize('operation', ['migrate', 'evacuate'])
def test_a_controller_killed_as_it_claims_leaves_an_accepted_move_the_reconciler_ends(cloud, monkeypatch, operation):
    record = cloud.boot('vm1', node='fake1', storage='shared')
    killed_at(monkeypatch, cloud.registry, 'claim')
    with pytest.raises(ControllerKilled):
        start(cloud, operation)
    monkeypatch.undo()
    [migration] = cloud.registry.list_migrations()
    assert (migration.instance_uuid, migration.status, migration.dest_node) == (record.uuid, 'accepted', 'fake2')
    explained(cloud)
    if operation == 'evacuate':
        cloud.registry.set_node('fake1', 'fake', forced_down=True)  # what the fence had recorded
    result = reconcile.run(cloud.context(), settle_seconds=0)
    assert [a['kind'] for a in result['actions']] == ['migration'] and result['orphans'] == []
    after = cloud.registry.get_migration(migration.id)
    assert after.status == 'failed' and 'interrupted' in after.error
    assert cloud.allocations() == [('vm1', 'fake1')] and cloud.nodes_of() == {'vm1': 'fake1'}


def test_a_migration_whose_claim_fails_is_recorded_failed_with_the_reason(cloud):
    cloud.boot('vm1', node='fake1')
    cloud.take_room('fake2')
    with pytest.raises(errors.MultihvError, match='no room'):
        # The plan saw room on fake2: the claim is what fails, as when another run took it meanwhile.
        ctx = cloud.context()
        move = _migrations.Move(cloud.registry.get_instance(name='vm1'), 'auto', 'fake1', 'fake2', 'fake2')
        with _leases.on_instance(cloud.registry, move.record.uuid, 'untouched', 'test') as lease:
            _migrations.run(ctx, move, MigrationControls(), lease)
    [migration] = cloud.registry.list_migrations()
    assert migration.status == 'failed' and migration.finished_at
    assert migration.error == 'node fake2 has no room for instance vm1 any more (another run took it); instance vm1 was not moved'
    assert sorted(a for a in cloud.allocations() if a[0] == 'vm1') == [('vm1', 'fake1')]
    explained(cloud)


def test_an_evacuation_whose_claim_keeps_failing_is_recorded_failed_and_the_instance_unplaced(cloud, monkeypatch):
    cloud.boot('vm1', node='fake1', storage='shared')
    monkeypatch.setattr(cloud.registry, 'claim', lambda *args, **kwargs: False)  # other runs keep taking the room
    result = start(cloud, 'evacuate')
    assert [u['name'] for u in result['unplaced']] == ['vm1'] and result['evacuations'] == []
    [migration] = cloud.registry.list_migrations()
    assert migration.status == 'failed' and migration.error == result['unplaced'][0]['msg']
    assert cloud.allocations() == [('vm1', 'fake1')] and cloud.nodes_of() == {'vm1': 'fake1'}
