"""A fake hypervisor that keeps the driver interface's contract (model: nova/virt/fake.py), so that
the core's failure paths can be tested in milliseconds against a real registry.

A FakeWorld is one test's hypervisors: endpoints (what a driver talks to), their nodes, each
node's hosts (one named after the node, or several like a vSphere cluster), the VMs on them,
the disks in each storage directory and the images uploaded. A VM spawned with guest data
(InstanceSpec.guest) keeps what its guest received (FakeVM.guest) and, like a KVM instance's
config drive, has a file `<uuid>.config` beside its disk holding it (world.guest_data). Every FakeDriver a test or a
worker thread makes (world.drivers is a Context's driver_factory) points at the same world, so
what one run does, the next sees. Failures are injected on the world: spawns that fail,
migrations that fail half way, endpoints that stop answering.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks
from ansible_collections.multihv.cloud.plugins.module_utils._compute.context import Context
from ansible_collections.multihv.cloud.plugins.module_utils._constants import MIGRATION_MODES, POWER_ACTIONS
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import (
    IMAGE_FILE, IMAGE_TEMPLATE, Capabilities, ComputeDriver, DiskFile, HostResources, InstanceFile, InstanceState, InstanceUsage, NodePlacement,
    NodeResources, NodeUsage, RulesSync, SnapshotImage, VMDetails, instance_file_uuid,
)
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

FAKE = 'fake'
CLUSTER = 'fakecluster'
# Everything on: a node is its own host, its instances are evacuated when it fails.
CAPABILITIES = Capabilities(hypervisor_type=FAKE, label='Fake', node_noun='fake host', migration_modes=MIGRATION_MODES, evacuation=True,
                            image_kind=IMAGE_FILE, guest_password=True, resize=True, usage=True, convert=True)
# A node of several hosts whose hypervisor restarts its VMs itself, with template images.
CLUSTER_CAPABILITIES = Capabilities(hypervisor_type=CLUSTER, label='Fake cluster', node_noun='fake cluster', migration_modes=('live', 'cold'),
                                    self_recovery='fake HA restarts the VMs by itself', hosts_in_node=True,
                                    image_kind=IMAGE_TEMPLATE, resize=True, node_rules=True, host_maintenance=True,
                                    self_balancing='fake DRS balances its hosts by itself', convert=True)
POWER_AFTER = {'start': 'running', 'reboot': 'running', 'stop': 'stopped', 'shutdown': 'stopped'}


@dataclasses.dataclass
class FakeHost:
    name: str
    vcpus: int = 8
    memory_mb: int = 8192
    connection_state: str = 'connected'
    in_maintenance: bool = False


@dataclasses.dataclass
class FakeNode:
    """A node as the cloud file and the hypervisor describe it."""

    name: str
    endpoint: str
    hosts: list
    disk_gb: int = 100
    availability_zone: str = 'nova'
    aggregates: tuple = ()
    fence_command: str = ''
    power_status_command: str = ''
    storage_peers: list | None = None


@dataclasses.dataclass
class FakeEndpoint:
    """storage: {'local' / 'shared': the directory instance disks of that storage go to}; two
    endpoints whose directory has the same name share it. templates: template images there."""

    name: str
    hypervisor_type: str
    capabilities: Capabilities
    storage: dict
    templates: set = dataclasses.field(default_factory=set)
    answering: bool = True


@dataclasses.dataclass
class FakeVM:
    uuid: str
    name: str
    node: str
    host: str
    power: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    storage: str
    image: str
    disks: list
    macs: list
    networks: list = dataclasses.field(default_factory=list)  # spec.networks as spawned: [{network: backing, mac}]
    guest: object = None     # the GuestConfig the guest booted with: its drive's content (a reused drive's is the old one)
    drive: str | None = None  # the path of its guest data file (a config drive), None without guest data
    passwords: dict = dataclasses.field(default_factory=dict)  # user -> the last password set_admin_password set
    agent: bool = True        # False: a guest without an agent, where set_admin_password fails
    kept: tuple | None = None  # what resize kept for a revert: (path of the disk's copy, its size in GB)
    marked: bool = True       # False: a VM made outside the cloud (add_foreign_vm), until adopt marks it
    marked_uuid: str | None = None  # the instance uuid its mark names, when not its own (a copy of an instance)
    # Rebalancing (issue 18 §1): what usage reports it uses while it runs (world.set_usage): host CPUs kept busy, and
    # host RAM (None: its memory_mb).
    cpu_used: float = 0.0
    memory_used_mb: float | None = None

    def files(self):
        """Its files in the storage directories: disks, guest data and a disk a resize kept."""
        return self.disks + ([self.drive] if self.drive else []) + ([self.kept[0]] if self.kept else [])

    def state(self):
        return InstanceState(self.uuid, self.name, self.node, self.host, self.power, self.vcpus, self.memory_mb,
                             list(self.macs), list(self.disks))


@dataclasses.dataclass
class SpawnFailure:
    """The next `times` spawns (of instance `name` only, when given) raise error; leave_behind: the VM
    stays (a spawn that overstayed its deadline and finished anyway), else it is cleaned up;
    stop_answering: the endpoint answers nothing more from then on (answer_again restores it)."""

    name: str | None
    times: int
    error: Exception
    leave_behind: bool = False
    stop_answering: bool = False


class FakeWorld:
    """One test's hypervisors. Thread-safe: workers of a bulk operation share it."""

    def __init__(self):
        self.lock = threading.RLock()
        self.endpoints = {}
        self.nodes = {}
        self.vms = {}             # (node, uuid) -> FakeVM: a stale copy and its rebuild are two VMs
        self.disks = set()        # paths of the files in the storage directories: disks, guest data files, and what tests put there
        self.guest_data = {}      # path of a guest data file -> the GuestConfig it holds
        self.images = {}          # (endpoint, image name) -> (source, disk format)
        self.uploads = []         # (endpoint, image name), one per upload
        self.calls = []           # (endpoint, method) of every call that reaches a hypervisor
        self.spawn_failures = []
        self.migration_failures = {}  # instance name or uuid -> error
        self.resize_failures = {}     # instance name or uuid -> error the next resize raises (the VM left as it was)
        self.moids = itertools.count(1)  # template ids
        self.heartbeats = {}      # node -> time.time() of its last storage heartbeat (heartbeat)
        # Snapshots to images: (endpoint, image) -> instance uuid of the templates snapshot_instance made; every
        # capture as {uuid, image, power, quiesced, thawed}; images whose capture fails -> the error (fail_snapshot).
        self.snapshot_templates = {}
        self.snapshots = []
        self.snapshot_failures = {}
        # Per-VM HA and DRS rules (issue 18 §3), on nodes whose capabilities keep them: (node, uuid) -> (ha, restart_priority)
        # of each override; (node, rule name) -> (kind, frozenset of uuids) of the cloud's rules; node -> [(name, kind,
        # frozenset of uuids)] of rules someone else made there (add_foreign_rule); node -> the error its next sync raises.
        self.ha_overrides = {}
        self.group_rules = {}
        self.foreign_rules = {}
        self.rules_failures = {}
        self.usage_calls = []     # (node, interval) of every usage call (rebalancing, issue 18 §1)
        # Moves between types (issue 19): step ('export', 'import', 'retire') -> the error its next call raises; the
        # names of the VMs retire_converted kept (renamed, unmarked).
        self.convert_failures = {}
        self.power_actions = []   # (VM name, action) of every set_power call
        self.deaf_guests = set()  # names of the VMs whose guests ignore a shutdown (set_power 'shutdown' leaves them running)

    # -- building the world --------------------------------------------------------------

    def add_endpoint(self, name, hypervisor_type=FAKE, capabilities=CAPABILITIES, shared='shared', templates=()):
        """shared: the name of the shared directory the endpoint sees (None: no shared storage)."""
        storage = {'local': 'local-%s' % name}
        if shared:
            storage['shared'] = shared
        capabilities = dataclasses.replace(capabilities, hypervisor_type=hypervisor_type)
        self.endpoints[name] = FakeEndpoint(name, hypervisor_type, capabilities, storage, set(templates))
        return self.endpoints[name]

    def add_node(self, name, endpoint=None, hosts=1, vcpus=8, memory_mb=8192, **settings):
        """A node of `hosts` hosts (each vcpus and memory_mb; one host is named after the node) on
        endpoint (one named after the node, made with the defaults, unless it exists)."""
        endpoint = endpoint or name
        if endpoint not in self.endpoints:
            self.add_endpoint(endpoint)
        names = [name] if hosts == 1 else ['%s-h%d' % (name, index) for index in range(hosts)]
        self.nodes[name] = FakeNode(name, endpoint, [FakeHost(h, vcpus, memory_mb) for h in names], **settings)
        return self.nodes[name]

    def add_cluster(self, name, endpoint='vc', hosts=3, templates=('tmpl',), **settings):
        """A node of several hosts on a vCenter-like endpoint (type CLUSTER, CLUSTER_CAPABILITIES), made if need be."""
        if endpoint not in self.endpoints:
            self.add_endpoint(endpoint, CLUSTER, CLUSTER_CAPABILITIES, templates=templates)
        return self.add_node(name, endpoint, hosts, **settings)

    def drivers(self, config=None):  # pylint: disable=unused-argument  # a Context's driver_factory
        return [FakeDriver(self, name) for name in self.endpoints]

    def driver(self, endpoint):
        return FakeDriver(self, endpoint)

    # -- what tests look at -----------------------------------------------------------------

    def vm(self, ref, node=None):
        """The VM named or with uuid ref (on node, when given), or None."""
        with self.lock:
            found = [vm for vm in self.vms.values() if ref in (vm.uuid, vm.name) and node in (None, vm.node)]
        assert len(found) <= 1, 'instance %s has copies on %s: give the node' % (ref, [vm.node for vm in found])
        return found[0] if found else None

    def placed(self):
        """{instance name: (node, power)} of every VM (an instance with a stale copy too: see vm())."""
        with self.lock:
            found = dict((vm.name, (vm.node, vm.power)) for vm in self.vms.values())
        assert len(found) == len(self.vms), 'an instance has copies on two nodes: look at them with vm(name, node)'
        return found

    # -- failures ---------------------------------------------------------------------------

    def fail_spawn(self, name=None, times=1, error=None, leave_behind=False, stop_answering=False):
        self.spawn_failures.append(SpawnFailure(name, times, error or errors.DriverError('injected spawn failure'), leave_behind,
                                                stop_answering))

    def fail_migration(self, ref, error=None):
        self.migration_failures[ref] = error or errors.DriverError('injected failure half way through the migration')

    def fail_resize(self, ref, error=None):
        self.resize_failures[ref] = error or errors.DriverError('injected resize failure; the instance was left as it was')

    def fail_snapshot(self, image, error=None):
        """The capture into image fails half way (after the guest was frozen, before its copy was complete)."""
        self.snapshot_failures[image] = error or errors.DriverError('injected failure half way through the capture')

    def fail_convert(self, step, error=None):
        """The next export_disks ('export'), import_instance ('import', after its disk was written: it removes it) or
        retire_converted ('retire') fails."""
        self.convert_failures[step] = error or errors.DriverError('injected %s failure' % step)

    def fail_rules(self, node, error=None):
        """The next sync_node_rules of node fails (nothing changed there)."""
        self.rules_failures[node] = error or errors.DriverError('injected failure of the rules reconfiguration')

    def add_foreign_rule(self, node, name, kind, members):
        """A VM-VM rule ('affinity' / 'anti-affinity') someone made on node for the VMs named or with uuids `members`."""
        uuids = frozenset(self.vm(ref, node).uuid for ref in members)
        self.foreign_rules.setdefault(node, []).append((name, kind, uuids))

    def rules_on(self, node):
        """({instance name: (ha, restart_priority)}, {rule name: (kind, sorted member names)}) the node keeps."""
        with self.lock:
            names = dict((vm.uuid, vm.name) for vm in self.vms.values())
            overrides = dict((names.get(u, u), v) for (n, u), v in self.ha_overrides.items() if n == node)
            rules = dict((name, (kind, sorted(names.get(u, u) for u in uuids))) for (n, name), (kind, uuids) in self.group_rules.items()
                         if n == node)
        return overrides, rules

    def set_usage(self, ref, cpu=None, memory_mb=None):
        """What the VM named or with uuid ref uses while it runs, as usage reports it: cpu host CPUs, memory_mb of RAM."""
        with self.lock:
            vm = self.vm(ref)
            if cpu is not None:
                vm.cpu_used = cpu
            if memory_mb is not None:
                vm.memory_used_mb = memory_mb

    def power_loss(self, endpoint):
        """The endpoint stops answering and its VMs stop (restore: answer_again)."""
        with self.lock:
            self.endpoints[endpoint].answering = False
            for vm in self.vms.values():
                if self.nodes[vm.node].endpoint == endpoint:
                    vm.power = 'stopped'

    def stop_answering(self, endpoint):
        """A network fault: the endpoint does not answer, its VMs run on."""
        self.endpoints[endpoint].answering = False

    def answer_again(self, endpoint):
        self.endpoints[endpoint].answering = True

    def add_foreign_vm(self, node, name, vcpus=1, memory_mb=1024, disk_gb=1, storage='local', power='running', nics=(), host=None,
                       uuid=None, disks=None):
        """A VM made outside the cloud on node (by hand, another tool): no mark, so list_instances does not
        see it; list_vms does. nics: [(mac, backing)]. disks: its disk paths (default: one in the storage's
        directory, named after the VM, not after a uuid: the reconciler's file listing does not see it)."""
        import uuid as uuidlib  # pylint: disable=import-outside-toplevel
        endpoint = self.endpoints[self.nodes[node].endpoint]
        vm_uuid = uuid or str(uuidlib.uuid4())
        paths = list(disks) if disks is not None else ['%s/%s.img' % (endpoint.storage[storage], name)]
        self.disks.update(paths)
        vm = FakeVM(vm_uuid, name, node, host or self.nodes[node].hosts[0].name, power, vcpus, memory_mb, disk_gb, storage, '',
                    paths, [mac for mac, _backing in nics], [{'network': backing, 'mac': mac} for mac, backing in nics], marked=False)
        with self.lock:
            self.vms[(node, vm_uuid)] = vm
        return vm

    def heartbeat(self, node, age=0.0):
        """node's last storage heartbeat on its shared directory was written `age` seconds ago."""
        self.heartbeats[node] = time.time() - age

    def _spawn_failure(self, name):
        with self.lock:
            for failure in self.spawn_failures:
                if failure.times > 0 and failure.name in (None, name):
                    failure.times -= 1
                    return failure
        return None


