# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cloud file: where the cloud is. Private to multihv.cloud: do not import.

Found by the `cloud_file` option, else $MULTIHV_CLOUD_FILE, else
./multihv-cloud.yml, ~/.config/multihv/cloud.yml, /etc/multihv/cloud.yml; or
given inline as a dict. Secrets may come from the environment so that AWX can
inject them: MULTIHV_VCENTER_PASSWORD (every vCenter) or
MULTIHV_VCENTER_<NAME>_PASSWORD (one vCenter, NAME upper-cased, non
alphanumerics as _), and MULTIHV_REGISTRY_URL.

A bad file fails naming the file, the key and what was expected, never the value of a key
that may hold a secret (SECRET_KEYS) nor a line of the file (YAML errors give its position).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex

from ansible_collections.multihv.cloud.plugins.module_utils._constants import LEASE_LIFETIME_SECONDS, MIN_LEASE_SECONDS
from ansible_collections.multihv.cloud.plugins.module_utils._errors import ConfigError, MissingLibrary

SEARCH_PATH = ('./multihv-cloud.yml', '~/.config/multihv/cloud.yml', '/etc/multihv/cloud.yml')
ENV_CLOUD_FILE = 'MULTIHV_CLOUD_FILE'
ENV_REGISTRY_URL = 'MULTIHV_REGISTRY_URL'
ENV_VCENTER_PASSWORD = 'MULTIHV_VCENTER_PASSWORD'

KVM_URI = re.compile(r'^qemu(\+(tcp|tls|ssh|unix|libssh|libssh2))?://[^/]*/(system|session)(\?.*)?$')
NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
ENV_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
# Keys whose value may be a secret (a password, a URL with one, a command line with a BMC's
# credentials): an error names them and says what was expected, never what was given.
SECRET_KEYS = frozenset(('password', 'url', 'fence_command', 'power_status_command'))

DEFAULT_ALLOCATION_RATIOS = {'cpu': 4.0, 'ram': 1.0, 'disk': 1.0}
DEFAULT_RESERVED_HOST_RAM_MB = {'kvm': 512, 'vsphere': 0}


@dataclasses.dataclass
class VCenter:
    name: str
    hostname: str
    username: str
    password: str = dataclasses.field(repr=False, default='')
    port: int = 443
    validate_certs: bool = True
    # Only these clusters become nodes; empty: every cluster.
    clusters: list = dataclasses.field(default_factory=list)
    availability_zone: str = 'nova'
    aggregates: list = dataclasses.field(default_factory=list)
    # Per cluster overrides: {cluster name: {availability_zone, aggregates}}.
    cluster_settings: dict = dataclasses.field(default_factory=dict)
    # Seconds for the login and for each SOAP call.
    timeout: float = 30.0

    def node_name(self, datacenter: str, cluster: str) -> str:
        """A vSphere node is one cluster, named vcenter/datacenter/cluster."""
        return '%s/%s/%s' % (self.name, datacenter, cluster)

    def placement(self, cluster: str) -> tuple:
        """(availability_zone, aggregates) of one cluster."""
        override = self.cluster_settings.get(cluster, {})
        return (override.get('availability_zone', self.availability_zone),
                list(override.get('aggregates', self.aggregates)))


@dataclasses.dataclass
class KvmHost:
    name: str
    uri: str
    availability_zone: str = 'nova'
    aggregates: list = dataclasses.field(default_factory=list)
    instance_path: str = '/var/lib/libvirt/instances'
    shared_instance_path: str = ''
    shared_with: list = dataclasses.field(default_factory=list)
    migration_address: str = ''
    fence_command: str = ''
    # Says whether the host's power is off (a fence counts only then); see _compute/fencing.py.
    power_status_command: str = ''
    # Names of the controller's environment variables both commands get besides a minimal
    # environment (a BMC password in IPMI_PASSWORD, say); see _compute/fencing.py.
    fence_environment: list = dataclasses.field(default_factory=list)
    # Seconds a KVM host has to answer before it is reported down: short, because a dead
    # host must not hold up the whole cloud's inventory.
    timeout: float = 2.0


