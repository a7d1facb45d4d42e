#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: instance
short_description: Boot, power and delete instances on KVM and vSphere nodes
version_added: 0.1.0
description:
  - Boots an instance from a flavor and an image on a node the scheduler chooses (or O(node)), powers it, or deletes it.
    Instances are known by name, so a second run with the same name changes nothing.
  - The scheduler filters nodes (up and enabled, availability zone, aggregates and extra_specs, hypervisor type, capacity
    with allocation ratios, server group policy, scheduler hints, the instance's networks, and on a vSphere cluster a single
    ESXi host that has the room) and weighs the rest; resources are claimed atomically in the registry, so concurrent runs never overcommit
    a node. A boot that fails undoes itself, leaving no record, allocation, disk or VM.
  - O(instances) boots several in one call, with bounded concurrency.
  - On vSphere cluster nodes the cluster's HA and DRS are told what the cloud knows of each instance after the task -
    its O(ha) and O(restart_priority) as a per-VM HA override, its O(server_group) as a DRS rule (see
    M(multihv.cloud.server_group)) - once per node the task changed; what cannot be set is a warning, and
    M(multihv.cloud.reconcile) sets it later.
  - "What reaches the guest at its first boot, when its image runs cloud-init: its uuid as instance-id, its hostname, the
    public key of O(key_name), O(user_data), the admin password, and each NIC's fixed address by MAC. On KVM nodes they are
    on a config drive (a NoCloud C(cidata) ISO beside the instance's disk, attached as a CD-ROM); on vSphere nodes in the
    VM's C(guestinfo.metadata) and C(guestinfo.userdata) extraConfig (cloud-init's VMware datasource)."
  - The admin password is for the image's C(os_admin_user) property (C(root) when it has none). Every new disk (a boot, a
    rebuild) gets O(admin_password) or, without it, a generated one that is returned once in C(admin_password) and never
    stored. The config drive or guestinfo keeps it readable to whoever can read the instance's files or VM configuration,
    as Nova's config drive does; change it inside the guest (or with O(update_password=always)) when that matters.
