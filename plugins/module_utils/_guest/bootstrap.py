# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What reaches a guest at its first boot, rendered for cloud-init. Private to multihv.cloud: do not import.

Pure logic, no I/O: a GuestConfig in, cloud-init documents (text) out. The transports are
config_drive.py (a NoCloud ISO, for KVM) and guestinfo.py (VMware extraConfig keys, for vSphere);
both deliver the same three documents:
- meta-data: instance-id (the instance's uuid: cloud-init reruns its per-instance modules when it
  changes), local-hostname and public-keys;
- user-data: the user's own, and the admin password (for admin_user) when one is given;
- network-config: version 2 (netplan) with one entry per NIC, matched by MAC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import re
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

# Nova refuses user_data over 65535 bytes (its database column); the same bound keeps one
# instance's data deliverable on both hypervisors (a vSphere extraConfig value is not unbounded).
USER_DATA_MAX_BYTES = 65535

CLOUD_CONFIG_HEADER = '#cloud-config'

# cloud-init sniffs a MIME document by this header in the first 4 KiB of user-data.
_MIME_SNIFF = 'mime-version:'
_MIME_SNIFF_BYTES = 4096

_MAC = re.compile(r'^[0-9a-f]{2}(:[0-9a-f]{2}){5}$')


@dataclasses.dataclass(frozen=True)
class GuestNic:
    """One NIC of the guest. address: CIDR form (192.0.2.10/24, 2001:db8::10/64), None for DHCP;
    gateway and dns are only rendered for a static address (DHCP brings its own)."""

    mac: str
    address: str | None = None
    gateway: str | None = None
    dns: tuple = ()

    def __post_init__(self):
        # Normalised once here so that every renderer and every comparison sees the same form.
        object.__setattr__(self, 'mac', str(self.mac).lower())
        object.__setattr__(self, 'dns', tuple(self.dns or ()))
        if not _MAC.match(self.mac):
            raise errors.GuestDataInvalid('NIC MAC address %r is not of the form 52:54:00:aa:bb:cc' % self.mac)
        if self.address is not None:
            _check_cidr(self.address)
        if self.gateway is not None:
            _check_ip(self.gateway, 'gateway of NIC %s' % self.mac)
        for server in self.dns:
            _check_ip(server, 'DNS server of NIC %s' % self.mac)


@dataclasses.dataclass(frozen=True)
class GuestConfig:
    """What one instance's guest receives. user_data and admin_password stay out of repr() so that
    a logged or failed GuestConfig shows no secret; the password is delivered, never stored.
    admin_user: whose password admin_password is (Nova's os_admin_user image property; root by default)."""

    uuid: str
    hostname: str
    user_data: str | None = dataclasses.field(default=None, repr=False)
    public_keys: tuple = ()
    admin_password: str | None = dataclasses.field(default=None, repr=False)
    nics: tuple = ()
    admin_user: str = 'root'

    def __post_init__(self):
        object.__setattr__(self, 'public_keys', tuple(self.public_keys or ()))
        object.__setattr__(self, 'nics', tuple(self.nics or ()))
        # Refused when the record is made, before any disk or VM exists for the instance.
        _check_user_data_size(self.uuid, self.user_data)
        for number, key in enumerate(self.public_keys):
            # One line per key: a newline would let one entry add lines to authorized_keys.
            if not isinstance(key, str) or not key.strip() or '\n' in key or '\r' in key:
                raise errors.GuestDataInvalid(
                    'public key %d of instance %s is not one OpenSSH public key line' % (number, self.uuid))
        if not re.match(r'^[a-z_][a-z0-9_.-]*$', self.admin_user or ''):
            raise errors.GuestDataInvalid('admin user %r of instance %s is not a user name' % (self.admin_user, self.uuid))
        macs = [nic.mac for nic in self.nics]
        if len(set(macs)) != len(macs):
            raise errors.GuestDataInvalid('instance %s has two NICs with one MAC address' % self.uuid)


def _check_cidr(address):
    if '/' not in address:
        raise errors.GuestDataInvalid('NIC address %r has no prefix length (CIDR form: 192.0.2.10/24)' % address)
    try:
        ipaddress.ip_interface(address)
    except ValueError:
        raise errors.GuestDataInvalid('NIC address %r is not an IP address in CIDR form' % address) from None


def _check_ip(value, what):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise errors.GuestDataInvalid('%s %r is not an IP address' % (what, value)) from None


def _check_user_data_size(uuid, text):
    """The bound is on bytes (what the guest receives), not characters. The message gives sizes only."""
    if text is None:
        return
    size = len(text.encode('utf-8'))
    if size > USER_DATA_MAX_BYTES:
        raise errors.GuestDataInvalid(
            'user_data of instance %s is %d bytes, more than the %d allowed; nothing was made for it'
            % (uuid, size, USER_DATA_MAX_BYTES))