@dataclasses.dataclass
class Defaults:
    allocation_ratios: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_ALLOCATION_RATIOS))
    reserved_host_memory_mb: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_RESERVED_HOST_RAM_MB))
    # Seconds after which the reconciler confirms a resize nobody confirmed or reverted (Nova's
    # resize_confirm_window); 0: never, the resize waits for the operator.
    resize_confirm_window: int = 0


@dataclasses.dataclass
class CloudConfig:
    """The cloud file's contents: where the cloud is (its endpoints, the registry, defaults)."""

    source: str
    registry_url: str
    # How long a lease lives unrenewed (registry.lease_seconds): every controller of one registry must agree.
    lease_seconds: float = LEASE_LIFETIME_SECONDS
    vcenters: list = dataclasses.field(default_factory=list)
    kvm_hosts: list = dataclasses.field(default_factory=list)
    defaults: Defaults = dataclasses.field(default_factory=Defaults)

    def node_names(self) -> list:
        """KVM node names from the file (vSphere ones need the vCenter)."""
        return [h.name for h in self.kvm_hosts]


class _Reader:
    """Typed access to one mapping of the file, errors naming file and key."""

    def __init__(self, source: str, path: str, data):
        if not isinstance(data, dict):
            raise ConfigError('%s: %s must be a mapping, got %s' % (source, path or 'the file', _kind(data)))
        self.source, self.path, self.data = source, path, data
        self.used = set()

    def key(self, name):
        return '%s.%s' % (self.path, name) if self.path else name

    def get(self, name, kind, default=None, required=False, choices=None):
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if required:
                raise ConfigError('%s: %s is required (%s)' % (self.source, self.key(name), _expect(kind)))
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            shown = '' if name in SECRET_KEYS else ' %r' % (value,)
            raise ConfigError('%s: %s must be %s, got %s%s' % (self.source, self.key(name), _expect(kind), _kind(value), shown))
        if choices is not None and value not in choices:
            raise ConfigError('%s: %s must be one of %s, got %r' % (self.source, self.key(name), ', '.join(choices), value))
        return value

    def strings(self, name, default=()):
        values = self.get(name, list, list(default))
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ConfigError('%s: %s[%d] must be a string, got %s' % (self.source, self.key(name), i, _kind(value)))
        return list(values)

    def name(self, name='name'):
        value = self.get(name, str, required=True)
        if not NAME.match(value):
            raise ConfigError('%s: %s must be letters, digits, ".", "_" or "-", got %r' % (self.source, self.key(name), value))
        return value

    def done(self):
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError('%s: unknown key %s (known: %s)' % (
                self.source, self.key(unknown[0]), ', '.join(sorted(self.used))))


def _kind(value):
    return {dict: 'a mapping', list: 'a list', str: 'a string', bool: 'a boolean', int: 'an integer',
            float: 'a number', type(None): 'nothing'}.get(type(value), type(value).__name__)


def _expect(kind):
    return {dict: 'a mapping', list: 'a list', str: 'a string', bool: 'true or false', int: 'an integer',
            float: 'a number'}[kind]


def _masked(uri):
    """uri with the password of its user info (libvirt takes none, but one may be written) masked."""
    return re.sub(r'^([^:/?#]*://[^/?#@:]*:)[^/?#@]*@', r'\1********@', uri)


def _env_name(name):
    return re.sub(r'[^A-Z0-9]', '_', name.upper())


def _ratios(reader, name, base):
    data = reader.get(name, dict, {})
    sub = _Reader(reader.source, reader.key(name), data)
    result = dict(base)
    for resource in ('cpu', 'ram', 'disk'):
        value = sub.get(resource, float)
        if value is not None:
            if value <= 0:
                raise ConfigError('%s: %s must be greater than 0, got %r' % (reader.source, sub.key(resource), value))
            result[resource] = value
    sub.done()
    return result


