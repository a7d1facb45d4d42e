# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The seam between the core and the hypervisors (model: nova/virt/driver.py).

Private to multihv.cloud: do not import. The core speaks only to ComputeDriver;
drivers speak only to their hypervisor and never touch the registry.

A node is what the scheduler places instances on: one KVM host, or one vSphere
cluster. A host is one hypervisor inside a node: the KVM host itself, or one
ESXi host of the cluster.
"""

from __future__ import annotations

import abc
import concurrent.futures
import dataclasses
import threading
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import STATE_DOWN, STATE_UP

IMAGE_FILE = 'file'
IMAGE_TEMPLATE = 'template'


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a hypervisor type can do, declared by its driver (Nova's ComputeDriver.capabilities).
    The core asks these, never a hypervisor's name: a new hypervisor type is a new driver.

    hypervisor_type: the type's name (nodes, images and flavors say it); label: how messages
    name the type (KVM, vSphere); node_noun: what one node of it is.
    migration_modes: the MIGRATION_MODES its driver's migrate does: live (a running instance
    moves with its memory while its disk stays: shared storage, vMotion), block (a running
    instance moves with its disk copied; a driver that has it answers shares_storage, so that
    auto picks live or block), cold (a stopped instance moves with its disk). evacuation: when a node fails, the core rebuilds its
    instances elsewhere from their records (fenced first); a type without it recovers by
    itself, and self_recovery says how, for the refusal. hosts_in_node: a node is several
    hosts (a cluster): an instance must fit one host, and may move between hosts of its node.
    image_kind: IMAGE_FILE (a disk file the driver uploads to each host: ensure_image) or
    IMAGE_TEMPLATE (a template VM the endpoint has: find_template). guest_password: the driver
    sets a running guest's password (set_admin_password), through an agent in the guest.
    """

    hypervisor_type: str
    label: str
    node_noun: str
    migration_modes: tuple = ()
    evacuation: bool = False
    self_recovery: str = ''
    hosts_in_node: bool = False
    image_kind: str = IMAGE_FILE
    guest_password: bool = False
    # Resize (issue 17): the driver gives an instance new vCPUs, RAM and a larger disk on its own node
    # (resize), keeps what a revert needs until confirm_resize, and puts it back (revert_resize).
    resize: bool = False
    # Per-VM HA and DRS rules (issue 18 §3): the node's own HA and DRS (a vSphere cluster's) are told what the cloud
    # knows of its instances: each one's ha and restart_priority as a per-VM HA restart override, each server group
    # with two members or more on the node as a VM-VM rule (sync_node_rules). Without it, nodes keep no such thing
    # (a KVM host: the core's instance HA and scheduler are all there is) and the core asks nothing.
    node_rules: bool = False

    # ESXi host maintenance (issue 18 §2): hosts_in_node types whose driver puts one host of a node into
    # maintenance mode and takes it out again (set_host_maintenance); the core moves the instances off first.
    host_maintenance: bool = False
    # Rebalancing (issue 18 §1): usage: the driver measures what each running VM of a node uses (ComputeDriver.usage),
    # so that the core can balance nodes of this type by live migration (when they are single hosts: not hosts_in_node).
    # self_balancing: how a node of several hosts balances them by itself (vSphere DRS), for rebalance's refusal of it.
    usage: bool = False
    self_balancing: str = ''
    convert: bool = False   # the driver exports a stopped VM's disks to files and imports files as a new VM


@dataclasses.dataclass(frozen=True)
class NodePlacement:
    """Where the cloud file puts one node: its availability zone, its aggregates, and the
    URL of the endpoint that serves it."""

    availability_zone: str | None = None
    aggregates: tuple = ()
    endpoint: str | None = None


