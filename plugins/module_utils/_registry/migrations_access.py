# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's migrations: the records of instances' moves (live, block and cold migrations,
evacuations), kept after their instance is gone. Private to multihv.cloud: do not import.

Migrations are returned as rows.Migration records.
"""

from __future__ import annotations

import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class MigrationsAccess(store.Store):
    """Migrations: create, update, get, list."""

    def create_migration(self, **fields):
        """Record a move of an instance (instance_uuid, migration_type, status and the optional
        MIGRATIONS_TABLE fields); returns it (a Migration), with a new uuid4 id."""
        stored = tables.encode_fields(tables.MIGRATIONS_TABLE, fields)
        missing = [field for field in tables.MIGRATIONS_TABLE.required if field not in stored]
        if missing:
            raise TypeError('create_migration needs %s' % ', '.join(missing))
        tables.check_migration_status(stored)
        migration_id = str(uuidlib.uuid4())
        now = engine.utcnow()
        columns = ('id',) + tuple(stored) + ('created_at', 'updated_at')
        with self.transaction():
            with self._failing('record a migration of instance %s' % stored['instance_uuid']):
                self._execute('INSERT INTO migrations (%s) VALUES (%s)' % (', '.join(columns), ', '.join('?' * len(columns))),
                              (migration_id,) + tuple(stored.values()) + (now, now))
                return self._get(tables.MIGRATIONS_TABLE, migration_id)

    def update_migration(self, migration_id, **fields):
        """Change the fields given of migration migration_id; the Migration after."""
        stored = tables.encode_fields(tables.MIGRATIONS_TABLE, fields)
        tables.check_migration_status(stored)
        with self.transaction():
            with self._failing('update migration %s' % migration_id):
                if self._get(tables.MIGRATIONS_TABLE, migration_id, lock=True) is None:
                    raise errors.NotFound('no migration %s in the registry; nothing was changed' % migration_id)
                self._write(tables.MIGRATIONS_TABLE, migration_id, stored)
                return self._get(tables.MIGRATIONS_TABLE, migration_id)

    def get_migration(self, migration_id):
        """Migration migration_id as a Migration, or None."""
        return self._read(tables.MIGRATIONS_TABLE, migration_id)

    def list_migrations(self, instance_uuid=None, status=None, source_node=None, migration_type=None):
        """Migrations (Migration) matching the filters given, oldest first."""
        filters = (('instance_uuid', instance_uuid), ('status', status), ('source_node', source_node), ('migration_type', migration_type))
        with self._failing('list migrations'):
            return self._list(tables.MIGRATIONS_TABLE, filters, order='created_at, id')
