#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: rebalance
short_description: Balance the load of KVM hosts by live migration, as vSphere DRS balances the hosts of a cluster
version_added: 0.1.0
description:
  - Measures the load of a set of nodes, plans live migrations that bring the spread of their loads under the threshold
    of an O(aggressiveness) level, and runs them O(concurrency) at a time. vSphere DRS does this among the ESXi hosts of
    a cluster; nothing does it for KVM hosts under Nova.
  - B(Which nodes.) Those named in O(nodes), or those in O(aggregate) and/or O(availability_zone), or every node of the
    cloud. Only nodes that are single hosts, of a type whose driver measures what its VMs use and moves them live (KVM
    hosts), are balanced. A vSphere cluster is balanced among its ESXi hosts by DRS (configure it with
    M(multihv.cloud.vsphere_cluster)). One named in O(nodes) is refused, and nothing moves; one that a filter or "every
    node" brings in is left alone and listed in RV(skipped) with why. Nodes down, forced down or disabled are skipped and
    listed too (they take no instance; M(multihv.cloud.migrate) with O(multihv.cloud.migrate#module:from_node) empties one),
    and so is a node whose usage could not be measured.
  - B(Load of a node.) Each node is measured over O(interval) seconds, from the CPU time of each of its VMs, read twice, and
    the RAM it holds on the host (the QEMU process's resident memory). C(load = 0.5 * cpu / cpus + 0.5 * memory /
    memory_mb), where C(cpu) is the host CPUs its VMs kept busy, C(memory) is what its VMs hold, the cloud's running
    instances counted at least at their flavor's RAM (their claim, since a guest may touch all it was given at any moment),
    and C(cpus) and C(memory_mb) are the host's physical CPUs and RAM less what is reserved for it
    (M(multihv.cloud.compute_node) O(multihv.cloud.compute_node#module:reserved)), without allocation ratios. VMs that
    are not the cloud's count in their host's load and are never moved.
  - B(Spread.) The standard deviation of the loads of the nodes balanced (DRS's imbalance).
  - B(Plan.) Greedy. While the spread is above the level's threshold and fewer than O(max_moves) moves are planned, the
    move that lowers the spread most is added, among the instances of the 4 most loaded nodes (the next 4 when those can
    move nothing, up to 16) towards the 16 least loaded of their availability zone (an instance stays in its node's
    zone), provided it gains at least the level's minimum (a move's gain is how much it lowers the spread of its own two
    nodes, half the narrowing of the gap between their loads; for two nodes, the drop of the spread itself) and the
    scheduler's filters let the
    instance onto its target (server group policies, availability zone, aggregates, hypervisor type, networks, room
    for its claim, enabled and up), with the claims and the server group members where the moves planned before it
    leave them. Only the cloud's instances that run, and that
    no other run works on, move (not stopped ones, not one waiting for a resize to be confirmed, not one being moved);
    each at most once per run.
  - B(Run.) Each move is a migration as M(multihv.cloud.migrate) makes it (live when both hosts share the instance's
    disk directory, else block, which copies the disk), with the instance's lease, a check that it still runs where it was
    measured, the scheduler's filters on the target with the claims as they are then, the claim before anything moves,
    and a migration record. At most O(concurrency) moves run at once, never two on one node at once; a move that shares
    a node with an earlier one waits for it. A move that fails leaves its instance running where it was, the others go
    on, it is listed in RV(failures) and the task fails at the end.
  - B(Leases.) A run holds the lease of every node it balances until it ends, so that a second rebalance of any of them,
    or a drain or an evacuation of one of them, is refused meanwhile (with the holder named).
options:
  nodes:
    description: The nodes to balance, by name. Each must be a single-host node that can be balanced (see the description).
    type: list
    elements: str
  aggregate:
    description: Balance the nodes in this aggregate (with O(availability_zone), those in both).
    type: str
  availability_zone:
    description: Balance the nodes in this availability zone (with O(aggregate), those in both).
    type: str
  aggressiveness:
    description:
      - How far to go, as DRS's migration threshold. Each level is the spread at or under which the nodes count as balanced,
        and the least gain one move must bring (how much it lowers the spread of its own two nodes, see the description),
        so that noise in the measurement never moves instances back and forth.
      - C(1) moves nothing (DRS's "mandatory moves only", of which a rebalance has none); the nodes are only measured.
      - C(2) spread 0.20, gain 0.05. C(3) spread 0.10, gain 0.02. C(4) spread 0.05, gain 0.01. C(5) spread 0.02, gain 0.005.
    type: int
    choices: [1, 2, 3, 4, 5]
    default: 3
  max_moves:
    description: The most moves one run plans.
    type: int
    default: 10
  concurrency:
    description: How many moves run at once (never two on one node).
    type: int
    default: 2
  interval:
    description: Seconds each node is measured over (its VMs' CPU time is read at the start and at the end). At least 0.1.
    type: float
    default: 5.0
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
      - The nodes are measured and the moves planned (RV(moves) with C(status=would run)); nothing is claimed, recorded or
        moved, and no lease is taken.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - Nodes whose spread is at or under the level's threshold, or where no move would lower it by the level's minimum
        gain, see no move (V(changed=false)); a run that balanced them leaves them so.
      - The loads are measured anew on each run, so a second run may plan moves when the VMs' use changed meanwhile.
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Balance every KVM host of the cloud (vSphere clusters are skipped; DRS balances them)
  multihv.cloud.rebalance:

- name: What would balancing the gold aggregate move? (check mode measures and plans only)
  multihv.cloud.rebalance:
    aggregate: gold
  check_mode: true

- name: Balance two hosts hard, measuring them over 10 seconds, at most 4 moves, one at a time
  multihv.cloud.rebalance:
    nodes: [kvm1, kvm2]
    aggressiveness: 5
    interval: 10
    max_moves: 4
    concurrency: 1
'''

RETURN = r'''
nodes:
  description:
    - Each node balanced, with C(node), C(cpus) and C(memory_mb) (what its load is counted against), C(cpu_used) and
      C(memory_mb_used) (what its VMs use, as counted), C(load_before), C(load_after) (after the moves made, in check mode
      those planned), C(instances) (VMs measured) and C(movable) (those a plan may move).
  returned: always
  type: list
  elements: dict
moves:
  description:
    - The moves planned, in order, each with C(instance), C(instance_uuid), C(source), C(target), C(load_before) and
      C(load_after) (each a dict of C(source) and C(target), both nodes' loads before and after the move), C(spread_before) and
      C(spread_after) (the move's own), C(status) (C(would run) in check mode, else C(completed) or C(failed)),
      C(migration) (the migration record of a completed move) and C(msg) (why a failed one failed).
  returned: always
  type: list
  elements: dict
skipped:
  description: Nodes selected but not balanced, each with C(node) and C(reason) (a cluster, down, disabled, not measured).
  returned: always
  type: list
  elements: dict
failures:
  description: Moves that failed, each with C(name) (the instance) and C(msg); the instance stayed where it was.
  returned: always
  type: list
  elements: dict
spread_before:
  description: The spread of the nodes' loads as measured.
  returned: always
  type: float
spread_after:
  description: The spread once the moves made (in check mode, planned) are counted.
  returned: always
  type: float
threshold:
  description: The spread at or under which the nodes count as balanced at this O(aggressiveness); V(null) at level 1.
  returned: always
  type: float
min_gain:
  description: The least gain of a move (the drop of the spread of its two nodes) at this O(aggressiveness); V(null) at level 1.
  returned: always
  type: float
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import rebalance as _rebalance

OPTIONS = {
    'nodes': {'type': 'list', 'elements': 'str'},
    'aggregate': {'type': 'str'},
    'availability_zone': {'type': 'str'},
    'aggressiveness': {'type': 'int', 'choices': [1, 2, 3, 4, 5], 'default': 3},
    'max_moves': {'type': 'int', 'default': 10},
    'concurrency': {'type': 'int', 'default': 2},
    'interval': {'type': 'float', 'default': 5.0},
    'timeout': {'type': 'int', 'default': 1800},
}


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE + [('nodes', 'aggregate'), ('nodes', 'availability_zone')])
    p = module.params
    try:  # bad bounds refused before the registry is opened (and created)
        _rebalance.check_options(p['aggressiveness'], p['max_moves'], p['concurrency'], p['interval'], p['nodes'], p['aggregate'],
                                 p['availability_zone'])
    except errors.MultihvError as exc:
        module.fail_json(msg=str(exc))
    with _args.cloud_session(module, p['timeout']) as ctx:
        result = _rebalance.rebalance(ctx, p['nodes'], p['aggregate'], p['availability_zone'], p['aggressiveness'], p['max_moves'],
                                      p['concurrency'], p['interval'], module.check_mode)
    if result['failures']:
        module.fail_json(msg='%d of %d move(s) failed; their instances stayed where they were: %s' % (
            len(result['failures']), len(result['moves']), '; '.join('%s: %s' % (f['name'], f['msg']) for f in result['failures'])),
            **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