@dataclasses.dataclass
class HostResources:
    """Live resources of one hypervisor host.

    usable: connected and not in maintenance, so its capacity counts in the node.
    vcpus: logical CPUs; memory_mb: physical RAM; *_used: what the powered-on
    instances on it are given (vCPUs, RAM) as the hypervisor reports them;
    memory_mb_free: RAM the hypervisor reports unused.
    """

    name: str
    connection_state: str = 'connected'
    in_maintenance: bool = False
    vcpus: int = 0
    memory_mb: int = 0
    vcpus_used: int = 0
    memory_mb_used: int = 0
    memory_mb_free: int = 0
    instances: int = 0
    # Adoption (issue 17 §3): the VMs on the host that carry no mark of the cloud's (hand-made, another
    # tool's), among instances above, and what the powered-on ones of them hold, among the *_used above.
    unmanaged_vms: int = 0
    unmanaged_vcpus_used: int = 0
    unmanaged_memory_mb_used: int = 0

    @property
    def usable(self) -> bool:
        return self.connection_state == 'connected' and not self.in_maintenance

    def free_vcpus(self, cpu_ratio) -> int:
        """The vCPUs the host can still take: its logical CPUs times the node's cpu allocation ratio, less what
        its powered-on instances are given. What ClusterHostFitFilter counts, and compute_node_info reports the
        largest of."""
        return int(self.vcpus * cpu_ratio) - self.vcpus_used

    def as_dict(self) -> dict:
        result = dataclasses.asdict(self)
        result['usable'] = self.usable
        return result


@dataclasses.dataclass
class NodeResources:
    """Live resources of one node, as its driver sees them.

    Capacity (vcpus, memory_mb) counts usable hosts only. disk_gb and
    disk_gb_free are the instance storage: the instance path's filesystem on
    KVM, the cluster's datastores (each once) on vSphere. extra holds what is
    specific to a hypervisor type (vSphere: ha_enabled, drs_enabled,
    datastores, moid; KVM: uri, hostname, host_uuid, hypervisor_version).
    """

    name: str
    hypervisor_type: str
    state: str = STATE_UP
    reason: str | None = None
    hosts: list = dataclasses.field(default_factory=list)
    disk_gb: int = 0
    disk_gb_free: int = 0
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def down(cls, name: str, hypervisor_type: str, reason: str, extra: dict | None = None) -> NodeResources:
        """A node that could not be reached: no live resources, the reason why."""
        return cls(name, hypervisor_type, state=STATE_DOWN, reason=reason, extra=dict(extra or {}))

    def _usable(self):
        return [h for h in self.hosts if h.usable]

    @property
    def vcpus(self):
        return sum(h.vcpus for h in self._usable())

    @property
    def memory_mb(self):
        return sum(h.memory_mb for h in self._usable())

    @property
    def vcpus_used(self):
        return sum(h.vcpus_used for h in self.hosts)

    @property
    def memory_mb_used(self):
        return sum(h.memory_mb_used for h in self.hosts)

    @property
    def instances(self):
        return sum(h.instances for h in self.hosts)

    @property
    def unmanaged(self):
        """Adoption (issue 17 §3): {vms, vcpus, memory_mb} of the VMs without the cloud's mark, summed over
        the hosts (vcpus and memory_mb: the powered-on ones')."""
        return {'vms': sum(h.unmanaged_vms for h in self.hosts), 'vcpus': sum(h.unmanaged_vcpus_used for h in self.hosts),
                'memory_mb': sum(h.unmanaged_memory_mb_used for h in self.hosts)}

    @property
    def largest_host_free_memory_mb(self):
        """The most RAM one usable host has free: a VM larger than this fits no host,
        whatever the node's total says (the fragmentation Nova's vCenter driver hides)."""
        return max([h.memory_mb_free for h in self._usable()] or [0])

    @property
    def largest_host_free_vcpus(self):
        return max([max(h.vcpus - h.vcpus_used, 0) for h in self._usable()] or [0])

    def as_dict(self):
        return {
            'name': self.name,
            'hypervisor_type': self.hypervisor_type,
            'state': self.state,
            'reason': self.reason,
            'vcpus': self.vcpus,
            'memory_mb': self.memory_mb,
            'disk_gb': self.disk_gb,
            'vcpus_used': self.vcpus_used,
            'memory_mb_used': self.memory_mb_used,
            'disk_gb_free': self.disk_gb_free,
            'instances': self.instances,
            'largest_host_free_memory_mb': self.largest_host_free_memory_mb,
            'largest_host_free_vcpus': self.largest_host_free_vcpus,
            'hosts': [h.as_dict() for h in self.hosts],
            'extra': dict(self.extra),
            'unmanaged': self.unmanaged,
        }


