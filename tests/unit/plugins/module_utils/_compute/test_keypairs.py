"""Keypairs: the public key parser and its fingerprint (against ssh-keygen's), the registry's
keypairs table (schema v5) on a real SQLite file, the keypair core and the module, check mode
and diff included."""

from __future__ import annotations

import base64
import json
import re
import sqlite3

import pytest


from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils import _public_keys
from ansible_collections.multihv.cloud.plugins.module_utils._compute import keypairs
from ansible_collections.multihv.cloud.plugins.module_utils._registry import registry
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables
from ansible_collections.multihv.cloud.plugins.modules import keypair as keypair_module
from support import modules

# Made with ssh-keygen -t ... -C ...; fingerprints as `ssh-keygen -lf` printed them.
ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN6i2CvFCwz54Soz+ludqXfqXyZnzDCGFwjweGz3enl5 alice@example'
ED25519_FP = 'SHA256:rFtAWzDTDJn2usEQyhZewUc78/79zNiFvIpj5LOziFE'
RSA = ('ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC4jVIe977CUblLbsefnic2zaFxtZhwD+UgrvxbklEMxEJVGb1W+ZjrC/APGZ1MTkjtZwTiZgmWiRzC1EeBn'
       'QyKhS0tuxr8R1SeIC/T3R3sdfxXO7/0L1OZ1bbxY3A/LtaGmH6fzA0dMRPT5LQoDFgm6ZekHO4QRHrBUf/eTE9GYSVjWfTQh7pnudQLhVFksEHWE4EjXTT6xN'
       'mjxk6Eib2DgNMotf85r+39p5vBr+jmOapR+k4NCL2XY4LyBACOjaUc6dbvUxvG9wcv/182Lp4uXW3XloQG4JramDcCE7l4mz2cBFeD0lDN+R8sXVCz2NyUxIQ'
       'ON9atFBjFDwwAXVfz bob')
RSA_FP = 'SHA256:8/s+pQyxU0///lVggULGt7nG87BIDpnA3b943wfxD7s'
ECDSA384 = ('ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBHum8pq7YbX39bKLJK5y0uhbyGgNNpBNvIdIKjw3i'
            'hmdySkU3fGhv2idZKc1An9wunfSl6q4TaFGToUl64Lj5kPPm6/wZO7d+J8D5P7UajIV5Uwb+0m1K4Dy5TTcF1ncOg==')
ECDSA384_FP = 'SHA256:9b+4wV/saKpKPpD+V9KfDLC1J6A46pOzaPfUuwbkZpw'


def wire(*strings):
    """SSH wire encoding of byte strings (RFC 4253 6.6), in base64."""
    return base64.b64encode(b''.join(len(s).to_bytes(4, 'big') + s for s in strings)).decode()


# -- the parser --------------------------------------------------------------------------------


@pytest.mark.parametrize('line, key_type, fingerprint, comment', [
    (ED25519, 'ssh-ed25519', ED25519_FP, 'alice@example'),
    (RSA, 'ssh-rsa', RSA_FP, 'bob'),
    (ECDSA384, 'ecdsa-sha2-nistp384', ECDSA384_FP, ''),
])
def test_keys_parse_with_ssh_keygens_fingerprint(line, key_type, fingerprint, comment):
    key = _public_keys.parse('k', line)
    assert (key.type, key.fingerprint, key.comment, key.public_key) == (key_type, fingerprint, comment, line)


def test_whitespace_around_and_between_is_normalised_and_the_comment_may_have_spaces():
    blob = ED25519.split()[1]
    key = _public_keys.parse('k', '  ssh-ed25519\t%s   my laptop key \n' % blob)
    assert key.public_key == 'ssh-ed25519 %s my laptop key' % blob and key.comment == 'my laptop key'
    assert key.fingerprint == ED25519_FP


def test_other_ecdsa_curves_and_ed25519_structure_are_accepted():
    point = b'\x04' + b'\x01' * 64
    line = 'ecdsa-sha2-nistp256 ' + wire(b'ecdsa-sha2-nistp256', b'nistp256', point)
    assert _public_keys.parse('k', line).type == 'ecdsa-sha2-nistp256'
    line = 'ecdsa-sha2-nistp521 ' + wire(b'ecdsa-sha2-nistp521', b'nistp521', b'\x04' + b'\x02' * 132)
    assert _public_keys.parse('k', line).type == 'ecdsa-sha2-nistp521'


