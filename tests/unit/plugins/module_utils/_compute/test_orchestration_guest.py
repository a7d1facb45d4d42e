"""What the core hands a driver for the guest (InstanceSpec.guest), on fake hypervisors and a real
registry: the recorded hostname and key, the password of each new disk (a boot, a rebuild, a local
evacuation) and user_data only where they were given, never stored; refusals that leave nothing."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import keypairs as _keypairs
from ansible_collections.multihv.cloud.plugins.module_utils._guest import bootstrap
from support.fake_driver import FakeDriver, two_node_cloud

KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6i2CvFCwz54Soz+ludqXfqXyZnzDCGFwjweGz3enl5 ops@example'
SECRET = 'user-data-secret-4711'


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    with two_node_cloud(tmp_path) as made:
        _keypairs.set_keypair(made.registry, 'ops', 'present', KEY)
        yield made


@pytest.fixture(name='spawned')
def spawned_fixture(monkeypatch):
    """Every InstanceSpec the fake drivers spawn, in order."""
    specs = []
    spawn = FakeDriver.spawn

    def recording(self, spec):
        specs.append(spec)
        return spawn(self, spec)
    monkeypatch.setattr(FakeDriver, 'spawn', recording)
    return specs


def task(cloud, check_mode=False, **params):
    """One instance task as the module runs it (its options' defaults as the module has them)."""
    options = dict.fromkeys(_instance_tasks.PER_INSTANCE + ('name', 'instances'))
    options.update(state='present', storage='local', update_password='on_create', ha=False, restart_priority=0)
    options.update(params)
    return _instance_tasks.run(cloud.context(), options, check_mode)


def registry_text(cloud):
    """Everything the registry holds, as text: a secret must be nowhere in it."""
    rows = [r.as_dict() for r in cloud.registry.list_instances()] + [m.as_dict() for m in cloud.registry.list_migrations()]
    return json.dumps(rows, default=str)


def test_a_boot_delivers_hostname_key_user_data_and_a_generated_password_returned_once(cloud, spawned):
    result = task(cloud, name='web-1', flavor='small', image='tick', hostname='web-1.example', key_name='ops',
                  user_data='#cloud-config\nruncmd: [echo %s]\n' % SECRET)
    guest = spawned[0].guest
    password = result['instance']['admin_password']
    assert (guest.uuid, guest.hostname, guest.public_keys, guest.admin_user) == (
        result['instance']['uuid'], 'web-1.example', (KEY,), 'root')
    assert guest.admin_password == password and len(password) >= 20
    assert SECRET in bootstrap.user_data(guest) and password in bootstrap.user_data(guest)
    assert 'admin_password' not in result['diff']['after']
    assert password not in registry_text(cloud) and SECRET not in registry_text(cloud)
    assert cloud.registry.get_instance(name='web-1').identity['public_key'] == KEY
    # Known by name afterwards: nothing is booted again, no password is made again.
    again = task(cloud, name='web-1', flavor='small', image='tick', key_name='ops')
    assert again['changed'] is False and 'admin_password' not in again['instance'] and len(spawned) == 1


def test_a_given_password_is_delivered_and_not_returned_and_the_images_admin_user_gets_it(cloud, spawned):
    cloud.image('debian', source='/images/debian.qcow2', format='qcow2', os_admin_user='debian')
    result = task(cloud, name='web-1', flavor='small', image='debian', admin_password='Given-Pass-1')
    assert (spawned[0].guest.admin_password, spawned[0].guest.admin_user) == ('Given-Pass-1', 'debian')
    assert 'admin_password' not in result['instance']


def test_each_instance_of_a_batch_gets_its_own_password(cloud, spawned):
    result = task(cloud, instances=[{'name': 'a'}, {'name': 'b', 'admin_password': 'Given-Pass-2'}], flavor='small',
                  image='tick', concurrency=2)
    returned = dict((i['name'], i.get('admin_password')) for i in result['instances'])
    delivered = dict((s.name, s.guest.admin_password) for s in spawned)
    assert returned['b'] is None and delivered['b'] == 'Given-Pass-2'
    assert returned['a'] == delivered['a'] and returned['a'] not in ('Given-Pass-2', None)


@pytest.mark.parametrize('params, error, message', [
    ({'key_name': 'nobody'}, errors.NotFound, 'keypair nobody does not exist'),
    ({'user_data': 'x' * (bootstrap.USER_DATA_MAX_BYTES + 1)}, errors.GuestDataInvalid, 'more than the 65535 allowed'),
])
def test_bad_guest_data_is_refused_before_anything_is_made(cloud, spawned, params, error, message):
    with pytest.raises(error, match=message) as caught:
        task(cloud, name='web-1', flavor='small', image='tick', **params)
    assert 'xxxxxxxx' not in str(caught.value)
    assert spawned == [] and cloud.registry.list_instances() == [] and cloud.registry.list_allocations() == []


def test_check_mode_refuses_an_unknown_key_or_too_much_user_data_and_makes_no_password(cloud, spawned):
    with pytest.raises(errors.NotFound, match='keypair nobody'):
        task(cloud, check_mode=True, name='web-1', flavor='small', image='tick', key_name='nobody')
    with pytest.raises(errors.GuestDataInvalid, match='user_data of instance web-1 is 65536 bytes'):
        task(cloud, check_mode=True, name='web-1', flavor='small', image='tick', user_data='x' * (bootstrap.USER_DATA_MAX_BYTES + 1))
    result = task(cloud, check_mode=True, name='web-1', flavor='small', image='tick', key_name='ops')
    assert result['changed'] and 'admin_password' not in result['instance'] and spawned == []


def test_a_rebuild_brings_a_new_password_the_kept_key_and_only_the_user_data_it_is_given(cloud, spawned):
    first = task(cloud, name='web-1', flavor='small', image='tick', key_name='ops', user_data='#!/bin/sh\necho %s\n' % SECRET)
    _keypairs.set_keypair(cloud.registry, 'ops', 'absent')  # the instance keeps the key it was booted with
    rebuilt = task(cloud, name='web-1', state='rebuilt')
    guest = spawned[1].guest
    assert guest.public_keys == (KEY,) and guest.user_data is None
    assert guest.admin_password == rebuilt['instance']['admin_password'] != first['instance']['admin_password']
    assert guest.uuid == first['instance']['uuid']


def test_a_rebuild_with_user_data_over_the_bound_leaves_the_old_vm(cloud, spawned):
    task(cloud, name='web-1', flavor='small', image='tick')
    with pytest.raises(errors.GuestDataInvalid):
        task(cloud, name='web-1', state='rebuilt', user_data='x' * (bootstrap.USER_DATA_MAX_BYTES + 1))
    assert len(spawned) == 1 and cloud.world.placed() == {'web-1': ('fake1', 'running')}


def test_evacuation_gives_a_new_local_disk_a_new_password_and_a_kept_shared_disk_none(cloud, spawned):
    local = cloud.boot('local-one', node='fake1', storage='local', key_name='ops', admin_password='Boot-Pass')
    cloud.boot('shared-one', node='fake1', storage='shared', key_name='ops', admin_password='Boot-Pass')
    cloud.world.power_loss('fake1')
    result = _evacuation.evacuate(cloud.context(), 'fake1')
    done = dict((e['name'], e) for e in result['evacuations'])
    rebuilt = dict((s.name, s) for s in spawned[2:])
    new = done['local-one']['admin_password']
    assert rebuilt['local-one'].guest.admin_password == new and new not in (None, 'Boot-Pass')
    assert rebuilt['shared-one'].guest.admin_password is None and 'admin_password' not in done['shared-one']
    for spec in rebuilt.values():  # same identity, same key; no user_data is kept to deliver again
        assert spec.guest.public_keys == (KEY,) and spec.guest.user_data is None
    assert rebuilt['local-one'].guest.uuid == local.uuid and rebuilt['local-one'].guest.hostname == 'local-one'
    assert done['local-one']['admin_password'] not in registry_text(cloud)


def guest_password(cloud, able):
    """The fake endpoints' drivers set a running guest's password, or cannot."""
    for endpoint in cloud.world.endpoints.values():
        endpoint.capabilities = dataclasses.replace(endpoint.capabilities, guest_password=able)


def test_setting_the_password_in_a_running_guest_needs_a_driver_that_can(cloud):
    guest_password(cloud, False)
    task(cloud, name='web-1', flavor='small', image='tick')
    with pytest.raises(errors.MultihvError, match='cannot have their password set while they run') as caught:
        task(cloud, name='web-1', admin_password='New-Pass-9', update_password='always')
    assert 'New-Pass-9' not in str(caught.value)
    # on_create (the default) leaves an existing instance's password alone
    assert task(cloud, name='web-1', admin_password='New-Pass-9')['changed'] is False


def test_user_data_is_not_kept_on_the_spec_outside_the_guest(cloud, spawned):
    """The spec carries user_data in its GuestConfig only, which keeps it out of repr()."""
    task(cloud, name='web-1', flavor='small', image='tick', user_data='#cloud-config\nsecret: %s\n' % SECRET)
    assert SECRET not in repr(spawned[0]) and not hasattr(spawned[0], 'user_data')


def test_set_guest_password_refuses_a_stopped_instance(cloud):
    guest_password(cloud, True)
    record = cloud.boot('web-1', state='stopped')
    with pytest.raises(errors.MultihvError, match='is stopped: its guest must run'):
        _instances.set_guest_password(cloud.context(), record, 'New-Pass-9')


def test_the_guest_gets_each_nics_address_gateway_and_dns_by_mac_and_keeps_them_through_evacuation(cloud, spawned):
    cloud.network('lan', cidr='192.0.2.0/24', gateway='192.0.2.1', dns_servers=['192.0.2.53'])
    cloud.network('back', cidr='198.51.100.0/24')
    record = cloud.boot('web-1', node='fake1', networks=[{'network': 'lan', 'fixed_ip': '192.0.2.10'}, {'network': 'back'}])
    macs = record.identity['macs']
    expected = (bootstrap.GuestNic(mac=macs[0], address='192.0.2.10/24', gateway='192.0.2.1', dns=('192.0.2.53',)),
                bootstrap.GuestNic(mac=macs[1], address='198.51.100.1/24'))
    assert spawned[0].guest.nics == expected
    cloud.world.power_loss('fake1')
    _evacuation.evacuate(cloud.context(), 'fake1')
    assert spawned[1].guest.nics == expected and spawned[1].node == 'fake2'


@pytest.mark.parametrize('option, value, message', [
    ('key_name', 'other', 'exists with key_name ops, not other'),
    ('hostname', 'elsewhere.example', 'exists with hostname web-1.example, not elsewhere.example'),
])
def test_an_existing_instance_asked_for_another_key_or_hostname_is_refused(cloud, option, value, message):
    _keypairs.set_keypair(cloud.registry, 'other', 'present', KEY.replace('ops@', 'other@'))
    task(cloud, name='web-1', flavor='small', image='tick', key_name='ops', hostname='web-1.example')
    with pytest.raises(errors.MultihvError, match=message):
        task(cloud, name='web-1', **{option: value})
    assert task(cloud, name='web-1', key_name='ops', hostname='web-1.example')['changed'] is False
