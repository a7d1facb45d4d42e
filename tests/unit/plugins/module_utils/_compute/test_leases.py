"""The Lease of _compute/leases.py on a SQLite registry: the heartbeat keeps a lease held past its
lifetime, a holder whose heartbeat stopped (dead) loses it to another within one lifetime and
its checked writes are refused, a heartbeat that cannot reach the registry gives the lease up
as lost, and a refusal names the holder, what it does and until when."""

from __future__ import annotations

import datetime
import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import TIMESTAMP_FORMAT, Registry

LIFETIME = 1.0


@pytest.fixture(name='registries')
def registries_fixture(tmp_path):
    """Two connections to one SQLite registry: the holder's and another run's."""
    url = 'sqlite:///%s/registry.sqlite' % tmp_path
    with Registry.open(url) as mine, Registry.open(url) as theirs:
        yield mine, theirs


def test_a_lease_held_three_lifetimes_stays_held_while_its_heartbeat_runs(registries):
    mine, theirs = registries
    with _leases.held(mine, 'instance:x', 0, 'nothing done', 'migrate', lifetime=LIFETIME) as lease:
        end = time.monotonic() + 3 * LIFETIME
        while time.monotonic() < end:
            assert theirs.take_lease('instance:x', 'other', 30) is None
            time.sleep(0.1)
        lease.check()
        assert lease.lost is None
    assert theirs.lease_holder('instance:x') is None
    assert theirs.take_lease('instance:x', 'other', 30) == lease.generation + 1


def test_a_holder_whose_heartbeat_stopped_loses_the_lease_within_a_lifetime_and_its_writes_are_refused(registries):
    mine, theirs = registries
    theirs.set_flavor('small', vcpus=1, ram_mb=512, disk_gb=1, extra_specs={})
    lease = _leases.take(mine, 'instance:x', 0, 'nothing done', 'migrate', lifetime=LIFETIME)
    lease.start_heartbeat()
    lease.stop_heartbeat()  # the holder hangs (or died) from here on
    stopped = time.monotonic()
    while theirs.take_lease('instance:x', 'other', 30) is None:
        assert time.monotonic() - stopped < LIFETIME + 0.5
        time.sleep(0.05)
    with pytest.raises(errors.LeaseLost, match=r'generation 1\) was lost: other \(generation 2\) holds it now'):
        lease.check()
    with pytest.raises(errors.LeaseLost):
        with lease.guarded() as registry:
            registry.delete_flavor('small')
    assert theirs.get_flavor('small') is not None  # the write in the guarded transaction was not made


def test_a_heartbeat_that_cannot_reach_the_registry_for_a_lifetime_marks_the_lease_lost(registries, monkeypatch):
    mine, _theirs = registries

    def unreachable(*_args):
        raise errors.RegistryError('registry gone')
    monkeypatch.setattr(Registry, 'renew_lease', unreachable)
    with _leases.held(mine, 'instance:x', 0, 'nothing done', 'boot', lifetime=LIFETIME / 2) as lease:
        time.sleep(LIFETIME)
        assert lease.lost and 'could not be renewed' in lease.lost and 'registry gone' in lease.lost
        with pytest.raises(errors.LeaseLost, match='could not be renewed'):
            lease.check()


def test_a_lease_that_cannot_be_had_names_its_holder_what_it_does_and_until_when(registries):
    mine, theirs = registries
    with _leases.held(mine, 'node:kvm1', 0, 'nothing done', 'instance_ha'):
        with pytest.raises(errors.LeaseHeld, match=r'lease node:kvm1 is held by [^ ]+:\d+:[0-9a-f]{8} \(instance_ha\) until '
                                                   r'\d{4}-\d\d-\d\dT[0-9:.]+Z; nothing was evacuated'):
            with _leases.held(theirs, 'node:kvm1', 0.2, 'nothing was evacuated'):
                pytest.fail('the block ran without the lease')


def test_a_registry_that_refuses_the_lease_is_named_with_what_was_left():
    """Locked past its busy timeout (or out of reach) at the start: the error says nothing was done."""
    class Locked:
        def take_lease(self, name, owner, seconds):
            raise errors.RegistryError('registry sqlite:///r.sqlite: cannot begin a transaction: database is locked')
    with pytest.raises(errors.RegistryError) as caught:
        with _leases.on_instance(Locked(), 'u1', 'nothing was created', 'boot'):
            pass
    assert str(caught.value) == ('registry sqlite:///r.sqlite: cannot begin a transaction: database is locked; '
                                 'lease instance:u1 could not be taken: nothing was created')


def test_a_lease_lives_as_long_as_its_registry_says_and_a_worker_s_registry_says_the_same(tmp_path):
    url = 'sqlite:///%s/registry.sqlite' % tmp_path
    with Registry.open(url, lease_seconds=7) as registry:
        lease = _leases.take(registry, 'instance:x', 0, 'nothing done')
        expires = registry.lease_holder('instance:x')['expires_at']
        with registry.another() as worker:
            assert worker.lease_seconds == 7
    assert lease.lifetime == 7
    # written as now + 7 s: it ends before a default (30 s) lease would
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=8)
    assert expires < later.strftime(TIMESTAMP_FORMAT)