options:
  name:
    description: The instance's name, unique in the cloud. Required unless O(instances) is given.
    type: str
  instances:
    description:
      - Several instances in one call; each item takes the options of a single instance (at least C(name)), and the
        task's options are their defaults.
    type: list
    elements: dict
    suboptions:
      name:
        description: The instance's name.
        type: str
        required: true
      state:
        description: As O(state).
        type: str
        choices: [present, started, stopped, restarted, rebuilt, absent, resize_confirmed, resize_reverted]
      flavor:
        description: As O(flavor).
        type: str
      image:
        description: As O(image).
        type: str
      node:
        description: As O(node).
        type: str
      availability_zone:
        description: As O(availability_zone).
        type: str
      scheduler_hints:
        description: As O(scheduler_hints).
        type: dict
      server_group:
        description: As O(server_group).
        type: str
      storage:
        description: As O(storage).
        type: str
        choices: [local, shared]
      networks:
        description: As O(networks).
        type: list
        elements: dict
      hostname:
        description: As O(hostname).
        type: str
      key_name:
        description: As O(key_name).
        type: str
      user_data:
        description: As O(user_data).
        type: str
      admin_password:
        description: As O(admin_password).
        type: str
      update_password:
        description: As O(update_password).
        type: str
        choices: [always, on_create]
      metadata:
        description: As O(metadata).
        type: dict
      ha:
        description: As O(ha).
        type: bool
      restart_priority:
        description: As O(restart_priority).
        type: int
  state:
    description:
      - C(present) and C(started) boot it when missing and make it run; C(stopped) boots it stopped or stops it;
        C(restarted) reboots it; C(absent) deletes it, its disk and its allocation.
      - C(rebuilt) makes it again from O(image) (its own image when not given) on the same node and host, keeping its
        uuid, name, MACs, flavor and allocation; its disk starts afresh, as with Nova's rebuild. It always changes. A rebuild
        that fails after the old VM went leaves the instance in state C(error); run it again or delete the instance.
        A missing instance is booted.
      - C(resize_confirmed) confirms a resize waiting in state C(verify_resize) (see O(flavor)); the copy of the old disk is
        dropped and the allocation becomes the new flavor's. C(resize_reverted) reverts it; the old vCPUs, RAM and (on KVM)
        disk come back, with the old flavor's allocation. Both change nothing on an instance with no resize waiting.
    type: str
    choices: [present, started, stopped, restarted, rebuilt, absent, resize_confirmed, resize_reverted]
    default: present
  flavor:
    description:
      - The flavor (vCPUs, RAM, disk, extra_specs). Required to boot.
      - Another flavor on an existing instance resizes it, as Nova does. It stays on its node when the node has room for
        both flavors (Nova's C(allow_resize_to_same_host), preferred); otherwise a KVM instance is moved cold to a node
        the scheduler chooses, keeping the old flavor's claim on its node until the resize is settled. A vSphere instance
        is always reconfigured on its host (a node or host without room refuses it). The new flavor's disk may not be
        smaller. Resources are claimed before anything changes, and the instance goes to state C(verify_resize),
        keeping its power state, until O(state=resize_confirmed) or O(state=resize_reverted) (a moved one goes back to
        its node), or until the reconciler confirms it after the cloud file's C(defaults.resize_confirm_window) seconds
        (0, the default, never). On KVM the domain gets the new vCPUs and RAM and its disk is grown, a copy of the old
        disk kept beside it for a revert; on vSphere C(ReconfigVM_Task) changes the VM (powered off first unless CPU and
        memory hot add are enabled on it) and grows its first disk, which a revert cannot shrink.
      - Until the resize is confirmed or reverted the instance's power cannot change (O(state=stopped) on a running one is
        refused), as Nova refuses it in C(RESIZED).
    type: str
  image:
    description: The image. Required to boot.
    type: str
  node:
    description:
      - Boot on this node, still subject to the filters (capacity, hypervisor type...). A node the cloud file does not have is refused.
      - With another O(flavor) on an existing instance, the node its resize goes to (a KVM instance is moved cold there; its
        own node is kept even without room, which is then refused).
    type: str
  availability_zone:
    description: Only nodes of this availability zone.
    type: str
  scheduler_hints:
    description: C(different_host) / C(same_host) lists of instance names or uuids.
    type: dict
  server_group:
    description: The server group (see M(multihv.cloud.server_group)) whose policy applies.
    type: str
  storage:
    description: Where the disk lives on a KVM node; C(shared) survives the host for evacuation with data.
    type: str
    choices: [local, shared]
    default: local
  networks:
    description:
      - The instance's NICs, in order. Each is on a network of the registry (see M(multihv.cloud.network)) and gets a fixed
        IP there, allocated atomically - two concurrent boots never get one address. The scheduler places the instance only
        on a node where every one of its networks has a backing, and each NIC is made on that node's backing (a libvirt
        network, a bridge, a port group).
      - The addresses and MACs stay with the instance through every migration, rebuild and evacuation, and are freed when
        it is deleted. Given for an existing instance, it must be the NICs it has (the same networks in order, and the
        fixed IPs and MACs given); NICs are not added, removed or re-addressed, and asking for that is an error.
      - A network the registry does not have is refused, as is an address or a MAC another instance holds (the error
        names it); nothing is left behind.
    type: list
    elements: dict
    suboptions:
      network:
        description: The network's name in the registry.
        type: str
        required: true
      fixed_ip:
        description:
          - The address this NIC must have, a host address of the network's subnet other than its gateway (inside the
            allocation range or not).
          - When not given, the lowest free address of the network's allocation range.
        type: str
      mac:
        description:
          - The NIC's MAC address. When not given, one is derived from the instance's uuid and the NIC's position (another
            derivation when that one is taken), so that it is kept for life. MACs are unique in the registry.
        type: str
  hostname:
    description: The guest's hostname; defaults to O(name). Kept for the instance's life; an existing instance asked for another is refused.
    type: str
  key_name:
    description:
      - The keypair (see M(multihv.cloud.keypair)) whose public key the guest authorizes. The key is kept with the instance
        when it boots, so a rebuild or an evacuation delivers it again, even after the keypair is deleted.
      - An unknown name is refused before anything is made; an existing instance asked for another key is refused.
    type: str
  user_data:
    description:
      - User data for cloud-init (a C(#cloud-config), a script, a MIME multipart...), at most 65535 bytes; more is refused
        before anything is made. It may hold secrets, so it is never logged, returned nor stored.
      - Delivered with the boot, and with a rebuild that gives it. An evacuation's new disk starts without it, since it is
        not stored.
    type: str
  admin_password:
    description:
      - The password of the image's admin user (its C(os_admin_user) property, C(root) by default) on a new disk (a boot,
        a rebuild). Without it a password is generated and returned once.
      - With O(update_password=always), also set inside an existing, running instance's guest (KVM, through the QEMU guest
        agent, which the guest must run); refused for vSphere instances.
    type: str
  update_password:
    description:
      - C(on_create) gives O(admin_password) to new disks only. C(always) also sets it in an existing instance's running
        guest, and then always reports a change (a password cannot be read back).
    type: str
    choices: [always, on_create]
    default: on_create
  metadata:
    description: Key/values kept with the instance.
    type: dict
  ha:
    description:
      - Restart this instance first when its node fails. A new instance without it has C(false).
      - Given for an existing instance, its setting changes (a change reported as such); left out, it is kept.
      - On a vSphere cluster node, C(true) gives the instance's VM a per-VM HA override on its cluster, a restart priority
        after O(restart_priority) one level above vSphere's default, so that vSphere HA restarts it before the others,
        in the collection's order. C(false) sets no override (one set before is removed), and the VM has the cluster's
        default restart priority, which M(multihv.cloud.vsphere_cluster) sets (C(ha.restart_priority)); set that
        default to C(disabled) to have vSphere HA restart only the instances with C(ha). The override is set after the
        boot and after any change of these settings, follows the instance when it moves and goes with it; one that
        cannot be set is a warning, the task's work stands, and M(multihv.cloud.reconcile) sets it.
    type: bool
  restart_priority:
    description:
      - Higher is restarted first by evacuation and instance HA. A new instance without it has C(0). Given for an existing
        instance, it changes; left out, it is kept.
      - On a vSphere cluster node, with O(ha=true), the VM's HA restart priority is C(high) for C(0), one level up or
        down per step and the outermost beyond them - C(-3) and below C(lowest), C(-2) C(low), C(-1) C(medium), C(0)
        C(high), C(1) and above C(highest).
    type: int
  concurrency:
    description: How many instances of O(instances) boot, or are deleted, at once. At least 1; a lower value is refused before anything is done.
    type: int
    default: 4
  timeout:
    description:
      - Seconds the hypervisor may take for one instance's boot, power change, rebuild or deletion once it answered
        (a vCenter task, a libvirt call). A boot that runs out of time is rolled back.
      - The module always waits for what it asked to be done, so that the result and the registry say what the
        hypervisor did. To go on with a play meanwhile, use Ansible's C(async) with C(poll) set to 0.
    type: int
    default: 600
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - Instances to boot are placed by the scheduler as the registry is now and returned as they would be built; nothing
        is claimed, created, powered or deleted.
  diff_mode:
    support: full
    details:
      - With O(name), the instance before and after; with O(instances), every instance of the task by name. Passwords
        are never in the diff.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: A cattle instance on whichever KVM node fits best
  multihv.cloud.instance:
    name: web-1
    flavor: m1.small
    image: debian-12

