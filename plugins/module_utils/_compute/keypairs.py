# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keypairs as users manage them, as Nova's: an OpenSSH public key by name. Private to
multihv.cloud: do not import.

Only public keys are stored; none is generated here (ssh-keygen makes them, and a private
key never passes through the registry). Giving another key for an existing name replaces
it, as ``openstack keypair delete`` and ``create`` would.
"""

from __future__ import annotations

import contextlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils import _public_keys

STATES = ('present', 'absent')


def keypair_view(row):
    """A keypair as the module returns it (name, fingerprint, type, public_key, created_at), or None."""
    if row is None:
        return None
    return {'name': row['name'], 'fingerprint': row['fingerprint'], 'type': row['type'],
            'public_key': row['public_key'], 'created_at': row['created_at']}


def diff_view(view):
    """What a diff shows of a keypair_view: its fingerprint, type and comment, not the key; None stays None."""
    if view is None:
        return None
    words = view['public_key'].split(None, 2)
    return {'name': view['name'], 'type': view['type'], 'fingerprint': view['fingerprint'],
            'comment': words[2] if len(words) > 2 else ''}


def set_keypair(registry, name, state, public_key=None, check_mode=False):
    """Make keypair name present with public_key (one line of an OpenSSH .pub file), or absent.

    present without public_key keeps an existing keypair as it is and fails for a missing one;
    present with another key replaces it. check_mode reads only (no transaction, no write).
    Returns (changed, before, after) as keypair_view() (None when absent; after's created_at is
    None for a keypair check mode would create). errors.MultihvError saying what is wrong,
    before anything is written.
    """
    if not isinstance(name, str) or not name.strip():
        raise errors.MultihvError('a keypair needs a non-empty name, got %r; nothing was changed' % (name,))
    if state not in STATES:
        raise errors.MultihvError('state must be present or absent, got %r; keypair %s was left unchanged' % (state, name))
    key = _public_keys.parse(name, public_key) if state == 'present' and public_key is not None else None
    with contextlib.nullcontext() if check_mode else registry.transaction():
        before = keypair_view(registry.get_keypair(name, lock=not check_mode))
        if state == 'absent':
            if before is None:
                return False, None, None
            if not check_mode:
                registry.delete_keypair(name)
            return True, before, None
        if key is None:
            if before is None:
                raise errors.MultihvError('keypair %s does not exist; give public_key (the contents of an OpenSSH .pub file, '
                                          'made with ssh-keygen) to create it; nothing was created' % name)
            return False, before, before
        if before is not None and before['public_key'] == key.public_key:
            return False, before, before
        if check_mode:
            return True, before, {'name': name, 'fingerprint': key.fingerprint, 'type': key.type,
                                  'public_key': key.public_key, 'created_at': before['created_at'] if before else None}
        return True, before, keypair_view(registry.set_keypair(name, key.public_key)[1])