@dataclasses.dataclass
class InstanceSpec:
    """What a driver needs to build one instance on one node (all decided by the core).

    image: for KVM the image's name (its volume in the instance pool, see
    KVM driver), for vSphere the template VM's name. host: the ESXi host the
    scheduler chose inside a cluster node (None on KVM). storage: 'shared' puts
    the disk under the host's shared_instance_path, 'local' under instance_path.
    networks: [{'network': a libvirt network / bridge:NAME / vSphere port group,
    'mac': a fixed MAC}]. metadata is stored with the instance (KVM: domain
    <metadata>; vSphere: annotation) so that a node alone can tell what it runs.
    reuse_disk: the instance's disk exists already where storage puts it and is used as it
    is (evacuation on shared storage: the same disk, data and password kept); spawn fails
    when it is not there and never deletes it. Its guest data (config drive) is kept too when
    there is some, and made from guest when there is none.
    guest: the _guest.bootstrap.GuestConfig the guest receives at its first boot (KVM: a config
    drive beside the disk; vSphere: guestinfo extraConfig), None for nothing. It may hold the
    admin password and secret user_data: a driver never logs it nor puts it in a message.
    image_properties: the image's properties; a driver reads those it knows (KVM: virt_type).
    """

    uuid: str
    name: str
    node: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    image: str
    storage: str = 'local'
    host: str | None = None
    networks: list = dataclasses.field(default_factory=list)
    hostname: str = ''
    metadata: dict = dataclasses.field(default_factory=dict)
    reuse_disk: bool = False
    guest: object = None
    image_properties: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class InstanceState:
    """An instance as its hypervisor reports it. power_state: running, stopped, paused,
    suspended or unknown. host: the ESXi host (vSphere) or the KVM host's name."""

    uuid: str
    name: str
    node: str
    host: str
    power_state: str
    vcpus: int = 0
    memory_mb: int = 0
    macs: list = dataclasses.field(default_factory=list)
    disk_paths: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class InstanceFile:
    """A file of an instance's own (its disk, its console log...) in an instance directory a node
    uses, named `<uuid>.<anything>` after the instance (see instance_file_uuid). storage: 'local'
    or 'shared', the node's directory it is in; name: the file's name there; path: its path as
    the node's host sees it."""

    uuid: str
    node: str
    storage: str
    name: str
    path: str


def instance_file_uuid(name):
    """The instance uuid a file named `name` belongs to (`<uuid>.<anything>`, the uuid in canonical
    lower-case form), or None for any other file (image bases, heartbeats, someone else's)."""
    head, dot, _rest = name.partition('.')
    if not dot:
        return None
    try:
        canonical = str(uuidlib.UUID(head))
    except ValueError:
        return None
    return canonical if canonical == head else None


@dataclasses.dataclass
class MigrationControls:
    """How a live or block migration runs (Nova's libvirt live_migration_* options).

    bandwidth_mib: MiB/s, None for the hypervisor's default. max_downtime_ms: the pause
    the switch-over may take. completion_timeout: seconds after which completion_action
    applies: abort (the instance stays on the source: errors.MigrationCancelled) or
    force_complete (switch to post-copy when allowed, else pause the guest so that its
    memory stops changing). None: no such timeout (work_timeout still bounds the move).
    """

    bandwidth_mib: int | None = None
    max_downtime_ms: int | None = None
    auto_converge: bool = False
    post_copy: bool = False
    completion_timeout: float | None = None
    completion_action: str = 'abort'


@dataclasses.dataclass
class MigrationTarget:
    """Where a migration goes: the destination's driver (same hypervisor type, and for
    vSphere the same vCenter), node and, inside a vSphere cluster, ESXi host."""

    driver: object
    node: str
    host: str | None = None


