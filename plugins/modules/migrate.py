#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: migrate
short_description: Move instances between nodes and hosts (live, block, cold, vMotion), or drain a node
version_added: 0.1.0
description:
  - Moves one instance (O(instance)) to another node or host, or every instance off a node (O(from_node)), with the
    registry following each move.
  - On KVM, C(live) moves a running guest whose disk is on storage both hosts share, C(block) moves a running guest
    and copies its disk (a qcow2 overlay copies only its top layer; the image's base is placed on the target first),
    C(cold) stops it, moves it (copying the disk unless it is shared) and starts it again if it ran. C(auto) is live
    when the source and target really share the instance's disk directory (checked by writing a marker file through
    one host and looking for it through the other, never assumed), block when not, and cold for a stopped instance.
  - On vSphere, a move inside a cluster node is a vMotion to O(target_host) (RelocateVM_Task); a move to another
    cluster node of the same vCenter is a relocation. C(cold) powers the VM off for the move.
  - On vSphere cluster nodes, the instance's per-VM HA override and its server group's DRS rule follow it - removed from
    the cluster it left, set on the one it reached - once per cluster after the move (a drain once for all its moves);
    one that cannot be set is a warning, the move stands, and M(multihv.cloud.reconcile) sets it.
  - C(convert) moves an instance to a node of another hypervisor type (vSphere to KVM), and C(auto) does when
    O(target_node) is of another type. The target's resources are claimed, the VM is shut down (a guest shutdown, then
    a hard power-off after a timeout), its disks are copied to the controller and converted there with C(qemu-img), a VM
    with the instance's uuid, MACs (on the target's backings of its networks) and hostname is made from them on the
    target and powered as the instance was, and only then is the old VM removed (or, with O(keep_source), kept powered
    off and renamed C(<name>.moved-<8 hex of its uuid>), unmarked, as the way back). A failure at any step removes what
    was made on the target, frees its claim and powers the old VM on again if it ran. The flavor moves unless its
    extra_specs name another C(hypervisor_type); the record's image becomes O(image) (or C(-)). The migration has type
    C(convert). A target of the instance's own type is refused with C(convert).
  - With O(target_node) or O(target_host), the module is desired-state; an instance already there is not moved and the
    task reports no change.
  - Without O(target_node) (and O(target_host)) the scheduler chooses, without the source node and honouring the
    instance's server group and capacity; each run then moves the instance again. Resources are claimed on the target
    once the migration is recorded and before anything moves, so a target without room refuses at once (the migration
    is recorded C(failed), with why).
  - Each move has a migration record (accepted, preparing, running, then completed, failed or cancelled) with the
    hypervisor's job statistics; it is returned. A move that fails leaves the instance running where it was.
  - The module waits for the moves it starts; use Ansible's C(async) with C(poll) set to 0 to go on meanwhile.
