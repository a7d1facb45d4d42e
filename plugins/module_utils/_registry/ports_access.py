# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's ports: an instance's NICs, each with its network, MAC and address, allocated
atomically so that two concurrent boots never get one address or one MAC. Private to multihv.cloud:
do not import.

The discipline is the claim's (allocations_access.py): in one transaction the network's row is locked
(PostgreSQL SELECT ... FOR UPDATE; SQLite's BEGIN IMMEDIATE serialises every writer), the addresses
taken are read and the lowest free one is written. The unique constraints (mac; network and address)
stand behind it: an insert that meets another run's row does nothing (ON CONFLICT DO NOTHING, so that
a PostgreSQL transaction is not aborted) and the allocation looks again. A port dies with its instance
(ON DELETE CASCADE): delete_instance frees its addresses in the same statement.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import addressing
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables
from ansible_collections.multihv.cloud.plugins.module_utils._registry.networks_access import NetworksAccess

PORT_COLUMNS = ('instance_uuid', 'nic', 'network', 'mac', 'address', 'created_at')
# Derived MACs tried for one NIC before giving up: each is 24 bits of a hash, so a second try is
# already rare; a hundred in a row means something else is wrong.
MAC_ATTEMPTS = 100


class PortsAccess(NetworksAccess):
    """Ports: allocate an instance's, list them, and who holds an address or a MAC (ports live on networks:
    this part knows whether the schema has them, see NetworksAccess)."""

    def list_ports(self, instance_uuid=None, network=None):
        """Ports (instance_uuid, nic, network, mac, address, created_at) of the instance / on the network given,
        by instance and NIC; [] on a registry whose schema predates networks."""
        if not self._has_networks():
            return []
        filters = [(column, value) for column, value in (('instance_uuid', instance_uuid), ('network', network)) if value is not None]
        where = ' AND '.join('%s = ?' % column for column, _value in filters)
        with self._failing('list ports'):
            return self._rows('SELECT %s FROM ports%s ORDER BY instance_uuid, nic' % (', '.join(PORT_COLUMNS), ' WHERE ' + where if where else ''),
                              [value for _column, value in filters])

    def port_holder(self, network=None, address=None, mac=None):
        """The name of the instance whose port has this address on network, or this MAC; None when no port has."""
        if not self._has_networks():
            return None
        with self._failing('read ports'):
            return self._holder(network, address, mac)

    def _holder(self, network=None, address=None, mac=None):
        where, params = ('p.mac = ?', (mac,)) if mac is not None else ('p.network = ? AND p.address = ?', (network, address))
        row = self._row('SELECT i.name FROM ports p JOIN instances i ON i.uuid = p.instance_uuid WHERE ' + where, params)
        return row['name'] if row else None

    def allocate_ports(self, instance_uuid, nics, untouched='nothing was allocated'):
        """Give the instance one port per NIC, in order; [{network, mac, address}] (address without prefix).

        nics: [{network, fixed_ip (or None), mac (or None)}]. A fixed IP must be a host address of the
        network's subnet other than its gateway, and free; without one, the lowest free address of the
        allocation range is taken. A MAC asked for must be free; without one, addressing.stable_mac
        derives it, again with a counter while it is another port's. Refusals (a network that does not
        exist: errors.NotFound; an address or a MAC another instance holds: RegistryError naming that
        instance; a full range; an address outside the subnet) write nothing, and end with untouched.
        The instance must be recorded first, and have no ports yet.
        """
        if not isinstance(nics, (list, tuple)):
            raise TypeError('nics must be a list, got %r' % (nics,))
        if not nics:
            return []
        with self.transaction():
            with self._failing('allocate ports for instance %s' % instance_uuid):
                row = self._row('SELECT name FROM instances WHERE uuid = ?' + self._dialect.for_update, (instance_uuid,))
                if row is None:
                    raise errors.NotFound('no instance with uuid %s in the registry (create_instance comes before allocate_ports); %s'
                                          % (instance_uuid, untouched))
                if self._row('SELECT nic FROM ports WHERE instance_uuid = ?', (instance_uuid,)):
                    raise errors.RegistryError('instance %s has ports already; %s' % (row['name'], untouched))
                return [self._allocate(instance_uuid, row['name'], index, nic, untouched) for index, nic in enumerate(nics)]

    def _allocate(self, instance_uuid, name, index, nic, untouched):
        network = nic['network']
        row = self._get(tables.NETWORKS, network, lock=True)  # allocations on one network queue here
        if row is None:
            raise errors.NotFound('network %s does not exist; create it with multihv.cloud.network; %s' % (network, untouched))
        subnet = addressing.Subnet.of(row, untouched)
        what = 'instance %s: networks[%d]' % (name, index)
        if nic.get('fixed_ip'):
            address = subnet.check_fixed(nic['fixed_ip'], '%s.fixed_ip' % what, untouched)
            self._refuse_taken_address('%s.fixed_ip' % what, network, address, untouched)
        else:
            taken = set(r['address'] for r in self._rows('SELECT address FROM ports WHERE network = ?', (network,)))
            address = subnet.first_free(taken)
            if address is None:
                raise errors.RegistryError('%s: network %s has no free address left in its allocation range %s - %s (%d in use); %s'
                                           % (what, network, subnet.start, subnet.end, len(taken), untouched))
        asked = addressing.mac(nic['mac'], '%s.mac' % what, untouched) if nic.get('mac') else None
        for attempt in range(MAC_ATTEMPTS):
            mac = asked or addressing.stable_mac(instance_uuid, index, attempt)
            holder = self._holder(mac=mac)
            if holder is None:
                inserted = self._execute(
                    'INSERT INTO ports (%s) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING' % ', '.join(PORT_COLUMNS),
                    (instance_uuid, index, network, mac, address, engine.utcnow()))
                if inserted:
                    return {'network': network, 'mac': mac, 'address': address}
                # Another run's port, committed since the read: it took this MAC (the address is ours,
                # under the network's lock), so look again.
                holder = self._holder(mac=mac)
                self._refuse_taken_address('%s: address' % what, network, address, untouched)
            if asked:
                raise errors.RegistryError('%s.mac %s is taken by instance %s; %s' % (what, mac, holder or 'another run', untouched))
        raise errors.RegistryError('%s: no free MAC address found in %d derivations; %s' % (what, MAC_ATTEMPTS, untouched))

    def _refuse_taken_address(self, what, network, address, untouched):
        holder = self._holder(network, address)
        if holder is not None:
            raise errors.RegistryError('%s %s on network %s is taken by instance %s; %s'
                                       % (what, address, network, holder, untouched))