ED_BLOB = ED25519.split()[1]


@pytest.mark.parametrize('text, message', [
    ('', 'public_key is empty'),
    ('   ', 'public_key is empty'),
    (None, 'public_key is empty'),
    ('-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----', 'is a private key'),
    (ED25519 + '\n' + RSA, 'must be one line'),
    ('ssh-dss AAAAB3NzaC1kc3M=', "has type 'ssh-dss', which is not one of ssh-ed25519, ssh-rsa"),
    (ED_BLOB, 'does not start with a key type (its first word, not shown, may be key data)'),
    ('ssh-rsa ' + wire(b'AAAAB3Nza', b'', b''), 'says ssh-rsa but its key data is of type (not shown: not a type name)'),
    ('ssh-ed25519', 'has its type (ssh-ed25519) but no key data'),
    ('ssh-ed25519 not*base64!', 'is not valid base64'),
    ('ssh-ed25519 ' + ED_BLOB[:-1], 'is not valid base64'),
    ('ssh-ed25519 ' + ED_BLOB[:-8], 'key data is cut short (45 bytes)'),
    ('sk-ssh-ed25519@openssh.com ' + ED_BLOB, "has type 'sk-ssh-ed25519@openssh.com', which is not one of"),
    ('ssh-ed25519 ' + wire(b'ssh-ed25519', b'x' * 32)[:-8], 'is cut short'),
    ('ssh-rsa ' + ED_BLOB, "says ssh-rsa but its key data is of type 'ssh-ed25519'"),
    ('ssh-ed25519 ' + RSA.split()[1], "says ssh-ed25519 but its key data is of type 'ssh-rsa'"),
    ('ssh-ed25519 ' + wire(b'ssh-ed25519', b'x' * 31), 'holds a 31-byte ed25519 key'),
    ('ssh-ed25519 ' + wire(b'ssh-ed25519', b'x' * 32, b'extra'), 'bytes after the ssh-ed25519 key'),
    ('ecdsa-sha2-nistp256 ' + wire(b'ecdsa-sha2-nistp256', b'nistp384', b'\x04'), "on curve 'nistp384'"),
    ('ssh-rsa ' + wire(b'ssh-rsa', b'\x01\x00\x01', b'\x00' + b'\xff' * 64), 'holds a 512-bit RSA key'),
])
def test_bad_keys_are_refused_naming_the_keypair_and_what_is_wrong(text, message):
    with pytest.raises(errors.MultihvError, match=re.escape(message)) as caught:
        _public_keys.parse('ops', text)
    said = str(caught.value)
    assert said.startswith('keypair ops: public_key ') and said.endswith('keypair ops was left unchanged')
    # Never the key itself.
    for blob in (ED_BLOB, RSA.split()[1], 'b3BlbnNzaC1rZXktdjEAAAAA'):
        assert blob[:20] not in said


def test_a_long_unknown_type_is_cut_in_the_message():
    with pytest.raises(errors.MultihvError) as caught:
        _public_keys.parse('ops', 'x' * 500 + ' AAAA')
    assert len(str(caught.value)) < 300


# -- the registry ------------------------------------------------------------------------------


def test_version_5_adds_the_keypairs_table_only():
    assert schema.KEYPAIRS_VERSION == 5 and schema.MIGRATIONS[4][0] == 5
    statements = schema.MIGRATIONS[4][1]
    assert len(statements) == 1
    table = re.match(r'CREATE TABLE keypairs \((.*)\)$', statements[0]).group(1)
    assert [column.split()[0] for column in table.split(',')] == list(tables.KEYPAIRS.columns)
    assert 'name TEXT PRIMARY KEY' in table


@pytest.fixture(name='reg')
def registry_fixture(tmp_path):
    url = 'sqlite:///%s' % (tmp_path / 'r.sqlite')
    with registry.Registry.open(url) as opened:
        yield opened


