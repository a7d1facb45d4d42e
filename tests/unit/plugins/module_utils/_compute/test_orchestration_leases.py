"""Leases through the core on fake hypervisors and a real SQLite registry: a move that outlasts
the old fixed lease still keeps every other run off its instance, a holder whose lease was taken
stops before its next irreversible step and leaves the registry consistent, two runs never work
on one node at once, and boot, delete and power hold the instance's lease."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._compute.context import Context
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.fake_driver import FakeDriver, two_node_cloud

LIFETIME = 0.6  # seconds: the old code's lease (one number, never renewed) ends long before the work


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path, monkeypatch):
    """fake1 (fenceable) and fake2 sharing one directory; flavor small, image tick; leases that live
    LIFETIME seconds and a wait of 0.2 s for an instance's."""
    monkeypatch.setattr(Registry, 'lease_seconds', LIFETIME)  # every registry's leases, the workers' too
    monkeypatch.setattr(_leases, 'INSTANCE_LEASE_WAIT_SECONDS', 0.2)
    with two_node_cloud(tmp_path) as made:
        yield made


@contextlib.contextmanager
def blocked(monkeypatch, method):
    """FakeDriver.<method> waits for the Event yielded (set on the way out, so no thread is left behind);
    entered (another Event) says a call got there."""
    gate, entered = threading.Event(), threading.Event()
    original = getattr(FakeDriver, method)

    def waiting(self, *args, **kwargs):
        entered.set()
        assert gate.wait(30), 'the test never opened the gate'
        return original(self, *args, **kwargs)
    monkeypatch.setattr(FakeDriver, method, waiting)
    try:
        yield gate, entered
    finally:
        gate.set()


def in_thread(cloud, work):
    """Run work(ctx) in a thread with a registry connection of its own (as another run would);
    returns (thread, outcome) where outcome gets 'result' or 'error' when it ended."""
    outcome = {}

    def body():
        registry = Registry.open(cloud.config.registry_url)
        try:
            outcome['result'] = work(Context(cloud.config, registry, drivers=cloud.world.drivers(),
                                             driver_factory=cloud.world.drivers))
        except errors.MultihvError as exc:
            outcome['error'] = exc
        finally:
            registry.close()
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def test_a_second_move_of_an_instance_is_refused_for_as_long_as_the_first_runs(cloud, monkeypatch):
    record = cloud.boot('a', node='fake1', storage='shared')
    with blocked(monkeypatch, 'migrate') as (gate, entered):
        first, outcome = in_thread(cloud, lambda ctx: _migrations.migrate(ctx, 'a'))
        assert entered.wait(10)
        time.sleep(3 * LIFETIME)  # three lifetimes: only the heartbeat keeps the lease
        with pytest.raises(errors.LeaseHeld, match=r'lease instance:%s is held by .*\(migrate\) until .*; another run works on '
                                                   r'instance %s; instance a was not moved' % (record.uuid, record.uuid)):
            _migrations.migrate(cloud.context(), 'a')
        # Nor may another run change its power, delete or rebuild it meanwhile.
        for touch in (lambda: _instances.set_power(cloud.context(), record, 'stopped'),
                      lambda: _instances.delete(cloud.context(), record),
                      lambda: _instances.rebuild(cloud.context(), record)):
            with pytest.raises(errors.LeaseHeld, match=r'\(migrate\)'):
                touch()
        gate.set()
        first.join(10)
    assert outcome['result']['migration']['status'] == 'completed'
    assert cloud.world.placed() == {'a': ('fake2', 'running')} and cloud.allocations() == [('a', 'fake2')]
    assert cloud.registry.lease_holder('instance:%s' % record.uuid) is None


