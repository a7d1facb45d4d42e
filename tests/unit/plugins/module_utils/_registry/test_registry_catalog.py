"""Flavors, images, server groups, instances and allocations: the registry's pure logic (schema v2,
field encoding, argument checks made before any database access) and the catalog core over an
in-memory stand-in for the registry."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute import catalog
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import registry
from ansible_collections.multihv.cloud.plugins.module_utils._registry import rows
from ansible_collections.multihv.cloud.plugins.module_utils._registry import rules
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables
from support.records import instance

# sha256 of json.dumps(MIGRATIONS[0]) as released: a released version never changes.
V1_SHA256 = '2a12f5ec283ad2a89c934e462b9cc1f5c1fc12a70485dfdff347fc7776f40b60'


def closed_registry():
    """A Registry with no connection: any database access raises RegistryError 'is closed'."""
    return registry.Registry(None, engine.SQLITE, 'sqlite:////nowhere.sqlite')


# -- schema ----------------------------------------------------------------------------------


def test_version_1_is_untouched_and_version_2_adds_server_groups():
    assert hashlib.sha256(json.dumps(schema.MIGRATIONS[0]).encode()).hexdigest() == V1_SHA256
    assert schema.MIGRATIONS[1][0] == 2
    statements = ' '.join(schema.MIGRATIONS[1][1])
    assert set(re.findall(r'CREATE TABLE (\w+)', statements)) == {'server_groups'}
    table = re.search(r'CREATE TABLE server_groups \((.*?)\)$', schema.MIGRATIONS[1][1][0]).group(1)
    assert [column.split()[0] for column in table.split(',')] == ['name', 'policy', 'rules', 'created_at', 'updated_at']
    assert 'name TEXT PRIMARY KEY' in table and 'policy TEXT NOT NULL' in table
    # The lookups behind "used by" and "has members".
    assert 'CREATE INDEX instances_flavor ON instances (flavor)' in schema.MIGRATIONS[1][1]
    assert 'CREATE INDEX instances_server_group ON instances (server_group)' in schema.MIGRATIONS[1][1]


def test_version_3_adds_the_down_mark_and_the_source_index_only():
    assert schema.MIGRATIONS[2][0] == 3
    assert schema.MIGRATIONS[2][1] == ['ALTER TABLE nodes ADD COLUMN down_since TEXT',
                                       'CREATE INDEX migrations_source ON migrations (source_node)']
    assert 'done' in registry.MIGRATION_STATUSES


def test_version_4_adds_the_lease_generation_and_the_node_probe_count_only():
    assert schema.MIGRATIONS[3][0] == 4
    assert schema.MIGRATIONS[3][1] == ['ALTER TABLE locks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0',
                                       'ALTER TABLE nodes ADD COLUMN down_probes INTEGER NOT NULL DEFAULT 0']


def test_table_columns_match_the_schema():
    created = {}
    for _version, statements in schema.MIGRATIONS:
        for statement in statements:
            found = re.match(r'CREATE TABLE (\w+) \((.*)\)$', statement)
            if found:
                created[found.group(1)] = [part.split()[0] for part in found.group(2).split(',') if not part.strip().startswith('PRIMARY KEY')]
            added = re.match(r'ALTER TABLE (\w+) ADD COLUMN (\w+) ', statement)
            if added:
                created[added.group(1)].append(added.group(2))
    for table in (tables.NODES, tables.FLAVORS, tables.IMAGES, tables.SERVER_GROUPS, tables.KEYPAIRS, tables.INSTANCES):
        # The code names its columns in SELECTs: a column added later may sit anywhere in its list.
        assert sorted(table.columns) == sorted(created[table.name]), table.name
    assert tables.NODES.columns == tables.NODE_COLUMNS
    assert tables.INSTANCES.fields == tables.INSTANCE_FIELDS and tables.FLAVORS.fields == tables.FLAVOR_FIELDS
    assert tables.IMAGES.fields == tables.IMAGE_FIELDS and tables.SERVER_GROUPS.fields == tables.SERVER_GROUP_FIELDS
    assert tables.KEYPAIRS.fields == tables.KEYPAIR_FIELDS


# -- encoding ----------------------------------------------------------------------------------


def test_fields_are_encoded_as_stored_and_decoded_back():
    encode = tables.encode
    assert encode(tables.FLAVORS, 'vcpus', 4) == 4
    assert encode(tables.FLAVORS, 'extra_specs', {'b': 1, 'a': [2]}) == '{"a": [2], "b": 1}'
    assert encode(tables.INSTANCES, 'ha', True) == 1 and not isinstance(encode(tables.INSTANCES, 'ha', True), bool)
    assert encode(tables.INSTANCES, 'node', None) is None
    assert encode(tables.SERVER_GROUPS, 'rules', None) is None
    row = dict((column, None) for column in tables.INSTANCES.columns)
    row.update(uuid='u1', name='web1', ha=0, restart_priority=3, identity='{"hostname": "web1", "macs": ["52:54:00:00:00:01"]}')
    decoded = tables.decode(tables.INSTANCES, row)
    assert decoded.ha is False and decoded.restart_priority == 3
    assert decoded.identity == {'hostname': 'web1', 'macs': ['52:54:00:00:00:01']}


@pytest.mark.parametrize('table, record, document', [
    (tables.INSTANCES, rows.Instance, 'identity'),
    (tables.MIGRATIONS_TABLE, rows.Migration, 'stats'),
])
def test_instance_and_migration_rows_are_records_whose_dict_is_the_decoded_row(table, record, document):
    """One field per column, in column order; as_dict() gives the decoded row, as a dict of the caller's own."""
    assert table.record is record
    assert tuple(field.name for field in dataclasses.fields(record)) == table.columns
    row = dict((column, '%s-value' % column) for column in table.columns)
    row.update((field, 1) for field, kind in table.kinds.items() if kind in ('int', 'bool'))
    row[document] = '{"a": [1]}'
    decoded = tables.decode(table, row)
    assert isinstance(decoded, record)
    expected = dict(row, **{document: {'a': [1]}})
    expected.update((field, True) for field, kind in table.kinds.items() if kind == 'bool')
    shown = decoded.as_dict()
    derived = {'addresses': {}} if record is rows.Instance else {}  # an instance's addresses by network, from its identity
    assert shown == dict(expected, **derived) and list(shown) == list(table.columns) + list(derived)
    shown[document]['a'].append(2)
    assert decoded.as_dict()[document] == {'a': [1]}