def dump_yaml(data):
    """YAML text of data. PyYAML comes with ansible-core; JSON (which is YAML) if it is absent."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        return json.dumps(data, indent=2) + '\n'
    # safe_dump quotes strings YAML would read as something else (a hostname 'yes', a password '0123').
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)


def meta_data_dict(cfg):
    """meta-data as a dict (guestinfo.py adds the network to it)."""
    data = {'instance-id': cfg.uuid, 'local-hostname': cfg.hostname}
    if cfg.public_keys:
        data['public-keys'] = list(cfg.public_keys)
    return data


def meta_data(cfg):
    """NoCloud meta-data: YAML with instance-id, local-hostname and public-keys."""
    return dump_yaml(meta_data_dict(cfg))


def _nic_config(nic, number):
    name = 'eth%d' % number
    entry = {'match': {'macaddress': nic.mac}, 'set-name': name}
    if nic.address is None:
        entry['dhcp4'] = True
        return name, entry
    entry['dhcp4'] = False
    entry['addresses'] = [nic.address]
    if nic.gateway:
        # A route replaces gateway4/gateway6, which netplan deprecated. Its destination is written
        # 0.0.0.0/0 (::/0), not 'default': netplan reads both, but older cloud-init releases (Debian 12's
        # 22.4.2, seen in the lab) fail their whole network stage on 'default' (cloud-init LP #1978543).
        default = '::/0' if ipaddress.ip_address(nic.gateway).version == 6 else '0.0.0.0/0'
        entry['routes'] = [{'to': default, 'via': nic.gateway}]
    if nic.dns:
        entry['nameservers'] = {'addresses': list(nic.dns)}
    return name, entry


def network_config_dict(cfg):
    """Network config version 2 as a dict; None when the instance has no NIC to configure
    (cloud-init then falls back to DHCP on its first NIC)."""
    if not cfg.nics:
        return None
    ethernets = dict(_nic_config(nic, number) for number, nic in enumerate(cfg.nics))
    return {'version': 2, 'ethernets': ethernets}


def network_config(cfg):
    """NoCloud network-config: YAML of the version 2 config (top-level 'version', which every
    cloud-init release with v2 support reads), or None without NICs."""
    data = network_config_dict(cfg)
    return None if data is None else dump_yaml(data)


def _password_entry(user, password):
    return {'name': user, 'password': password, 'type': 'text'}


def _password_config(user, password):
    """The cloud-config keys cloud-init's set_passwords module reads: chpasswd.users sets user's
    password (type text: given in clear, hashed by the guest), expire false keeps it from being
    forced to change at first login, ssh_pwauth lets it be used over SSH."""
    return {'chpasswd': {'expire': False, 'users': [_password_entry(user, password)]}, 'ssh_pwauth': True}


def is_cloud_config(text):
    """True when cloud-init would read text as cloud-config: its first line is #cloud-config
    (cloud-init compares case-insensitively, after leading whitespace; #cloud-config-archive is another type)."""
    first_line = text.lstrip().split('\n', 1)[0].rstrip().lower()
    return first_line == CLOUD_CONFIG_HEADER


def _load_cloud_config(text):
    """The user's cloud-config as a dict, or None when it is not a YAML mapping (then it is kept
    as it is, in a multipart, for cloud-init to judge; its content is never echoed in an error)."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if data is None:
        return {}
    return data if isinstance(data, dict) else None


def _merge_password(config, user, password):
    """The user's cloud-config with the password keys. The given admin password wins over one the
    user_data gives the same user (it is the explicit request); the user's entries for other users,
    its other chpasswd keys and an explicit ssh_pwauth are kept."""
    merged = dict(config)
    chpasswd = dict(merged.get('chpasswd')) if isinstance(merged.get('chpasswd'), dict) else {}
    users = [u for u in chpasswd.get('users') or [] if not (isinstance(u, dict) and u.get('name') == user)]
    chpasswd['users'] = users + [_password_entry(user, password)]
    chpasswd['expire'] = False
    merged['chpasswd'] = chpasswd
    merged.setdefault('ssh_pwauth', True)
    return merged


def _is_mime(text):
    return _MIME_SNIFF in text[:_MIME_SNIFF_BYTES].lower()


def _multipart(cloud_config_text, user_text):
    """A MIME multipart cloud-init reads part by part: our cloud-config, then the user's data.
    The user's part is text/plain so that cloud-init picks its type from its first line, as it
    would have without us; base64 keeps its bytes exact (CRLF, non-ASCII) through the MIME layer.
    A user_data that is MIME itself is nested whole: cloud-init walks into nested multiparts.
    The boundary is a digest of the content, not random: the same GuestConfig gives the same
    user-data (a driver can tell a VM's data is current), and a digest of the parts cannot occur in them."""
    digest = hashlib.sha256((cloud_config_text + '\0' + user_text).encode('utf-8')).hexdigest()
    outer = MIMEMultipart('mixed', boundary='==multihv-%s==' % digest)
    outer.attach(MIMEText(cloud_config_text, 'cloud-config', 'utf-8'))
    if _is_mime(user_text):
        import email  # pylint: disable=import-outside-toplevel
        outer.attach(email.message_from_string(user_text))
    else:
        outer.attach(MIMEText(user_text, 'plain', 'utf-8'))
    return outer.as_string()


def user_data(cfg):
    """The user-data the guest receives ('' when there is nothing to deliver).

    Without a password: the user's user_data unchanged. With one: merged into the user's
    cloud-config when it is a YAML mapping; otherwise (a script, a boothook, a cloud-config
    that does not parse...) a multipart of a cloud-config part and the user's part, kept as it is.
    """
    given = cfg.user_data
    if cfg.admin_password is None:
        return given or ''
    if not given:
        return CLOUD_CONFIG_HEADER + '\n' + dump_yaml(_password_config(cfg.admin_user, cfg.admin_password))
    if is_cloud_config(given):
        config = _load_cloud_config(given)
        if config is not None:
            return CLOUD_CONFIG_HEADER + '\n' + dump_yaml(_merge_password(config, cfg.admin_user, cfg.admin_password))
    return _multipart(CLOUD_CONFIG_HEADER + '\n' + dump_yaml(_password_config(cfg.admin_user, cfg.admin_password)), given)
