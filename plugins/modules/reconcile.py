#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: reconcile
short_description: Make the registry agree with the hypervisors, finishing or undoing interrupted work (Nova's periodic tasks)
version_added: 0.1.0
description:
  - One idempotent pass, meant for an AWX schedule (the playbook C(multihv.cloud.reconcile)) and for after a controller
    died mid-operation. It reads the registry and every endpoint's VMs once, plans, then acts; every action is listed in
    RV(actions).
  - B(Interrupted builds.) An instance still C(building) whose lease no run holds loses whatever VM of it exists on any
    node (with its disks), its allocations are freed and it is recorded C(error); a record that never got a VM is
    removed.
  - B(Interrupted migrations and evacuations.) A migration still C(accepted), C(preparing) or C(running) whose instance's
    lease no run holds is made to agree with where the VM is. On the target only, the instance is recorded there
    and the migration C(completed); on the source only, the migration C(failed); on both, the running copy is kept and the
    other undefined (its disk removed only on C(local) storage, never a shared one); on neither, the migration
    C(failed) and the instance C(error). The allocation the instance no longer uses is freed. When its VM is on one
    side, the files the move left in the local instance directory of the other side (a block or cold migration's
    partial copy, or the source's old disk) are removed; when it has no VM anywhere, every file is kept. An evacuation
    whose source is forced down is judged from its target alone.
  - B(Resizes.) An interrupted resize (a migration of type C(resize) in one of those statuses) is reverted where its VM
    is (the running copy kept when a cold move left two); the VM gets its old vCPUs, RAM and (KVM) disk back, the
    instance its old flavor and the allocation the old flavor's on that node, the migration C(failed). A resize left in
    C(verify_resize) longer than the cloud file's C(defaults.resize_confirm_window) seconds (0, the default, never) is
    confirmed; a waiting resize whose instance was deleted is recorded C(completed).
  - B(Power states.) An instance recorded running whose VM is shut off is recorded C(stopped), and the other way. One
    whose node has no VM of it is reported in RV(missing), not changed. An instance a run works on (its lease is held, or a
    migration of it is unfinished) is left to that run.
  - B(Stale copies.) A copy of an evacuated instance on a node that is not the one its record names, and that answers,
    is destroyed (local disks removed, shared kept), whatever the evacuation's status; evacuations C(done) are cleaned
    as M(multihv.cloud.compute_node) does when their node comes back. Any other second copy of an instance (a move
    whose source kept its definition, a VM defined by hand) on a node that is not the one its record names is destroyed
    too, when no migration of the instance is unfinished and no run holds it; its disk is removed only when it is that
    node's own local disk. The source VM of a completed move between hypervisor types (M(multihv.cloud.migrate)
    O(multihv.cloud.migrate#module:mode=convert)) that could not be retired is retired as that move asked instead (removed,
    or with O(multihv.cloud.migrate#module:keep_source) kept powered off, renamed and without the cloud's mark). A copy is
    never destroyed while the node its record names has no VM of it.
  - B(Files left behind.) Files of an instance (C(<uuid>.qcow2), C(<uuid>.console.log)) in the local instance directory
    of a KVM host that is not the one its record names and has no VM of it, left by an interrupted migration or an
    evacuation, are removed, only while its VM is on the node its record names and no run works on it. Shared files are
    never removed this way, nor a file with the path of one of its VM's files unless the hosts show, by a marker file,
    that their local directories are two directories. While the node its record names has no VM of it, such files may
    hold its only disk and are kept.
  - B(Orphans.) VMs whose uuid the registry does not know, files in the instance directories named after such a uuid
    (C(kind=file), not those of an orphan VM, which go with it), and allocations of no instance or on a node where
    their instance is not, are reported in RV(orphans) and deleted only with O(delete_orphans). A file in a shared
    directory is deleted once, and only while every endpoint answers (one that does not may run a VM from it). vSphere
    instances have no files apart from their VM, so none are reported there.
  - B(Interrupted captures.) An image left in status C(saving) by an M(multihv.cloud.instance_snapshot) run that was cut off
    (no run holds the image's lease, its record unwritten for two lease lifetimes) is removed with what it left - its
    bases on the KVM hosts, its template on vSphere, its file on the controller (C(kind=snapshot)).
  - B(HA overrides and DRS rules.) On vSphere cluster nodes, the per-VM HA overrides (each instance's O(multihv.cloud.instance#module:ha)
    and O(multihv.cloud.instance#module:restart_priority)) and the DRS VM-VM rules of the server groups (C(multihv-<group>))
    are made to agree with the registry, one reconfiguration per cluster that differs (C(kind=rules), with C(node)), for what a
    task could not set (it warned) or someone changed on the vCenter. A rule that would contradict a rule made by someone
    else there is not set; the action fails naming both, and nothing of that cluster is changed.
  - B(Nodes that cannot be reached.) Their instances are reported in RV(unknown) and nothing about them changes.
  - Work counts as interrupted only when its instance's lease is not held (a running operation's heartbeat renews it; a
    dead run's lease ends within the lease lifetime, the cloud file's C(registry.lease_seconds), 30 seconds by default)
    and its records have not been written for two lease lifetimes (a minute by default).
  - Each action runs holding its instance's lease, and only when the records it read are unchanged; one that cannot is
    reported with an C(error) and left for the next pass, and the others go on.
options:
  delete_orphans:
    description: Destroy orphan VMs (with their disks), delete orphan files and free orphan allocations, instead of only
      reporting them.
    type: bool
    default: false
  timeout:
    description: The longest, in seconds, one hypervisor call (a listing, a destroy) may take.
    type: int
    default: 600
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns the plan in RV(actions).
  diff_mode:
    support: none
    details:
      - RV(actions) says what was found and what is done, per instance.
  idempotent:
    support: full
    details:
      - A second pass after a successful one finds nothing to do.
notes:
  - Orphan VMs are the VMs that carry this collection's metadata (libvirt domain metadata, vSphere annotations) and whose
    uuid this registry does not have; orphan files are files named C(<uuid>.*) in the instance directories of the cloud
    file whose uuid this registry does not have. Do not use O(delete_orphans) where two registries share a hypervisor
    or an instance directory.
  - The instance HA pass (M(multihv.cloud.instance_ha)) runs this module's steps for interrupted builds, migrations and
    evacuations and for power states before it judges nodes (not the stale-copy, file and orphan steps).
seealso:
  - module: multihv.cloud.instance_ha
  - module: multihv.cloud.compute_node
  - module: multihv.cloud.instance_info
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: See what the reconciler would do
  multihv.cloud.reconcile:
    cloud_file: /etc/multihv/cloud.yml
  check_mode: true
  register: plan

- name: Reconcile, deleting orphan VMs, files and allocations too
  multihv.cloud.reconcile:
    cloud_file: /etc/multihv/cloud.yml
    delete_orphans: true
'''

RETURN = r'''
actions:
  description:
    - What the pass did (or, in check mode, would do), each with C(kind) (C(build), C(migration), C(power), C(stale),
      C(orphan), C(snapshot) or C(rules)), C(uuid) and C(name) of the instance (neither for the clean-up of a node's stale copies
      nor for C(rules), no name for orphan files), C(node), C(found) and C(does).
    - C(error) when the action failed or was left for the next pass.
  returned: always
  type: list
  elements: dict
unknown:
  description: Instances whose node cannot be reached, each with C(uuid), C(name), C(node), C(state) and C(reason);
    nothing about them was changed.
  returned: always
  type: list
  elements: dict
missing:
  description: Running or stopped instances whose node answers but has no VM of them, each with C(uuid), C(name), C(node),
    C(state) and C(reason); rebuild or delete them.
  returned: always
  type: list
  elements: dict
unfinished:
  description:
    - Adoptions cut off before their VM was marked (records in state C(adopting) that no run holds), each with C(uuid),
      C(name), C(node), C(state) and C(reason). Nothing is done to them; run M(multihv.cloud.instance_import) for them
      again to finish them.
  returned: always
  type: list
  elements: dict
orphans:
  description:
    - VMs with no record (C(kind=vm), with C(uuid), C(name), C(node), C(power_state)).
    - Files named after a uuid with no record (C(kind=file), with C(uuid), C(name) (the file's name), C(node) (a node that
      sees it; a file in a shared directory is listed once per node that sees it), C(storage) (C(local) or C(shared)),
      C(path) and C(reason) (which says when it is kept although O(delete_orphans) was given)).
    - Allocations of no instance or on a node where their instance is not (C(kind=allocation), with C(uuid), C(name),
      C(node), C(reason)).
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile

OPTIONS = {
    'delete_orphans': {'type': 'bool', 'default': False},
    'timeout': {'type': 'int', 'default': 600},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    p = module.params
    with _args.cloud_session(module, p['timeout']) as ctx:
        result = _reconcile.run(ctx, p['delete_orphans'], module.check_mode)
    failures = result.pop('failures')
    if failures:
        module.fail_json(msg='%d reconciler action(s) failed: %s' % (len(failures), '; '.join(
            '%s %s on %s: %s' % (f['kind'], f['name'] or f['uuid'] or '', f['node'], f['error']) for f in failures)), **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
