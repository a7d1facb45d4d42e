# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry: the cloud's state of record. Private to multihv.cloud: do not import.

Holds nodes' admin state, flavors, images, server groups, keypairs, networks, instances, their ports,
migrations, allocations and leases; never live resources (those come from the drivers each time).
Registry is made of one part per job, each in a module of its own:

- engine.py: URLs and their masking, connecting to SQLite or PostgreSQL, what the two spell differently;
- store.py: the connection, transactions, rows of any table (the base of every part);
- schema.py: the schema's versions, its creation and upgrade;
- tables.py: the tables of record and how their values are stored;
- rows.py: the records instances and migrations are returned as (Instance, Migration);
- rules.py: the catalog rules (what a used flavor or a group with members keeps);
- addressing.py: the addressing rules of networks and ports (subnets, free addresses, MACs);
- nodes_access.py, catalog_access.py, keypairs_access.py, networks_access.py, ports_access.py, instances_access.py,
  migrations_access.py, leases_access.py, allocations_access.py: the records, one kind each.

Booting an instance uses the registry in this order, so that two concurrent runs
never overcommit a node and a failed boot leaves a record to clean up:

1. create_instance(..., state='building'): the row allocations and ports refer to;
2. allocate_ports(uuid, nics): atomic; an address or a MAC taken is refused;
   claim(uuid, node, ...): atomic; False means the node is full (reschedule or
   delete_instance, which frees the ports and the allocation);
3. the driver spawns it;
4. update_instance(uuid, state='active', host=...), or on failure release(uuid)
   and update_instance(uuid, state='error') / delete_instance(uuid).
"""

from __future__ import annotations

# Besides Registry, the names in __all__ are re-exported: the core, the plugins and the tests import them from here.
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import (
    FLAVOR_RESOURCES, GROUP_POLICIES, LEASE_LIFETIME_SECONDS, MIGRATION_STATUSES,
)
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry.allocations_access import AllocationsAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.catalog_access import CatalogAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.engine import (
    TIMESTAMP_FORMAT, mask_url, parse_url, utcnow,
)
from ansible_collections.multihv.cloud.plugins.module_utils._registry.instances_access import InstancesAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.keypairs_access import KeypairsAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.leases_access import LeasesAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.migrations_access import MigrationsAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.networks_access import NetworksAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.nodes_access import NodesAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.ports_access import PortsAccess
from ansible_collections.multihv.cloud.plugins.module_utils._registry.rules import name_list
from ansible_collections.multihv.cloud.plugins.module_utils._registry.schema import (
    MIGRATIONS, SCHEMA_VERSION, SchemaAccess,
)


class Registry(SchemaAccess, NodesAccess, CatalogAccess, KeypairsAccess, InstancesAccess, MigrationsAccess, LeasesAccess,
               AllocationsAccess, PortsAccess, NetworksAccess):
    """One open registry: a connection and the dialect of its engine.

    Open with Registry.open(url); use as a context manager or close().
    """

    # How long this registry's leases live unrenewed (the cloud file's registry.lease_seconds).
    lease_seconds = LEASE_LIFETIME_SECONDS

    # The schema version found when the registry was opened (before any upgrade; 0: none).
    found_version = 0
    # True when it stands in, empty and in memory, for a registry that has no schema yet (see open).
    _absent = False
    # True when it stands in, as an upgraded copy in memory, for a SQLite registry with an older schema (see open).
    _copy = False

    @classmethod
    def open(cls, url, upgrade=True, lease_seconds=None):
        """Connect to the registry at url, creating or upgrading its schema.

        upgrade=False leaves the registry as it is (a reader that must not write, such as check mode and the _info
        modules; schema_version() says what it is, upgrade_schema() upgrades it later). A registry with no schema
        yet (a SQLite file that does not exist, an empty database) then reads as empty: the reader is given an
        empty registry in memory and nothing is created. A SQLite registry with an older schema is read through a
        copy in memory upgraded there; a PostgreSQL one as it is (the parts that read newer tables cope, see
        keypairs_access and networks_access). A schema newer than the collection's is refused either way.
        """
        dialect, conn = engine.connect(url) if upgrade else engine.connect(url, create=False)
        registry = cls(conn, dialect, url)
        if lease_seconds:
            registry.lease_seconds = lease_seconds
        try:
            if upgrade:
                registry.found_version = registry._ensure_schema()
            elif conn is None or not registry.schema_version():
                registry._read_as_empty()
            else:
                registry._refuse_newer_schema()
                registry.found_version = registry.schema_version()
                if registry.found_version < SCHEMA_VERSION and dialect is engine.SQLITE:
                    registry._read_upgraded_copy()
        except BaseException:
            registry.close()
            raise
        return registry

    def _read_as_empty(self):
        """Stand in for a registry without a schema: an empty one in memory at the current schema, so that a
        reader's queries find no rows instead of no tables. schema_version() still says 0."""
        self.close()
        self._conn, self._dialect = engine.memory(), engine.SQLITE
        self._ensure_schema()
        self.found_version = 0
        self._absent = True

    def _read_upgraded_copy(self):
        """Stand in for a SQLite registry older than the collection's schema: a copy in memory, upgraded there, so that
        a reader (check mode) reads it as a run that upgraded it would, and the file is left as it is."""
        copy, stored = engine.memory(), self._conn
        try:
            with self._failing('read the registry to upgrade a copy of it in memory'):
                stored.backup(copy)
            self._conn = copy
            self._ensure_schema()
        except errors.RegistryError:
            # A schema the upgrade does not apply to (changed by hand): read as it is, as before there was a copy.
            self._conn = stored
            copy.close()
            return
        except BaseException:
            self._conn = stored
            copy.close()
            raise
        stored.close()
        self._copy = True

    def schema_version(self):
        """The schema version of the registry as stored (0: none yet, also when it reads as empty: see open)."""
        if self._absent or self._copy:
            return self.found_version
        return super().schema_version()

    def upgrade_schema(self):
        if self._absent or self._copy:
            # Upgrading the stand-in would report an upgrade that never reached the registry.
            raise errors.RegistryError('registry %s was opened to read only; open it with upgrade to create or upgrade it'
                                       % self.url)
        return super().upgrade_schema()

    def another(self):
        """A connection of its own to the same registry, its schema as it is (for another thread:
        neither sqlite3 nor psycopg connections may be shared between threads)."""
        return type(self).open(self._url, upgrade=False, lease_seconds=self.lease_seconds)


# The name the registry's callers knew before the policies moved to _constants.
SERVER_GROUP_POLICIES = GROUP_POLICIES

__all__ = ['Registry', 'FLAVOR_RESOURCES', 'MIGRATIONS', 'MIGRATION_STATUSES', 'SCHEMA_VERSION', 'SERVER_GROUP_POLICIES',
           'TIMESTAMP_FORMAT', 'mask_url', 'name_list', 'parse_url', 'utcnow']
