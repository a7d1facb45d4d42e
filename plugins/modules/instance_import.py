#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: instance_import
short_description: Adopt VMs a node already runs (made by hand or by another tool) as the cloud's instances
version_added: 0.1.0
description:
  - Makes existing VMs of one node instances of the cloud, without touching what they run. The candidates are the VMs of
    O(node) whose uuid the registry does not have, the same VMs M(multihv.cloud.reconcile) reports as orphans, and besides
    those the VMs that carry none of the cloud's marks (a KVM domain defined by hand, a VM of a vCenter cluster), which the
    other modules do not see.
  - Choose them by name with O(names), or take all of them with O(all) (at most O(limit) of them, by name; RV(left) says
    how many more there are, for the next run).
  - B(Flavor.) Without O(flavor), the smallest flavor whose C(vcpus) and C(ram_mb) equal the VM's and whose C(disk_gb) is
    at least its disks' size (in GiB, rounded up, since disk sizes are rarely whole GiB) is chosen; with O(flavor), that flavor
    must fit the VM (C(vcpus), C(ram_mb) and C(disk_gb) each at least the VM's). A flavor whose C(extra_specs)
    C(hypervisor_type) is another type's is never used.
  - B(Room.) The flavor's resources are claimed on the node, atomically, as a boot claims them; a VM that does not fit the
    node's capacity (its allocation ratios and reserved resources applied, the instances' allocations and the earlier VMs of
    the task counted) is refused and nothing is written for it.
  - B(Identity.) The instance keeps the VM's name, uuid (KVM - the domain's UUID; vSphere - the VM's BIOS uuid,
    C(config.uuid)), MACs and host. A NIC whose backing (a libvirt network, C(bridge:NAME), a port group) is the backing of
    a registry network on the node gets a port of that network with the VM's MAC and an address of the network's range
    (the guest is not reconfigured; it keeps whatever address it has until a rebuild or an evacuation gives it this one);
    another NIC is recorded on its backing as it is, with no port nor address.
  - B(Storage.) KVM - C(shared) when every disk is under the host's C(shared_instance_path), else C(local); the disks
    not directly in an instance directory are listed (C(identity.adopted.disks_outside) of RV(instances), C(disks_outside)
    in check mode), and deleting the instance leaves those files.
    vSphere - C(shared) when every datastore of its disks is mounted by every host of the cluster, else C(local); the
    datastores are listed.
  - B(Marking.) The VM gets the cloud's mark (KVM - the domain's multihv metadata, live and persistent; vSphere - a marker
    line above its annotation); nothing else of it changes - not its power, disks, NICs or name. From then on it is an
    instance of the cloud - powered, moved live and deleted (with its disks) by the other modules, as the collection's tests
    show for a KVM domain whose disk is on shared storage outside any instance directory. Block and cold moves, and
    evacuation, of a VM whose disks keep their own paths rather than the instance directory's C(<uuid>.qcow2) are not
    proven yet, so try one before relying on it.
  - Each VM is adopted holding its instance's lease, from before its record exists. A run cut off between the record and
    the mark leaves the record in state C(adopting) with its claim, which M(multihv.cloud.reconcile) reports in its
    C(unfinished) and leaves alone; the next run of this module over that VM finishes it.
  - The image an adopted instance names is O(image), else C(-) (none); a rebuild, or an evacuation off shared storage,
    boots the instance from its image and is refused without one.
options:
  node:
    description: The node whose VMs are adopted (a KVM host, or a vSphere cluster as C(vcenter/datacenter/cluster)).
    type: str
    required: true
  names:
    description:
      - The VMs to adopt, by name. Any one refused (no such VM, listed twice, an instance of the cloud already, no flavor,
        no room...) fails the task and nothing is changed.
      - A VM an earlier run adopted is listed in RV(already) and left as it is.
    type: list
    elements: str
  all:
    description: Adopt the node's VMs with no instance record (up to O(limit)); those refused are listed in RV(refused) and
      the others adopted.
    type: bool
    default: false
  limit:
    description: With O(all), the most VMs one run adopts. At least 1.
    type: int
    default: 20
  flavor:
    description: The flavor of every instance made (it must fit each VM); by default each VM's is matched.
    type: str
  image:
    description: The image the instances name (one of the node's hypervisor type), for a later rebuild or evacuation.
    type: str
  timeout:
    description: The longest, in seconds, one hypervisor call (a listing, a mark) may take.
    type: int
    default: 600
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - Lists in RV(instances) the VMs that would be adopted (with their flavor, NICs and storage) and in RV(refused) those
        that would not, and why; nothing is written.
  diff_mode:
    support: none
    details:
      - RV(instances) shows what each adopted VM became.
  idempotent:
    support: full
    details:
      - A VM adopted already is not adopted again (with O(names) it is listed in RV(already)).
notes:
  - Do not adopt the same hypervisor's VMs into two registries.
seealso:
  - module: multihv.cloud.reconcile
  - module: multihv.cloud.compute_node_info
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: What would be adopted on kvm1, and what would not fit
  multihv.cloud.instance_import:
    cloud_file: /etc/multihv/cloud.yml
    node: kvm1
    all: true
  check_mode: true
  register: plan

- name: Adopt two hand-made domains with a named flavor
  multihv.cloud.instance_import:
    cloud_file: /etc/multihv/cloud.yml
    node: kvm1
    names: [legacy-db, legacy-web]
    flavor: m1.small
'''

RETURN = r'''
instances:
  description:
    - The instances made, as M(multihv.cloud.instance_info) shows their records (their C(identity.adopted) says where their
      disks are).
    - In check mode, what would be made - C(name), C(uuid), C(node), C(host), C(power_state), C(flavor), C(image),
      C(storage), C(datastores), C(disks_outside), C(vm) (its C(vcpus), C(memory_mb), C(disk_gb)) and C(nics)
      (C(network), C(mac), C(port)), with C(state=would be adopted).
  returned: always
  type: list
  elements: dict
refused:
  description: With O(all), the VMs not adopted and why, each C(name) and C(msg).
  returned: always
  type: list
  elements: dict
already:
  description: With O(names), the VMs an earlier run adopted, each C(name) (the instance's) and C(uuid).
  returned: always
  type: list
  elements: dict
left:
  description: With O(all), how many VMs with no record were left for a later run by O(limit).
  returned: always
  type: int
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import adoption as _adoption

OPTIONS = {
    'node': {'type': 'str', 'required': True},
    'names': {'type': 'list', 'elements': 'str'},
    'all': {'type': 'bool', 'default': False},
    'limit': {'type': 'int', 'default': _adoption.DEFAULT_LIMIT},
    'flavor': {'type': 'str'},
    'image': {'type': 'str'},
    'timeout': {'type': 'int', 'default': 600},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE + [('names', 'all')])
    with _args.cloud_session(module, module.params['timeout']) as ctx:
        result = _adoption.run(ctx, module.params, module.check_mode)
    failures = result.pop('failures')
    if failures:
        module.fail_json(msg='%d VM(s) could not be adopted: %s' % (len(failures), '; '.join(
            '%s: %s' % (f['name'], f['msg']) for f in failures)), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
