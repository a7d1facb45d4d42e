# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's keypairs: OpenSSH public keys by name, as Nova's. Private to multihv.cloud: do not import.

A keypair's fingerprint and type are derived from its public key (_public_keys.py) when it
is set, never given by the caller, so that they always match the key stored.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _public_keys
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class KeypairsAccess(store.Store):
    """Keypairs: get, list, set (insert or replace the key), delete.

    A registry opened with upgrade=False (check mode) whose schema predates keypairs has none:
    get_keypair gives None and list_keypairs [], without writing anything.
    """

    def _has_keypairs(self):
        with self._failing('read the schema version'):
            return self._schema_version() >= schema.KEYPAIRS_VERSION

    def get_keypair(self, name, lock=False):
        """A keypair as a dict (name, public_key, fingerprint, type, timestamps), or None; lock: see get_node."""
        if not self._has_keypairs():
            return None
        return self._read(tables.KEYPAIRS, name, lock)

    def list_keypairs(self):
        """Every keypair, by name."""
        if not self._has_keypairs():
            return []
        return self._read_all(tables.KEYPAIRS)

    def set_keypair(self, name, public_key):
        """Insert keypair name or replace its public key; (before, after).

        public_key: one line of an OpenSSH .pub file, stored as _public_keys.parse gives it
        (type, key data and comment one space apart); errors.MultihvError saying what is
        wrong with it, before the database is touched. The same key again changes nothing
        (updated_at stays).
        """
        if not isinstance(name, str) or not name:
            raise TypeError('keypair name must be a non-empty string, got %r' % (name,))
        key = _public_keys.parse(name, public_key)
        stored = tables.encode_fields(tables.KEYPAIRS, {'public_key': key.public_key, 'fingerprint': key.fingerprint,
                                                        'type': key.type})
        with self.transaction():
            with self._failing('set keypair %s' % name):
                return self._upsert(tables.KEYPAIRS, name, stored)

    def delete_keypair(self, name):
        """Delete keypair name; the keypair as it was, or None when there was none."""
        with self.transaction():
            with self._failing('delete keypair %s' % name):
                return self._delete(tables.KEYPAIRS, name)
