# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's schema: its versions, and creating or upgrading it. Private to multihv.cloud: do not import.

Opening a registry creates or upgrades its schema in one transaction, under a lock, so that
several controllers opening a fresh registry at once apply each version once; a schema newer
than the collection's is refused and left untouched.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store

# pg_advisory_xact_lock key that serialises schema creation/upgrade ('multihv\0' as a bigint).
SCHEMA_LOCK_KEY = 0x6d756c7469687600

# The schema, one entry per version, applied in order inside one transaction.
# Only the SQL both engines accept: no BOOLEAN, SERIAL, AUTOINCREMENT or JSONB
# (tables.py says how values are stored). A new version is a new
# entry at the end; an entry, once released, never changes.
MIGRATIONS = [
    (1, [
        'CREATE TABLE nodes ('
        ' name TEXT PRIMARY KEY,'
        ' hypervisor_type TEXT NOT NULL,'
        ' enabled INTEGER NOT NULL DEFAULT 1,'
        ' disabled_reason TEXT,'
        ' forced_down INTEGER NOT NULL DEFAULT 0,'
        ' availability_zone TEXT,'
        ' aggregates TEXT,'
        ' allocation_ratios TEXT,'
        ' reserved TEXT,'
        ' reserved_for_failover INTEGER NOT NULL DEFAULT 0,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE TABLE flavors ('
        ' name TEXT PRIMARY KEY,'
        ' vcpus INTEGER NOT NULL,'
        ' ram_mb INTEGER NOT NULL,'
        ' disk_gb INTEGER NOT NULL,'
        ' extra_specs TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE TABLE images ('
        ' name TEXT PRIMARY KEY,'
        ' hypervisor_type TEXT NOT NULL,'
        ' properties TEXT,'
        ' locations TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE TABLE instances ('
        ' uuid TEXT PRIMARY KEY,'
        ' name TEXT NOT NULL UNIQUE,'
        ' node TEXT,'
        ' host TEXT,'
        ' flavor TEXT NOT NULL,'
        ' image TEXT NOT NULL,'
        ' storage TEXT NOT NULL,'
        ' identity TEXT,'
        ' ha INTEGER NOT NULL DEFAULT 0,'
        ' restart_priority INTEGER NOT NULL DEFAULT 0,'
        ' server_group TEXT,'
        ' state TEXT NOT NULL,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        'CREATE INDEX instances_node ON instances (node)',
        # id is a uuid4 made by the caller: no SERIAL/AUTOINCREMENT dialect split.
        'CREATE TABLE migrations ('
        ' id TEXT PRIMARY KEY,'
        ' instance_uuid TEXT NOT NULL,'
        ' migration_type TEXT NOT NULL,'
        ' status TEXT NOT NULL,'
        ' source_node TEXT,'
        ' source_host TEXT,'
        ' dest_node TEXT,'
        ' dest_host TEXT,'
        ' error TEXT,'
        ' stats TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL,'
        ' started_at TEXT,'
        ' finished_at TEXT)',
        'CREATE INDEX migrations_instance ON migrations (instance_uuid)',
        'CREATE INDEX migrations_status ON migrations (status)',
        # An allocation dies with its instance; node is a name, not a key of nodes,
        # because a node without admin state has no row there.
        'CREATE TABLE allocations ('
        ' instance_uuid TEXT NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,'
        ' node TEXT NOT NULL,'
        ' vcpus INTEGER NOT NULL,'
        ' memory_mb INTEGER NOT NULL,'
        ' disk_gb INTEGER NOT NULL,'
        ' created_at TEXT NOT NULL,'
        ' PRIMARY KEY (instance_uuid, node))',
        'CREATE INDEX allocations_node ON allocations (node)',
        'CREATE TABLE locks ('
        ' name TEXT PRIMARY KEY,'
        ' owner TEXT NOT NULL,'
        ' expires_at TEXT NOT NULL)',
    ]),
    (2, [
        # Members are instances.server_group (a name): v1 rows stay as they are.
        'CREATE TABLE server_groups ('
        ' name TEXT PRIMARY KEY,'
        ' policy TEXT NOT NULL,'
        ' rules TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        # Who uses a flavor or a group is asked before either changes or goes.
        'CREATE INDEX instances_flavor ON instances (flavor)',
        'CREATE INDEX instances_server_group ON instances (server_group)',
    ]),
    (3, [
        # When instance HA first saw the node unreachable (NULL: reachable, or never watched):
        # its grace period counts from there, across passes and controllers.
        'ALTER TABLE nodes ADD COLUMN down_since TEXT',
        # Evacuations whose stale copies wait for their node to come back are found by source.
        'CREATE INDEX migrations_source ON migrations (source_node)',
    ]),
    (4, [
        # A lease's fencing token: it grows each time the lease changes hands, and the holder's
        # writes are checked against it, so a holder that lost its lease stops.
        'ALTER TABLE locks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0',
        # Consecutive passes of instance HA that found the node unreachable: one timeout under
        # load is not a dead host.
        'ALTER TABLE nodes ADD COLUMN down_probes INTEGER NOT NULL DEFAULT 0',
    ]),
    (5, [
        # Nova's keypairs: OpenSSH public keys by name, for guests to be given at boot.
        # fingerprint and type are derived from public_key (_public_keys.py), kept for listing.
        'CREATE TABLE keypairs ('
        ' name TEXT PRIMARY KEY,'
        ' public_key TEXT NOT NULL,'
        ' fingerprint TEXT NOT NULL,'
        ' type TEXT NOT NULL,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
    ]),
    (6, [
        # Networks with their subnet, and where each exists on the hypervisors (backings: a list of
        # {backing, nodes, aggregates, endpoints, hypervisor_type}; see _compute/networks.py).
        'CREATE TABLE networks ('
        ' name TEXT PRIMARY KEY,'
        ' cidr TEXT NOT NULL,'
        ' gateway TEXT,'
        ' dns_servers TEXT,'
        ' allocation_start TEXT NOT NULL,'
        ' allocation_end TEXT NOT NULL,'
        ' backings TEXT,'
        ' created_at TEXT NOT NULL,'
        ' updated_at TEXT NOT NULL)',
        # An instance's NICs: a port dies with its instance; a network with ports cannot go (the key,
        # besides the rule the registry checks first to name the instances). The unique constraints
        # are what makes two concurrent allocations unable to share a MAC or an address.
        'CREATE TABLE ports ('
        ' instance_uuid TEXT NOT NULL REFERENCES instances (uuid) ON DELETE CASCADE,'
        ' nic INTEGER NOT NULL,'
        ' network TEXT NOT NULL REFERENCES networks (name),'
        ' mac TEXT NOT NULL UNIQUE,'
        ' address TEXT NOT NULL,'
        ' created_at TEXT NOT NULL,'
        ' PRIMARY KEY (instance_uuid, nic),'
        ' UNIQUE (network, address))',
    ]),
]
# The first version with the keypairs table (a registry opened with upgrade=False may predate it).
KEYPAIRS_VERSION = 5
# The first version with the networks and ports tables.
NETWORKS_VERSION = 6
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The bootstrap table, outside MIGRATIONS because it says which of them ran: one row per applied version.
SCHEMA_VERSION_TABLE = 'CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)'


