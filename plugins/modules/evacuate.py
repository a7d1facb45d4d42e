#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: evacuate
short_description: Rebuild the instances of a failed KVM node on other nodes (Nova's evacuate)
version_added: 0.1.0
description:
  - Rebuilds the running and stopped instances of O(node), a KVM node that has failed, on other KVM nodes, from their
    records in the registry. Each keeps its uuid, name, hostname, MACs and IPs, flavor and server group, and comes back
    running or stopped as it was.
  - An instance on C(shared) storage adopts its own disk, so its data and password are kept. An instance on C(local)
    storage gets a new disk from its image (its data is lost with the failed host) and a new password, generated here,
    returned once in C(admin_password) and never logged nor stored.
  - B(Safety.) Evacuation is refused while O(node) still answers, and unless it is either forced down in the registry
    (O(multihv.cloud.compute_node#module:forced_down)) or fenced by the C(fence_command) the cloud file gives its host,
    which this module runs (then it forces the node down itself). Where the cloud file also gives the host a
    C(power_status_command), the node counts as fenced only when that command says its power is off (then even when the
    fence command failed); a host still on is refused. Two running copies of one VM on shared storage
    corrupt its disk. Use M(multihv.cloud.migrate) to move the instances of a node that answers.
  - A vSphere cluster node is refused, with the reason; vSphere HA restarts a failed ESXi host's VMs inside the cluster
    (see M(multihv.cloud.vsphere_cluster)).
  - Targets are chosen by the scheduler (nodes reserved for failover first, capacity and server groups honoured, a shared
    disk only where its directory is shared) unless O(target_node) is given. Instances go HA first, then by restart
    priority, O(concurrency) at a time; one that does not fit or fails stays recorded on O(node) and is reported, and
    the others go on.
  - An instance waiting in C(verify_resize) is evacuated too (as Masakari does), rebuilt with its new flavor in the power
    state it had before its resize, and the resize is recorded C(completed) (confirmed), since the failed host holds the old
    disk, so it cannot be reverted any more. On shared storage the copy of its old disk is removed.
  - Each evacuation is a migration record of type C(evacuation) whose status ends in C(done). When the failed node comes
    back, M(multihv.cloud.compute_node) with O(multihv.cloud.compute_node#module:enabled=true) destroys its stale copies
    before it takes instances again, and the records become C(completed).
options:
  node:
    description: The failed KVM node.
    type: str
    required: true
  target_node:
    description: Rebuild every instance on this KVM node instead of letting the scheduler choose.
    type: str
  instances:
    description: Only these instances of O(node) (names or uuids); all of them when left out.
    type: list
    elements: str
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.evacuation
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - Every safety check runs except the fence command; RV(evacuations) says where each instance would be rebuilt.
  diff_mode:
    support: none
    details:
      - RV(evacuations), RV(unplaced) and RV(failures) say what moved where.
  idempotent:
    support: full
    details:
      - Once the node is fenced (then forced down) and its instances are rebuilt elsewhere, a second run finds nothing to
        evacuate.
notes:
  - Check mode runs every safety check except the fence command, and says where each instance would go.
  - A task that prints its result shows the new passwords; give it C(no_log) when the log is read by others.
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Rebuild everything kvm2 ran, once it is fenced (or forced down)
  multihv.cloud.evacuate:
    cloud_file: /etc/multihv/cloud.yml
    node: kvm2
  register: evacuated
  no_log: true   # local-storage instances come back with new passwords

- name: Only the database, onto a given host
  multihv.cloud.evacuate:
    cloud_file: /etc/multihv/cloud.yml
    node: kvm2
    instances: [db-1]
    target_node: kvm3
'''

RETURN = r'''
fencing:
  description: C(forced_down) when the node was forced down already, C(fenced) when it was fenced (its fence command ran, or
    its power status says off; it is then forced down), C(would fence) in check mode.
  returned: always
  type: str
evacuations:
  description:
    - One entry per instance rebuilt, in restart order; C(name), C(uuid), C(status) (C(done), or C(would run) in check
      mode), C(source_node), C(dest_node), C(dest_host), C(storage), C(disk) (C(kept) or C(rebuilt)), C(instance) (its
      record) and C(migration) (the evacuation record).
    - C(admin_password) is the new password of an instance rebuilt on a new disk.
    - C(resize) is the id of the resize (a migration record) that the evacuation confirmed, for an instance that was
      waiting in C(verify_resize); C(msg) says when the copy of its old disk could not be removed.
  returned: always
  type: list
  elements: dict
unplaced:
  description: Instances no node has room for, each with C(name), C(uuid) and C(msg); they stay recorded on O(node).
  returned: always
  type: list
  elements: dict
failures:
  description: Instances whose rebuild failed, each with C(name), C(uuid) and C(msg); they stay recorded on O(node).
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import evacuation as _evacuation

OPTIONS = {
    'node': {'type': 'str', 'required': True},
    'target_node': {'type': 'str'},
    'instances': {'type': 'list', 'elements': 'str'},
}


def evacuate(ctx, p, check_mode):
    return _evacuation.evacuate(ctx, p['node'], p['target_node'], p['instances'], p['concurrency'], check_mode)


def failures(result):
    left = result['unplaced'] + result['failures']
    return left and '%d instance(s) of node %s were not evacuated: %s' % (
        len(left), result['node'], '; '.join('%s: %s' % (f['name'], f['msg']) for f in left))


def main():
    _args.run_evacuation(AnsibleModule, OPTIONS, evacuate, failures)


if __name__ == '__main__':
    main()
