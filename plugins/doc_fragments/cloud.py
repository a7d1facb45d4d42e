# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the option groups of plugins/module_utils/_args.py."""

from __future__ import annotations


class ModuleDocFragment:

    # The cloud option group (_args.CLOUD_ARGS).
    DOCUMENTATION = r'''
options:
  cloud_file:
    description:
      - Path of the cloud file that says where the cloud is (vCenters, KVM hosts, registry, defaults).
      - When not given, E(MULTIHV_CLOUD_FILE), then C(./multihv-cloud.yml), C(~/.config/multihv/cloud.yml) and
        C(/etc/multihv/cloud.yml) are tried.
      - vCenter passwords may come from E(MULTIHV_VCENTER_PASSWORD) or E(MULTIHV_VCENTER_<NAME>_PASSWORD)
        instead of the file. The passwords the file or the environment gives are hidden from the output, as
        O(registry_url) is.
      - Use C(module_defaults) with C(group/multihv.cloud.all) to set it once for every module.
    type: path
  cloud:
    description:
      - The cloud definition inline, with the keys of a cloud file (see the collection's README, "Pointing the
        collection at a real cloud", for each key's meaning and default).
      - Only the keys that may hold a secret are hidden from the output (C(password), C(registry.url),
        C(fence_command), C(power_status_command)); the passwords that come from the environment
        (E(MULTIHV_VCENTER_PASSWORD), E(MULTIHV_VCENTER_<NAME>_PASSWORD), the password in E(MULTIHV_REGISTRY_URL)) and the
        variables a host's C(fence_environment) names are hidden too.
    type: dict
    suboptions:
      vcenters:
        description: The vCenters whose clusters are nodes.
        type: list
        elements: dict
        suboptions:
          name:
            description: The vCenter's name in the cloud (the first part of its nodes' names).
            type: str
            required: true
          hostname:
            description: Its address.
            type: str
            required: true
          port:
            description: Its HTTPS port (443 when not given).
            type: int
          username:
            description: The user the modules log in as.
            type: str
            required: true
          password:
            description:
              - That user's password; E(MULTIHV_VCENTER_<NAME>_PASSWORD) wins over it, E(MULTIHV_VCENTER_PASSWORD) is
                used when neither is given.
            type: str
          validate_certs:
            description: Whether its certificate must verify (true when not given).
            type: bool
          clusters:
            description: Only these clusters (C(cluster) or C(datacenter/cluster)) become nodes; all when not given.
            type: list
            elements: str
          availability_zone:
            description: The availability zone of its cluster nodes (C(nova) when not given).
            type: str
          aggregates:
            description: The aggregates of its cluster nodes.
            type: list
            elements: str
          cluster_settings:
            description: Per cluster name, an C(availability_zone) and C(aggregates) that override the vCenter's.
            type: dict
          timeout:
            description: Seconds for the login and for each SOAP call (30 when not given).
            type: float
      kvm_hosts:
        description: The KVM hosts, one node each.
        type: list
        elements: dict
        suboptions:
          name:
            description: The host's name, which is its node's.
            type: str
            required: true
          uri:
            description: Its libvirt URI (C(qemu+tcp), C(qemu+tls), C(qemu+ssh) or C(qemu:///system)).
            type: str
            required: true
          availability_zone:
            description: Its availability zone (C(nova) when not given).
            type: str
          aggregates:
            description: Its aggregates.
            type: list
            elements: str
          instance_path:
            description: Its local instance directory (C(/var/lib/libvirt/instances) when not given).
            type: str
          shared_instance_path:
            description: Its shared instance directory.
            type: str
          shared_with:
            description: The hosts that share that directory.
            type: list
            elements: str
          migration_address:
            description: Where incoming live migrations listen.
            type: str
          fence_command:
            description:
              - The command that powers the host off before its instances are evacuated, run on the controller without
                a shell, in a minimal environment (see O(cloud.kvm_hosts[].fence_environment)).
            type: str
          power_status_command:
            description:
              - The command that says whether its power is off (exit 0, last word of its output C(off)); where given,
                a fence counts only when it says off. Run as O(cloud.kvm_hosts[].fence_command) is.
            type: str
          fence_environment:
            description:
              - Names of the controller's environment variables that O(cloud.kvm_hosts[].fence_command) and
                O(cloud.kvm_hosts[].power_status_command) get, say C(IPMI_PASSWORD) for C(ipmitool -E). Besides
                these they get only C(PATH), C(HOME), C(USER), C(LOGNAME), the locale variables, C(TZ), C(TMPDIR)
                and C(MULTIHV_NODE) (the node's name), never the controller's own credentials.
              - A name the controller's environment does not set stops the fence (nothing is evacuated).
              - The values are hidden from the output.
            type: list
            elements: str
          timeout:
            description: Seconds it has to answer before it counts as down (2 when not given).
            type: float
      registry:
        description: The registry.
        type: dict
        suboptions:
          url:
            description: As O(registry_url), which wins over it, as E(MULTIHV_REGISTRY_URL) does.
            type: str
          lease_seconds:
            description: How long a lease lives unrenewed (30 when not given, at least 6).
            type: float
      defaults:
        description: Capacity defaults of the nodes; M(multihv.cloud.compute_node) overrides them per node.
        type: dict
        suboptions:
          allocation_ratios:
            description: Overcommit ratios.
            type: dict
            suboptions:
              cpu:
                description: vCPUs per physical thread (4.0 when not given).
                type: float
              ram:
                description: RAM ratio (1.0 when not given).
                type: float
              disk:
                description: Disk ratio (1.0 when not given).
                type: float
          reserved_host_memory_mb:
            description: RAM each host keeps for itself, per hypervisor type.
            type: dict
            suboptions:
              kvm:
                description: On a KVM host (512 when not given).
                type: int
              vsphere:
                description: On an ESXi host (0 when not given).
                type: int
  registry_url:
    description:
      - The registry, overriding the cloud file's C(registry.url) and E(MULTIHV_REGISTRY_URL).
      - C(sqlite:////absolute/path.sqlite) (embedded, the default mode) or C(postgresql://user:password@host/db)
        (shared by many controllers, AWX).
    type: str
notes:
  - The modules run on the controller (or wherever C(delegate_to) points) and talk to vCenter through pyVmomi and
    to KVM hosts through libvirt-python; a KVM host is one node, a vSphere cluster is one node.
requirements:
  - pyvmomi (vSphere nodes)
  - libvirt-python (KVM nodes)
  - psycopg (a PostgreSQL registry)
'''

    # What the attributes mean, for every module (as community.general.attributes); each module says its own
    # support and details, since what check and diff mode do differs from module to module.
    ATTRIBUTES = r'''
options: {}
attributes:
  check_mode:
    description:
      - Can run in check mode and return whether it would change anything, without changing anything, neither on the
        hypervisors nor in the registry, which is not even created or upgraded (one that does not exist reads as empty).
  diff_mode:
    description: Returns what changed (or would change, in check mode) as before and after, when in diff mode.
  idempotent:
    description: Run again with the same options once it succeeded, it reports no change and changes nothing.
'''

    # The support of the _info modules (used with ATTRIBUTES).
    INFO = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This module only reads, and runs the same in check mode. It never creates nor upgrades the registry.
  diff_mode:
    support: N/A
    details:
      - This module only reads.
  idempotent:
    support: full
    details:
      - This module only reads.
'''

    # The evacuation option group (_args.EVACUATION_ARGS): evacuate and instance_ha.
    EVACUATION = r'''
options:
  concurrency:
    description: How many instances of one node are rebuilt at once (they are placed one by one first, in restart order). At least 1.
    type: int
    default: 4
  timeout:
    description: The longest, in seconds, one instance's rebuild may take on its target.
    type: int
    default: 600
'''
