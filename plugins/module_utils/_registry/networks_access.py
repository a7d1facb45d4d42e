# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's networks: a subnet with its gateway, DNS servers and allocation range, and where it
exists on the hypervisors (its backings). Private to multihv.cloud: do not import.

A network whose addresses instances hold (ports, see ports_access.py) keeps its cidr, cannot take one
of those addresses as its gateway, and cannot be deleted: the rules (rules.py) are checked with the
network's row locked, inside the transaction that would write.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import addressing
from ansible_collections.multihv.cloud.plugins.module_utils._registry import rules
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class NetworksAccess(store.Store):
    """Networks: get, list, set (insert or update), delete, and the instances using one.

    A registry opened with upgrade=False (check mode, the inventory) whose schema predates networks
    has none: get_network gives None and list_networks [], without writing anything.
    """

    def _has_networks(self):
        with self._failing('read the schema version'):
            return self._schema_version() >= schema.NETWORKS_VERSION

    def get_network(self, name, lock=False):
        """A network as a dict (name, cidr, gateway, dns_servers, allocation_start, allocation_end,
        backings, timestamps), or None; lock: see get_node."""
        if not self._has_networks():
            return None
        return self._read(tables.NETWORKS, name, lock)

    def list_networks(self):
        """Every network, by name."""
        if not self._has_networks():
            return []
        return self._read_all(tables.NETWORKS)

    def network_users(self, name):
        """Names of the instances that have a port on network name, sorted."""
        if not self._has_networks():
            return []
        with self._failing('list the instances of network %s' % name):
            return [row['name'] for row in self._rows(
                'SELECT DISTINCT i.name FROM ports p JOIN instances i ON i.uuid = p.instance_uuid WHERE p.network = ? ORDER BY i.name',
                (name,))]

    def set_network(self, name, **fields):
        """Insert network name or update only the fields given (NETWORK_FIELDS); (before, after).

        A new network needs cidr, allocation_start and allocation_end. The network as it would be
        must hold together (addressing.Subnet: the gateway and the range inside the cidr, the range
        in order) and, while instances hold ports on it, keep its cidr and not take one of their
        addresses as gateway: RegistryError saying why, with nothing written.
        """
        if not isinstance(name, str) or not name:
            raise TypeError('network name must be a non-empty string, got %r' % (name,))
        stored = tables.encode_fields(tables.NETWORKS, fields)
        with self.transaction():
            with self._failing('set network %s' % name):
                before = self._get(tables.NETWORKS, name, lock=True)
                merged = dict(before or {}, name=name)
                merged.update(fields)
                missing = [field for field in tables.NETWORKS.required if not merged.get(field)]
                if missing:
                    raise errors.RegistryError('network %s does not exist and creating it needs %s; nothing was written'
                                               % (name, ', '.join(missing)))
                untouched = 'network %s was left unchanged' % name
                try:
                    addressing.Subnet.of(merged, untouched)
                except errors.MultihvError as exc:
                    raise errors.RegistryError(str(exc)) from None
                return self._upsert(tables.NETWORKS, name, stored, guard=self._keep_used_network)

    def _keep_used_network(self, name, before, changes):
        rules.keep_addressing_of_used_network(name, self.network_users(name), changes, error=errors.RegistryError)
        if changes.get('gateway'):
            holder = self._row('SELECT i.name FROM ports p JOIN instances i ON i.uuid = p.instance_uuid '
                               'WHERE p.network = ? AND p.address = ?', (name, changes['gateway']))
            rules.keep_gateway_free(name, changes['gateway'], holder and holder['name'], error=errors.RegistryError)

    def delete_network(self, name):
        """Delete network name; the network as it was, or None when there was none.

        RegistryError naming the instances with ports on it, with nothing deleted.
        """
        if not self._has_networks():
            return None
        with self.transaction():
            with self._failing('delete network %s' % name):
                return self._delete(tables.NETWORKS, name, guard=self._keep_network_in_use)

    def _keep_network_in_use(self, name, before):
        rules.keep_network_in_use(name, self.network_users(name), error=errors.RegistryError)