class ComputeDriver(abc.ABC):
    """What the core may ask of a hypervisor endpoint (one vCenter, one KVM host).

    Drivers are cheap to create and connect lazily; close() releases the connection.
    Unreachable endpoints raise errors.Unreachable, refused credentials
    errors.AuthenticationFailed, other refusals errors.DriverError (or errors.NotFound for
    a named object that is not there); nothing else is swallowed. Every method that changes
    the hypervisor is idempotent where its docstring says so, and bounded by work_timeout.
    The questions about configuration (node_names, serves, placement, fence_command, power_status_command,
    fence_environment, storage_peers) are answered from the cloud file alone, without I/O.
    """

    capabilities: Capabilities = Capabilities(hypervisor_type='', label='', node_noun='node')
    # Seconds one piece of work (a spawn, a power change, a destroy, a migration) may take
    # once the endpoint answered; the core sets it from a task's timeout option.
    work_timeout: float = 600.0

    @property
    def hypervisor_type(self):
        """The type of hypervisor this driver speaks to, as its capabilities name it."""
        return self.capabilities.hypervisor_type

    # ------------------------------------------------------------ configuration (no I/O)

    @abc.abstractmethod
    def endpoint_name(self):
        """The endpoint's name in the cloud file (a vCenter's or a KVM host's)."""

    @abc.abstractmethod
    def node_names(self):
        """Names of the nodes this endpoint is expected to provide, from configuration
        alone, so that an unreachable endpoint's nodes can be reported down. May be
        incomplete (a vCenter without a cluster filter names none)."""

    @abc.abstractmethod
    def serves(self, node):
        """True when a node of that name would be this endpoint's, by its name alone."""

    @abc.abstractmethod
    def placement(self, node):
        """The NodePlacement the cloud file gives node (one this endpoint serves)."""

    def fence_command(self, node):
        """The command that powers node off for good before its instances are evacuated
        ('' when the cloud file gives none). Only asked of drivers with evacuation."""
        return ''

    def power_status_command(self, node):
        """The command that says whether node's power is off (exit 0, last word of its output
        `off` or `on`; see _compute/fencing.py), which confirms a fence ('' when the cloud file
        gives none: the fence command's exit 0 is believed). Only asked of drivers with evacuation."""
        return ''

    def fence_environment(self, node):
        """Names of the controller's environment variables node's fence and power status commands
        get besides a minimal one (see _compute/fencing.py); () when the cloud file names none."""
        return ()

    def storage_heartbeat(self, node):
        """The time (seconds since the epoch, by the writer's clock) of the last heartbeat another node
        wrote on the shared instance storage this endpoint sees (storage.heartbeat_name(node) there,
        whose first word is that time), or None when this endpoint has no shared storage or finds none
        there. I/O: asked of a node that answers, about one that does not. Only asked of drivers with
        evacuation."""
        return None

    def storage_peers(self, node):
        """Names of the nodes that see node's shared instance directory, or None when the
        cloud file does not restrict it. Only asked of drivers with evacuation."""
        return None

    # ------------------------------------------------------------ nodes

    @abc.abstractmethod
    def get_nodes(self):
        """Live NodeResources of every node of this endpoint, in as few round trips as the
        hypervisor allows (one PropertyCollector retrieval for a vCenter). errors.Unreachable
        when the endpoint does not answer; the core then reports its nodes down."""

    # ------------------------------------------------------------ images

    def ensure_image(self, name, source, disk_format, check_mode=False):
        """IMAGE_FILE drivers: make image `name` (the controller's file `source`, qcow2 or raw)
        the base that instance disks of this endpoint are made from. Idempotent: an identical
        base is left alone, a different one replaced. True when it uploaded (check_mode: would
        upload; nothing is written)."""
        raise errors.DriverError('%s images are not files; nothing was uploaded' % self.capabilities.label)

    def find_template(self, name, datacenter=None):
        """IMAGE_TEMPLATE drivers: the template VM `name` as {'name', 'moid', ...}; errors.NotFound
        naming the templates there are when there is none. Read-only."""
        raise errors.DriverError('%s images are not templates' % self.capabilities.label)

    # ------------------------------------------------------------ instances

    @abc.abstractmethod
    def list_instances(self):
        """InstanceState of every instance on this endpoint's nodes (templates excluded). Read-only."""

    @abc.abstractmethod
    def spawn(self, spec):
        """Build and start the instance an InstanceSpec describes; return its InstanceState.
        With spec.reuse_disk, use the instance's existing disk (never delete it; DriverError
        when it is missing). On failure remove whatever it created (disk, domain, VM) before
        raising. Not idempotent: an instance of that uuid already there is an error."""

    @abc.abstractmethod
    def destroy(self, uuid, node, destroy_disks=True):
        """Power off and delete the instance, and its disks unless destroy_disks is False (a
        stale copy whose shared disk another node now uses). Idempotent: no error when it is
        already gone."""

    def list_instance_files(self):
        """InstanceFile of every file named after an instance (`<uuid>.<anything>`) in the instance
        directories this endpoint's nodes use, whether a VM uses it or not, one per node that sees it
        (a file in a shared directory is reported by each node whose endpoint sees that directory).
        Anything else there (image bases, heartbeats) is not reported. Read-only. The default, [], is
        for drivers whose instances have no files of their own apart from their VM: a vSphere clone's
        disks are the VM's and go with it."""
        return []

    def remove_instance_files(self, uuid, node, storage):
        """Delete the files of instance uuid (`<uuid>.<anything>`) in node's `storage` ('local' /
        'shared') instance directory, and nothing else; the names deleted (none when there were none:
        idempotent). Refused (errors.DriverError, nothing deleted) while a VM of that uuid is defined on
        node: its files are in use. Asked only of drivers whose list_instance_files reports files."""
        raise errors.DriverError('%s instances have no files of their own; nothing was deleted' % self.capabilities.label)

    def set_admin_password(self, uuid, node, user, password):
        """Capabilities.guest_password drivers: set `user`'s password inside the running guest of
        instance uuid on node (KVM: the QEMU guest agent, virDomainSetUserPassword, as Nova's
        set-password does). errors.DriverError when the guest cannot (no agent, not running); the
        password is never in a message."""
        raise errors.DriverError('%s cannot set a password inside a guest; nothing was changed' % self.capabilities.label)

    @abc.abstractmethod
    def set_power(self, uuid, node, action):
        """action: one of POWER_ACTIONS (start, stop (hard), shutdown (ACPI), reboot); returns
        the InstanceState after. Idempotent: starting a running instance changes nothing."""

    # ------------------------------------------------------------ migration
    # progress(stats) is called from the caller's thread while a move runs, with the
    # hypervisor's job statistics (see the drivers for the keys).

    def shares_storage(self, target, storage):
        """block_migration drivers: True when the instance directory for storage ('local' / 'shared')
        on this endpoint is the same directory on target's (checked by writing a marker, never
        assumed from names). Leaves nothing behind."""
        raise errors.DriverError('%s does not tell shared storage apart' % self.capabilities.label)

    @abc.abstractmethod
    def migrate(self, uuid, node, target, mode, controls, progress=None):
        """Move the instance to a MigrationTarget: mode live (memory only, shared disk), block
        (live, the disk's top layer copied), cold (stopped, disk moved, started again if it ran),
        each only when the capabilities say so. Returns (InstanceState on the target, stats dict).
        On failure the instance stays on the source and runs as before; errors.MigrationCancelled
        when the completion timeout aborted it."""

    def close(self):
        """Release the connection, if any. Idempotent."""

    # ------------------------------------------------------------ resize (issue 17)
    # Capabilities.resize drivers. A resize stays on the instance's node (and host); the core claims
    # the resources first and records the resize (a migration of type resize) before calling these.

    def resize(self, uuid, node, vcpus, memory_mb, disk_gb):
        """Give instance uuid on node vcpus, memory_mb and a disk of disk_gb GiB (grown; never shrunk:
        a disk larger than that is left as it is), keeping what revert_resize needs to bring the old
        disk back (KVM: a copy of the disk) until confirm_resize. The instance ends in the power state
        it had (stopped for the change when the hypervisor cannot add to a running VM). Returns its
        InstanceState. On failure it is left with its old sizes and disk, in its old power state."""
        raise errors.DriverError('%s instances cannot be resized; nothing was changed' % self.capabilities.label)

    def confirm_resize(self, uuid, node):
        """Drop what resize kept for a revert. Idempotent: nothing kept, nothing done."""
        raise errors.DriverError('%s instances cannot be resized; nothing was changed' % self.capabilities.label)

    def revert_resize(self, uuid, node, vcpus, memory_mb):
        """Give instance uuid on node vcpus and memory_mb again, and the disk resize kept when it
        kept one (the kept copy then goes); the instance ends in the power state it had. Idempotent:
        an instance already back (or never resized: an interrupted resize) is only given its sizes.
        Returns its InstanceState."""
        raise errors.DriverError('%s instances cannot be resized; nothing was changed' % self.capabilities.label)

    # ------------------------------------------------------------ snapshots to images (issue 17: day-2 operations)

    def snapshot_instance(self, uuid, node, image, dest, quiesce=True):
        """Capture instance uuid on node, running or stopped, into a new image `image`; a SnapshotImage.
        IMAGE_FILE drivers: a flattened qcow2 of its root disk (overlay and base in one file, backing
        file none) becomes the complete base `image` on the instance's host (as ensure_image would
        leave it) and is written to the controller's file `dest` (a new file; the core renames it
        into place). A running guest is quiesced (quiesce: its filesystems frozen through the QEMU
        guest agent where one answers, thawed whatever happens) while its disk is captured; it runs on.
        IMAGE_TEMPLATE drivers: a clone of the VM marked as a template named `image` (dest unused).
        On failure whatever was made of the image (a partial base, a half-made template) is removed
        before raising; the instance is as it was. Not idempotent: a base or template `image` already
        there is refused (errors.DriverError), unless remove_image removed it first."""
        raise errors.DriverError('%s instances cannot be captured into images; nothing was changed' % self.capabilities.label)

    def remove_image(self, name, check_mode=False):
        """Delete what image `name` left on this endpoint: IMAGE_FILE drivers its bases (every
        format) and their checksums from every _base of the host; IMAGE_TEMPLATE drivers the
        template VM of that name that snapshot_instance made (a template it did not make is never
        touched). True when there was (check_mode: is) something to delete. Refused
        (errors.ImageInUse naming the instance uuids, nothing deleted) while instance disks use a base
        as their backing file; check_mode checks that too and deletes nothing. The default: nothing."""
        return False

    # ------------------------------------------------------------ adoption (issue 17 §3)

    def list_vms(self, node):
        """VMDetails of every VM on node (templates excluded), the cloud's instances and the others alike
        (VMDetails.marked says which carry the cloud's mark), with what adopting one needs: its size, NICs
        and disks. Read-only; a constant number of round trips per call, as list_instances."""
        raise errors.DriverError('%s cannot list the VMs of node %s for adoption' % (self.capabilities.label, node))

    def adopt(self, uuid, node, name, metadata):
        """Make the VM of uuid on node one of the cloud's instances, under the instance name `name`: give it the
        cloud's mark (KVM: the domain's multihv metadata, live and persistent; vSphere: the annotation's marker line
        above what the annotation said), with metadata ({flavor, image, storage...}) so that a node alone can tell
        what it is. Nothing else of the VM changes: not its power, disks, NICs or name. Returns its InstanceState.
        Idempotent: a VM that carries this instance's mark already is left as it is. errors.NotFound when node has no
        VM of that uuid; errors.DriverError (nothing changed) when it carries another instance's mark."""
        raise errors.DriverError('%s cannot adopt VMs; VM %s on node %s was left untouched' % (self.capabilities.label, uuid, node))

    # ------------------------------------------------------------ per-VM HA and DRS rules (issue 18 §3)

    def sync_node_rules(self, node, instances, groups, check_mode=False):
        """Capabilities.node_rules drivers: make what node's own HA and DRS know of the cloud's instances on it agree
        with `instances` ([InstanceRule] of every instance recorded on node) and `groups` ([GroupRule] of every server
        group with members recorded on node); a RulesSync. Declarative and idempotent: read back, and only what differs
        is sent (one reconfiguration); check_mode sends nothing and says what would change. An instance with no VM on
        node is skipped (its rule waits for it); a group rule lists only the members with a VM on node and exists while
        at least two have one. What the driver made for instances or groups that are no longer there goes. Nothing
        made by others is changed; errors.RuleConflict (nothing sent) when one of its rules would contradict a rule
        there is."""
        raise errors.DriverError('%s nodes keep no per-VM HA or DRS rules; node %s was left untouched' % (self.capabilities.label, node))

    # ------------------------------------------------------------ host maintenance (issue 18 §2)

    def set_host_maintenance(self, node, host, enter):
        """Capabilities.host_maintenance drivers: put host `host` of node `node` into maintenance mode (enter True)
        or take it out (False); True when it changed, False when it was in that state already (idempotent). The
        driver moves no VM: entering is refused (errors.DriverError naming them, nothing changed) while a
        powered-on VM is on the host, since the core moves the cloud's instances itself and a vCenter without
        DRS would wait for ever. Powered-off VMs may stay registered on a host in maintenance. errors.NotFound
        when node has no host of that name."""
        raise errors.DriverError('%s nodes have no hosts to put in maintenance; host %s of node %s was left as it was'
                                 % (self.capabilities.label, host, node))

    # ------------------------------------------------------------ rebalancing (issue 18 §1)

    def usage(self, node, interval):
        """Capabilities.usage drivers: a NodeUsage of node, what each of its running VMs (the cloud's and any other's)
        uses, measured over `interval` seconds (KVM: each domain's CPU time read twice, interval apart, and the QEMU
        process's resident memory). Read-only; a constant number of round trips per call, whatever the number of VMs;
        bounded by the host's timeout plus the interval."""
        raise errors.DriverError('%s does not report what its VMs use; node %s was not measured' % (self.capabilities.label, node))