class SchemaAccess(store.Store):
    """The registry's schema version, and its creation or upgrade to SCHEMA_VERSION."""

    def schema_version(self):
        """The schema version of the registry (0: none yet)."""
        with self._failing('read the schema version'):
            return self._schema_version()

    def _schema_version(self):
        if not self._row(self._dialect.table_exists, ('schema_version',))['n']:
            return 0
        return self._row('SELECT max(version) AS version FROM schema_version')['version'] or 0

    def upgrade_schema(self):
        """Create or upgrade the schema (what open() does unless upgrade=False); the version
        it had before (0: none), the current one when nothing was done."""
        return self._ensure_schema()

    def _refuse_newer_schema(self):
        """RegistryError when the registry's schema is newer than this collection's; nothing is written."""
        self._refuse_newer(self.schema_version(), SCHEMA_VERSION)

    def _ensure_schema(self):
        """Create or upgrade the schema; a no-op (no write, no lock) when it is current.
        The version found (under the lock when it upgraded)."""
        migrations, latest = MIGRATIONS, SCHEMA_VERSION  # read once: tests patch them
        with self._failing('read the schema version'):
            version = self._schema_version()
        self._refuse_newer(version, latest)
        if version == latest:
            return version
        with self.transaction():
            with self._failing('upgrade the schema from version %d to %d' % (version, latest)):
                if self._dialect is engine.POSTGRESQL:
                    # SQLite's BEGIN IMMEDIATE already serialises; PostgreSQL needs a lock
                    # before CREATE TABLE IF NOT EXISTS, which races on its catalog.
                    self._execute('SELECT pg_advisory_xact_lock(?)', (SCHEMA_LOCK_KEY,))
                self._execute(SCHEMA_VERSION_TABLE)
                # Read again under the lock: another process may have upgraded meanwhile.
                version = self._schema_version()
            self._refuse_newer(version, latest)
            for target, statements in migrations:
                if target <= version:
                    continue
                with self._failing('upgrade the schema to version %d' % target):
                    for statement in statements:
                        self._execute(statement)
                    self._execute('INSERT INTO schema_version (version, applied_at) VALUES (?, ?)', (target, engine.utcnow()))
        return version

    def _refuse_newer(self, version, latest):
        if version > latest:
            raise errors.RegistryError(
                'registry %s: registry schema %d is newer than this collection\'s %d; upgrade the collection '
                '(the registry was left untouched)' % (self.url, version, latest))
