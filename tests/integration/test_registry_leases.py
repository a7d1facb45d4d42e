"""Leases against real engines (a SQLite file, a PostgreSQL schema of its own): the generation
(fencing token) grows each time a lease changes hands and never goes back, renewal extends,
check_lease refuses an old token, and across processes a heartbeat keeps a lease held past
its lifetime while a killed holder's lease ends within one lifetime.

PostgreSQL cases need MULTIHV_TEST_POSTGRES_URL (see test_registry.py).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.registries import ENGINES, private_url, query

# A holder in a process of its own: takes lease `name` for LIFETIME seconds with its heartbeat
# on, says 'held <generation>', then works `seconds` and releases it, or is killed meanwhile.
HOLDER = r'''
import sys, time
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

url, name, lifetime, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
with Registry.open(url) as registry:
    with _leases.held(registry, name, 0, 'test', 'hold', lifetime=lifetime) as lease:
        print('held', lease.generation, flush=True)
        time.sleep(seconds)
        lease.check()
print('released', flush=True)
'''
LIFETIME = 1.0


@pytest.fixture(params=ENGINES)
def url(request, tmp_path):
    yield from private_url(request.param, tmp_path, 'leases_test')


def holder(url, name, seconds):
    """A HOLDER process that holds lease name for `seconds`, started and holding; and its generation."""
    tree = pathlib.Path(engine.__file__).parents[6]
    proc = subprocess.Popen([sys.executable, '-c', HOLDER, url, name, str(LIFETIME), str(seconds)],
                            env=dict(os.environ, PYTHONPATH=str(tree)), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    said = proc.stdout.readline().split()
    assert said[:1] == ['held'], proc.stderr.read()
    return proc, int(said[1])


def test_the_generation_grows_with_each_change_of_hands_and_never_goes_back(url):
    with Registry.open(url) as registry:
        assert registry.take_lease('instance:x', 'a', 30) == 1
        assert registry.take_lease('instance:x', 'a', 30) == 1  # the same holder renews: same token
        assert registry.take_lease('instance:x', 'b', 30) is None
        assert registry.release_lease('instance:x', 'a') is True
        assert registry.lease_holder('instance:x') is None
        assert query(url, "SELECT generation FROM locks WHERE name = 'instance:x'") == [(1,)]  # kept on release
        assert registry.take_lease('instance:x', 'b', 30) == 2
        assert registry.release_lease('instance:x', 'b') is True
        assert registry.take_lease('instance:x', 'a', 30) == 3
        assert registry.lease_holder('instance:x')['generation'] == 3
        assert registry.take_lease('instance:y', 'a', 30) == 1  # per lease name


def test_renewal_extends_and_only_the_token_holder_renews(url):
    with Registry.open(url) as registry:
        generation = registry.take_lease('node:n', 'a', 0.3)
        assert registry.renew_lease('node:n', 'a', generation, 30) is True
        assert registry.renew_lease('node:n', 'a', generation + 1, 30) is False
        assert registry.renew_lease('node:n', 'b', generation, 30) is False
        time.sleep(0.5)  # past the first lifetime: the renewal holds it
        assert registry.take_lease('node:n', 'b', 30) is None
        registry.check_lease('node:n', 'a', generation)


def test_an_expired_lease_goes_to_another_with_a_higher_generation_and_the_old_token_fails(url):
    with Registry.open(url) as registry:
        old = registry.take_lease('instance:x', 'a', 0.05)
        time.sleep(0.1)
        with pytest.raises(errors.LeaseLost, match=r'lease instance:x of a \(generation 1\) ran out at '):
            registry.check_lease('instance:x', 'a', old)  # nobody took it yet, but it may be taken any moment
        new = registry.take_lease('instance:x', 'b', 30)
        assert new == old + 1
        with pytest.raises(errors.LeaseLost, match=r'lease instance:x of a \(generation 1\) was lost: b \(generation 2\) holds it now'):
            registry.check_lease('instance:x', 'a', old)
        assert registry.renew_lease('instance:x', 'a', old, 30) is False
        assert registry.release_lease('instance:x', 'a') is False
        registry.check_lease('instance:x', 'b', new)
        registry.release_lease('instance:x', 'b')
        with pytest.raises(errors.LeaseLost, match='nobody holds it now'):
            registry.check_lease('instance:x', 'b', new)


def test_a_heartbeat_keeps_a_lease_past_its_lifetime_and_a_killed_holder_s_ends_within_one(url):
    with Registry.open(url) as registry:
        proc, generation = holder(url, 'instance:x', 3 * LIFETIME)
        end = time.monotonic() + 2.5 * LIFETIME
        while time.monotonic() < end:  # far past one lifetime: the holder's heartbeat renews it
            assert registry.take_lease('instance:x', 'other', 30) is None
            time.sleep(0.1)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out.split()) == (0, ['released']), err
        proc, generation = holder(url, 'instance:x', 60)
        assert generation == 2
        proc.kill()  # a controller that died: nothing releases its lease
        proc.wait()
        killed = time.monotonic()
        while registry.take_lease('instance:x', 'other', 30) is None:
            assert time.monotonic() - killed < LIFETIME + 0.5, 'a dead holder kept its lease past its lifetime'
            time.sleep(0.05)
        assert registry.lease_holder('instance:x')['generation'] == 3