class FakeDriver(ComputeDriver):
    """The driver of one endpoint of a FakeWorld."""

    def __init__(self, world, endpoint):
        self.world = world
        self.endpoint = world.endpoints[endpoint]
        self.capabilities = self.endpoint.capabilities
        self.closed = False

    # -- configuration (no I/O) -------------------------------------------------------------

    def endpoint_name(self):
        return self.endpoint.name

    def node_names(self):
        return [n.name for n in self.world.nodes.values() if n.endpoint == self.endpoint.name]

    def serves(self, node):
        return node in self.node_names()

    def placement(self, node):
        found = self._node(node)
        return NodePlacement(found.availability_zone, tuple(found.aggregates), 'fake://%s' % self.endpoint.name)

    def fence_command(self, node):
        return self._node(node).fence_command

    def power_status_command(self, node):
        return self._node(node).power_status_command

    def storage_heartbeat(self, node):
        with self._io('storage_heartbeat'):
            theirs = self.world.endpoints[self.world.nodes[node].endpoint].storage.get('shared')
            return self.world.heartbeats.get(node) if theirs and theirs == self.endpoint.storage.get('shared') else None

    def storage_peers(self, node):
        return self._node(node).storage_peers

    def _node(self, node):
        found = self.world.nodes.get(node)
        if found is None or found.endpoint != self.endpoint.name:
            raise errors.DriverError('node %s is not one of fake endpoint %s; nothing was done' % (node, self.endpoint.name))
        return found

    @contextlib.contextmanager
    def _io(self, method):
        """A call that reaches the hypervisor: recorded, refused when the endpoint does not answer,
        run under the world's lock."""
        with self.world.lock:
            self.world.calls.append((self.endpoint.name, method))
            if not self.endpoint.answering:
                raise errors.Unreachable('fake endpoint %s does not answer' % self.endpoint.name)
            yield

    def _vm(self, uuid, node):
        vm = self.world.vms.get((node, uuid))
        if vm is None:
            raise errors.NotFound('fake node %s has no instance %s; nothing was changed' % (node, uuid))
        if not vm.marked:  # as the real drivers: a VM the cloud did not make (or adopt) is not its to act on
            raise errors.DriverError('VM %s (%s) on fake node %s is not the cloud\'s (no mark); it was left untouched' % (vm.name, uuid, node))
        return vm

    def _disk(self, storage, uuid):
        directory = self.endpoint.storage.get(storage)
        if directory is None:
            raise errors.DriverError('fake endpoint %s has no %s storage; nothing was created' % (self.endpoint.name, storage))
        return '%s/%s.disk' % (directory, uuid)

    def _drive(self, storage, uuid):
        """The path of the instance's guest data file (its config drive), beside its disk."""
        return self._disk(storage, uuid)[:-len('.disk')] + '.config'

    # -- nodes and images -------------------------------------------------------------------

    def get_nodes(self):
        with self._io('get_nodes'):
            return [self._resources(self.world.nodes[name]) for name in self.node_names()]

    def _resources(self, node):
        hosts = []
        for host in node.hosts:
            on = [vm for vm in self.world.vms.values() if vm.node == node.name and vm.host == host.name]
            running = [vm for vm in on if vm.power == 'running']
            used = sum(vm.memory_mb for vm in running)
            foreign = [vm for vm in on if not vm.marked]
            hosts.append(HostResources(host.name, host.connection_state, host.in_maintenance, host.vcpus, host.memory_mb,
                                       sum(vm.vcpus for vm in running), used, host.memory_mb - used, len(on),
                                       len(foreign), sum(vm.vcpus for vm in foreign if vm.power == 'running'),
                                       sum(vm.memory_mb for vm in foreign if vm.power == 'running')))
        disk_used = sum(vm.disk_gb for vm in self.world.vms.values() if vm.node == node.name)
        return NodeResources(node.name, self.hypervisor_type, hosts=hosts, disk_gb=node.disk_gb,
                             disk_gb_free=max(node.disk_gb - disk_used, 0), extra={'endpoint': self.endpoint.name})

    def ensure_image(self, name, source, disk_format, check_mode=False):
        if self.capabilities.image_kind != IMAGE_FILE:
            return super().ensure_image(name, source, disk_format, check_mode)
        with self._io('ensure_image'):
            key = (self.endpoint.name, name)
            if self.world.images.get(key) == (source, disk_format):
                return False
            if check_mode:
                return True
            self.world.images[key] = (source, disk_format)
            self.world.uploads.append(key)
            return True

    def find_template(self, name, datacenter=None):
        if self.capabilities.image_kind != IMAGE_TEMPLATE:
            return super().find_template(name, datacenter)
        with self._io('find_template'):
            if name not in self.endpoint.templates:
                raise errors.NotFound('fake endpoint %s has no template %s; it has %s'
                                      % (self.endpoint.name, name, ', '.join(sorted(self.endpoint.templates)) or 'none'))
            return {'name': name, 'moid': 'vm-%d' % next(self.world.moids), 'datacenter': datacenter}

    def _has_image(self, name):
        if self.capabilities.image_kind == IMAGE_TEMPLATE:
            return name in self.endpoint.templates
        return (self.endpoint.name, name) in self.world.images

    # -- instances --------------------------------------------------------------------------

    def list_instances(self):
        with self._io('list_instances'):
            nodes = set(self.node_names())
            return [vm.state() for vm in sorted(self.world.vms.values(), key=lambda v: v.name) if vm.node in nodes and vm.marked]

    def spawn(self, spec):
        with self._io('spawn'):
            node = self._node(spec.node)
            untouched = 'instance %s (%s) was not created on %s' % (spec.name, spec.uuid, spec.node)
            if any(vm.uuid == spec.uuid and vm.node in self.node_names() for vm in self.world.vms.values()):
                raise errors.DriverError('fake endpoint %s already has instance %s; nothing was created' % (self.endpoint.name, spec.uuid))
            if not spec.reuse_disk and not self._has_image(spec.image):  # a disk reused is there with its base
                raise errors.DriverError('image %s is not on fake endpoint %s; %s' % (spec.image, self.endpoint.name, untouched))
            host = spec.host or node.hosts[0].name
            if host not in [h.name for h in node.hosts]:
                raise errors.NotFound('node %s has no host %s; %s' % (node.name, host, untouched))
            disk = self._disk(spec.storage, spec.uuid)
            if spec.reuse_disk and disk not in self.world.disks:
                raise errors.DriverError('the disk %s to reuse is missing; %s' % (disk, untouched))
            if not spec.reuse_disk and disk in self.world.disks:
                raise errors.DriverError('a disk %s is there already; %s' % (disk, untouched))
            drive, guest, made_drive = self._spawn_drive(spec, untouched)
            self.world.disks.add(disk)
            vm = FakeVM(spec.uuid, spec.name, spec.node, host, 'running', spec.vcpus, spec.memory_mb, spec.disk_gb, spec.storage,
                        spec.image, [disk], [n['mac'] for n in spec.networks], [dict(n) for n in spec.networks], guest=guest, drive=drive)
            self.world.vms[(spec.node, spec.uuid)] = vm
            failure = self.world._spawn_failure(spec.name)  # pylint: disable=protected-access
            if failure is not None:
                if not failure.leave_behind:  # a driver removes what it made before it raises
                    del self.world.vms[(spec.node, spec.uuid)]
                    if not spec.reuse_disk:
                        self.world.disks.discard(disk)
                    if made_drive:
                        self.world.disks.discard(drive)
                if failure.stop_answering:
                    self.endpoint.answering = False
                raise failure.error
            return vm.state()

    def _spawn_drive(self, spec, untouched):
        """(path, what the guest receives, made now) of the spawn's guest data file. Reused as it is with
        reuse_disk (the guest keeps its old data and password), made from spec.guest otherwise."""
        drive = self._drive(spec.storage, spec.uuid)
        if spec.reuse_disk and drive in self.world.disks:
            return drive, self.world.guest_data.get(drive), False
        if spec.guest is None:
            return None, None, False
        if drive in self.world.disks:
            raise errors.DriverError('a config drive %s is there already; %s' % (drive, untouched))
        self.world.disks.add(drive)
        self.world.guest_data[drive] = spec.guest
        return drive, spec.guest, True

    def destroy(self, uuid, node, destroy_disks=True):
        """Idempotent. When the VM is not here, only its local files go (shared ones may be another copy's)."""
        with self._io('destroy'):
            self._node(node)
            vm = self.world.vms.get((node, uuid))
            if vm is not None and not vm.marked:
                raise errors.DriverError('VM %s (%s) on fake node %s is not the cloud\'s (no mark); it was left untouched' % (vm.name, uuid, node))
            vm = self.world.vms.pop((node, uuid), None)
            if destroy_disks:
                self.world.disks.difference_update(vm.files() if vm else [self._disk('local', uuid), self._drive('local', uuid)])

    def list_instance_files(self):
        """Every file of world.disks named `<uuid>.*` in one of the endpoint's directories, once per node of the endpoint."""
        with self._io('list_instance_files'):
            found = []
            for storage, directory in sorted(self.endpoint.storage.items()):
                for path in sorted(self.world.disks):
                    folder, _slash, name = path.rpartition('/')
                    if folder == directory and instance_file_uuid(name) is not None:
                        found.extend(InstanceFile(instance_file_uuid(name), node, storage, name, path) for node in self.node_names())
            return found

    def remove_instance_files(self, uuid, node, storage):
        with self._io('remove_instance_files'):
            self._node(node)
            if (node, uuid) in self.world.vms:
                raise errors.DriverError('fake node %s has instance %s: its files are in use; nothing was deleted' % (node, uuid))
            directory = self._disk(storage, uuid).rpartition('/')[0]
            mine = sorted(p for p in self.world.disks if p.rpartition('/')[0] == directory and instance_file_uuid(p.rpartition('/')[2]) == uuid)
            self.world.disks.difference_update(mine)
            return [p.rpartition('/')[2] for p in mine]

    def set_admin_password(self, uuid, node, user, password):
        """Recorded in the VM's passwords; refused (no password in the message) unless it runs with an agent."""
        if not self.capabilities.guest_password:
            return super().set_admin_password(uuid, node, user, password)
        with self._io('set_admin_password'):
            self._node(node)
            vm = self._vm(uuid, node)
            if vm.power != 'running' or not vm.agent:
                raise errors.DriverError('cannot set the password of %s in instance %s on fake node %s: %s; nothing was changed'
                                         % (user, uuid, node, 'it is not running' if vm.power != 'running' else 'it has no guest agent'))
            vm.passwords[user] = password
            return None

    def set_power(self, uuid, node, action):
        with self._io('set_power'):
            self._node(node)
            if action not in POWER_ACTIONS:
                raise errors.DriverError('power action must be one of %s, got %r; instance %s was left untouched'
                                         % (', '.join(POWER_ACTIONS), action, uuid))
            vm = self._vm(uuid, node)
            self.world.power_actions.append((vm.name, action))
            if action == 'shutdown' and vm.name in self.world.deaf_guests:
                return vm.state()  # the guest ignores the ACPI request, as one without ACPI support does
            vm.power = POWER_AFTER[action]
            return vm.state()

    # -- migration --------------------------------------------------------------------------

    def shares_storage(self, target, storage):
        with self._io('shares_storage'):
            if not target.endpoint.answering:
                raise errors.Unreachable('fake endpoint %s does not answer' % target.endpoint.name)
            directory = self.endpoint.storage.get(storage)
            return directory is not None and target.endpoint.storage.get(storage) == directory

    def migrate(self, uuid, node, target, mode, controls, progress=None):
        with self._io('migrate'):
            vm = self._vm(uuid, node)
            dest, untouched = target.driver, 'instance %s stayed on %s' % (vm.name, node)
            if mode not in self.capabilities.migration_modes:
                raise errors.DriverError('%s nodes have no %s migration; %s' % (self.capabilities.label, mode, untouched))
            if not isinstance(dest, FakeDriver) or dest.world is not self.world or dest.hypervisor_type != self.hypervisor_type:
                raise errors.DriverError('the target of a fake migration must be a fake endpoint of the same world; %s' % untouched)
            if not dest.endpoint.answering:
                raise errors.Unreachable('fake endpoint %s does not answer; %s' % (dest.endpoint.name, untouched))
            host = target.host or dest._node(target.node).hosts[0].name  # pylint: disable=protected-access
            if (target.node, host) == (node, vm.host):
                raise errors.DriverError('instance %s already runs on host %s of %s; %s' % (vm.name, host, node, untouched))
            target_host = next((h for h in dest._node(target.node).hosts if h.name == host), None)  # pylint: disable=protected-access
            if target_host is not None and (target_host.in_maintenance or target_host.connection_state != 'connected'):
                raise errors.DriverError('host %s of %s cannot take instance %s: it is %s; %s' % (
                    host, target.node, vm.name, 'in maintenance' if target_host.in_maintenance else target_host.connection_state, untouched))
            shared = self.endpoint.storage.get(vm.storage) == dest.endpoint.storage.get(vm.storage)
            if mode == 'live' and not shared:
                raise errors.DriverError('a live migration needs the disk on storage both endpoints see; %s' % untouched)
            if not shared and not dest._has_image(vm.image):  # pylint: disable=protected-access
                raise errors.DriverError('image %s is not on %s; %s' % (vm.image, dest.endpoint.name, untouched))
        stats = {'mode': mode, 'memory_total': vm.memory_mb << 20, 'disk_total': 0 if shared else vm.disk_gb << 30}
        if progress is not None:  # outside the world's lock: it writes to the caller's registry
            progress(dict(stats, memory_processed=stats['memory_total'] // 2))
        with self.world.lock:
            failure = self.world.migration_failures.pop(vm.name, None) or self.world.migration_failures.pop(uuid, None)
            if failure is not None:
                raise failure
            del self.world.vms[(node, uuid)]
            if not shared:
                self.world.disks.difference_update(vm.files())
                vm.disks = [dest._disk(vm.storage, uuid)]  # pylint: disable=protected-access
                if vm.drive:  # the guest data moves with the disk, unchanged
                    moved = dest._drive(vm.storage, uuid)  # pylint: disable=protected-access
                    self.world.guest_data[moved] = self.world.guest_data.get(vm.drive)
                    vm.drive = moved
                self.world.disks.update(vm.files())
            vm.node, vm.host = target.node, host
            self.world.vms[(target.node, uuid)] = vm
            return vm.state(), stats

    # -- moves between types (issue 19) -----------------------------------------------------

    def _native_format(self):
        return 'vmdk' if self.capabilities.hosts_in_node else 'qcow2'

    def export_disks(self, uuid, node, dest_dir, progress=None):
        """Files `<dest_dir>/<uuid>-<n>.<format>` in world.disks, one per disk of the stopped VM."""
        with self._io('export_disks'):
            self._node(node)
            vm = self._vm(uuid, node)
            if vm.power != 'stopped':
                raise errors.MultihvError('instance %s on fake node %s is %s: its disks are exported powered off; nothing was copied'
                                          % (uuid, node, vm.power))
            failure = self.world.convert_failures.pop('export', None)
            if failure is not None:
                raise failure
            size = vm.disk_gb << 30
            files = [DiskFile('%s/%s-%d.%s' % (dest_dir, uuid, n, self._native_format()), self._native_format(), size)
                     for n, _disk in enumerate(vm.disks)]
            self.world.disks.update(f.path for f in files)
        if progress is not None:  # outside the world's lock: it writes to the caller's registry
            progress(size * len(files), size * len(files))
        return files

    def import_instance(self, spec, disks, progress=None):
        """A running VM of spec whose disk is `<uuid>.disk` in its storage directory, from DiskFiles in world.disks."""
        with self._io('import_instance'):
            node = self._node(spec.node)
            untouched = 'instance %s (%s) was not created on %s' % (spec.name, spec.uuid, spec.node)
            if any(vm.uuid == spec.uuid and vm.node in self.node_names() for vm in self.world.vms.values()):
                raise errors.DriverError('fake endpoint %s already has instance %s; %s' % (self.endpoint.name, spec.uuid, untouched))
            missing = [d.path for d in disks if d.path not in self.world.disks]
            if not disks or missing:
                raise errors.DriverError('disk files %s are not there; %s' % (', '.join(missing) or 'none given', untouched))
            unknown = [d.disk_format for d in disks if d.disk_format not in ('qcow2', 'vmdk', 'raw')]
            if unknown:
                raise errors.DriverError('disk format %s cannot be converted; %s' % (', '.join(unknown), untouched))
            disk = self._disk(spec.storage, spec.uuid)
            if disk in self.world.disks:
                raise errors.DriverError('a disk %s is there already; %s' % (disk, untouched))
            failure = self.world.convert_failures.pop('import', None)
            if failure is not None:
                raise failure  # as a driver that removed the disk it had written
            self.world.disks.add(disk)
            vm = FakeVM(spec.uuid, spec.name, spec.node, spec.host or node.hosts[0].name, 'running', spec.vcpus, spec.memory_mb,
                        spec.disk_gb, spec.storage, spec.image, [disk], [n['mac'] for n in spec.networks],
                        [dict(n) for n in spec.networks])
            self.world.vms[(spec.node, spec.uuid)] = vm
        if progress is not None:
            progress(sum(d.virtual_size for d in disks), sum(d.virtual_size for d in disks))
        return vm.state()

    def retire_converted(self, uuid, node, keep=False):
        """Removed with its disks, or kept stopped, renamed and unmarked. Idempotent: a VM already gone or unmarked is left."""
        with self._io('retire_converted'):
            self._node(node)
            failure = self.world.convert_failures.pop('retire', None)
            if failure is not None:
                raise failure
            vm = self.world.vms.get((node, uuid))
            if vm is None or not vm.marked:
                return
            if keep:
                vm.power, vm.marked = 'stopped', False
                vm.name = '%s.moved-%s' % (vm.name, uuid.replace('-', '')[:8])
                # Its files follow its new name, as a hand-made VM's (list_instance_files lists only the instances').
                self.world.disks.difference_update(vm.files())
                vm.disks = ['%s/%s.disk' % (path.rpartition('/')[0], vm.name) for path in vm.disks]
                vm.drive = None
                self.world.disks.update(vm.disks)
                return
            del self.world.vms[(node, uuid)]
            self.world.disks.difference_update(vm.files())

    # -- resize (issue 17) -------------------------------------------------------------------

    def resize(self, uuid, node, vcpus, memory_mb, disk_gb):
        """The sizes set; the old disk kept (a file `<uuid>.resize` beside it) until confirm or revert."""
        with self._io('resize'):
            self._node(node)
            vm = self._vm(uuid, node)
            failure = self.world.resize_failures.pop(vm.name, None) or self.world.resize_failures.pop(uuid, None)
            if failure is not None:
                raise failure
            if vm.kept is None:
                kept = vm.disks[0][:-len('.disk')] + '.resize'
                self.world.disks.add(kept)
                vm.kept = (kept, vm.disk_gb)
            vm.vcpus, vm.memory_mb, vm.disk_gb = vcpus, memory_mb, max(vm.disk_gb, disk_gb)
            return vm.state()

    def confirm_resize(self, uuid, node):
        """The kept copy beside the VM's disk deleted (as the libvirt driver looks for it there: also one an evacuated
        instance's earlier copy left beside a shared disk)."""
        with self._io('confirm_resize'):
            self._node(node)
            vm = self._vm(uuid, node)
            self.world.disks.discard(vm.disks[0][:-len('.disk')] + '.resize')
            vm.kept = None

    def revert_resize(self, uuid, node, vcpus, memory_mb):
        with self._io('revert_resize'):
            self._node(node)
            vm = self._vm(uuid, node)
            if vm.kept is not None:
                self.world.disks.discard(vm.kept[0])
                vm.disk_gb, vm.kept = vm.kept[1], None
            vm.vcpus, vm.memory_mb = vcpus, memory_mb
            return vm.state()

    # -- snapshots to images ----------------------------------------------------------------

    def snapshot_instance(self, uuid, node, image, dest, quiesce=True):
        """File images: the base `image` on this endpoint and the controller file dest (fake qcow2 bytes naming the
        instance); templates: a template `image`. A running VM with an agent is frozen and thawed (world.snapshots)."""
        with self._io('snapshot_instance'):
            self._node(node)
            vm = self._vm(uuid, node)
            key = (self.endpoint.name, image)
            if key in self.world.images or image in self.endpoint.templates:
                raise errors.DriverError('image %s is on fake endpoint %s already; nothing was changed' % (image, self.endpoint.name))
            running = vm.power == 'running'
            record = {'uuid': uuid, 'image': image, 'power': vm.power, 'quiesced': running and quiesce and vm.agent, 'thawed': False}
            self.world.snapshots.append(record)
            try:
                failure = self.world.snapshot_failures.pop(image, None)
                if failure is not None:
                    raise failure
                if self.capabilities.image_kind == IMAGE_TEMPLATE:
                    self.endpoint.templates.add(image)
                    self.world.snapshot_templates[key] = uuid
                    return SnapshotImage(template=image, moid='vm-%d' % next(self.world.moids),
                                         quiesced=record['quiesced'] if running else None)
                data = b'QFI\xfb\0\0\0\3' + bytes(8) + ('fake flattened disk of %s' % uuid).encode()  # a qcow2 header, no backing file
                with open(dest, 'xb') as handle:
                    handle.write(data)
                self.world.images[key] = (dest, 'qcow2')
                return SnapshotImage(disk_format='qcow2', size=len(data), sha256='fake', quiesced=record['quiesced'] if running else None)
            finally:
                record['thawed'] = record['quiesced']  # thawed whatever happened

    def remove_image(self, name, check_mode=False):
        with self._io('remove_image'):
            key = (self.endpoint.name, name)
            if self.capabilities.image_kind == IMAGE_TEMPLATE:
                if key not in self.world.snapshot_templates:
                    return False  # a template the cloud did not make is never touched
                if not check_mode:
                    del self.world.snapshot_templates[key]
                    self.endpoint.templates.discard(name)
                return True
            if key not in self.world.images:
                return False
            users = sorted(vm.uuid for vm in self.world.vms.values()
                           if vm.image == name and self.world.nodes[vm.node].endpoint == self.endpoint.name)
            if users:
                raise errors.ImageInUse('image %s on fake endpoint %s is the base of the disks of instances %s; it was left untouched'
                                        % (name, self.endpoint.name, ', '.join(users)), users)
            if not check_mode:
                del self.world.images[key]
            return True

    def close(self):
        self.closed = True

    # -- adoption (issue 17 §3) --------------------------------------------------------------

    def list_vms(self, node):
        with self._io('list_vms'):
            self._node(node)
            found = []
            for vm in sorted(self.world.vms.values(), key=lambda v: (v.name, v.uuid)):
                if vm.node != node:
                    continue
                directory = dict((d, s) for s, d in self.endpoint.storage.items())
                storages = set(directory.get(p.rpartition('/')[0]) for p in vm.disks)
                outside = [p for p in vm.disks if p.rpartition('/')[0] not in directory]
                found.append(VMDetails(vm.uuid, vm.name, vm.node, vm.host, vm.power, vm.vcpus, vm.memory_mb, vm.disk_gb,
                                       [{'mac': nic['mac'], 'backing': nic['network']} for nic in vm.networks], list(vm.disks),
                                       'shared' if storages == {'shared'} else 'local', outside, [], vm.marked,
                                       (vm.marked_uuid or vm.uuid) if vm.marked else None))
            return found

    def adopt(self, uuid, node, name, metadata):
        with self._io('adopt'):
            self._node(node)
            vm = self.world.vms.get((node, uuid))
            if vm is None:
                raise errors.NotFound('fake node %s has no VM %s; nothing was adopted' % (node, uuid))
            if vm.marked and (vm.marked_uuid or vm.uuid) != uuid:
                raise errors.DriverError('VM %s on fake node %s carries the mark of instance %s; it was left untouched'
                                         % (vm.name, node, vm.marked_uuid))
            vm.marked = True
            vm.image = vm.image or metadata.get('image') or ''
            return vm.state()

    # -- per-VM HA and DRS rules (issue 18 §3) ------------------------------------------------

    def sync_node_rules(self, node, instances, groups, check_mode=False):
        """world.ha_overrides and world.group_rules of node made to agree (as the vSphere driver: skipped without a VM,
        rules of two members or more, named multihv-<group>); errors.RuleConflict, nothing changed, when a rule would
        keep apart two VMs a foreign rule keeps together or the other way."""
        if not self.capabilities.node_rules:
            return super().sync_node_rules(node, instances, groups, check_mode)
        with self._io('sync_node_rules'):
            self._node(node)
            failure = self.world.rules_failures.pop(node, None)
            if failure is not None:
                raise failure
            on = dict((vm.uuid, vm.name) for vm in self.world.vms.values() if vm.node == node and vm.marked)
            changes, skipped, wanted_ha = [], [], {}
            for inst in instances:
                if inst.uuid in on:
                    wanted_ha[inst.uuid] = (bool(inst.ha), int(inst.restart_priority))
                else:
                    skipped.append('instance %s: no VM of it on the node yet' % inst.name)
            current_ha = dict((u, v) for (n, u), v in self.world.ha_overrides.items() if n == node)
            ha_set = dict((u, v) for u, v in wanted_ha.items() if current_ha.get(u) != v)
            ha_gone = sorted(u for u in current_ha if u not in on)
            changes += ['instance %s: ha %s, restart priority %s' % (on[u], v[0], v[1]) for u, v in sorted(ha_set.items())]
            changes += ['VM %s: HA override removed' % u for u in ha_gone]
            wanted = {}
            for group in groups:
                members = frozenset(u for u in group.members if u in on)
                if len(members) >= 2:
                    kind = 'affinity' if group.policy in ('affinity', 'soft-affinity') else 'anti-affinity'
                    wanted['multihv-' + group.name] = (kind, members)
            for name, (kind, members) in wanted.items():
                for theirs, their_kind, their_members in self.world.foreign_rules.get(node, []):
                    if their_kind != kind and len(members & their_members) >= 2:
                        raise errors.RuleConflict('fake node %s: rule %s (%s) contradicts rule %s (%s); nothing was changed'
                                                  % (node, name, kind, theirs, their_kind))
            current = dict((name, v) for (n, name), v in self.world.group_rules.items() if n == node)
            rules_set = dict((name, v) for name, v in wanted.items() if current.get(name) != v)
            rules_gone = sorted(name for name in current if name not in wanted)
            changes += ['rule %s: %s of %s' % (name, kind, ', '.join(sorted(on[u] for u in members)))
                        for name, (kind, members) in sorted(rules_set.items())]
            changes += ['rule %s: removed' % name for name in rules_gone]
            if not check_mode:
                self.world.ha_overrides.update(((node, u), v) for u, v in ha_set.items())
                for u in ha_gone:
                    del self.world.ha_overrides[(node, u)]
                self.world.group_rules.update(((node, name), v) for name, v in rules_set.items())
                for name in rules_gone:
                    del self.world.group_rules[(node, name)]
            return RulesSync(node, changes, skipped)

    # -- host maintenance (issue 18 §2) ------------------------------------------------------

    def set_host_maintenance(self, node, host, enter):
        """As the vSphere driver: refused while a powered-on VM is on the host; False when it is in that state already."""
        if not self.capabilities.host_maintenance:
            return super().set_host_maintenance(node, host, enter)
        with self._io('set_host_maintenance'):
            found = next((h for h in self._node(node).hosts if h.name == host), None)
            if found is None:
                raise errors.NotFound('fake node %s has no host %s; no host was put in or out of maintenance' % (node, host))
            if found.in_maintenance == bool(enter):
                return False
            running = sorted(vm.name for vm in self.world.vms.values() if (vm.node, vm.host, vm.power) == (node, host, 'running'))
            if enter and running:
                raise errors.DriverError('host %s of node %s still runs VMs %s: they must move or stop before it enters '
                                         'maintenance mode; it was left out of maintenance' % (host, node, ', '.join(running)))
            found.in_maintenance = bool(enter)
            return True

    # -- rebalancing (issue 18 §1) -----------------------------------------------------------

    def usage(self, node, interval):
        """Each running VM of node (the cloud's or not) with what world.set_usage gave it; no sleep: the interval
        is recorded (world.usage_calls) and reported as measured."""
        if not self.capabilities.usage:
            return super().usage(node, interval)
        with self._io('usage'):
            self._node(node)
            self.world.usage_calls.append((node, interval))
            running = sorted((vm for vm in self.world.vms.values() if vm.node == node and vm.power == 'running'), key=lambda v: v.uuid)
            return NodeUsage(node, float(interval), tuple(
                InstanceUsage(vm.uuid, vm.cpu_used, vm.memory_mb if vm.memory_used_mb is None else vm.memory_used_mb) for vm in running))


class FakeCloud:
    """A cloud over a FakeWorld: a real SQLite registry in directory, the cloud file that names
    it, and a fresh Context for each operation (a Context reads the nodes once)."""

    def __init__(self, world, directory):
        self.world = world
        self.path = '%s/registry.sqlite' % directory  # the registry's file
        url = 'sqlite:///%s' % self.path
        self.config = _config.parse({'registry': {'url': url}}, 'the fake cloud', {})
        self.registry = Registry.open(url)
        self._others = itertools.count(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.registry.close()

    def context(self, timeout=None):
        return Context(self.config, self.registry, drivers=self.world.drivers(), timeout=timeout,
                       driver_factory=self.world.drivers)

    def flavor(self, name, vcpus=1, ram_mb=1024, disk_gb=1):
        return self.registry.set_flavor(name, vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb, extra_specs={})[1]

    def image(self, name, hypervisor_type=FAKE, **properties):
        """A file image (source /images/<name>.qcow2) unless properties say otherwise (template=...)."""
        if not properties:
            properties = {'source': '/images/%s.qcow2' % name, 'format': 'qcow2'}
        return self.registry.set_image(name, hypervisor_type=hypervisor_type, properties=properties)[1]

    def network(self, name, cidr='192.0.2.0/24', backings=None, **fields):
        """A registry network (on every node, as backing `name`, unless backings say otherwise)."""
        backings = [{'backing': name}] if backings is None else backings
        return _networks.set_network(self.registry, name, 'present', dict(fields, cidr=cidr, backings=backings))[2]

    def boot(self, name, flavor='small', image='tick', **params):
        """One instance booted through the core (params: node, storage, ha, restart_priority, state...)."""
        return _instances.boot_one(self.context(), dict(params, name=name, flavor=flavor, image=image))

    def take_room(self, node):
        """What another run does between this run's plan and its claim: an instance of its own
        claims all the RAM left on node. Returns that instance's record."""
        view = self.context().view(node)
        held = self.registry.allocations_by_node().get(node, {}).get('memory_mb', 0)
        other = self.registry.create_instance(name='other-run-%d' % next(self._others), node=node, storage='local', image='-',
                                              flavor=self.registry.list_flavors()[0]['name'])
        room = {'vcpus': 0, 'memory_mb': view.capacity['memory_mb'] - held, 'disk_gb': 0}
        assert self.registry.claim(other.uuid, node, view.hypervisor_type, room, view.capacity)
        return other

    def allocations(self):
        """[(instance name, node)] of every allocation, sorted."""
        names = dict((i.uuid, i.name) for i in self.registry.list_instances())
        return sorted((names.get(a['instance_uuid'], a['instance_uuid']), a['node']) for a in self.registry.list_allocations())

    def nodes_of(self):
        """{instance name: node} of every instance record."""
        return dict((i.name, i.node) for i in self.registry.list_instances())


__all__ = ['CAPABILITIES', 'CLUSTER', 'CLUSTER_CAPABILITIES', 'FAKE', 'FakeCloud', 'FakeDriver', 'FakeWorld']


@contextlib.contextmanager
def two_node_cloud(tmp_path):
    """The usual small cloud: fake1 (fenceable) and fake2 sharing the directory 'shared', flavor
    small and image tick, in a FakeCloud over a registry in tmp_path."""
    world = FakeWorld()
    world.add_node('fake1', fence_command='true')
    world.add_node('fake2')
    with FakeCloud(world, tmp_path) as made:
        made.flavor('small')
        made.image('tick')
        yield made
