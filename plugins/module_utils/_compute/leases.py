# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Leases in the registry that serialise work on hypervisors between processes (two
ansible-playbook runs, AWX jobs): an image upload, the work on an instance or a node.
Private to multihv.cloud: do not import.

The wait and the lifetime are two numbers. A lease lives the registry's lease_seconds (the cloud
file's registry.lease_seconds, LEASE_LIFETIME_SECONDS by default); while the
work runs a heartbeat (a daemon thread with a registry connection of its own) renews it
every third of that, so a live holder's lease never ends and a dead holder's ends within
one lifetime. Each acquisition that changes hands gets a higher generation (a fencing
token): the holder checks it before each irreversible step and in the transaction that
records its outcome (Lease.check, Lease.guarded), so a holder that lost its lease (too slow
to renew, the registry out of reach, another took it) stops instead of carrying on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import (
    INSTANCE_LEASE_WAIT_SECONDS, LEASE_LIFETIME_SECONDS, NODE_LEASE_WAIT_SECONDS,
)


def new_owner(doing=None):
    """Who holds a lease: host, process and a token, so that two holders never look alike, and
    what it does (a word such as 'migrate'), so that a refusal can say it."""
    owner = '%s:%d:%s' % (socket.gethostname(), os.getpid(), uuidlib.uuid4().hex[:8])
    return '%s (%s)' % (owner, doing) if doing else owner


class Lease:
    """A lease held: its name, owner, generation and lifetime. The registry it was taken with is
    the default one to check against; a worker thread passes its own."""

    def __init__(self, registry, name, owner, generation, lifetime):
        self.registry = registry
        self.name = name
        self.owner = owner
        self.generation = generation
        self.lifetime = lifetime
        self.lost = None  # why, once the heartbeat found the lease gone
        self._stop = threading.Event()
        self._thread = None

    def check(self, registry=None):
        """errors.LeaseLost when this holder's lease changed hands or ran out."""
        if self.lost:
            raise errors.LeaseLost(self.lost)
        (registry or self.registry).check_lease(self.name, self.owner, self.generation)

    @contextlib.contextmanager
    def guarded(self, registry=None):
        """A registry transaction that begins with check(): its writes are made only while this
        holder holds the lease (the lease's row stays locked until the transaction ends)."""
        registry = registry or self.registry
        with registry.transaction():
            self.check(registry)
            yield registry

    def start_heartbeat(self):
        self._thread = threading.Thread(target=self._beat, name='lease %s' % self.name, daemon=True)
        self._thread.start()

    def stop_heartbeat(self):
        """Stop renewing (the work ended, or a test plays a holder that died)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self):
        """Renew every third of the lifetime on a connection of its own. A renewal that finds another
        holder loses the lease at once; one that fails (the registry out of reach) is tried again
        until a lifetime has passed since the last good one, then the lease is lost."""
        registry, renewed = None, time.monotonic()
        try:
            while not self._stop.wait(self.lifetime / 3.0):
                try:
                    registry = registry or self.registry.another()
                    if not registry.renew_lease(self.name, self.owner, self.generation, self.lifetime):
                        self.lost = 'lease %s of %s (generation %s) was lost: another run took it while this one worked' % (
                            self.name, self.owner, self.generation)
                        return
                    renewed = time.monotonic()
                except Exception as exc:  # pylint: disable=broad-exception-caught  # whatever failed, the renewal did not happen
                    # Not only the registry's errors: an exception that escaped would end this thread silently and
                    # the holder would work on unrenewed until its next check.
                    if registry is not None:
                        registry.close()
                        registry = None
                    if time.monotonic() - renewed >= self.lifetime:
                        self.lost = 'lease %s of %s (generation %s) could not be renewed for %.0f s: %s' % (
                            self.name, self.owner, self.generation, self.lifetime, exc)
                        return
        finally:
            if registry is not None:
                registry.close()


def take(registry, name, wait, what, doing=None, lifetime=None, untouched=None):
    """Take lease `name`, waiting up to `wait` seconds for another holder to give it up (or for its
    lease to run out when that holder died). A Lease, its heartbeat not started; errors.LeaseHeld
    naming the holder and when its lease ends once the wait is over; `what` says what was not done.
    A registry that cannot be written (out of reach, locked past its busy timeout) raises its
    RegistryError, followed by `untouched` (what was left as it was) when given."""
    lifetime = lifetime or getattr(registry, 'lease_seconds', LEASE_LIFETIME_SECONDS)
    owner = new_owner(doing)
    deadline = time.monotonic() + wait
    pause = 0.05
    while True:
        try:
            generation = registry.take_lease(name, owner, lifetime)
        except errors.RegistryError as exc:
            if not untouched:
                raise
            raise errors.RegistryError('%s; lease %s could not be taken: %s' % (exc, name, untouched)) from exc
        if generation is not None:
            return Lease(registry, name, owner, generation, lifetime)
        left = deadline - time.monotonic()
        if left <= 0:
            holder = registry.lease_holder(name) or {}
            raise errors.LeaseHeld('lease %s is held by %s until %s; %s' % (
                name, holder.get('owner', 'another run'), holder.get('expires_at', 'now'), what))
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


@contextlib.contextmanager
def held(registry, name, wait, what, doing=None, lifetime=None, untouched=None):
    """Hold lease `name` while the block runs (see take), renewed by a heartbeat; yields the Lease."""
    lease = take(registry, name, wait, what, doing, lifetime, untouched)
    lease.start_heartbeat()
    try:
        yield lease
    finally:
        lease.stop_heartbeat()
        # A registry that went away meanwhile lets the lease expire by itself.
        with contextlib.suppress(errors.RegistryError):
            registry.release_lease(name, lease.owner)


def on_instance(registry, inst_uuid, untouched, doing):
    """held() for the work on one instance: its lease instance:<uuid>, waiting a little for another run's."""
    return held(registry, 'instance:%s' % inst_uuid, INSTANCE_LEASE_WAIT_SECONDS,
                'another run works on instance %s; %s' % (inst_uuid, untouched), doing, untouched=untouched)


