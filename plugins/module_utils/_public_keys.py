# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenSSH public keys, as keypairs hold them: parsed, checked and fingerprinted. Private to
multihv.cloud: do not import. No I/O.

A public key is one line of an OpenSSH .pub file: its type, its key data in base64 and an
optional comment. The key data is the SSH wire encoding (RFC 4253 6.6): strings of a
4-byte big-endian length and the bytes, the first naming the type again. Its fingerprint is
what ``ssh-keygen -l`` prints: SHA256: and the base64 of the SHA-256 of the key data,
without padding.

Errors name the keypair and what is wrong, never the key itself (a private key pasted by
mistake must not end up in a log).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

# The types accepted, with the number of strings their key data holds after the type.
KEY_TYPES = {
    'ssh-ed25519': 1,           # the 32-byte public key
    'ssh-rsa': 2,               # e, n
    'ecdsa-sha2-nistp256': 2,   # the curve's name, the point
    'ecdsa-sha2-nistp384': 2,
    'ecdsa-sha2-nistp521': 2,
}
ED25519_KEY_BYTES = 32
# OpenSSH's own floor (SSH_RSA_MINIMUM_MODULUS_SIZE): smaller RSA keys are refused by sshd.
RSA_MINIMUM_BITS = 1024
# What an error may quote of a word where a type was expected: one that looks like a type name
# (base64 key data pasted in its place has capitals, and is not shown).
TYPE_LIKE = re.compile(r'^[a-z0-9][a-z0-9@.-]{0,39}$')


@dataclasses.dataclass(frozen=True)
class PublicKey:
    """A checked public key: its type, its line as stored (type, key data and comment, one space
    apart), its comment ('' when none) and its fingerprint (SHA256:...)."""

    type: str
    public_key: str
    comment: str
    fingerprint: str


def fingerprint(blob):
    """The SHA256 fingerprint of key data (bytes), as ssh-keygen -l prints it."""
    return 'SHA256:' + base64.b64encode(hashlib.sha256(blob).digest()).decode('ascii').rstrip('=')


def parse(name, text):
    """The PublicKey of keypair name's public_key text; errors.MultihvError saying what is wrong
    (and that keypair name was left unchanged) when it is not one line of an OpenSSH .pub file
    of a type in KEY_TYPES whose key data decodes and names the same type."""
    def refuse(what):
        return errors.MultihvError('keypair %s: public_key %s; keypair %s was left unchanged' % (name, what, name))

    if not isinstance(text, str) or not text.strip():
        raise refuse('is empty; give the contents of an OpenSSH .pub file')
    if 'PRIVATE KEY' in text:
        raise refuse('is a private key (it must never leave its machine); give the contents of the matching .pub file')
    text = text.strip()
    if '\n' in text or '\r' in text:
        raise refuse('must be one line (type, base64 key data, optional comment), got %d lines' % len(text.splitlines()))
    parts = text.split(None, 2)
    key_type = parts[0]
    if key_type not in KEY_TYPES:
        if not TYPE_LIKE.match(key_type):
            raise refuse('does not start with a key type (its first word, not shown, may be key data); an OpenSSH '
                         'public key starts with one of %s' % ', '.join(KEY_TYPES))
        raise refuse('has type %r, which is not one of %s' % (key_type, ', '.join(KEY_TYPES)))
    if len(parts) < 2:
        raise refuse('has its type (%s) but no key data after it' % key_type)
    try:
        blob = base64.b64decode(parts[1].encode('ascii'), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise refuse('key data (the part after %s) is not valid base64' % key_type) from None
    _check_blob(key_type, blob, refuse)
    comment = parts[2].strip() if len(parts) > 2 else ''
    line = ' '.join([key_type, parts[1]] + ([comment] if comment else []))
    return PublicKey(type=key_type, public_key=line, comment=comment, fingerprint=fingerprint(blob))


def _check_blob(key_type, blob, refuse):
    """The key data names key_type and holds what a key of that type holds, nothing more."""
    strings, offset = [], 0
    for _field in range(1 + KEY_TYPES[key_type]):
        if offset + 4 > len(blob) or offset + 4 + int.from_bytes(blob[offset:offset + 4], 'big') > len(blob):
            raise refuse('key data is cut short (%d bytes): not a whole %s key' % (len(blob), key_type))
        length = int.from_bytes(blob[offset:offset + 4], 'big')
        strings.append(blob[offset + 4:offset + 4 + length])
        offset += 4 + length
        if len(strings) == 1:
            # The type first: data of another type would fail the checks below for the wrong reason.
            embedded = strings[0].decode('ascii', 'replace')
            if embedded != key_type:
                raise refuse('says %s but its key data is of type %s' % (key_type, _shown_type(embedded)))
    if offset != len(blob):
        raise refuse('key data has %d bytes after the %s key it holds' % (len(blob) - offset, key_type))
    if key_type == 'ssh-ed25519' and len(strings[1]) != ED25519_KEY_BYTES:
        raise refuse('holds a %d-byte ed25519 key; an ed25519 key has %d bytes' % (len(strings[1]), ED25519_KEY_BYTES))
    if key_type.startswith('ecdsa-sha2-'):
        curve = key_type[len('ecdsa-sha2-'):]
        named = strings[1].decode('ascii', 'replace')
        if named != curve:
            raise refuse('says %s but its key data is on curve %s' % (key_type, _shown_type(named)))
    if key_type == 'ssh-rsa':
        bits = int.from_bytes(strings[2], 'big').bit_length()
        if bits < RSA_MINIMUM_BITS:
            raise refuse('holds a %d-bit RSA key; OpenSSH refuses RSA keys under %d bits' % (bits, RSA_MINIMUM_BITS))


def _shown_type(word):
    """A word where a type (or a curve) was expected, quoted when it looks like one (ssh-dss,
    sk-ssh-ed25519@openssh.com); a placeholder when it may be part of a key."""
    if TYPE_LIKE.match(word):
        return repr(word)
    return '(not shown: not a type name)'