@dataclasses.dataclass(frozen=True)
class SnapshotImage:
    """What snapshot_instance made. disk_format, size, sha256: the controller file's (IMAGE_FILE
    drivers; None otherwise); template: the template VM's name and moid (IMAGE_TEMPLATE drivers);
    quiesced: True when the guest's filesystems were frozen for the capture, False when the
    instance ran and no guest agent answered (a crash-consistent copy), None when it was stopped."""

    disk_format: str | None = None
    size: int | None = None
    sha256: str | None = None
    template: str | None = None
    moid: str | None = None
    quiesced: bool | None = None


@dataclasses.dataclass
class VMDetails:
    """Adoption (issue 17 §3): one VM on a node as ComputeDriver.list_vms reports it.

    uuid: the identity an instance made of it keeps (KVM: the domain's UUID; vSphere: the BIOS uuid,
    config.uuid, which the cloud's mark names). marked: it carries the cloud's mark (an instance's VM, or an
    orphan's); marked_uuid: the uuid that mark names. disk_gb: its disks' capacity in GiB, rounded up.
    nics: [{mac, backing}] in order, backing as InstanceSpec.networks names it (KVM: a libvirt network or
    bridge:NAME; vSphere: a port group). storage: the instance storage its disks are on, 'local' or 'shared'
    (KVM: the shared_instance_path or not; vSphere: datastores every host of the cluster mounts are shared),
    with outside: its disk paths in no instance directory (KVM; a delete leaves those files).
    datastores: vSphere only, the names of the datastores its disks are on.
    """

    uuid: str
    name: str
    node: str
    host: str
    power_state: str
    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0
    nics: list = dataclasses.field(default_factory=list)
    disk_paths: list = dataclasses.field(default_factory=list)
    storage: str = 'local'
    outside: list = dataclasses.field(default_factory=list)
    datastores: list = dataclasses.field(default_factory=list)
    marked: bool = False
    marked_uuid: str | None = None

    @property
    def macs(self):
        return [nic['mac'] for nic in self.nics]

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class InstanceUsage:
    """Rebalancing (issue 18 §1): what one running VM uses on its host, as ComputeDriver.usage measured it.

    uuid: the VM's (an instance's uuid for the cloud's own; another VM's load is its host's all the same).
    cpu: host CPUs it kept busy on average over the interval (CPU time used / wall time: 0.5 is half a CPU).
    memory_mb: host RAM it holds (KVM: the QEMU process's resident set, else the guest's current balloon size).
    """

    uuid: str
    cpu: float
    memory_mb: float


