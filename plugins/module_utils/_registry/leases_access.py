# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's leases: named rows that say who works on what until when. Private to
multihv.cloud: do not import.

A lease is a row, not a database lock: it outlives the transaction that takes it and
guards work on hypervisors (an image upload, a migration) between processes; one whose
holder died ends when it expires.
"""

from __future__ import annotations

import datetime

from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store


class LeasesAccess(store.Store):
    """Leases (the locks table): acquire, release, who holds one."""

    def acquire_lease(self, name, owner, seconds):
        """Hold lease `name` for `owner` for `seconds` from now when it is free, expired or the
        owner's already (then it is renewed); True when held."""
        now = datetime.datetime.now(datetime.timezone.utc)
        expires = (now + datetime.timedelta(seconds=seconds)).strftime(engine.TIMESTAMP_FORMAT)
        with self.transaction():
            with self._failing('take lease %s' % name):
                row = self._row('SELECT owner, expires_at FROM locks WHERE name = ?' + self._dialect.for_update, (name,))
                if row is None:
                    # PostgreSQL: another transaction may insert it first; then it is theirs.
                    return bool(self._execute('INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?) '
                                              'ON CONFLICT (name) DO NOTHING', (name, owner, expires)))
                if row['owner'] != owner and row['expires_at'] > now.strftime(engine.TIMESTAMP_FORMAT):
                    return False
                self._execute('UPDATE locks SET owner = ?, expires_at = ? WHERE name = ?', (owner, expires, name))
                return True

    def release_lease(self, name, owner):
        """Give lease `name` up if `owner` holds it; True when it did."""
        with self.transaction():
            with self._failing('release lease %s' % name):
                return bool(self._execute('DELETE FROM locks WHERE name = ? AND owner = ?', (name, owner)))

    def lease_holder(self, name):
        """{owner, expires_at} of lease `name`, or None when nobody holds it (expired ones included)."""
        with self._failing('read lease %s' % name):
            return self._row('SELECT owner, expires_at FROM locks WHERE name = ?', (name,))