- name: Three instances on three different nodes
  multihv.cloud.instance:
    instances:
      - name: db-1
      - name: db-2
      - name: db-3
    flavor: m1.large
    image: rhel9
    server_group: db-spread

- name: A Debian guest that authorizes a key and runs a first-boot script; its generated root password is returned once
  multihv.cloud.instance:
    name: app-1
    flavor: m1.small
    image: debian-12
    key_name: ops
    user_data: |
      #cloud-config
      runcmd:
        - [sh, -c, 'echo ready > /var/tmp/ready']
  no_log: true
  register: app

- name: A new root password inside the running guest (KVM, QEMU guest agent)
  multihv.cloud.instance:
    name: app-1
    admin_password: "{{ vault_app_password }}"
    update_password: always

- name: Start web-1 again from a fresh disk of a newer image
  multihv.cloud.instance:
    name: web-1
    image: debian-13
    state: rebuilt

- name: Resize it to a larger flavor (it waits in verify_resize)
  multihv.cloud.instance:
    name: web-1
    flavor: m1.large

- name: Keep the new size (or state resize_reverted to go back)
  multihv.cloud.instance:
    name: web-1
    state: resize_confirmed

- name: Delete it
  multihv.cloud.instance:
    name: web-1
    state: absent
'''

RETURN = r'''
instance:
  description:
    - The instance's record (uuid, name, node, host, flavor, image, storage, identity, state...), for a single one.
    - C(identity.networks) lists its NICs in order, each C(network), C(mac) and C(address); C(addresses) maps each network
      to the instance's addresses on it, as M(multihv.cloud.instance_info) returns them.
    - C(admin_password) in it is the password generated for a disk this task made (a boot or a rebuild without
      O(admin_password)); it is returned this once and stored nowhere. Give the task C(no_log) when others read its log.
  returned: when O(name) is given and the instance exists after the task
  type: dict