@pytest.mark.parametrize('table, field, value, message', [
    (tables.FLAVORS, 'vcpus', True, 'flavor field vcpus must be an integer'),
    (tables.FLAVORS, 'vcpus', '2', 'flavor field vcpus must be an integer'),
    (tables.FLAVORS, 'ram_mb', None, 'flavor field ram_mb must be given, not None'),
    (tables.FLAVORS, 'extra_specs', ['a'], 'flavor field extra_specs must be a dict or None'),
    (tables.IMAGES, 'hypervisor_type', None, 'image field hypervisor_type must be given'),
    (tables.IMAGES, 'hypervisor_type', '', 'image field hypervisor_type must be a non-empty string'),
    (tables.IMAGES, 'locations', 'kvm1', 'image field locations must be a dict'),
    (tables.INSTANCES, 'ha', 1, 'instance field ha must be a bool'),
    (tables.INSTANCES, 'ha', None, 'instance field ha must be true or false, not None'),
    (tables.INSTANCES, 'restart_priority', 1.5, 'instance field restart_priority must be an integer'),
    (tables.INSTANCES, 'name', '', 'instance field name must be a non-empty string'),
    (tables.INSTANCES, 'node', 3, 'instance field node must be a string or None'),
])
def test_values_of_the_wrong_kind_are_a_type_error(table, field, value, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        tables.encode(table, field, value)


def test_name_list_shows_the_first_ten():
    assert rules.name_list(['a', 'b']) == 'a, b'
    names = ['i%02d' % index for index in range(13)]
    assert rules.name_list(names) == ', '.join(names[:10]) + ' and 3 more'


def test_the_catalog_rules_refuse_only_what_instances_hold_with_the_error_their_caller_names():
    with pytest.raises(errors.RegistryError, match=re.escape('flavor m1 is used by instance(s) web1: its vcpus cannot change')):
        rules.keep_used_flavor('m1', ['web1'], {'vcpus': 4, 'extra_specs': '{}'}, error=errors.RegistryError)
    with pytest.raises(errors.MultihvError, match='server group db has members db1: its policy cannot change from affinity to'):
        rules.keep_policy_of_members('db', ['db1'], 'affinity', 'anti-affinity')
    # extra_specs and rules may change under instances; nothing is held by a flavor or group nobody uses.
    rules.keep_used_flavor('m1', ['web1'], {'extra_specs': '{}'})
    rules.keep_used_flavor('m1', [], {'vcpus': 4})
    rules.keep_flavor_in_use('m1', [])
    rules.keep_policy_of_members('db', ['db1'], 'affinity', 'affinity')
    rules.keep_group_with_members('db', [])


# -- argument checks made before the database is touched ----------------------------------------


@pytest.mark.parametrize('call, exception, message', [
    (lambda r: r.set_flavor('m1', colour='blue'), TypeError, 'unknown flavor field(s) colour; known: vcpus, ram_mb, disk_gb, extra_specs'),
    (lambda r: r.set_image('img', size=3), TypeError, 'unknown image field(s) size'),
    (lambda r: r.set_server_group('g', 'spread'), ValueError, "unknown server group policy 'spread'; known: affinity, anti-affinity"),
    (lambda r: r.set_server_group('g', 'affinity', members=[]), TypeError, 'unknown server group field(s) members'),
    (lambda r: r.get_instance(), TypeError, 'get_instance needs uuid or name, not both or neither'),
    (lambda r: r.get_instance(uuid='u', name='n'), TypeError, 'get_instance needs uuid or name'),
    (lambda r: r.create_instance(name='web1', flavor='m1'), TypeError, 'create_instance needs image, storage'),
    (lambda r: r.create_instance(name='web1', flavor='m1', image='i', storage='nfs'), ValueError, 'instance storage must be one of shared, local'),
    (lambda r: r.create_instance(uuid=7, name='web1'), TypeError, 'instance uuid must be a string'),
    (lambda r: r.update_instance('u1', created_at='x'), TypeError, 'unknown instance field(s) created_at'),
    (lambda r: r.update_instance('u1', ha='yes'), TypeError, 'instance field ha must be a bool'),
    (lambda r: r.claim('u1', 'kvm1', 'kvm', {'vcpus': 1}, {'vcpus': 4, 'memory_mb': 1, 'disk_gb': 1}), TypeError,
     'resources must be a dict of exactly vcpus, memory_mb, disk_gb'),
    (lambda r: r.claim('u1', 'kvm1', 'kvm', {'vcpus': -1, 'memory_mb': 1, 'disk_gb': 0}, {'vcpus': 4, 'memory_mb': 1, 'disk_gb': 1}),
     TypeError, 'resources.vcpus must be a non-negative integer, got -1'),
    (lambda r: r.claim('u1', 'kvm1', '', {'vcpus': 1, 'memory_mb': 1, 'disk_gb': 0}, {'vcpus': 4, 'memory_mb': 1, 'disk_gb': 1}),
     TypeError, 'hypervisor_type must be a non-empty string'),
])
def test_caller_bugs_are_refused_before_touching_the_database(call, exception, message):
    with pytest.raises(exception, match=re.escape(message)):
        call(closed_registry())


# -- the catalog over an in-memory registry ---------------------------------------------------------


class MemoryRegistry:
    """The registry calls the catalog makes, over dicts (instances: the fields the catalog reads, returned
    as the registry's Instance records); writes are counted."""

    def __init__(self):
        self.flavors, self.groups, self.instances, self.writes = {}, {}, [], []

    @contextlib.contextmanager
    def transaction(self):
        yield self

    def get_flavor(self, name, lock=False):
        return dict(self.flavors[name]) if name in self.flavors else None

    def set_flavor(self, name, **fields):
        self.writes.append(('set_flavor', name, fields))
        before = self.get_flavor(name)
        self.flavors[name] = dict(before or {'name': name, 'created_at': 't0', 'updated_at': 't0'}, **fields)
        return before, self.get_flavor(name)

    def delete_flavor(self, name):
        self.writes.append(('delete_flavor', name))
        return self.flavors.pop(name, None)

    def get_server_group(self, name, lock=False):
        return dict(self.groups[name]) if name in self.groups else None

    def set_server_group(self, name, policy, **fields):
        self.writes.append(('set_server_group', name, policy))
        before = self.get_server_group(name)
        self.groups[name] = {'name': name, 'policy': policy, 'rules': None}
        return before, self.get_server_group(name)

    def delete_server_group(self, name):
        self.writes.append(('delete_server_group', name))
        return self.groups.pop(name, None)

    def list_instances(self, node=None, server_group=None, flavor=None):
        return [instance(**i) for i in self.instances if (flavor is None or i['flavor'] == flavor)
                and (server_group is None or i['server_group'] == server_group)]


@pytest.fixture
def memory():
    return MemoryRegistry()


def test_flavor_created_with_defaults_then_idempotent(memory):
    changed, before, after = catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 2, 'ram_mb': 512, 'disk_gb': None, 'extra_specs': None})
    assert (changed, before) == (True, None)
    assert after == {'name': 'm1', 'vcpus': 2, 'ram_mb': 512, 'disk_gb': 0, 'extra_specs': {}}
    assert memory.writes == [('set_flavor', 'm1', {'vcpus': 2, 'ram_mb': 512, 'disk_gb': 0, 'extra_specs': {}})]
    assert catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 2, 'ram_mb': 512}) == (False, after, after)
    assert catalog.set_flavor(memory, 'm1', 'present', {}) == (False, after, after)
    assert len(memory.writes) == 1


