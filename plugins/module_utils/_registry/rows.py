# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's instance and migration rows as records. Private to multihv.cloud: do not import.

The registry returns these from its instance and migration methods; the core reads their
attributes. One field per column of the table (tables.INSTANCES, tables.MIGRATIONS_TABLE),
in column order, with the values decoded (tables.decode). Modules return as_dict(): the
row as a plain dict, keys in column order. Flavors, images, server groups, nodes and
allocations stay plain dicts.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Instance:
    """An instance as the registry records it (Nova's names).

    node: the node it is placed on (None while unplaced); host: the hypervisor host it runs
    on (the ESXi host inside a cluster node, else the node's host); storage: shared or local;
    identity: {hostname, macs, networks, metadata}, what it keeps across rebuilds and
    evacuations (networks: [{network, mac, address}], one per NIC, as its ports hold them);
    state: building, running, stopped or error.
    """

    uuid: str
    name: str
    node: str | None
    host: str | None
    flavor: str
    image: str
    storage: str
    identity: dict | None
    ha: bool
    restart_priority: int
    server_group: str | None
    state: str
    created_at: str
    updated_at: str

    def as_dict(self):
        """The record as modules return it: {column: value}, in column order, then addresses."""
        result = dataclasses.asdict(self)
        result['addresses'] = self.addresses
        return result

    @property
    def addresses(self):
        """{network: [address, ...]}: the instance's addresses by network (Nova's server addresses), in
        NIC order; a NIC recorded without an address (before networks were in the registry) has none."""
        found = {}
        for nic in (self.identity or {}).get('networks') or []:
            if isinstance(nic, dict) and nic.get('address'):
                found.setdefault(nic['network'], []).append(nic['address'])
        return found


@dataclasses.dataclass
class Migration:
    """A move of an instance (live, block or cold migration, evacuation) and how it went.

    status: one of MIGRATION_STATUSES; stats: what the driver reported (progress, downtime...)
    or what an evacuation kept (storage, disk); error: why it failed; started_at and
    finished_at: timestamps, None until the move started or ended.
    """

    id: str
    instance_uuid: str
    migration_type: str
    status: str
    source_node: str | None
    source_host: str | None
    dest_node: str | None
    dest_host: str | None
    error: str | None
    stats: dict | None
    started_at: str | None
    finished_at: str | None
    created_at: str
    updated_at: str

    def as_dict(self):
        """The record as modules return it: {column: value}, in column order."""
        return dataclasses.asdict(self)


__all__ = ['Instance', 'Migration']