instances:
  description: The records of the instances of O(instances), each with C(admin_password) as RV(instance) has it.
  returned: when O(instances) is given
  type: list
  elements: dict
failures:
  description:
    - Instances of O(instances) that could not be booted, each with C(name) and C(msg) - those refused before anything
      was made for them (no flavor, an unknown node, no room...) and those whose boot failed and was undone. The others
      were booted, and the task fails when this list is not empty.
  returned: when O(instances) is given
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _argspec
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_tasks as _instance_tasks

# An item of `instances`: the options of one instance, with no defaults, so that an option an item
# leaves out (None) takes the task's (instance_tasks.items). Secrets are no_log here too.
ITEM_OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'state': {'type': 'str', 'choices': ['present', 'started', 'stopped', 'restarted', 'rebuilt', 'absent', 'resize_confirmed', 'resize_reverted']},
    'flavor': {'type': 'str'},
    'image': {'type': 'str'},
    'node': {'type': 'str'},
    'availability_zone': {'type': 'str'},
    'scheduler_hints': {'type': 'dict'},
    'server_group': {'type': 'str'},
    'storage': {'type': 'str', 'choices': ['local', 'shared']},
    'networks': {'type': 'list', 'elements': 'dict'},
    'hostname': {'type': 'str'},
    'key_name': {'type': 'str', 'no_log': False},
    'user_data': {'type': 'str', 'no_log': True},
    'admin_password': {'type': 'str', 'no_log': True},
    'update_password': {'type': 'str', 'choices': ['always', 'on_create']},
    'metadata': {'type': 'dict'},
    'ha': {'type': 'bool'},
    'restart_priority': {'type': 'int'},
}

OPTIONS = {
    'name': {'type': 'str'},
    'instances': {'type': 'list', 'elements': 'dict', 'options': ITEM_OPTIONS},
    'state': {'type': 'str', 'choices': ['present', 'started', 'stopped', 'restarted', 'rebuilt', 'absent', 'resize_confirmed', 'resize_reverted'],
              'default': 'present'},
    'flavor': {'type': 'str'},
    'image': {'type': 'str'},
    'node': {'type': 'str'},
    'availability_zone': {'type': 'str'},
    'scheduler_hints': {'type': 'dict'},
    'server_group': {'type': 'str'},
    'storage': {'type': 'str', 'choices': ['local', 'shared'], 'default': 'local'},
    'networks': {'type': 'list', 'elements': 'dict', 'options': {
        'network': {'type': 'str', 'required': True},
        'fixed_ip': {'type': 'str'},
        'mac': {'type': 'str'},
    }},
    'hostname': {'type': 'str'},
    'key_name': {'type': 'str', 'no_log': False},
    'user_data': {'type': 'str', 'no_log': True},
    'admin_password': {'type': 'str', 'no_log': True},
    'update_password': {'type': 'str', 'choices': ['always', 'on_create'], 'default': 'on_create'},
    'metadata': {'type': 'dict'},
    'ha': {'type': 'bool'},
    'restart_priority': {'type': 'int'},
    'concurrency': {'type': 'int', 'default': 4},
    'timeout': {'type': 'int', 'default': 600},
}


def main():
    module = _argspec.module(AnsibleModule, argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                             mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE + [('name', 'instances')],
                             required_one_of=[('name', 'instances')])
    with _args.cloud_session(module, module.params.get('timeout')) as ctx:
        result = _instance_tasks.run(ctx, module.params, module.check_mode)
    if not module._diff:
        result.pop('diff', None)
    _args.warn_from(module, result)
    if result.get('failures'):
        module.fail_json(msg='%d of %d instances could not be booted: %s' % (
            len(result['failures']), len(module.params['instances']),
            '; '.join('%s: %s' % (f['name'], f['msg']) for f in result['failures'])), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