def test_flavor_update_writes_only_what_changed_and_check_mode_writes_nothing(memory):
    catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 2, 'ram_mb': 512})
    specs = {'hypervisor_type': 'kvm', 'aggregates': ['cattle'], 'availability_zone': 'kvm', 'custom:tier': 'gold'}
    changed, before, after = catalog.set_flavor(memory, 'm1', 'present', {'ram_mb': 1024, 'extra_specs': specs}, check_mode=True)
    assert changed is True and before['ram_mb'] == 512 and after['ram_mb'] == 1024 and after['extra_specs'] == specs
    assert len(memory.writes) == 1
    assert catalog.set_flavor(memory, 'm1', 'present', {'ram_mb': 1024, 'extra_specs': specs})[2] == after
    assert memory.writes[-1] == ('set_flavor', 'm1', {'ram_mb': 1024, 'extra_specs': specs})


@pytest.mark.parametrize('fields, message', [
    ({'vcpus': 0, 'ram_mb': 512}, 'vcpus must be an integer of at least 1, got 0; flavor m1 was left unchanged'),
    ({'vcpus': -2, 'ram_mb': 512}, 'vcpus must be an integer of at least 1, got -2'),
    ({'vcpus': 1, 'ram_mb': 0}, 'ram_mb must be an integer of at least 1, got 0'),
    ({'vcpus': 1, 'ram_mb': 1, 'disk_gb': -1}, 'disk_gb must be an integer of at least 0, got -1'),
    ({'vcpus': True, 'ram_mb': 1}, 'vcpus must be an integer of at least 1, got True'),
    ({'vcpus': 1}, 'flavor m1 does not exist; give ram_mb to create it; nothing was created'),
    ({'disk_gb': 1}, 'give vcpus and ram_mb to create it'),
    ({'vcpus': 1, 'ram_mb': 1, 'swap': 1}, 'unknown flavor setting(s) swap'),
    ({'vcpus': 1, 'ram_mb': 1, 'extra_specs': {'hypervisor_type': 'xen'}},
     "extra_specs.hypervisor_type of flavor m1 must be one of kvm, vsphere, got 'xen'"),
    ({'vcpus': 1, 'ram_mb': 1, 'extra_specs': {'aggregates': 'legacy'}}, "extra_specs.aggregates of flavor m1 must be a list of aggregate names"),
    ({'vcpus': 1, 'ram_mb': 1, 'extra_specs': {'availability_zone': ''}}, 'extra_specs.availability_zone of flavor m1 must be a zone name'),
    ({'vcpus': 1, 'ram_mb': 1, 'extra_specs': {'aggregate': ['gold']}},
     'unknown extra_specs key aggregate of flavor m1: the scheduler reads hypervisor_type, aggregates, availability_zone; '
     'other keys must be namespaced'),
])
def test_bad_flavor_settings_are_refused_and_nothing_is_written(memory, fields, message):
    with pytest.raises(errors.MultihvError, match=re.escape(message)):
        catalog.set_flavor(memory, 'm1', 'present', fields)
    assert memory.writes == []


