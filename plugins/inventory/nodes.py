# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
name: nodes
short_description: The cloud's compute nodes as inventory hosts
version_added: 0.1.0
description:
  - One inventory host per compute node, a vSphere cluster or a KVM host, with its live resources, usage and health
    and its admin state from the registry.
  - Groups by hypervisor type (C(hypervisor_kvm), C(hypervisor_vsphere)), availability zone (C(az_<zone>)),
    aggregate (C(aggregate_<name>)) and state (C(state_up), C(state_down)).
  - Each vCenter costs a constant number of PropertyCollector calls whatever its size; KVM hosts are queried in
    parallel with a timeout each. A node that does not answer is a host in C(state_down), not an error.
  - Each node's C(networks) maps the registry networks that exist on it (see M(multihv.cloud.network)) to their backing
    there.
  - Each node's C(allocated) is what the registry's instances hold there (their claims), and C(unmanaged) the VMs that
    carry no mark of the cloud's (C(vms), and the C(vcpus) and C(memory_mb) of the powered-on ones), apart from the
    instances; C(used) is the hypervisor's figure for every VM (see M(multihv.cloud.compute_node_info)).
  - The registry is only read, never created, upgraded or written. A registry that does not exist yet, or has no
    schema, gives nodes without admin state or networks; one whose schema is older than the collection's is an error
    (upgrade it with M(multihv.cloud.registry)).
  - Every value of a node is marked unsafe, so that a name that came from a hypervisor API cannot run templates on the
    controller. C(ansible-inventory --list) shows each such value as a mapping with the single key C(__ansible_unsafe).
  - Reads files named C(*.multihv.yml), C(*.multihv.yaml), C(multihv.yml) or C(multihv.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: Marks this file as one for this plugin.
    type: str
    required: true
    choices: [multihv.cloud.nodes]
  cloud_file:
    description:
      - Path of the cloud file. When neither it nor O(cloud) is set, the modules' search applies
        (C(./multihv-cloud.yml), C(~/.config/multihv/cloud.yml), C(/etc/multihv/cloud.yml)).
    type: path
    env:
      - name: MULTIHV_CLOUD_FILE
  cloud:
    description: The cloud definition inline, with the keys of a cloud file.
    type: dict
  registry_url:
    description: The registry, overriding the cloud file's C(registry.url).
    type: str
    env:
      - name: MULTIHV_REGISTRY_URL
  vcenter_password:
    description:
      - Password for every vCenter of the cloud that has none in the cloud file (AWX injects it from a credential).
    type: str
    env:
      - name: MULTIHV_VCENTER_PASSWORD
  query:
    description:
      - A JMESPath expression evaluated on each node's variables (the C(multihv_) prefix left off); only nodes for
        which it is true are kept. For example C(state == 'up' && enabled).
    type: str
  host_prefix:
    description: Variables are named C(<host_prefix><name>).
    type: str
    default: multihv_
'''

EXAMPLES = r'''
# cloud.multihv.yml: every node of the cloud described by ./multihv-cloud.yml
plugin: multihv.cloud.nodes

# nodes.multihv.yml: enabled KVM nodes that are up, grouped by tier
plugin: multihv.cloud.nodes
cloud_file: /etc/multihv/cloud.yml
query: "hypervisor_type == 'kvm' && state == 'up' && enabled"
keyed_groups:
  - key: multihv_aggregates
    prefix: tier
compose:
  free_ram_gb: multihv_free.memory_mb // 1024

# nets.multihv.yml: only the nodes where the network tenant-a exists
plugin: multihv.cloud.nodes
query: "contains(keys(networks), 'tenant-a')"
'''

import contextlib
import os
import re

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes


@contextlib.contextmanager
def _read_only(url):
    """The registry at url opened as it is, or None when there is none yet (a SQLite file that does not exist, a
    database without a schema): an inventory only reads. One older than the collection's schema is refused."""
    from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine  # pylint: disable=import-outside-toplevel
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import SCHEMA_VERSION, Registry  # pylint: disable=import-outside-toplevel
    kind, target = engine.parse_url(url)
    if kind == 'sqlite' and not os.path.exists(target):
        yield None
        return
    with Registry.open(url, upgrade=False) as registry:
        version = registry.schema_version()
        if version and version < SCHEMA_VERSION:
            raise errors.RegistryError('registry %s has schema version %d, older than this collection\'s %d; upgrade it with '
                                       'multihv.cloud.registry (the inventory only reads it)' % (registry.url, version, SCHEMA_VERSION))
        yield registry if version else None


def _group(prefix, value):
    return prefix + re.sub(r'[^A-Za-z0-9_]', '_', str(value))


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = 'multihv.cloud.nodes'

    def verify_file(self, path):
        return super().verify_file(path) and re.search(r'(^|[./])multihv\.ya?ml$', path.rsplit('/', 1)[-1]) is not None

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        nodes = None
        if use_cache:
            try:
                nodes = self._cache[cache_key]
            except KeyError:
                nodes = None
        if nodes is None:
            nodes = self._fetch()
            if self.get_option('cache'):
                self._cache[cache_key] = nodes
        self._populate(self._select(nodes))

    def _fetch(self):
        """Every node's view, as plain data (cacheable)."""
        env = dict(os.environ)
        if self.get_option('vcenter_password'):
            env['MULTIHV_VCENTER_PASSWORD'] = self.get_option('vcenter_password')
        # Imported here: the registry needs sqlite3 or psycopg only when the plugin runs.
        from ansible_collections.multihv.cloud.plugins.module_utils import _config  # pylint: disable=import-outside-toplevel
        from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks  # pylint: disable=import-outside-toplevel
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds  # pylint: disable=import-outside-toplevel
        try:
            if self.get_option('cloud') is not None:
                cloud = _config.parse(self.get_option('cloud'), 'the inline cloud definition', env)
            else:
                cloud = _config.load(cloud_file=self.get_option('cloud_file'), env=env)
            if self.get_option('registry_url'):
                cloud.registry_url = self.get_option('registry_url')
            drivers = kinds.drivers_for(cloud)
            with _read_only(cloud.registry_url) as registry:
                views = _nodes.list_nodes(cloud, registry, drivers)
                networks = _networks.by_node(registry.list_networks() if registry else [], views, drivers)
            return [dict(node.as_dict(), networks=networks[node.name]) for node in views]
        except errors.MultihvError as exc:
            raise AnsibleParserError('multihv.cloud.nodes: %s' % exc)

    def _select(self, nodes):
        query = self.get_option('query')
        if not query:
            return nodes
        try:
            import jmespath  # pylint: disable=import-outside-toplevel  # only a query needs it
        except ImportError:
            raise AnsibleError('multihv.cloud.nodes: the query option needs jmespath (pip install jmespath)') from None
        try:
            compiled = jmespath.compile(query)
        except jmespath.exceptions.JMESPathError as exc:
            raise AnsibleParserError('multihv.cloud.nodes: query %r is not valid JMESPath: %s' % (query, exc))
        return [node for node in nodes if compiled.search(node) is True]

    def _populate(self, nodes):
        prefix = self.get_option('host_prefix')
        strict = self.get_option('strict')
        for node in nodes:
            name = self.inventory.add_host(node['name'])
            hostvars = dict((prefix + key, wrap_var(value)) for key, value in node.items())
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            # Nodes are reached through their API, never over SSH.
            self.inventory.set_variable(name, 'ansible_connection', 'local')
            for group in (_group('hypervisor_', node['hypervisor_type']), _group('state_', node['state']),
                          _group('az_', node['availability_zone']) if node.get('availability_zone') else None):
                if group:
                    self.inventory.add_group(group)
                    self.inventory.add_child(group, name)
            for aggregate in node.get('aggregates') or []:
                group = self.inventory.add_group(_group('aggregate_', aggregate))
                self.inventory.add_child(group, name)
            self._set_composite_vars(self.get_option('compose'), hostvars, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, name, strict=strict)
