# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a clone's extraConfig must say of its guest: the instance's cloud-init data (the
guestinfo keys of _guest.guestinfo) and nothing left of the template's. Private to
multihv.cloud: do not import.

cloud-init's VMware datasource reads guestinfo.metadata, guestinfo.userdata and
guestinfo.vendordata, each with its .encoding, and takes a value that is empty (or '---') as
absent. A vCenter clone copies the template's .vmx, extraConfig included, so a template that
still carries such keys (left by the build that made it, or by a VM turned into a template)
would hand its data to every clone; the clone's ConfigSpec therefore sets each of them the
template has and the instance does not give to '' (vSphere removes an extraConfig key given an
empty value; vcsim 0.24.2 keeps it as an empty entry, which cloud-init reads as absent). Other
guestinfo.* keys of a template are left alone: they belong to other agents, set on purpose.

Only the gzip+base64 form of the documents leaves the controller, so that is all a vCenter
fault could echo back: redact() takes any run of it out of a message. Pure functions.
"""

from __future__ import annotations

import re

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim
from ansible_collections.multihv.cloud.plugins.module_utils._guest import guestinfo

# Every key cloud-init's VMware datasource reads (guestinfo transport).
CLOUD_INIT_KEYS = tuple('guestinfo.%s%s' % (document, suffix)
                        for document in ('metadata', 'userdata', 'vendordata') for suffix in ('', '.encoding'))

REDACTED = '<redacted>'
# A run of base64 this long inside a message is taken out when it is part of a value sent;
# shorter runs are ordinary words and ids.
_BLOCK = 16
_BASE64_RUN = re.compile(r'[A-Za-z0-9+/]{%d,}={0,2}' % _BLOCK)


def as_dict(options):
    """{key: value} of extraConfig OptionValues as read. vcsim 0.24.2 appends a reconfigured
    key instead of replacing it: the last entry is the one in force, as in a .vmx file."""
    return dict((option.key, option.value) for option in options or ())


def wanted(guest, template_options):
    """{key: value} of the guestinfo the clone must have: guestinfo(guest) when guest is not
    None, and '' for every cloud-init key the template has that the instance does not set.
    {} when there is neither (no key is added to the clone)."""
    keys = dict(guestinfo.guestinfo(guest)) if guest is not None else {}
    given = set(key.lower() for key in keys)  # .vmx keys are case-insensitive
    for key, value in as_dict(template_options).items():
        if key.lower() in CLOUD_INIT_KEYS and key.lower() not in given and value not in (None, ''):
            keys[key] = ''
    return keys


def options(keys):
    """extraConfig OptionValues of {key: value}, in order."""
    return [vim.option.OptionValue(key=key, value=value) for key, value in keys.items()]


def lacking(keys, clone_options):
    """The part of keys the clone (its extraConfig as read) does not have: a value it holds
    otherwise; for a key to clear (''), a value it still holds."""
    have = dict((key.lower(), value) for key, value in as_dict(clone_options).items())
    return dict((key, value) for key, value in keys.items()
                if (have.get(key.lower()) or '') != value)


def redact(text, keys):
    """text without any run of base64 (16 characters or more) that quotes part of a value in
    keys: what a vCenter fault could echo of the guest data sent to it. A run is taken out when
    it lies inside a value, or holds one of its 16-character blocks (any quote of 31 characters
    or more does, whatever it is glued to)."""
    sent = [value for value in keys.values() if value]
    blocks = set(value[i:i + _BLOCK] for value in sent for i in range(0, len(value) - _BLOCK + 1, _BLOCK))

    def quoted(run):
        return (any(run in value for value in sent)
                or any(run[i:i + _BLOCK] in blocks for i in range(len(run) - _BLOCK + 1)))

    return _BASE64_RUN.sub(lambda match: REDACTED if quoted(match.group(0).rstrip('=')) else match.group(0), text) if sent else text


__all__ = ['CLOUD_INIT_KEYS', 'REDACTED', 'as_dict', 'lacking', 'options', 'redact', 'wanted']