@dataclasses.dataclass(frozen=True)
class NodeUsage:
    """Rebalancing (issue 18 §1): ComputeDriver.usage's answer for one node: the seconds really between its two
    samples, and an InstanceUsage per VM that ran through both (one started meanwhile has no interval to measure)."""

    node: str
    interval: float
    instances: tuple = ()


def call_within(seconds, what, call):
    """call() on a daemon thread; errors.Unreachable naming `what` when it has not returned in time.

    Hypervisor clients block for as long as TCP, DNS or an RPC handshake do
    (libvirt's connect, SmartConnect's first request have no timeout), and one
    dead endpoint must be reported down, not stall the cloud. An overstaying call
    is left behind on a daemon thread: it cannot be aborted and must not hold the
    process at exit (a ThreadPoolExecutor's worker would); a login it completes
    late is left to the endpoint's idle session timeout.
    """
    future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(call())
        except Exception as exc:  # pylint: disable=broad-exception-caught  # re-raised in the caller's thread
            future.set_exception(exc)

    threading.Thread(target=run, name='multihv-call-within', daemon=True).start()
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise errors.NoAnswer('%s did not answer within %g s' % (what, seconds)) from None


# ---------------------------------------------------------------- per-VM HA and DRS rules (issue 18 §3)

@dataclasses.dataclass(frozen=True)
class InstanceRule:
    """What a node's HA is told of one instance (sync_node_rules): ha (restarted when its host fails) and
    restart_priority (higher first), as the registry records them."""

    uuid: str
    name: str
    ha: bool = False
    restart_priority: int = 0


