# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an instance's guest receives, decided by the core. Private to multihv.cloud: do not import.

The registry keeps what is not secret and lasts for the instance's life: its hostname, its
NICs (networks.py) and the public key of the keypair it was booted with (in its identity, as
Nova keeps key_data with the instance: deleting the keypair later changes nothing for it).
What may be secret is never stored: the admin password is generated here for each new disk
(a boot, a rebuild, an evacuation without shared storage), handed to the driver in the
InstanceSpec's GuestConfig and returned once; user_data is delivered with the boot or rebuild
that was given it, so a disk made later (a local evacuation) starts without it.
"""

from __future__ import annotations

import secrets

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestConfig

# A generated password: URL-safe base64 of this many random bytes (20 characters, 120 bits).
PASSWORD_BYTES = 15
# Nova's image property naming the user whose password an instance's admin password is.
ADMIN_USER_PROPERTY = 'os_admin_user'
DEFAULT_ADMIN_USER = 'root'


def new_password():
    """A fresh admin password (never logged nor stored)."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def admin_user(image):
    """The user an image's admin password is for: its os_admin_user property, else root (Nova's default)."""
    return ((image or {}).get('properties') or {}).get(ADMIN_USER_PROPERTY) or DEFAULT_ADMIN_USER


def key_identity(registry, key_name, untouched):
    """What an instance's identity keeps of keypair key_name ({key_name, public_key}; {} without one);
    errors.NotFound naming the keypair when there is none of that name."""
    if not key_name:
        return {}
    row = registry.get_keypair(key_name)
    if row is None:
        raise errors.NotFound('keypair %s does not exist (multihv.cloud.keypair makes it); %s' % (key_name, untouched))
    return {'key_name': key_name, 'public_key': row['public_key']}


def config(inst_uuid, name, identity, image, nics, user_data=None, password=None):
    """The GuestConfig of an instance: its uuid as instance-id, its recorded hostname and key, its
    NICs (GuestNic, each by MAC with its fixed address), and what this boot brings: user_data and
    a password for the image's admin user. errors.GuestDataInvalid before anything is made."""
    key = (identity or {}).get('public_key')
    return GuestConfig(uuid=inst_uuid, hostname=(identity or {}).get('hostname') or name, user_data=user_data or None,
                       public_keys=(key,) if key else (), admin_password=password, nics=tuple(nics),
                       admin_user=admin_user(image))


__all__ = ['ADMIN_USER_PROPERTY', 'DEFAULT_ADMIN_USER', 'PASSWORD_BYTES', 'admin_user', 'config', 'key_identity',
           'new_password']
