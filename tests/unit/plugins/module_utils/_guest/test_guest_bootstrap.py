"""What reaches a guest: cloud-init documents, the NoCloud ISO and the vSphere guestinfo keys (pure logic)."""

import base64
import email
import gzip
import io

import pycdlib
import pytest
import yaml

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._guest import bootstrap, config_drive, guestinfo
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestConfig, GuestNic

UUID = '6f1c2b9e-4a55-4c1e-9a57-0d4f5f6e7a81'
KEYS = ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@example',
        'ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob@example']
PASSWORD = 's3cr3t-Pa55'
STATIC = GuestNic('52:54:00:AA:BB:01', '192.0.2.10/24', '192.0.2.1', ['192.0.2.53', '198.51.100.53'])
DHCP = GuestNic('52:54:00:aa:bb:02')


def config(**given):
    fields = dict(uuid=UUID, hostname='web-1', public_keys=KEYS, nics=[STATIC, DHCP])
    fields.update(given)
    return GuestConfig(**fields)


def mime_parts(text):
    # cloud-init only reads user-data as MIME when it finds this header in its first 4 KiB.
    assert 'mime-version:' in text[:4096].lower()
    message = email.message_from_string(text)
    assert message.is_multipart()
    return [part for part in message.walk() if not part.is_multipart()]


# meta-data and network-config

def test_meta_data_names_the_instance_its_hostname_and_keys():
    assert yaml.safe_load(bootstrap.meta_data(config())) == {
        'instance-id': UUID, 'local-hostname': 'web-1', 'public-keys': KEYS}


def test_meta_data_without_keys_has_no_public_keys():
    assert yaml.safe_load(bootstrap.meta_data(config(public_keys=[]))) == {'instance-id': UUID, 'local-hostname': 'web-1'}


def test_network_config_is_version_2_matched_by_mac():
    data = yaml.safe_load(bootstrap.network_config(config()))
    assert data == {'version': 2, 'ethernets': {
        'eth0': {'match': {'macaddress': '52:54:00:aa:bb:01'}, 'set-name': 'eth0', 'dhcp4': False,
                 'addresses': ['192.0.2.10/24'], 'routes': [{'to': '0.0.0.0/0', 'via': '192.0.2.1'}],
                 'nameservers': {'addresses': ['192.0.2.53', '198.51.100.53']}},
        'eth1': {'match': {'macaddress': '52:54:00:aa:bb:02'}, 'set-name': 'eth1', 'dhcp4': True},
    }}
    assert 'gateway4' not in bootstrap.network_config(config())


def test_ipv6_static_nic_routes_by_its_gateway():
    nic = GuestNic('52:54:00:aa:bb:03', '2001:db8::10/64', '2001:db8::1', ['2001:db8::53'])
    entry = yaml.safe_load(bootstrap.network_config(config(nics=[nic])))['ethernets']['eth0']
    assert entry['addresses'] == ['2001:db8::10/64']
    assert entry['routes'] == [{'to': '::/0', 'via': '2001:db8::1'}]


def test_no_nics_no_network_config():
    assert bootstrap.network_config(config(nics=[])) is None


@pytest.mark.parametrize('nic, word', [
    (dict(mac='52:54:00:aa:bb'), 'MAC'),
    (dict(mac='52:54:00:aa:bb:01', address='192.0.2.10'), 'prefix'),
    (dict(mac='52:54:00:aa:bb:01', address='192.0.2.300/24'), 'CIDR'),
    (dict(mac='52:54:00:aa:bb:01', address='192.0.2.10/24', gateway='gw'), 'gateway'),
    (dict(mac='52:54:00:aa:bb:01', address='192.0.2.10/24', dns=['x']), 'DNS'),
])
def test_malformed_nic_refused(nic, word):
    with pytest.raises(errors.GuestDataInvalid, match=word):
        GuestNic(**nic)


def test_two_nics_with_one_mac_refused():
    with pytest.raises(errors.GuestDataInvalid, match='two NICs'):
        config(nics=[STATIC, GuestNic('52:54:00:aa:bb:01')])