def _vcenter(source, index, data, env):
    r = _Reader(source, 'vcenters[%d]' % index, data)
    name = r.name()
    in_file = r.get('password', str)
    password = env.get('MULTIHV_VCENTER_%s_PASSWORD' % _env_name(name)) or in_file or env.get(ENV_VCENTER_PASSWORD, '')
    settings = r.get('cluster_settings', dict, {})
    cluster_settings = {}
    for cluster, value in settings.items():
        sub = _Reader(source, '%s.cluster_settings.%s' % (r.path, cluster), value)
        cluster_settings[str(cluster)] = {k: v for k, v in (
            ('availability_zone', sub.get('availability_zone', str)),
            ('aggregates', sub.strings('aggregates', ()) if 'aggregates' in value else None)) if v is not None}
        sub.done()
    vcenter = VCenter(
        name=name,
        hostname=r.get('hostname', str, required=True),
        port=r.get('port', int, 443),
        username=r.get('username', str, required=True),
        password=password,
        validate_certs=r.get('validate_certs', bool, True),
        clusters=r.strings('clusters'),
        availability_zone=r.get('availability_zone', str, 'nova'),
        aggregates=r.strings('aggregates'),
        cluster_settings=cluster_settings,
        timeout=r.get('timeout', float, 30.0),
    )
    r.done()
    if not vcenter.password:
        raise ConfigError('%s: %s has no password: set %s.password, MULTIHV_VCENTER_%s_PASSWORD or %s' % (
            source, r.path, r.path, _env_name(name), ENV_VCENTER_PASSWORD))
    return vcenter


def _kvm_host(source, index, data):
    r = _Reader(source, 'kvm_hosts[%d]' % index, data)
    host = KvmHost(
        name=r.name(),
        uri=r.get('uri', str, required=True),
        availability_zone=r.get('availability_zone', str, 'nova'),
        aggregates=r.strings('aggregates'),
        instance_path=r.get('instance_path', str, '/var/lib/libvirt/instances'),
        shared_instance_path=r.get('shared_instance_path', str, ''),
        shared_with=r.strings('shared_with'),
        migration_address=r.get('migration_address', str, ''),
        fence_command=r.get('fence_command', str, ''),
        power_status_command=r.get('power_status_command', str, ''),
        fence_environment=r.strings('fence_environment'),
        timeout=r.get('timeout', float, 2.0),
    )
    r.done()
    if not KVM_URI.match(host.uri):
        raise ConfigError('%s: %s.uri must be a libvirt QEMU URI such as qemu+tcp://HOST/system, qemu+tls://HOST/system, '
                          'qemu+ssh://USER@HOST/system or qemu:///system, got %r' % (source, r.path, _masked(host.uri)))
    if _masked(host.uri) != host.uri:
        # libvirt would take user:password for a user name; and the URI shows in node views and messages.
        raise ConfigError('%s: %s.uri must not hold a password (libvirt authenticates with SSH keys, TLS certificates or '
                          'SASL), got %r' % (source, r.path, _masked(host.uri)))
    for key in ('instance_path', 'shared_instance_path'):
        value = getattr(host, key)
        if value and not value.startswith('/'):
            raise ConfigError('%s: %s.%s must be an absolute path, got %r' % (source, r.path, key, value))
    for key in ('fence_command', 'power_status_command'):  # run without a shell: split as a shell would
        try:
            shlex.split(getattr(host, key))
        except ValueError as exc:  # the command itself is not shown: it may hold a BMC's password
            raise ConfigError('%s: %s.%s is not a command line (%s)' % (source, r.path, key, exc)) from None
    for i, variable in enumerate(host.fence_environment):
        if not ENV_NAME.match(variable):
            raise ConfigError('%s: %s.fence_environment[%d] must be the name of an environment variable (letters, digits '
                              'and _), got %r' % (source, r.path, i, variable))
    return host


