"""flavor and server_group through real Ansible runs, against a registry of each test's own.

Instances that use a flavor or join a group are recorded directly through the registry API,
as the instance core does before it claims and spawns: no guest is booted here.
"""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
from support.lab import ansible_module


@pytest.fixture
def cloud(lab, tmp_path):
    """Module options for the lab's cloud with a registry of this test's own."""
    return {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': f'sqlite:///{tmp_path}/registry.sqlite'}


def rows(cloud, table):  # pylint: disable=redefined-outer-name
    """Every row of a registry table, timestamps included: what 'nothing written' is checked against."""
    with Registry.open(cloud['registry_url']) as registry:
        return {'flavors': registry.list_flavors, 'server_groups': registry.list_server_groups}[table]()


def record_instance(cloud, name, **fields):  # pylint: disable=redefined-outer-name
    with Registry.open(cloud['registry_url']) as registry:
        registry.set_image('tick', hypervisor_type='kvm')
        return registry.create_instance(name=name, image='tick', storage='local', **fields)


# -- flavor ------------------------------------------------------------------------------------------


def test_flavor_create_idempotent_update_delete_with_check_mode_and_diff(cloud):
    args = dict(cloud, name='m1.small', vcpus=1, ram_mb=2048, disk_gb=20,
                extra_specs={'hypervisor_type': 'kvm', 'aggregates': ['cattle'], 'availability_zone': 'kvm'})
    flavor = {'name': 'm1.small', 'vcpus': 1, 'ram_mb': 2048, 'disk_gb': 20,
              'extra_specs': {'hypervisor_type': 'kvm', 'aggregates': ['cattle'], 'availability_zone': 'kvm'}}
    checked = ansible_module('multihv.cloud.flavor', args, check=True, diff=True)
    assert checked['changed'] is True and checked['flavor'] == flavor
    assert '+    "ram_mb": 2048,' in checked['_output']
    assert rows(cloud, 'flavors') == [], 'check mode wrote'

    created = ansible_module('multihv.cloud.flavor', args)
    assert created['changed'] is True and created['flavor'] == flavor
    again = ansible_module('multihv.cloud.flavor', args, diff=True)
    assert again['changed'] is False and again['flavor'] == flavor
    stored = rows(cloud, 'flavors')

    bigger = dict(cloud, name='m1.small', ram_mb=4096)  # the other settings are kept
    checked = ansible_module('multihv.cloud.flavor', bigger, check=True, diff=True)
    assert checked['changed'] is True and checked['flavor'] == dict(flavor, ram_mb=4096)
    assert '-    "ram_mb": 2048,' in checked['_output'] and '+    "ram_mb": 4096,' in checked['_output']
    assert rows(cloud, 'flavors') == stored, 'check mode wrote'
    updated = ansible_module('multihv.cloud.flavor', bigger)
    assert updated['changed'] is True and updated['flavor'] == dict(flavor, ram_mb=4096)
    assert ansible_module('multihv.cloud.flavor', bigger)['changed'] is False

    absent = dict(cloud, name='m1.small', state='absent')
    checked = ansible_module('multihv.cloud.flavor', absent, check=True, diff=True)
    assert checked['changed'] is True and checked['flavor'] is None and '-    "vcpus": 1' in checked['_output']
    assert len(rows(cloud, 'flavors')) == 1, 'check mode deleted'
    deleted = ansible_module('multihv.cloud.flavor', absent)
    assert deleted['changed'] is True and rows(cloud, 'flavors') == []
    assert ansible_module('multihv.cloud.flavor', absent)['changed'] is False


@pytest.mark.parametrize('settings, message', [
    ({'vcpus': -1, 'ram_mb': 512}, 'vcpus must be an integer of at least 1, got -1; flavor bad was left unchanged'),
    ({'vcpus': 1}, 'flavor bad does not exist; give ram_mb to create it; nothing was created'),
    ({'vcpus': 1, 'ram_mb': 64, 'extra_specs': {'tier': 'gold'}}, 'unknown extra_specs key tier of flavor bad: the scheduler reads'),
])
def test_flavor_bad_input_fails_and_writes_nothing(cloud, settings, message):
    failed = ansible_module('multihv.cloud.flavor', dict(cloud, name='bad', **settings), expect_failure=True)
    assert message in failed['msg']
    assert rows(cloud, 'flavors') == []


def test_used_flavor_cannot_change_size_or_go(cloud):
    ansible_module('multihv.cloud.flavor', dict(cloud, name='m1', vcpus=2, ram_mb=512, disk_gb=1))
    record_instance(cloud, 'web1', flavor='m1')
    record_instance(cloud, 'web2', flavor='m1')
    stored = rows(cloud, 'flavors')
    for check in (True, False):
        failed = ansible_module('multihv.cloud.flavor', dict(cloud, name='m1', vcpus=4), check=check, expect_failure=True)
        assert failed['msg'] == ('flavor m1 is used by instance(s) web1, web2: its vcpus cannot change (flavors are immutable; '
                                 'make a new flavor and resize the instances to it); flavor m1 was left unchanged')
        failed = ansible_module('multihv.cloud.flavor', dict(cloud, name='m1', state='absent'), check=check, expect_failure=True)
        assert failed['msg'].startswith('flavor m1 is used by instance(s) web1, web2; delete them or resize them')
    assert rows(cloud, 'flavors') == stored
    # What the scheduler reads may still change, as Nova allows.
    placed = ansible_module('multihv.cloud.flavor', dict(cloud, name='m1', vcpus=2, extra_specs={'aggregates': ['gold']}))
    assert placed['changed'] is True and placed['flavor']['extra_specs'] == {'aggregates': ['gold']}


# -- server_group ------------------------------------------------------------------------------------


def test_server_group_create_idempotent_update_delete_with_check_mode_and_diff(cloud):
    args = dict(cloud, name='db', policy='anti-affinity')
    checked = ansible_module('multihv.cloud.server_group', args, check=True, diff=True)
    assert checked['changed'] is True and checked['server_group'] == {'name': 'db', 'policy': 'anti-affinity', 'members': []}
    assert '+    "policy": "anti-affinity"' in checked['_output']
    assert rows(cloud, 'server_groups') == [], 'check mode wrote'

    assert ansible_module('multihv.cloud.server_group', args)['changed'] is True
    assert ansible_module('multihv.cloud.server_group', args)['changed'] is False
    assert ansible_module('multihv.cloud.server_group', dict(cloud, name='db'))['changed'] is False  # policy kept
    stored = rows(cloud, 'server_groups')

    soft = dict(cloud, name='db', policy='soft-anti-affinity')
    checked = ansible_module('multihv.cloud.server_group', soft, check=True, diff=True)
    assert checked['changed'] is True and '-    "policy": "anti-affinity"' in checked['_output']
    assert rows(cloud, 'server_groups') == stored, 'check mode wrote'
    assert ansible_module('multihv.cloud.server_group', soft)['server_group']['policy'] == 'soft-anti-affinity'

    absent = dict(cloud, name='db', state='absent')
    assert ansible_module('multihv.cloud.server_group', absent, check=True)['changed'] is True
    assert len(rows(cloud, 'server_groups')) == 1, 'check mode deleted'
    assert ansible_module('multihv.cloud.server_group', absent)['changed'] is True
    assert ansible_module('multihv.cloud.server_group', absent)['changed'] is False
    assert rows(cloud, 'server_groups') == []


def test_server_group_with_members_keeps_its_policy_and_stays(cloud):
    ansible_module('multihv.cloud.server_group', dict(cloud, name='db', policy='anti-affinity'))
    ansible_module('multihv.cloud.flavor', dict(cloud, name='m1', vcpus=1, ram_mb=64))
    record_instance(cloud, 'db1', flavor='m1', server_group='db')
    unchanged = ansible_module('multihv.cloud.server_group', dict(cloud, name='db', policy='anti-affinity'))
    assert unchanged['changed'] is False and unchanged['server_group']['members'] == ['db1']
    failed = ansible_module('multihv.cloud.server_group', dict(cloud, name='db', policy='affinity'), expect_failure=True)
    assert failed['msg'] == ('server group db has members db1: its policy cannot change from anti-affinity to affinity while it '
                             'has members; server group db was left unchanged')
    failed = ansible_module('multihv.cloud.server_group', dict(cloud, name='db', state='absent'), check=True, expect_failure=True)
    assert failed['msg'].startswith('server group db still has members db1; delete them or take them out of the group first')
    assert [g['policy'] for g in rows(cloud, 'server_groups')] == ['anti-affinity']


def test_server_group_bad_input(cloud):
    failed = ansible_module('multihv.cloud.server_group', dict(cloud, name='db', policy='spread'), expect_failure=True)
    assert 'value of policy must be one of: affinity, anti-affinity, soft-affinity, soft-anti-affinity, got: spread' in failed['msg']
    failed = ansible_module('multihv.cloud.server_group', dict(cloud, name='db'), expect_failure=True)
    assert failed['msg'].startswith('server group db does not exist; give its policy (one of affinity, ')
    assert rows(cloud, 'server_groups') == []