def test_set_get_list_and_delete_keypairs(reg):
    assert reg.get_keypair('ops') is None and reg.list_keypairs() == []
    before, after = reg.set_keypair('ops', '  ' + ED25519 + '\n')
    assert before is None
    assert after['public_key'] == ED25519 and after['fingerprint'] == ED25519_FP and after['type'] == 'ssh-ed25519'
    assert after['created_at'] == after['updated_at']
    reg.set_keypair('bob', RSA)
    assert [row['name'] for row in reg.list_keypairs()] == ['bob', 'ops']
    # The same key again writes nothing.
    assert reg.set_keypair('ops', ED25519) == (after, after)
    # Another key replaces it: fingerprint and type follow, created_at stays.
    before, replaced = reg.set_keypair('ops', ECDSA384)
    assert before == after
    assert (replaced['fingerprint'], replaced['type'], replaced['created_at']) == (ECDSA384_FP, 'ecdsa-sha2-nistp384', after['created_at'])
    assert replaced['updated_at'] > after['updated_at']
    assert reg.delete_keypair('ops') == replaced
    assert reg.delete_keypair('ops') is None and reg.get_keypair('ops') is None


def test_a_bad_key_is_refused_before_the_database_is_touched():
    closed = registry.Registry(None, registry.engine.SQLITE, 'sqlite:////nowhere.sqlite')
    with pytest.raises(errors.MultihvError, match='keypair ops: public_key has its type'):
        closed.set_keypair('ops', 'ssh-rsa')
    with pytest.raises(TypeError, match='keypair name must be a non-empty string'):
        closed.set_keypair('', ED25519)


def version_4_registry(tmp_path, monkeypatch):
    """The URL of a registry whose schema is version 4 (before keypairs)."""
    url = 'sqlite:///%s' % (tmp_path / 'old.sqlite')
    with monkeypatch.context() as patched:
        patched.setattr(schema, 'MIGRATIONS', schema.MIGRATIONS[:4])
        patched.setattr(schema, 'SCHEMA_VERSION', 4)
        registry.Registry.open(url).close()
    return url


def test_a_registry_older_than_keypairs_opened_as_it_is_has_none_and_is_not_written(tmp_path, monkeypatch):
    url = version_4_registry(tmp_path, monkeypatch)
    with registry.Registry.open(url, upgrade=False) as old:
        assert old.schema_version() == 4
        assert old.get_keypair('ops') is None and old.list_keypairs() == []
        assert keypairs.set_keypair(old, 'ops', 'present', ED25519, check_mode=True)[0] is True
        assert old.schema_version() == 4
    with registry.Registry.open(url) as upgraded:
        assert upgraded.schema_version() == schema.SCHEMA_VERSION and upgraded.list_keypairs() == []


# -- the core ----------------------------------------------------------------------------------


def test_core_creates_keeps_replaces_and_deletes(reg):
    changed, before, after = keypairs.set_keypair(reg, 'ops', 'present', ED25519)
    assert changed and before is None
    assert after == {'name': 'ops', 'fingerprint': ED25519_FP, 'type': 'ssh-ed25519', 'public_key': ED25519,
                     'created_at': reg.get_keypair('ops')['created_at']}
    assert keypairs.set_keypair(reg, 'ops', 'present', ED25519) == (False, after, after)
    assert keypairs.set_keypair(reg, 'ops', 'present', None) == (False, after, after)
    changed, before, replaced = keypairs.set_keypair(reg, 'ops', 'present', RSA)
    assert changed and before == after and replaced['fingerprint'] == RSA_FP
    assert keypairs.set_keypair(reg, 'ops', 'absent') == (True, replaced, None)
    assert keypairs.set_keypair(reg, 'ops', 'absent') == (False, None, None)


