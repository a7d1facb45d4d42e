# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's instances. Private to multihv.cloud: do not import.

An instance's flavor and server group must exist, and stay while this transaction
runs (their rows are locked; the catalog rules keep them afterwards); its image need
not (Nova keeps instances whose image was deleted). Its name and uuid are unique.
Instances are returned as rows.Instance records.
"""

from __future__ import annotations

import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class InstancesAccess(store.Store):
    """Instances: get, list, create, update, delete."""

    def get_instance(self, uuid=None, name=None, lock=False):
        """The instance with this uuid, or this name (give one), as an Instance; None when there is none.

        Fields: INSTANCE_FIELDS plus uuid and timestamps; identity is a dict
        (hostname, macs, networks, metadata), ha a bool. lock: see get_node.
        """
        if (uuid is None) == (name is None):
            raise TypeError('get_instance needs uuid or name, not both or neither')
        with self._failing('read instance %s' % (uuid or name)):
            if uuid is not None:
                return self._get(tables.INSTANCES, uuid, lock)
            row = self._row('SELECT uuid FROM instances WHERE name = ?', (name,))
            return self._get(tables.INSTANCES, row['uuid'], lock) if row else None

    def list_instances(self, node=None, server_group=None, flavor=None):
        """The instances (Instance) on node, in server_group, of flavor (the filters given), by name."""
        with self._failing('list instances'):
            return self._list(tables.INSTANCES, (('node', node), ('server_group', server_group), ('flavor', flavor)))

    def create_instance(self, **fields):
        """Record a new instance; returns it (an Instance).

        Needs name, flavor, image and storage (shared or local); uuid is made
        (uuid4) when not given, state is 'building' when not given. The flavor
        and the server group (when given) must exist: errors.NotFound. A name
        or uuid already recorded: RegistryError naming the other instance.
        Nothing is written on any error. See registry.py for the order
        create_instance, claim, spawn, update_instance.
        """
        fields = dict(fields)
        uuid = fields.pop('uuid', None) or str(uuidlib.uuid4())
        if not isinstance(uuid, str):
            raise TypeError('instance uuid must be a string, got %r' % (uuid,))
        fields.setdefault('state', 'building')
        stored = tables.encode_fields(tables.INSTANCES, fields)
        missing = [field for field in tables.INSTANCES.required if field not in stored]
        if missing:
            raise TypeError('create_instance needs %s' % ', '.join(missing))
        tables.check_storage(stored)
        with self.transaction():
            with self._failing('create instance %s' % stored['name']):
                return self._create_instance(uuid, stored)

    def _create_instance(self, uuid, stored):
        untouched = 'instance %s was not created' % stored['name']
        self._lock_referents(stored, untouched)
        now = engine.utcnow()
        columns = ('uuid',) + tuple(stored) + ('created_at', 'updated_at')
        # No conflict target: a clash on uuid or on name does nothing, and is named below.
        inserted = self._execute('INSERT INTO instances (%s) VALUES (%s) ON CONFLICT DO NOTHING' % (
            ', '.join(columns), ', '.join('?' * len(columns))), (uuid,) + tuple(stored.values()) + (now, now))
        if not inserted:
            self._refuse_clash(uuid, stored['name'], 'nothing was created')
        return self._get(tables.INSTANCES, uuid)

    def _lock_referents(self, stored, untouched):
        """The flavor and server group an instance is to have must exist and stay while this transaction runs."""
        if stored.get('flavor') is not None:
            self._lock_existing(tables.FLAVORS, stored['flavor'], untouched)
        if stored.get('server_group') is not None:
            self._lock_existing(tables.SERVER_GROUPS, stored['server_group'], untouched)

    def _refuse_clash(self, uuid, name, untouched):
        """RegistryError naming the instance that already has this name (another uuid) or this uuid."""
        named = self._row('SELECT uuid FROM instances WHERE name = ? AND uuid <> ?', (name, uuid))
        if named:
            raise errors.RegistryError('an instance named %s already exists (uuid %s); %s' % (name, named['uuid'], untouched))
        same = self._row('SELECT name FROM instances WHERE uuid = ?', (uuid,))
        if same:
            raise errors.RegistryError('an instance with uuid %s already exists (named %s); %s' % (uuid, same['name'], untouched))
        raise errors.RegistryError('instance %s (uuid %s) clashes with another record; %s' % (name, uuid, untouched))

    def update_instance(self, uuid, **fields):
        """Change only the fields given (INSTANCE_FIELDS) of instance uuid; (before, after), two Instances.

        errors.NotFound when there is no such instance, or when a new flavor or
        server group does not exist; RegistryError when the new name is another
        instance's. Nothing is written on any error.
        """
        stored = tables.encode_fields(tables.INSTANCES, fields)  # uuid is not a field: an instance keeps it
        tables.check_storage(stored)
        with self.transaction():
            with self._failing('update instance %s' % uuid):
                return self._update_instance(uuid, stored)

    def _update_instance(self, uuid, stored):
        untouched = 'instance %s was left unchanged' % uuid
        before = self._get(tables.INSTANCES, uuid, lock=True)
        if before is None:
            raise errors.NotFound('no instance with uuid %s in the registry; nothing was changed' % uuid)
        changes = self._changes(tables.INSTANCES, uuid, stored)
        if 'name' in changes:
            named = self._row('SELECT uuid FROM instances WHERE name = ? AND uuid <> ?', (changes['name'], uuid))
            if named:
                raise errors.RegistryError('an instance named %s already exists (uuid %s); %s' % (changes['name'], named['uuid'], untouched))
        self._lock_referents(changes, untouched)
        self._write(tables.INSTANCES, uuid, changes)
        return before, self._get(tables.INSTANCES, uuid)

    def delete_instance(self, uuid):
        """Delete instance uuid with its allocations and its ports (ON DELETE CASCADE, in the same statement: its
        addresses and MACs are free once this commits); the Instance as it was, or None. Its migrations stay:
        they are the history of the moves."""
        with self.transaction():
            with self._failing('delete instance %s' % uuid):
                return self._delete(tables.INSTANCES, uuid)
