# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's leases: named rows that say who works on what until when. Private to
multihv.cloud: do not import.

A lease is a row, not a database lock: it outlives the transaction that takes it and
guards work on hypervisors (an image upload, a migration) between processes; one whose
holder died ends when it expires. Each row keeps a generation (a fencing token) that grows
each time the lease changes hands: a released lease keeps its row (owner '' and no
expiry), so the number never goes back. A holder is (owner, generation); check_lease
refuses a holder whose lease changed hands or ran out.
"""

from __future__ import annotations

import datetime

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store

# The owner of a lease nobody holds: its row stays, with its generation.
FREE = ''


def _stamps(seconds):
    """(now, now + seconds) as the registry's timestamps."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime(engine.TIMESTAMP_FORMAT), (now + datetime.timedelta(seconds=seconds)).strftime(engine.TIMESTAMP_FORMAT)


class LeasesAccess(store.Store):
    """Leases (the locks table): take, renew, check, release, who holds one."""

    def take_lease(self, name, owner, seconds):
        """Hold lease `name` for `owner` for `seconds` from now when it is free, expired or the
        owner's already (then it is renewed). The generation held (a fencing token: it grows each
        time the lease changes hands), or None when another holds it."""
        now, expires = _stamps(seconds)
        with self.transaction():
            with self._failing('take lease %s' % name):
                row = self._row('SELECT owner, expires_at, generation FROM locks WHERE name = ?' + self._dialect.for_update, (name,))
                if row is None:
                    # PostgreSQL: another transaction may insert it first; then it is theirs.
                    taken = self._execute('INSERT INTO locks (name, owner, expires_at, generation) VALUES (?, ?, ?, 1) '
                                          'ON CONFLICT (name) DO NOTHING', (name, owner, expires))
                    return 1 if taken else None
                if row['owner'] == owner:
                    generation = row['generation']
                elif row['owner'] != FREE and row['expires_at'] > now:
                    return None
                else:
                    generation = row['generation'] + 1
                self._execute('UPDATE locks SET owner = ?, expires_at = ?, generation = ? WHERE name = ?',
                              (owner, expires, generation, name))
                return generation

    def acquire_lease(self, name, owner, seconds):
        """take_lease as a yes or no: True when held."""
        return self.take_lease(name, owner, seconds) is not None

    def renew_lease(self, name, owner, generation, seconds):
        """Extend the lease (owner, generation) holds to `seconds` from now; False when the lease
        changed hands meanwhile (an expired lease nobody took is still the holder's)."""
        _now, expires = _stamps(seconds)
        with self.transaction():
            with self._failing('renew lease %s' % name):
                return bool(self._execute('UPDATE locks SET expires_at = ? WHERE name = ? AND owner = ? AND generation = ?',
                                          (expires, name, owner, generation)))

    def check_lease(self, name, owner, generation):
        """errors.LeaseLost unless (owner, generation) holds lease `name` now and it has not run
        out. Inside a transaction the row stays locked until it ends (PostgreSQL; SQLite's
        transactions hold the whole database), so the writes that follow are the holder's."""
        now, _expires = _stamps(0)
        with self._failing('check lease %s' % name):
            row = self._row('SELECT owner, expires_at, generation FROM locks WHERE name = ?'
                            + (self._dialect.for_update if self._depth else ''), (name,))
        if row is None or row['owner'] != owner or row['generation'] != generation:
            holder = 'nobody' if row is None or row['owner'] == FREE else '%s (generation %s)' % (row['owner'], row['generation'])
            raise errors.LeaseLost('lease %s of %s (generation %s) was lost: %s holds it now' % (name, owner, generation, holder))
        if row['expires_at'] <= now:
            raise errors.LeaseLost('lease %s of %s (generation %s) ran out at %s without being renewed'
                                   % (name, owner, generation, row['expires_at']))

    def release_lease(self, name, owner):
        """Give lease `name` up if `owner` holds it; True when it did. The row stays (free), so
        that the next holder's generation is higher."""
        with self.transaction():
            with self._failing('release lease %s' % name):
                return bool(self._execute('UPDATE locks SET owner = ?, expires_at = ? WHERE name = ? AND owner = ?',
                                          (FREE, '', name, owner)))

    def lease_holder(self, name):
        """{owner, expires_at, generation} of lease `name`, or None when nobody holds it (expired
        ones are returned: their holder may still be at work)."""
        with self._failing('read lease %s' % name):
            row = self._row('SELECT owner, expires_at, generation FROM locks WHERE name = ?', (name,))
        return None if row is None or row['owner'] == FREE else row