@dataclasses.dataclass(frozen=True)
class GroupRule:
    """One server group as a node's DRS is told it (sync_node_rules): its policy (GROUP_POLICIES) and the uuids of
    its members recorded on the node."""

    name: str
    policy: str
    members: tuple = ()


@dataclasses.dataclass
class RulesSync:
    """What sync_node_rules did (or, in check mode, would do) on a node: changes, one sentence each ('instance db-1:
    HA restart priority high (was disabled)', 'rule multihv-db: added with db-1, db-2'); skipped, the instances or
    members it could not apply to yet (no VM on the node), each with why."""

    node: str
    changes: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)

    @property
    def changed(self):
        return bool(self.changes)

    def as_dict(self):
        return {'node': self.node, 'changed': self.changed, 'changes': list(self.changes), 'skipped': list(self.skipped)}


# -- moves between hypervisor types (issue 19)

@dataclasses.dataclass(frozen=True)
class DiskFile:
    """One disk of a VM as a file on the controller: path, format ('qcow2', 'vmdk' or 'raw'), virtual size in bytes."""
    path: str
    disk_format: str
    virtual_size: int


def _export_disks(self, uuid, node, dest_dir, progress=None):
    """Capabilities.convert drivers: the disks of the powered-off VM uuid on node, flattened (no backing file),
    written into dest_dir on the controller in the driver's native format, first disk first: a list of DiskFile.
    progress(bytes_done, bytes_total) as it copies. errors.MultihvError when the VM is not powered off."""
    raise errors.DriverError('%s cannot export the disks of VM %s on node %s; nothing was changed' % (self.capabilities.label, uuid, node))