def parse(data, source='the cloud definition', env=None) -> CloudConfig:
    """Validate a cloud definition (the loaded YAML) into a CloudConfig."""
    env = os.environ if env is None else env
    r = _Reader(source, '', data)
    vcenters = [_vcenter(source, i, v, env) for i, v in enumerate(r.get('vcenters', list, []))]
    kvm_hosts = [_kvm_host(source, i, h) for i, h in enumerate(r.get('kvm_hosts', list, []))]
    registry = _Reader(source, 'registry', r.get('registry', dict, {}))
    registry_url = env.get(ENV_REGISTRY_URL) or registry.get('url', str)
    registry.get('url', str)  # validated even when the environment overrides it
    lease_seconds = registry.get('lease_seconds', float, LEASE_LIFETIME_SECONDS)
    if lease_seconds < MIN_LEASE_SECONDS:
        raise ConfigError('%s: registry.lease_seconds must be at least %d (a heartbeat renews a lease every third of it), got %s'
                          % (source, MIN_LEASE_SECONDS, lease_seconds))
    registry.done()
    if not registry_url:
        raise ConfigError('%s: registry.url is required (sqlite:////path/registry.sqlite or postgresql://...), '
                          'or set %s' % (source, ENV_REGISTRY_URL))
    d = _Reader(source, 'defaults', r.get('defaults', dict, {}))
    defaults = Defaults(allocation_ratios=_ratios(d, 'allocation_ratios', DEFAULT_ALLOCATION_RATIOS))
    defaults.resize_confirm_window = d.get('resize_confirm_window', int, 0)
    if defaults.resize_confirm_window < 0:
        raise ConfigError('%s: defaults.resize_confirm_window must not be negative (0: never confirm by itself)' % source)
    reserved = _Reader(source, 'defaults.reserved_host_memory_mb', d.get('reserved_host_memory_mb', dict, {}))
    for kind in ('kvm', 'vsphere'):
        value = reserved.get(kind, int)
        if value is not None:
            if value < 0:
                raise ConfigError('%s: defaults.reserved_host_memory_mb.%s must not be negative' % (source, kind))
            defaults.reserved_host_memory_mb[kind] = value
    reserved.done()
    d.done()
    r.done()
    names = [v.name for v in vcenters] + [h.name for h in kvm_hosts]
    duplicates = sorted(set(n for n in names if names.count(n) > 1))
    if duplicates:
        raise ConfigError('%s: the name %s is used twice (vCenter and KVM host names must be unique)' % (source, duplicates[0]))
    return CloudConfig(source=source, registry_url=registry_url, lease_seconds=lease_seconds, vcenters=vcenters, kvm_hosts=kvm_hosts, defaults=defaults)


def _yaml_problem(exc):
    """What is wrong with the YAML and where, without the excerpt of the file PyYAML quotes: the
    line it shows may be a password's."""
    mark = getattr(exc, 'problem_mark', None)
    problem = ' '.join(str(part) for part in (getattr(exc, 'context', None), getattr(exc, 'problem', None)) if part)
    if mark is None:  # a ReaderError (bytes that are no text) gives a position in the file instead
        reason, position = getattr(exc, 'reason', None), getattr(exc, 'position', None)
        return '%s at byte %d' % (reason, position) if reason and position is not None else problem or type(exc).__name__
    return '%s at line %d, column %d' % (problem or 'a syntax error', mark.line + 1, mark.column + 1)


def find(cloud_file=None, env=None):
    """The path of the cloud file to use, or None when there is none."""
    env = os.environ if env is None else env
    if cloud_file:
        return cloud_file
    if env.get(ENV_CLOUD_FILE):
        return env[ENV_CLOUD_FILE]
    for candidate in SEARCH_PATH:
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    return None


def load(cloud_file=None, cloud=None, env=None) -> CloudConfig:
    """The cloud from an inline definition, or from the cloud file found."""
    if cloud is not None:
        return parse(cloud, 'the inline cloud definition', env)
    path = find(cloud_file, env)
    if path is None:
        raise ConfigError('no cloud file: give cloud_file, set %s, or create one of %s' % (ENV_CLOUD_FILE, ', '.join(SEARCH_PATH)))
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:  # PyYAML comes with ansible-core, not with every Python Ansible may pick for the modules
        raise MissingLibrary('PyYAML', 'to read the cloud file %s' % path) from None
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except (IOError, OSError) as exc:
        raise ConfigError('cannot read cloud file %s: %s' % (path, exc.strerror or exc))
    except yaml.YAMLError as exc:
        raise ConfigError('cloud file %s is not valid YAML: %s' % (path, _yaml_problem(exc))) from None
    return parse(data if data is not None else {}, path, env)
