# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Leases in the registry that serialise work on hypervisors between processes (two
ansible-playbook runs, AWX jobs): an image upload to a host, the move of an instance.
Private to multihv.cloud: do not import."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors


def new_owner():
    """Who holds a lease: host, process and a token, so that two holders never look alike."""
    return '%s:%d:%s' % (socket.gethostname(), os.getpid(), uuidlib.uuid4().hex[:8])


@contextlib.contextmanager
def held(registry, name, seconds, what):
    """Hold lease `name` while the block runs, waiting up to `seconds` for another holder to
    give it up (or for its lease, as long, to expire when that holder died). errors.MultihvError
    naming the holder when the wait is over; `what` says what was not done."""
    owner = new_owner()
    deadline = time.monotonic() + seconds
    pause = 0.05
    while not registry.acquire_lease(name, owner, seconds):
        left = deadline - time.monotonic()
        if left <= 0:
            holder = registry.lease_holder(name) or {}
            raise errors.MultihvError('lease %s is held by %s until %s; %s' % (
                name, holder.get('owner', 'another run'), holder.get('expires_at', 'now'), what))
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)
    try:
        yield owner
    finally:
        # A registry that went away meanwhile lets the lease expire by itself.
        with contextlib.suppress(errors.RegistryError):
            registry.release_lease(name, owner)


__all__ = ['held', 'new_owner']