def _import_instance(self, spec, disks, progress=None):
    """Capabilities.convert drivers: a VM made on spec.node from spec (InstanceSpec: uuid, name, flavor sizes,
    MACs/NICs, metadata, as spawn gets it) and the DiskFiles disks (converted to the driver's native format by the
    driver itself with qemu-img on the controller), first disk first, powered as spec says, with the cloud's mark
    as spawn sets it; its InstanceState. Whatever fails, nothing of it is left on the target (errors.MultihvError)."""
    raise errors.DriverError('%s cannot import disks as VM %s on node %s; nothing was changed' % (self.capabilities.label, spec.uuid, spec.node))


def _retire_converted(self, uuid, node, keep=False):
    """Capabilities.convert drivers, after a successful move: the source VM uuid on node removed with its disks,
    or (keep=True) kept powered off and renamed '<name>.moved-<8 hex of uuid>' with the cloud's mark removed (the
    rollback path). Idempotent."""
    raise errors.DriverError('%s cannot retire VM %s on node %s after a move; it was left as it was' % (self.capabilities.label, uuid, node))


# ComputeDriver's optional methods for moves between types, kept together here with DiskFile; their defaults refuse
# as the other optional methods do.
ComputeDriver.export_disks = _export_disks
ComputeDriver.import_instance = _import_instance
ComputeDriver.retire_converted = _retire_converted