def test_a_key_with_a_newline_refused():
    with pytest.raises(errors.GuestDataInvalid, match='public key 1 of instance %s' % UUID):
        config(public_keys=[KEYS[0], KEYS[1] + '\nssh-rsa AAAA mallory'])


# user-data

def test_user_data_unchanged_without_password():
    script = '#!/bin/sh\r\necho héllo\n'
    assert bootstrap.user_data(config(user_data=script)) == script
    assert bootstrap.user_data(config()) == ''


def test_password_alone_is_a_cloud_config():
    text = bootstrap.user_data(config(admin_password=PASSWORD))
    assert text.startswith('#cloud-config\n')
    assert yaml.safe_load(text) == {'chpasswd': {'expire': False, 'users': [{'name': 'root', 'password': PASSWORD, 'type': 'text'}]},
                                    'ssh_pwauth': True}


def test_password_for_the_images_admin_user():
    text = bootstrap.user_data(config(admin_password=PASSWORD, admin_user='debian'))
    assert yaml.safe_load(text)['chpasswd']['users'] == [{'name': 'debian', 'password': PASSWORD, 'type': 'text'}]


@pytest.mark.parametrize('user', ['', 'root\nmallory', 'Root!', '../x'])
def test_admin_user_that_is_no_user_name_is_refused(user):
    with pytest.raises(errors.GuestDataInvalid, match='admin user'):
        config(admin_user=user)


def test_password_merged_into_the_users_cloud_config():
    given = ('#cloud-config\npackages: [nginx]\nchpasswd:\n  users:\n  - {name: root, password: x}\n'
             '  - {name: app, password: y}\nssh_pwauth: false\n')
    text = bootstrap.user_data(config(user_data=given, admin_password=PASSWORD))
    assert text.startswith('#cloud-config\n')
    assert yaml.safe_load(text) == {
        'packages': ['nginx'], 'ssh_pwauth': False,
        'chpasswd': {'users': [{'name': 'app', 'password': 'y'}, {'name': 'root', 'password': PASSWORD, 'type': 'text'}],
                     'expire': False}}


def test_password_that_yaml_would_read_as_a_number_stays_a_string():
    text = bootstrap.user_data(config(admin_password='0123'))
    assert yaml.safe_load(text)['chpasswd']['users'][0]['password'] == '0123'


@pytest.mark.parametrize('given', [
    '#!/bin/bash\r\necho "héllo ✓" > /tmp/x\n',
    '#cloud-boothook\nmkdir /x',
    '#cloud-config\n- a list, not a mapping\n',
    '#cloud-config\nkey: [unclosed\n',
    '#cloud-config-archive\n- type: text/cloud-config\n  content: "a: 1"\n',
])
def test_other_user_data_kept_byte_for_byte_beside_the_password(given):
    parts = mime_parts(bootstrap.user_data(config(user_data=given, admin_password=PASSWORD)))
    assert [part.get_content_type() for part in parts] == ['text/cloud-config', 'text/plain']
    assert yaml.safe_load(parts[0].get_payload(decode=True))['chpasswd']['users'][0]['password'] == PASSWORD
    assert parts[1].get_payload(decode=True) == given.encode('utf-8')


def test_multipart_is_the_same_for_the_same_config():
    cfg = config(user_data='#!/bin/sh\necho hi\n', admin_password=PASSWORD)
    assert bootstrap.user_data(cfg) == bootstrap.user_data(config(user_data='#!/bin/sh\necho hi\n', admin_password=PASSWORD))


def test_mime_user_data_nested_whole():
    inner = email.mime.multipart.MIMEMultipart()
    inner.attach(email.mime.text.MIMEText('#!/bin/sh\necho one\n', 'x-shellscript'))
    inner.attach(email.mime.text.MIMEText('#!/bin/sh\necho two\n', 'x-shellscript'))
    parts = mime_parts(bootstrap.user_data(config(user_data=inner.as_string(), admin_password=PASSWORD)))
    assert [part.get_content_type() for part in parts] == ['text/cloud-config', 'text/x-shellscript', 'text/x-shellscript']
    assert parts[2].get_payload(decode=True) == b'#!/bin/sh\necho two\n'


