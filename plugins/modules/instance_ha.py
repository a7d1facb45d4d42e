#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: instance_ha
short_description: One unattended instance HA pass over the KVM nodes (find, fence, force down, evacuate)
version_added: 0.1.0
description:
  - What vSphere HA does inside a cluster, for KVM nodes, one pass at a time; meant for an AWX schedule, a loop, or the
    collection's Event-Driven Ansible rulebook.
  - Runs the reconciler's HA steps first (M(multihv.cloud.reconcile)'s interrupted builds and migrations, and power
    states; not its stale copies or orphans), so that the pass judges nodes from records that say where each instance
    is. An evacuation or migration that a killed controller left half done is finished or undone before anything is
    evacuated again. Its actions are returned in RV(reconciled); in check mode they are only planned, and the instances
    they would touch are left out of the pass's own plan.
  - Reads every node once. A KVM node that does not answer is marked down in the registry the first time a pass sees it,
    and each pass that finds it unreachable counts one more down probe, up to O(min_down_probes) (a node that answers
    loses both). Recording or clearing these marks is reported as a change. Once it has
    been down for O(grace_period) seconds B(and) at least O(min_down_probes) passes saw it down, the pass fences it (the
    cloud file's C(fence_command)), forces it down and evacuates its HA instances
    (M(multihv.cloud.instance) O(multihv.cloud.instance#module:ha=true)), HA first and then by restart priority, onto
    nodes reserved for failover first. With O(evacuate_all) the other instances follow.
  - A fence is confirmed, not assumed. Where the cloud file gives the host a C(power_status_command), the node counts
    as fenced only when that command says its power is off; so a host already off is fenced even when its fence
    command fails, and a host still on after its fence command is not (nothing of it is evacuated; the pass reports
    it in RV(failures)). Without one, the fence command's exit status 0 is believed.
  - When more than O(max_down_share) of the KVM nodes (those not forced down) look down at once, the controller is
    more likely cut off from them than they all failed; the pass fences and evacuates nothing, reports every down node
    in RV(withheld) with that reason, and records only its probes.
  - A node that does not answer but whose storage heartbeat, read through a node that answers and shares its
    C(shared_instance_path), is younger than O(heartbeat_timeout) and was written after a pass first saw the node
    down is isolated, not dead (vSphere HA's datastore heartbeating); it is reported in RV(withheld), neither fenced
    nor evacuated. A heartbeat from before that, still younger than O(heartbeat_timeout), is what a host that just
    lost its power leaves behind, and also what a host cut off a moment ago shows; the node stays in RV(waiting) until
    that heartbeat is O(heartbeat_timeout) old (then it is fenced and evacuated) or advances (isolated). The writer of the heartbeat runs on
    each KVM host (the C(multihv.cloud.kvm_host) role's C(kvm_host_heartbeat)); without a heartbeat the pass goes on as
    if there were no such check.
  - A down node with nothing to recover (no HA instance, or no instance at all with O(evacuate_all)) is not fenced;
    it is reported in RV(withheld). Its instances were never evacuated, so it comes back with no stale copies.
  - Instances that no node has room for are reported in RV(unplaced) and stay where they were; the scheduler never
    places an instance on a node beyond its allocation ratios.
  - A node that answers again loses its down mark; it stays forced down until
    M(multihv.cloud.compute_node) with O(multihv.cloud.compute_node#module:enabled=true) and
    O(multihv.cloud.compute_node#module:forced_down=false) has destroyed its stale copies.
  - A second pass with nothing new changes nothing. vSphere cluster nodes are left to vSphere HA.
options:
  grace_period:
    description:
      - Seconds a node must have been seen down before it is fenced and evacuated, so that a short network fault
        does not fence a host. 0 leaves only O(min_down_probes) to wait for; a negative value is refused.
    type: int
    default: 60
  evacuate_all:
    description: Evacuate the instances that are not HA too, after the HA ones.
    type: bool
    default: false
  min_down_probes:
    description:
      - How many passes in a row must have found a node unreachable before it is fenced and evacuated, on top of
        O(grace_period), so that one timeout of a loaded host is never taken for a failure. Run passes often enough that this
        many fit in the grace period (the collection's playbook and rulebook do).
      - At least 1.
    type: int
    default: 3
  max_down_share:
    description:
      - The largest share (0 to 1) of the KVM nodes not forced down that may look down at once for the pass to fence
        anything. More than that, and the controller is taken to be the one cut off. The default fences when at most
        half of them look down. 1 never withholds.
    type: float
    default: 0.5
  heartbeat_timeout:
    description:
      - Seconds within which a node's storage heartbeat proves it alive although it does not answer. The controller's
        and the hosts' clocks must agree to well within this (NTP). 0 reads no heartbeat.
    type: int
    default: 30
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.evacuation
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - Nothing is recorded, fenced, reconciled or rebuilt; the result says what a pass would do, and C(changed) whether
        it would write anything.
  diff_mode:
    support: none
    details:
      - RV(down), RV(waiting), RV(withheld), RV(recovered) and RV(cleared) say what the pass saw and did.
  idempotent:
    support: partial
    details:
      - A pass records each node that does not answer (C(down_since), and one more down probe until O(min_down_probes)
        passes saw it) and clears those marks when it answers again; writing them is reported as a change. A pass that
        finds nothing new to record, fence or recover reports no change.
notes:
  - In check mode nothing is recorded, fenced, reconciled or rebuilt; the result says what a pass would do.
  - Evacuated local-storage instances get new passwords, returned in RV(recovered); give the task C(no_log) when the
    log is read by others.
seealso:
  - module: multihv.cloud.evacuate
  - module: multihv.cloud.reconcile
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: One HA pass (an AWX schedule runs this every minute)
  multihv.cloud.instance_ha:
    cloud_file: /etc/multihv/cloud.yml
    grace_period: 90
  register: ha
  no_log: true

- name: A pass for a small estate, where two KVM hosts of three may fail at once
  multihv.cloud.instance_ha:
    cloud_file: /etc/multihv/cloud.yml
    max_down_share: 0.7
    min_down_probes: 2
  register: ha
  no_log: true
'''

RETURN = r'''
reconciled:
  description:
    - What the reconciler did (or, in check mode, would do) before the pass judged the nodes, as
      M(multihv.cloud.reconcile) returns it in its C(actions), each with C(kind) (C(build), C(migration) or C(power)),
      C(uuid), C(name), C(node), C(found) and C(does).
    - An action that could not be carried out (another run changed the instance's records, or holds its lease) has
      C(error); it is left for the next pass and does not fail this one.
  returned: always
  type: list
  elements: dict
down:
  description: The nodes this pass acted on, each with C(node), C(down_since), C(down_probes) and C(fencing) (see M(multihv.cloud.evacuate)).
  returned: always
  type: list
  elements: dict
waiting:
  description:
    - Nodes down for less than O(grace_period) or seen down by fewer than O(min_down_probes) passes, or whose last
      storage heartbeat is from before they were seen down but younger than O(heartbeat_timeout), each with C(node),
      C(down_since), C(seconds_left), C(down_probes) (passes in a row that found it unreachable, this one included, counted up to O(min_down_probes)),
      C(probes_left) and C(reason).
  returned: always
  type: list
  elements: dict
withheld:
  description:
    - Down nodes this pass did not fence, each with C(node), C(down_since), C(down_probes), C(why) and C(reason)
      (a sentence). C(why) is C(controller_cut_off) (more than O(max_down_share) of the nodes look down),
      C(nothing_to_recover), or C(isolated) (its storage heartbeat advances).
  returned: always
  type: list
  elements: dict
recovered:
  description: The instances rebuilt, as M(multihv.cloud.evacuate) returns them in its C(evacuations).
  returned: always
  type: list
  elements: dict
unplaced:
  description: Instances no node has room for, each with C(node), C(name), C(uuid) and C(msg).
  returned: always
  type: list
  elements: dict
failures:
  description: What failed, each with C(node), C(msg) and for one instance C(name) and C(uuid).
  returned: always
  type: list
  elements: dict
cleared:
  description: Nodes that were marked down and answer again.
  returned: always
  type: list
  elements: str
skipped:
  description: Nodes another run works on (an HA pass, an evacuation or a drain holds their lease), each with C(node) and C(msg)
    (who holds it, until when); this pass left them to that run.
  returned: always
  type: list
  elements: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instance_ha as _instance_ha

OPTIONS = {
    'grace_period': {'type': 'int', 'default': 60},
    'evacuate_all': {'type': 'bool', 'default': False},
    'min_down_probes': {'type': 'int', 'default': _instance_ha.MIN_DOWN_PROBES},
    'max_down_share': {'type': 'float', 'default': _instance_ha.MAX_DOWN_SHARE},
    'heartbeat_timeout': {'type': 'int', 'default': _instance_ha.HEARTBEAT_TIMEOUT},
}


def run_pass(ctx, p, check_mode):
    return _instance_ha.run_pass(ctx, p['grace_period'], p['evacuate_all'], p['concurrency'], check_mode,
                                 max_down_share=p['max_down_share'], min_down_probes=p['min_down_probes'],
                                 heartbeat_timeout=p['heartbeat_timeout'])


def failures(result):
    return result['failures'] and 'instance HA pass: %s' % '; '.join(
        '%s%s: %s' % (f['node'], ' ' + f['name'] if f.get('name') else '', f['msg']) for f in result['failures'])


def main():
    _args.run_evacuation(AnsibleModule, OPTIONS, run_pass, failures)


if __name__ == '__main__':
    main()