def test_core_check_mode_reports_without_writing(reg):
    changed, before, after = keypairs.set_keypair(reg, 'ops', 'present', ED25519, check_mode=True)
    assert changed and before is None and after['fingerprint'] == ED25519_FP and after['created_at'] is None
    assert reg.get_keypair('ops') is None
    reg.set_keypair('ops', ED25519)
    changed, before, after = keypairs.set_keypair(reg, 'ops', 'present', RSA, check_mode=True)
    assert changed and after['fingerprint'] == RSA_FP and after['created_at'] == before['created_at']
    assert keypairs.set_keypair(reg, 'ops', 'absent', check_mode=True) == (True, before, None)
    assert reg.get_keypair('ops')['fingerprint'] == ED25519_FP


def test_core_refusals_say_what_was_left(reg):
    with pytest.raises(errors.MultihvError, match='keypair ops does not exist; give public_key'):
        keypairs.set_keypair(reg, 'ops', 'present', None)
    with pytest.raises(errors.MultihvError, match='state must be present or absent'):
        keypairs.set_keypair(reg, 'ops', 'gone', ED25519)
    with pytest.raises(errors.MultihvError, match='a keypair needs a non-empty name'):
        keypairs.set_keypair(reg, ' ', 'present', ED25519)
    reg.set_keypair('ops', ED25519)
    with pytest.raises(errors.MultihvError, match='keypair ops: public_key .* was left unchanged'):
        keypairs.set_keypair(reg, 'ops', 'present', 'ssh-rsa ' + ED_BLOB)
    assert reg.get_keypair('ops')['public_key'] == ED25519


# -- the module --------------------------------------------------------------------------------


def run_module(capsys, url, check=False, diff=False, **options):
    """keypair's main() with options; its JSON result."""
    args = dict(options, cloud={'registry': {'url': url}}, _ansible_check_mode=check, _ansible_diff=diff)
    return modules.run_module(capsys, keypair_module, args)


def test_module_is_idempotent_and_diffs_fingerprints_not_keys(tmp_path, capsys):
    url = 'sqlite:///%s' % (tmp_path / 'r.sqlite')
    registry.Registry.open(url).close()
    created = run_module(capsys, url, diff=True, name='ops', public_key=ED25519)
    assert created['changed'] is True and created['keypair']['fingerprint'] == ED25519_FP
    assert set(created['keypair']) == {'name', 'fingerprint', 'type', 'public_key', 'created_at'}
    assert created['diff'] == {'before': {}, 'after': {'name': 'ops', 'type': 'ssh-ed25519', 'fingerprint': ED25519_FP,
                                                       'comment': 'alice@example'}}
    again = run_module(capsys, url, name='ops', public_key=ED25519)
    assert again['changed'] is False and again['keypair'] == created['keypair']
    replaced = run_module(capsys, url, diff=True, name='ops', public_key=RSA)
    assert replaced['changed'] is True and replaced['keypair']['public_key'] == RSA
    assert replaced['diff']['before']['fingerprint'] == ED25519_FP and replaced['diff']['after']['fingerprint'] == RSA_FP
    assert ED_BLOB not in json.dumps(replaced['diff']) and RSA.split()[1] not in json.dumps(replaced['diff'])
    bad = run_module(capsys, url, name='ops', public_key='ssh-ed25519 ' + RSA.split()[1])
    assert bad['failed'] is True and 'keypair ops: public_key says ssh-ed25519' in bad['msg']
    assert RSA.split()[1][:20] not in bad['msg']
    gone = run_module(capsys, url, name='ops', state='absent')
    assert gone['changed'] is True and gone['keypair'] is None


def test_module_check_mode_neither_writes_nor_upgrades_the_schema(tmp_path, monkeypatch, capsys):
    url = version_4_registry(tmp_path, monkeypatch)
    path = url[len('sqlite:///'):]
    result = run_module(capsys, url, check=True, diff=True, name='ops', public_key=ED25519)
    assert result['changed'] is True and result['keypair']['created_at'] is None
    assert result['diff']['after']['fingerprint'] == ED25519_FP
    with sqlite3.connect(path) as conn:
        assert conn.execute('SELECT max(version) FROM schema_version').fetchone() == (4,)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'keypairs'").fetchone() == (0,)
    # A real run upgrades and stores it.
    result = run_module(capsys, url, name='ops', public_key=ED25519)
    assert result['changed'] is True and result['keypair']['created_at']