def test_used_flavor_keeps_its_resources_but_not_its_extra_specs(memory):
    catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 2, 'ram_mb': 512})
    memory.instances = [{'name': 'web2', 'flavor': 'm1', 'server_group': None}, {'name': 'web1', 'flavor': 'm1', 'server_group': None}]
    for check_mode in (True, False):
        with pytest.raises(errors.MultihvError) as caught:
            catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 4, 'disk_gb': 10}, check_mode=check_mode)
        assert str(caught.value) == ('flavor m1 is used by instance(s) web2, web1: its vcpus, disk_gb cannot change (flavors are '
                                     'immutable; make a new flavor and resize the instances to it); flavor m1 was left unchanged')
        with pytest.raises(errors.MultihvError, match=re.escape('flavor m1 is used by instance(s) web2, web1; delete them or resize')):
            catalog.set_flavor(memory, 'm1', 'absent', {}, check_mode=check_mode)
    assert len(memory.writes) == 1
    # The same resources are no change; extra_specs may change.
    assert catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 2})[0] is False
    assert catalog.set_flavor(memory, 'm1', 'present', {'extra_specs': {'hypervisor_type': 'kvm'}})[0] is True


def test_flavor_absent(memory):
    assert catalog.set_flavor(memory, 'm1', 'absent', {}) == (False, None, None)
    catalog.set_flavor(memory, 'm1', 'present', {'vcpus': 2, 'ram_mb': 512})
    changed, before, after = catalog.set_flavor(memory, 'm1', 'absent', {}, check_mode=True)
    assert (changed, before['vcpus'], after) == (True, 2, None) and 'm1' in memory.flavors
    assert catalog.set_flavor(memory, 'm1', 'absent', {})[0] is True and 'm1' not in memory.flavors