def on_node(registry, node, untouched, doing):
    """held() for the work on a whole node (drain, evacuation, an HA pass): its lease node:<name>, not
    waited for (the second run is refused). Take it before any instance's lease, never while holding one."""
    return held(registry, 'node:%s' % node, NODE_LEASE_WAIT_SECONDS, 'another run works on node %s; %s' % (node, untouched), doing,
                untouched=untouched)


# -- many nodes at once (rebalancing, issue 18 §1)

class _Heartbeat:
    """One thread that renews several leases, by Lease._beat's rules for each: a renewal that finds another holder
    loses that lease at once; renewals that fail (the registry out of reach) for a whole lifetime lose them all.
    One thread and one registry connection for a rebalance of a thousand nodes, not a thousand."""

    def __init__(self, registry, leases):
        self.registry = registry
        self.leases = list(leases)
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self.leases:
            self._thread = threading.Thread(target=self._beat, name='leases of %d nodes' % len(self.leases), daemon=True)
            self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self):
        lifetime = min(lease.lifetime for lease in self.leases)
        registry, renewed = None, time.monotonic()
        try:
            while not self._stop.wait(lifetime / 3.0):
                try:
                    registry = registry or self.registry.another()
                    for lease in self.leases:
                        if lease.lost is None and not registry.renew_lease(lease.name, lease.owner, lease.generation, lease.lifetime):
                            lease.lost = 'lease %s of %s (generation %s) was lost: another run took it while this one worked' % (
                                lease.name, lease.owner, lease.generation)
                    renewed = time.monotonic()
                except Exception as exc:  # pylint: disable=broad-exception-caught  # whatever failed, the renewal did not happen
                    if registry is not None:
                        registry.close()
                        registry = None
                    if time.monotonic() - renewed >= lifetime:
                        for lease in self.leases:
                            lease.lost = lease.lost or 'lease %s of %s (generation %s) could not be renewed for %.0f s: %s' % (
                                lease.name, lease.owner, lease.generation, lifetime, exc)
                        return
        finally:
            if registry is not None:
                registry.close()


@contextlib.contextmanager
def on_nodes(registry, nodes, untouched, doing):
    """on_node for a set of nodes at once (a rebalance): the lease node:<name> of each, taken in name order and not
    waited for, renewed by one heartbeat for all, given back at the end; yields {node: Lease}. The first one another
    run holds refuses the whole (errors.LeaseHeld naming it; the leases taken until then are given back)."""
    leases = {}
    beat = None
    try:
        for node in sorted(set(nodes)):
            leases[node] = take(registry, 'node:%s' % node, NODE_LEASE_WAIT_SECONDS, 'another run works on node %s; %s' % (node, untouched),
                                doing, untouched=untouched)
        beat = _Heartbeat(registry, leases.values())
        beat.start()
        yield leases
    finally:
        if beat is not None:
            beat.stop()
        for lease in leases.values():
            with contextlib.suppress(errors.RegistryError):  # a registry that went away lets the lease expire by itself
                registry.release_lease(lease.name, lease.owner)


__all__ = ['Lease', 'held', 'new_owner', 'on_instance', 'on_node', 'on_nodes', 'take']
