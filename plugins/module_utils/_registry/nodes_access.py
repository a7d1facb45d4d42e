# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's nodes: their admin state (never their live resources, which come from
the drivers each time). Private to multihv.cloud: do not import.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class NodesAccess(store.Store):
    """Nodes' admin state: get, list, set (insert or update)."""

    def get_node(self, name, lock=False):
        """A node's admin state as a dict, or None when it has none.

        lock=True inside transaction(): keep the row locked until the
        transaction ends, for a read-modify-write (PostgreSQL FOR UPDATE;
        SQLite's transaction holds the write lock already).
        """
        return self._read(tables.NODES, name, lock)

    def list_nodes(self):
        """Every node with admin state, by name."""
        return self._read_all(tables.NODES)

    def set_node(self, name, hypervisor_type, **fields):
        """Insert node name or update only the fields given; returns (before, after).

        before is None for a new node. hypervisor_type is stored too (the
        cloud file is its source of truth). Nothing is written (and after ==
        before) when every given value is already stored. Fields: see
        NODE_FIELDS; TypeError for an unknown field or a value of the wrong kind.
        """
        if not isinstance(hypervisor_type, str) or not hypervisor_type:
            raise TypeError('hypervisor_type must be a non-empty string, got %r' % (hypervisor_type,))
        unknown = sorted(set(fields) - set(tables.NODE_FIELDS))
        if unknown:
            raise TypeError('unknown node field(s) %s; known: %s' % (', '.join(unknown), ', '.join(tables.NODE_FIELDS)))
        stored = dict((field, tables.encode(tables.NODES, field, value)) for field, value in fields.items())
        stored['hypervisor_type'] = hypervisor_type
        with self.transaction():
            with self._failing('set node %s' % name):
                return self._upsert(tables.NODES, name, stored)