options:
  instance:
    description: The instance to move, by name or uuid.
    type: str
  from_node:
    description:
      - Drain this node, Nova's host maintenance, C(nova host-evacuate-live) for running instances plus a cold move for
        stopped ones. The node is disabled for scheduling first and stays disabled (enable it again with
        M(multihv.cloud.compute_node)); its instances move O(concurrency) at a time.
      - An instance that cannot move stays where it was and is listed in RV(failures); the others go on, and the task
        fails at the end.
      - An instance waiting in C(verify_resize) is not moved (as in Nova) and is listed in RV(failures) until its resize is
        confirmed or reverted (M(multihv.cloud.instance) with O(multihv.cloud.instance#module:state=resize_confirmed) or
        V(resize_reverted)).
    type: str
  disabled_reason:
    description: Why the drained node is disabled, kept in the registry.
    type: str
  mode:
    description: How to move; see the description. With O(from_node), stopped instances always move cold.
    type: str
    choices: [auto, live, block, cold, convert]
    default: auto
  target_node:
    description: The node to move to; still subject to capacity. A KVM host is a node.
    type: str
  target_host:
    description: The ESXi host to move to; with no O(target_node), a host of the instance's own cluster (vMotion).
    type: str
  image:
    description:
      - For a move to another hypervisor type only (C(convert)); an image of the target's type that the instance's record
        names after the move (what a later rebuild or evacuation there boots). Without it the record names C(-).
    type: str
  keep_source:
    description:
      - For a move to another hypervisor type only (C(convert)); keep the old VM powered off and renamed instead of
        removing it, without the cloud's mark, for a way back.
    type: bool
    default: false
  shutdown_timeout:
    description:
      - For a move to another hypervisor type only (C(convert)); how many seconds a running guest is given to shut down
        after the guest shutdown request before it is powered off hard. A guest that ignores ACPI waits all of it.
      - 120 when not given.
    type: int
  bandwidth:
    description: Most MiB/s a KVM live or block migration may use.
    type: int
  max_downtime_ms:
    description: The longest pause the switch-over of a KVM live migration may take, in milliseconds.
    type: int
  auto_converge:
    description: Slow the guest's vCPUs down when its memory changes faster than it is copied (KVM).
    type: bool
    default: false
  post_copy:
    description: Allow switching to post-copy (the guest runs on the target while the rest of its memory follows) (KVM).
    type: bool
    default: false
  completion_timeout:
    description:
      - Seconds after which a KVM live or block migration that has not finished gets O(completion_action); C(0) means never.
    type: int
    default: 0
  completion_action:
    description:
      - C(abort) cancels the migration (the instance stays on the source; the record says C(cancelled)).
        C(force_complete) switches to post-copy when O(post_copy) is set, else pauses the guest until it is across.
    type: str
    choices: [abort, force_complete]
    default: abort
  concurrency:
    description: How many instances of O(from_node) move at once.
    type: int
    default: 2
  timeout:
    description: Seconds one move may take in all; a live migration still running then is aborted.
    type: int
    default: 1800
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - The move is planned (its target chosen) from the records as they are; nothing is claimed, recorded or moved,
        and no lease is taken.
  diff_mode:
    support: full
    details:
      - With O(instance), its node and host before and after; with O(from_node), those of each instance moved, by uuid.
  idempotent:
    support: partial
    details:
      - With O(target_node) or O(target_host), an instance already there is not moved (V(changed=false)).
      - Without a target, each run moves the instance again, wherever the scheduler says.
      - A drain of a node that is disabled and holds no instance changes nothing.
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Live-migrate web-1 wherever the scheduler says
  multihv.cloud.migrate:
    instance: web-1

- name: Block-migrate db-1 to kvm2 at most 200 MiB/s, giving up after 10 minutes
  multihv.cloud.migrate:
    instance: db-1
    mode: block
    target_node: kvm2
    bandwidth: 200
    completion_timeout: 600

- name: vMotion app-1 to another ESXi host of its cluster
  multihv.cloud.migrate:
    instance: app-1
    target_host: esx-03.example.com

- name: Empty kvm1 for maintenance
  multihv.cloud.migrate:
    from_node: kvm1
    disabled_reason: firmware update
    concurrency: 4
'''

RETURN = r'''
migration:
  description:
    - The migration record of O(instance) (id, migration_type, status, source_node, source_host, dest_node, dest_host,
      started_at, finished_at, stats), in check mode what would run; V(null) when the instance was already on the
      target given.
    - C(stats) holds what the hypervisor reports, such as C(data_total), C(data_processed), C(data_remaining),
      C(memory_total), C(disk_total), C(downtime_ms) and C(time_elapsed_ms) (bytes and milliseconds).
  returned: when O(instance) is given
  type: dict
instance:
  description: The instance's record after the move.
  returned: when O(instance) is given
  type: dict
diff:
  description:
    - With O(instance), its C(node) and C(host) before and after (the same when it was already on the target given).
    - With O(from_node), the C(node) and C(host) of each instance moved (in check mode, to be moved), by uuid.
  returned: when diff mode is on
  type: dict
migrations:
  description: The migration records of the instances moved off O(from_node).
  returned: when O(from_node) is given
  type: list
  elements: dict
failures:
  description: Instances of O(from_node) that did not move, each with C(name) and C(msg).
  returned: when O(from_node) is given
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import migrations as _migrations
from ansible_collections.multihv.cloud.plugins.module_utils._constants import COMPLETION_ACTIONS
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationControls

OPTIONS = {
    'instance': {'type': 'str'},
    'from_node': {'type': 'str'},
    'disabled_reason': {'type': 'str'},
    'mode': {'type': 'str', 'choices': list(_migrations.MODES), 'default': 'auto'},
    'target_node': {'type': 'str'},
    'target_host': {'type': 'str'},
    'image': {'type': 'str'},
    'keep_source': {'type': 'bool', 'default': False},
    'shutdown_timeout': {'type': 'int'},
    'bandwidth': {'type': 'int'},
    'max_downtime_ms': {'type': 'int'},
    'auto_converge': {'type': 'bool', 'default': False},
    'post_copy': {'type': 'bool', 'default': False},
    'completion_timeout': {'type': 'int', 'default': 0},
    'completion_action': {'type': 'str', 'choices': list(COMPLETION_ACTIONS), 'default': 'abort'},
    'concurrency': {'type': 'int', 'default': 2},
    'timeout': {'type': 'int', 'default': 1800},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE + [
                               ('instance', 'from_node'), ('from_node', 'image'), ('from_node', 'keep_source'),
                               ('from_node', 'shutdown_timeout')],
                           required_one_of=[('instance', 'from_node')])
    p = module.params
    controls = MigrationControls(bandwidth_mib=p['bandwidth'], max_downtime_ms=p['max_downtime_ms'], auto_converge=p['auto_converge'],
                                 post_copy=p['post_copy'], completion_timeout=p['completion_timeout'] or None,
                                 completion_action=p['completion_action'])
    with _args.cloud_session(module, p['timeout']) as ctx:
        if p['instance']:
            result = _migrations.migrate(ctx, p['instance'], p['mode'], p['target_node'], p['target_host'], controls,
                                         module.check_mode, image=p['image'], keep_source=p['keep_source'],
                                         shutdown_timeout=p['shutdown_timeout'])
        else:
            result = _migrations.drain(ctx, p['from_node'], p['mode'], controls, p['concurrency'], module.check_mode,
                                       p['disabled_reason'])
    if module._diff:  # pylint: disable=protected-access  # AnsibleModule's own flag for --diff
        result['diff'] = _migrations.diff(result)
    _args.warn_from(module, result)
    if result.get('failures'):
        module.fail_json(msg='%d instance(s) of node %s did not move: %s' % (
            len(result['failures']), p['from_node'], '; '.join('%s: %s' % (f['name'], f['msg']) for f in result['failures'])), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