def steal(path, name):
    """What another run that took the lease over does: a higher generation, another owner."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("UPDATE locks SET owner = 'thief:1:0 (migrate)', generation = generation + 1 WHERE name = ?", (name,))


def lost_before_the_move(cloud, monkeypatch, lose):
    """Migrate instance a with lose(lease name) called once the move is prepared, just before the
    driver would move it; the error raised."""
    record = cloud.boot('a', node='fake1', storage='shared')
    prepare = _migrations._prepare  # pylint: disable=protected-access

    def prepared(*args):
        mode = prepare(*args)
        lose('instance:%s' % record.uuid)
        return mode
    monkeypatch.setattr(_migrations, '_prepare', prepared)
    with pytest.raises(errors.LeaseLost) as caught:
        _migrations.migrate(cloud.context(), 'a')
    # Stopped before the move: the VM stayed, the claim on fake2 was released, the migration failed.
    assert cloud.world.placed() == {'a': ('fake1', 'running')} and cloud.allocations() == [('a', 'fake1')]
    assert not [call for call in cloud.world.calls if call[1] == 'migrate']
    migration = cloud.registry.list_migrations(instance_uuid=record.uuid)[0]
    assert migration.status == 'failed' and 'lost' in migration.error.lower()
    assert cloud.registry.get_instance(uuid=record.uuid).node == 'fake1'
    return caught.value


def test_a_holder_whose_lease_another_run_took_stops_before_the_move(cloud, monkeypatch):
    error = lost_before_the_move(cloud, monkeypatch, lambda name: steal(cloud.path, name))
    # The boot held generation 1, this move 2, the thief 3.
    assert '(migrate) (generation 2) was lost: thief:1:0 (migrate) (generation 3) holds it now' in str(error)


def test_a_holder_whose_heartbeat_found_another_holder_stops_before_the_move(cloud, monkeypatch):
    monkeypatch.setattr(Registry, 'renew_lease', lambda *args: False)  # each renewal finds another holder
    error = lost_before_the_move(cloud, monkeypatch, lambda name: time.sleep(LIFETIME))
    assert '(migrate) (generation 2) was lost: another run took it while this one worked' in str(error)


def test_a_holder_whose_lease_was_taken_after_the_move_leaves_the_outcome_to_the_reconciler(cloud, monkeypatch):
    record = cloud.boot('a', node='fake1', storage='shared')
    original = FakeDriver.migrate

    def migrate_then_lose(self, *args, **kwargs):
        done = original(self, *args, **kwargs)
        steal(cloud.path, 'instance:%s' % record.uuid)
        return done
    monkeypatch.setattr(FakeDriver, 'migrate', migrate_then_lose)
    with pytest.raises(errors.LeaseLost):
        _migrations.migrate(cloud.context(), 'a')
    # The holder wrote nothing after it lost the lease: the record still says where the move began.
    assert cloud.registry.get_instance(uuid=record.uuid).node == 'fake1'
    assert cloud.registry.list_migrations(instance_uuid=record.uuid)[0].status == 'running'


def test_two_evacuations_of_one_node_at_once_one_is_refused_and_an_ha_pass_skips_it(cloud, monkeypatch):
    cloud.boot('ha-one', node='fake1', storage='shared', ha=True)
    cloud.world.power_loss('fake1')
    with blocked(monkeypatch, 'spawn') as (gate, entered):
        first, outcome = in_thread(cloud, lambda ctx: _evacuation.evacuate(ctx, 'fake1'))
        assert entered.wait(10)
        time.sleep(2 * LIFETIME)
        with pytest.raises(errors.LeaseHeld, match=r'lease node:fake1 is held by .*\(evacuate\) until .*; another run works on '
                                                   r'node fake1; nothing was evacuated'):
            _evacuation.evacuate(cloud.context(), 'fake1')
        with pytest.raises(errors.LeaseHeld, match=r'node:fake1 .*\(evacuate\)'):
            _migrations.drain(cloud.context(), 'fake1')
        cloud.registry.set_node('fake1', 'fake', down_since='2000-01-01T00:00:00.000000Z')  # seen down long ago
        passed = _instance_ha.run_pass(cloud.context(), grace_period=60, min_down_probes=1)
        assert [entry['node'] for entry in passed['skipped']] == ['fake1'] and 'evacuate' in passed['skipped'][0]['msg']
        assert (passed['recovered'], passed['failures'], passed['down']) == ([], [], [])
        gate.set()
        first.join(10)
    assert [e['status'] for e in outcome['result']['evacuations']] == ['done']
    assert len(cloud.registry.list_migrations(migration_type='evacuation')) == 1
    assert cloud.nodes_of() == {'ha-one': 'fake2'}


def test_a_boot_holds_the_instance_s_lease_from_before_its_record_exists(cloud, monkeypatch):
    inst_uuid = '6f1d4a8e-0000-4000-8000-000000000001'
    with blocked(monkeypatch, 'spawn') as (gate, entered):
        first, outcome = in_thread(cloud, lambda ctx: _instances.boot_one(
            ctx, {'name': 'b', 'flavor': 'small', 'image': 'tick', 'uuid': inst_uuid}))
        assert entered.wait(10)
        time.sleep(2 * LIFETIME)
        assert cloud.registry.lease_holder('instance:%s' % inst_uuid)['owner'].endswith('(boot)')
        building = cloud.registry.get_instance(uuid=inst_uuid)
        with pytest.raises(errors.LeaseHeld, match=r'\(boot\)'):
            _instances.delete(cloud.context(), building)
        gate.set()
        first.join(10)
    assert outcome['result'].state == 'running' and cloud.world.placed() == {'b': ('fake1', 'running')}
    _instances.set_power(cloud.context(), outcome['result'], 'stopped')
    _instances.delete(cloud.context(), outcome['result'])
    assert cloud.world.placed() == {} and cloud.registry.lease_holder('instance:%s' % inst_uuid) is None
