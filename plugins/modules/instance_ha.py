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
  - Reads every node once. A KVM node that does not answer is marked down in the registry the first time a pass sees it;
    once it has been down for O(grace_period) seconds, the pass fences it (the cloud file's C(fence_command)), forces it
    down and evacuates its HA instances (M(multihv.cloud.instance) O(multihv.cloud.instance#module:ha=true)), HA first
    and then by restart priority, onto nodes reserved for failover first. With O(evacuate_all) the other instances
    follow.
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
        does not fence a host. 0 acts on the first pass that sees it down.
    type: int
    default: 60
  evacuate_all:
    description: Evacuate the instances that are not HA too, after the HA ones.
    type: bool
    default: false
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.evacuation
notes:
  - In check mode nothing is recorded, fenced or rebuilt; the result says what a pass would do.
  - Evacuated local-storage instances get new passwords, returned in RV(recovered); give the task C(no_log) when the
    log is read by others.
seealso:
  - module: multihv.cloud.evacuate
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
'''

RETURN = r'''
down:
  description: The nodes this pass acted on, each with C(node), C(down_since) and C(fencing) (see M(multihv.cloud.evacuate)).
  returned: always
  type: list
  elements: dict
waiting:
  description: Nodes down for less than O(grace_period), each with C(node), C(down_since), C(seconds_left) and C(reason).
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
}


def run_pass(ctx, p, check_mode):
    return _instance_ha.run_pass(ctx, p['grace_period'], p['evacuate_all'], p['concurrency'], check_mode)


def failures(result):
    return result['failures'] and 'instance HA pass: %s' % '; '.join(
        '%s%s: %s' % (f['node'], ' ' + f['name'] if f.get('name') else '', f['msg']) for f in result['failures'])


def main():
    _args.run_evacuation(AnsibleModule, OPTIONS, run_pass, failures)


if __name__ == '__main__':
    main()
