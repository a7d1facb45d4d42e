# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's tables of record as the code sees them, and their values as stored.
Private to multihv.cloud: do not import. No I/O.

Conventions of the stored values (the SQL is the subset both engines accept):

- timestamps: TEXT, ISO-8601 UTC with microseconds and a Z, fixed width
  (2024-05-01T12:00:00.000000Z), so that text order is time order;
- booleans: INTEGER 0/1 (returned as bool);
- JSON documents: TEXT (returned decoded); NULL stays None.

Rows of instances and migrations are returned as records (rows.Instance, rows.Migration);
those of the other tables as dicts.

A value of the wrong kind is a caller's bug: TypeError (ValueError for a string
outside its vocabulary), raised before the database is touched.
"""

from __future__ import annotations

import json

from ansible_collections.multihv.cloud.plugins.module_utils._constants import (
    FLAVOR_RESOURCES, MIGRATION_STATUSES, RESOURCES, STORAGE_MODES,
)
from ansible_collections.multihv.cloud.plugins.module_utils._registry.rows import Instance, Migration

# Admin-state columns of nodes besides name and hypervisor_type, by kind of value.
NODE_FIELDS = ('enabled', 'disabled_reason', 'forced_down', 'availability_zone', 'aggregates',
               'allocation_ratios', 'reserved', 'reserved_for_failover', 'down_since', 'down_probes')
NODE_BOOLS = ('enabled', 'forced_down', 'reserved_for_failover')
NODE_INTS = ('down_probes',)
NODE_JSON = {'aggregates': list, 'allocation_ratios': dict, 'reserved': dict}
NODE_COLUMNS = ('name', 'hypervisor_type') + NODE_FIELDS + ('created_at', 'updated_at')

# The catalog and the instances, Nova's names.
FLAVOR_FIELDS = FLAVOR_RESOURCES + ('extra_specs',)
IMAGE_FIELDS = ('hypervisor_type', 'properties', 'locations')
SERVER_GROUP_FIELDS = ('policy', 'rules')
KEYPAIR_FIELDS = ('public_key', 'fingerprint', 'type')
NETWORK_FIELDS = ('cidr', 'gateway', 'dns_servers', 'allocation_start', 'allocation_end', 'backings')
INSTANCE_FIELDS = ('name', 'node', 'host', 'flavor', 'image', 'storage', 'identity', 'ha', 'restart_priority',
                   'server_group', 'state')


class _Table:
    """A table of record as the code sees it: its key, each field's kind of value, and
    the fields a new row needs (NOT NULL without a default).

    kinds: {field: 'str' | 'int' | 'bool' | list | dict (JSON)}, in column order.
    Every int and bool column is NOT NULL; a str column is nullable unless required.
    record: the dataclass a decoded row becomes (one field per column), or None for a dict.
    """

    def __init__(self, name, noun, key, kinds, required=(), record=None):
        self.name = name
        self.noun = noun
        self.key = key
        self.kinds = kinds
        self.fields = tuple(kinds)
        self.required = tuple(required)
        self.columns = (key,) + self.fields + ('created_at', 'updated_at')
        self.record = record


NODES = _Table('nodes', 'node', 'name', dict(
    [('hypervisor_type', 'str')]
    + [(field, 'bool' if field in NODE_BOOLS else 'int' if field in NODE_INTS else NODE_JSON.get(field, 'str'))
       for field in NODE_FIELDS]),
    required=('hypervisor_type',))
FLAVORS = _Table('flavors', 'flavor', 'name', {'vcpus': 'int', 'ram_mb': 'int', 'disk_gb': 'int', 'extra_specs': dict},
                 required=FLAVOR_RESOURCES)
IMAGES = _Table('images', 'image', 'name', {'hypervisor_type': 'str', 'properties': dict, 'locations': dict},
                required=('hypervisor_type',))
SERVER_GROUPS = _Table('server_groups', 'server group', 'name', {'policy': 'str', 'rules': dict}, required=('policy',))
KEYPAIRS = _Table('keypairs', 'keypair', 'name', {'public_key': 'str', 'fingerprint': 'str', 'type': 'str'},
                  required=KEYPAIR_FIELDS)
NETWORKS = _Table('networks', 'network', 'name', {
    'cidr': 'str', 'gateway': 'str', 'dns_servers': list, 'allocation_start': 'str', 'allocation_end': 'str', 'backings': list,
}, required=('cidr', 'allocation_start', 'allocation_end'))
INSTANCES = _Table('instances', 'instance', 'uuid', {
    'name': 'str', 'node': 'str', 'host': 'str', 'flavor': 'str', 'image': 'str', 'storage': 'str', 'identity': dict,
    'ha': 'bool', 'restart_priority': 'int', 'server_group': 'str', 'state': 'str',
}, required=('name', 'flavor', 'image', 'storage', 'state'), record=Instance)
MIGRATIONS_TABLE = _Table('migrations', 'migration', 'id', {
    'instance_uuid': 'str', 'migration_type': 'str', 'status': 'str', 'source_node': 'str', 'source_host': 'str',
    'dest_node': 'str', 'dest_host': 'str', 'error': 'str', 'stats': dict, 'started_at': 'str', 'finished_at': 'str',
}, required=('instance_uuid', 'migration_type', 'status'), record=Migration)


def encode(table, field, value):
    """A field of table as stored; TypeError for a value of the wrong kind (a caller's bug)."""
    kind = table.kinds[field]
    what = '%s field %s' % (table.noun, field)
    if value is None:
        if kind == 'bool':
            raise TypeError('%s must be true or false, not None' % what)
        if kind == 'int' or field in table.required:
            raise TypeError('%s must be given, not None' % what)
        return None
    if kind == 'bool':
        if not isinstance(value, bool):
            raise TypeError('%s must be a bool, got %r' % (what, value))
        # int, not bool: psycopg would send a PostgreSQL boolean to an INTEGER column.
        return int(value)
    if kind == 'int':
        # bool is an int to Python, never to a reader of the record.
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError('%s must be an integer, got %r' % (what, value))
        return value
    if kind in (list, dict):
        if not isinstance(value, kind):
            raise TypeError('%s must be a %s or None, got %r' % (what, kind.__name__, value))
        return json.dumps(value, sort_keys=True)
    if not isinstance(value, str):
        raise TypeError('%s must be a string or None, got %r' % (what, value))
    if not value and field in table.required:
        raise TypeError('%s must be a non-empty string' % what)
    return value


def encode_fields(table, fields):
    """{column: stored value} of the fields given; TypeError naming unknown fields or values of the wrong kind."""
    unknown = sorted(set(fields) - set(table.fields))
    if unknown:
        raise TypeError('unknown %s field(s) %s; known: %s' % (table.noun, ', '.join(unknown), ', '.join(table.fields)))
    return dict((field, encode(table, field, value)) for field, value in fields.items())


def decode(table, row):
    """A row of table (column -> stored value) as Python: bools and decoded JSON; None stays None.
    The table's record when it has one (see rows.py), else a dict."""
    if row is None:
        return None
    decoded = dict(row)
    for field, kind in table.kinds.items():
        if kind == 'bool':
            decoded[field] = bool(decoded[field])
        elif kind in (list, dict) and decoded[field] is not None:
            decoded[field] = json.loads(decoded[field])
    return table.record(**decoded) if table.record is not None else decoded


def check_storage(stored):
    """An instance's storage, when given, is one of STORAGE_MODES; ValueError otherwise."""
    if 'storage' in stored and stored['storage'] not in STORAGE_MODES:
        raise ValueError('instance storage must be one of %s, got %r' % (', '.join(STORAGE_MODES), stored['storage']))


def check_migration_status(stored):
    """A migration's status, when given, is one of MIGRATION_STATUSES; ValueError otherwise."""
    if 'status' in stored and stored['status'] not in MIGRATION_STATUSES:
        raise ValueError('migration status must be one of %s, got %r' % (', '.join(MIGRATION_STATUSES), stored['status']))


def amounts(what, given):
    """{vcpus, memory_mb, disk_gb} (RESOURCES) as non-negative ints; TypeError for anything else (a caller's bug)."""
    if not isinstance(given, dict) or set(given) != set(RESOURCES):
        raise TypeError('%s must be a dict of exactly %s, got %r' % (what, ', '.join(RESOURCES), given))
    for resource, amount in given.items():
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise TypeError('%s.%s must be a non-negative integer, got %r' % (what, resource, amount))
    return dict(given)