def test_user_data_over_the_bound_refused_by_size_only():
    at_bound = 'é' * (bootstrap.USER_DATA_MAX_BYTES // 2)
    config(user_data=at_bound)
    with pytest.raises(errors.GuestDataInvalid) as raised:
        config(user_data=at_bound + 'xy', admin_password=PASSWORD)
    message = str(raised.value)
    assert UUID in message and '65536 bytes' in message and '65535' in message
    assert 'é' not in message and PASSWORD not in message


def test_password_and_user_data_never_in_repr_meta_data_or_network_config():
    cfg = config(user_data='#cloud-config\nsecret_token: tok-123\n', admin_password=PASSWORD)
    for text in (repr(cfg), bootstrap.meta_data(cfg), bootstrap.network_config(cfg), guestinfo.metadata(cfg)):
        assert PASSWORD not in text and 'tok-123' not in text


# NoCloud ISO

def read_iso(image):
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    return iso


def iso_file(iso, **path):
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def test_nocloud_iso_holds_the_three_documents_under_label_cidata():
    cfg = config(user_data='#!/bin/sh\necho hi\n', admin_password=PASSWORD)
    iso = read_iso(config_drive.nocloud_iso(cfg))
    try:
        assert iso.pvd.volume_identifier.decode().rstrip() == 'cidata'
        expected = {'meta-data': bootstrap.meta_data(cfg), 'user-data': bootstrap.user_data(cfg),
                    'network-config': bootstrap.network_config(cfg)}
        for name, text in expected.items():
            assert iso_file(iso, joliet_path='/' + name) == text.encode('utf-8')
            assert iso_file(iso, rr_path='/' + name) == text.encode('utf-8')
        assert iso_file(iso, iso_path='/METADATA.;1') == expected['meta-data'].encode('utf-8')
        assert yaml.safe_load(iso_file(iso, rr_path='/meta-data'))['instance-id'] == UUID
    finally:
        iso.close()


def test_nocloud_iso_without_nics_or_user_data():
    iso = read_iso(config_drive.nocloud_iso(config(nics=[])))
    try:
        names = sorted(child.file_identifier().decode('utf-16-be') for child in iso.list_children(joliet_path='/')
                       if not child.is_dot() and not child.is_dotdot())
        assert names == ['meta-data', 'user-data']
        assert iso_file(iso, joliet_path='/user-data') == b''
    finally:
        iso.close()


def test_missing_pycdlib_named(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_pycdlib(name, *args, **kwargs):
        if name == 'pycdlib':
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_pycdlib)
    with pytest.raises(errors.MissingLibrary, match='pycdlib is required to build the config drive'):
        config_drive.nocloud_iso(config())


# vSphere guestinfo

def decode(value):
    return gzip.decompress(base64.b64decode(value)).decode('utf-8')


def test_guestinfo_keys_decode_to_the_documents():
    cfg = config(user_data='#cloud-config\npackages: [nginx]\n', admin_password=PASSWORD)
    keys = guestinfo.guestinfo(cfg)
    assert set(keys) == {'guestinfo.metadata', 'guestinfo.metadata.encoding', 'guestinfo.userdata', 'guestinfo.userdata.encoding'}
    assert keys['guestinfo.metadata.encoding'] == keys['guestinfo.userdata.encoding'] == 'gzip+base64'
    metadata = yaml.safe_load(decode(keys['guestinfo.metadata']))
    assert metadata == {'instance-id': UUID, 'local-hostname': 'web-1', 'public-keys': KEYS,
                        'network': yaml.safe_load(bootstrap.network_config(cfg))}
    assert decode(keys['guestinfo.userdata']) == bootstrap.user_data(cfg)
    assert PASSWORD not in decode(keys['guestinfo.metadata'])


def test_guestinfo_without_user_data_has_no_userdata_keys_and_is_stable():
    cfg = config(nics=[])
    keys = guestinfo.guestinfo(cfg)
    assert set(keys) == {'guestinfo.metadata', 'guestinfo.metadata.encoding'}
    assert 'network' not in yaml.safe_load(decode(keys['guestinfo.metadata']))
    assert guestinfo.guestinfo(cfg) == keys