@pytest.mark.parametrize('name', ['', '  ', None])
def test_a_flavor_or_group_needs_a_name(memory, name):
    with pytest.raises(errors.MultihvError, match='a flavor needs a non-empty name'):
        catalog.set_flavor(memory, name, 'present', {'vcpus': 1, 'ram_mb': 1})
    with pytest.raises(errors.MultihvError, match='a server group needs a non-empty name'):
        catalog.set_server_group(memory, name, 'present', {'policy': 'affinity'})


def test_server_group_lifecycle(memory):
    with pytest.raises(errors.MultihvError, match=re.escape('server group db does not exist; give its policy (one of affinity, ')):
        catalog.set_server_group(memory, 'db', 'present', {'policy': None})
    assert catalog.set_server_group(memory, 'db', 'present', {'policy': 'anti-affinity'}, check_mode=True)[0] is True
    assert memory.writes == []
    changed, before, after = catalog.set_server_group(memory, 'db', 'present', {'policy': 'anti-affinity'})
    assert (changed, before, after) == (True, None, {'name': 'db', 'policy': 'anti-affinity', 'members': []})
    assert catalog.set_server_group(memory, 'db', 'present', {'policy': 'anti-affinity'})[0] is False
    assert catalog.set_server_group(memory, 'db', 'present', {'policy': None})[0] is False
    assert catalog.set_server_group(memory, 'db', 'present', {'policy': 'soft-anti-affinity'})[2]['policy'] == 'soft-anti-affinity'
    assert catalog.set_server_group(memory, 'db', 'absent', {})[0] is True
    assert catalog.set_server_group(memory, 'db', 'absent', {}) == (False, None, None)


def test_server_group_with_members_keeps_its_policy_and_stays(memory):
    catalog.set_server_group(memory, 'db', 'present', {'policy': 'anti-affinity'})
    memory.instances = [{'name': 'db1', 'flavor': 'm1', 'server_group': 'db'}, {'name': 'db2', 'flavor': 'm1', 'server_group': 'db'}]
    writes = len(memory.writes)
    unchanged = catalog.set_server_group(memory, 'db', 'present', {'policy': 'anti-affinity'})
    assert unchanged == (False, {'name': 'db', 'policy': 'anti-affinity', 'members': ['db1', 'db2']},
                         {'name': 'db', 'policy': 'anti-affinity', 'members': ['db1', 'db2']})
    for check_mode in (True, False):
        with pytest.raises(errors.MultihvError) as caught:
            catalog.set_server_group(memory, 'db', 'present', {'policy': 'affinity'}, check_mode=check_mode)
        assert str(caught.value) == ('server group db has members db1, db2: its policy cannot change from anti-affinity to affinity '
                                     'while it has members; server group db was left unchanged')
        with pytest.raises(errors.MultihvError, match='server group db still has members db1, db2; delete them or take them out'):
            catalog.set_server_group(memory, 'db', 'absent', {}, check_mode=check_mode)
    assert len(memory.writes) == writes


def test_unknown_server_group_policy(memory):
    with pytest.raises(errors.MultihvError, match="unknown server group policy 'spread'; use one of affinity, anti-affinity, "
                                                  "soft-affinity, soft-anti-affinity; server group db was left unchanged"):
        catalog.set_server_group(memory, 'db', 'present', {'policy': 'spread'})
