# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's allocations: what instances hold on nodes, claimed atomically so that
concurrent runs never overcommit a node. Private to multihv.cloud: do not import.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import RESOURCES
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class AllocationsAccess(store.Store):
    """Allocations: claim, release, list, sum by node."""

    def claim(self, instance_uuid, node, hypervisor_type, resources, capacity):
        """Allocate resources ({vcpus, memory_mb, disk_gb}) on node to the instance if
        they fit its capacity (the same keys: (physical - reserved) x ratio); True when
        they did, False (and nothing written) when they did not.

        Atomic: in one transaction the node's row is locked (created with
        hypervisor_type if it has none; PostgreSQL SELECT ... FOR UPDATE, SQLite's
        BEGIN IMMEDIATE already serialises writers), the node's allocations are
        summed, and the allocation is written only if sum + resources <= capacity
        for each resource: concurrent claims on one node queue, so that none
        overcommits it. The instance's own allocation on that node, if any, is
        replaced, not counted (a claim is idempotent). The instance must be
        recorded first (errors.NotFound): create_instance, claim, spawn, update.
        """
        needs = tables.amounts('resources', resources)
        limits = tables.amounts('capacity', capacity)
        if not isinstance(hypervisor_type, str) or not hypervisor_type:
            raise TypeError('hypervisor_type must be a non-empty string, got %r' % (hypervisor_type,))
        with self.transaction():
            with self._failing('claim resources on node %s for instance %s' % (node, instance_uuid)):
                return self._claim(instance_uuid, node, hypervisor_type, needs, limits)

    def _claim(self, instance_uuid, node, hypervisor_type, needs, limits):
        if self._row('SELECT uuid FROM instances WHERE uuid = ?', (instance_uuid,)) is None:
            raise errors.NotFound('no instance with uuid %s in the registry (create_instance comes before claim); '
                                  'nothing was claimed on node %s' % (instance_uuid, node))
        created = self._lock_node(node, hypervisor_type)
        held = self._row('SELECT COALESCE(SUM(vcpus), 0) AS vcpus, COALESCE(SUM(memory_mb), 0) AS memory_mb, '
                         'COALESCE(SUM(disk_gb), 0) AS disk_gb FROM allocations WHERE node = ? AND instance_uuid <> ?',
                         (node, instance_uuid))
        if any(int(held[resource]) + needs[resource] > limits[resource] for resource in RESOURCES):
            if created:
                # Nothing written: the row this claim made for the lock goes too.
                self._execute('DELETE FROM nodes WHERE name = ?', (node,))
            return False
        self._execute('INSERT INTO allocations (instance_uuid, node, vcpus, memory_mb, disk_gb, created_at) '
                      'VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_uuid, node) DO UPDATE SET '
                      'vcpus = excluded.vcpus, memory_mb = excluded.memory_mb, disk_gb = excluded.disk_gb',
                      (instance_uuid, node) + tuple(needs[resource] for resource in RESOURCES) + (engine.utcnow(),))
        return True

    def _lock_node(self, name, hypervisor_type):
        """Lock node name's row, making it (admin defaults) if there is none; True when made here."""
        row = self._row('SELECT hypervisor_type FROM nodes WHERE name = ?' + self._dialect.for_update, (name,))
        created = False
        if row is None:
            now = engine.utcnow()
            created = bool(self._execute('INSERT INTO nodes (name, hypervisor_type, created_at, updated_at) VALUES (?, ?, ?, ?) '
                                         'ON CONFLICT (name) DO NOTHING', (name, hypervisor_type, now, now)))
            # Inserted here: locked already. Not: another transaction made it; wait for its lock.
            row = self._row('SELECT hypervisor_type FROM nodes WHERE name = ?' + self._dialect.for_update, (name,))
        if row['hypervisor_type'] != hypervisor_type:
            raise errors.RegistryError('node %s is a %s node in the registry, not %s; nothing was claimed'
                                       % (name, row['hypervisor_type'], hypervisor_type))
        return created

    def release(self, instance_uuid, node=None):
        """Delete the instance's allocations (on node only, when given: a finished
        migration's source); how many there were."""
        sql, params = 'DELETE FROM allocations WHERE instance_uuid = ?', (instance_uuid,)
        if node is not None:
            sql, params = sql + ' AND node = ?', params + (node,)
        with self.transaction():
            with self._failing('release the allocations of instance %s' % instance_uuid):
                return self._execute(sql, params)

    def list_allocations(self, instance_uuid=None, node=None):
        """Allocations (instance_uuid, node, vcpus, memory_mb, disk_gb, created_at) of the instance / on the node given."""
        filters = [(column, value) for column, value in (('instance_uuid', instance_uuid), ('node', node)) if value is not None]
        where = ' AND '.join('%s = ?' % column for column, _value in filters)
        sql = 'SELECT instance_uuid, node, vcpus, memory_mb, disk_gb, created_at FROM allocations%s ORDER BY node, instance_uuid' % (
            ' WHERE ' + where if where else '')
        with self._failing('list allocations'):
            return self._rows(sql, [value for _column, value in filters])

    def allocations_by_node(self):
        """{node: {vcpus, memory_mb, disk_gb, instances}}: what the allocations hold on each node that has any."""
        with self._failing('sum allocations'):
            rows = self._rows('SELECT node, SUM(vcpus) AS vcpus, SUM(memory_mb) AS memory_mb, SUM(disk_gb) AS disk_gb, '
                              'COUNT(*) AS instances FROM allocations GROUP BY node ORDER BY node')
        return dict((row['node'], dict((key, int(row[key])) for key in RESOURCES + ('instances',))) for row in rows)
