#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: vsphere_cluster
short_description: Configure vSphere HA and DRS of a cluster node
version_added: 0.1.0
description:
  - Sets the vSphere HA (admission control, default restart priority, host isolation response, host monitoring) and DRS
    (automation level, migration threshold) settings of a vSphere cluster, which is one compute node of the cloud.
  - vSphere HA restarts the VMs of a failed ESXi host on the other hosts of its cluster, so a cluster node is never
    evacuated by the cloud; HA is how its instances survive a host failure.
  - Only the settings given are changed; every other setting keeps its value on vCenter. The module reads the cluster's
    configuration in one PropertyCollector retrieval and reconfigures it (C(ReconfigureComputeResource_Task) with
    C(modify=true)) only when a setting given differs, then reads the settings back.
  - With neither O(ha) nor O(drs), the module only reads the settings.
options:
  name:
    description:
      - The compute node, named C(vcenter/datacenter/cluster) as M(multihv.cloud.compute_node_info) shows it.
      - The vCenter is the cloud file's; its C(clusters) filter applies.
    type: str
    required: true
  ha:
    description: vSphere HA settings (the cluster's C(dasConfig)).
    type: dict
    suboptions:
      enabled:
        description: Whether vSphere HA is on.
        type: bool
      admission_control:
        description:
          - HA admission control, which keeps enough capacity in the cluster to restart the VMs of failed hosts.
          - Changing O(ha.admission_control.policy) needs the new policy's values, and drops the old policy's.
        type: dict
        suboptions:
          enabled:
            description: Whether vCenter refuses to power on VMs that would break the failover capacity.
            type: bool
          policy:
            description:
              - V(failover_level) reserves room for O(ha.admission_control.failover_level) failed hosts (slot based).
              - V(percentage) reserves O(ha.admission_control.cpu_percentage) and
                O(ha.admission_control.memory_percentage) of the cluster's resources.
            type: str
            choices: [failover_level, percentage]
          failover_level:
            description:
              - Number of host failures the cluster tolerates, with policy V(failover_level).
              - At most the number of the cluster's hosts minus one; more is refused before anything is sent to vCenter.
            type: int
          cpu_percentage:
            description: CPU reserved for failover, in percent of the cluster's, with policy V(percentage).
            type: int
          memory_percentage:
            description: Memory reserved for failover, in percent of the cluster's, with policy V(percentage).
            type: int
      restart_priority:
        description:
          - Default restart priority of the VMs after a host failure (C(defaultVmSettings.restartPriority));
            V(disabled) means they are not restarted.
        type: str
        choices: [disabled, low, medium, high]
      isolation_response:
        description:
          - What a host that loses its management network (isolated) does with its VMs
            (C(defaultVmSettings.isolationResponse)); V(none) leaves them running.
        type: str
        choices: [none, powerOff, shutdown]
      host_monitoring:
        description: Whether HA monitors the hosts' heartbeats and restarts the VMs of a failed host (C(hostMonitoring)).
        type: bool
  drs:
    description: vSphere DRS settings (the cluster's C(drsConfig)).
    type: dict
    suboptions:
      enabled:
        description: Whether DRS is on.
        type: bool
      automation_level:
        description:
          - The cluster's default DRS automation level (C(defaultVmBehavior)).
          - V(manual) only recommends placements and migrations; V(partiallyAutomated) places VMs at power on
            and recommends migrations; V(fullyAutomated) places and migrates VMs itself.
        type: str
        choices: [manual, partiallyAutomated, fullyAutomated]
      migration_threshold:
        description:
          - The migration threshold as the vSphere Client shows it, from V(1) (conservative, only the migrations
            that rules or maintenance mode require) to V(5) (aggressive, even a slight improvement of the balance).
          - vSphere's API keeps it as C(vmotionRate), which runs the other way (1 is the most aggressive); the module
            maps one to the other, C(vmotionRate = 6 - migration_threshold), as vmware.vmware's cluster_drs module does.
        type: int
        choices: [1, 2, 3, 4, 5]
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - The cluster's settings are read from vCenter and compared; no reconfiguration is sent.
  diff_mode:
    support: full
    details:
      - The cluster's HA and DRS settings before and after.
  idempotent:
    support: full
notes:
  - This module talks to vCenter only; it neither reads nor writes the registry (O(registry_url) is accepted so that
    C(module_defaults) can set it for every module of the collection).
  - A setting vCenter leaves unset reads as V(null) in RV(cluster) and in the diff.
seealso:
  - module: multihv.cloud.compute_node_info
    description: Shows C(ha_enabled) and C(drs_enabled) of each cluster node.
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: Let vSphere HA restart the legacy tier's VMs, keeping room for one failed host
  multihv.cloud.vsphere_cluster:
    name: vc1/DC1/Cluster-A
    ha:
      enabled: true
      host_monitoring: true
      admission_control:
        enabled: true
        policy: failover_level
        failover_level: 1
      restart_priority: high
      isolation_response: powerOff

- name: Reserve a quarter of the cluster for failover instead
  multihv.cloud.vsphere_cluster:
    name: vc1/DC1/Cluster-A
    ha:
      admission_control:
        policy: percentage
        cpu_percentage: 25
        memory_percentage: 25

- name: Fully automated DRS with the default migration threshold
  multihv.cloud.vsphere_cluster:
    name: vc1/DC1/Cluster-A
    drs:
      enabled: true
      automation_level: fullyAutomated
      migration_threshold: 3

- name: Read the settings only
  multihv.cloud.vsphere_cluster:
    name: vc1/DC1/Cluster-A
  register: cluster_settings
'''

RETURN = r'''
cluster:
  description:
    - The cluster's HA and DRS settings after the task, read back from vCenter (or as they would be, in check mode).
    - Keys as the options name them; a setting vCenter leaves unset is V(null).
  returned: always
  type: dict
  contains:
    ha:
      description: HA settings.
      type: dict
      returned: always
      contains:
        enabled:
          description: Whether HA is on.
          type: bool
          returned: always
        admission_control:
          description:
            - Admission control; C(policy) is V(failover_level), V(percentage), another policy's name
              (V(dedicated_host)...), or V(null).
          type: dict
          returned: always
        restart_priority:
          description: Default restart priority.
          type: str
          returned: always
        isolation_response:
          description: Host isolation response.
          type: str
          returned: always
        host_monitoring:
          description: Whether host monitoring is on.
          type: bool
          returned: always
    drs:
      description: DRS settings.
      type: dict
      returned: always
      contains:
        enabled:
          description: Whether DRS is on.
          type: bool
          returned: always
        automation_level:
          description: Default automation level.
          type: str
          returned: always
        migration_threshold:
          description: Migration threshold, 1 (conservative) to 5 (aggressive).
          type: int
          returned: always
  sample:
    ha:
      enabled: true
      admission_control:
        enabled: true
        policy: failover_level
        failover_level: 1
        cpu_percentage: null
        memory_percentage: null
      restart_priority: high
      isolation_response: powerOff
      host_monitoring: true
    drs:
      enabled: true
      automation_level: fullyAutomated
      migration_threshold: 3
diff:
  description: The HA and DRS settings before and after, in diff mode.
  returned: when diff mode is on
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _argspec
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import cluster as core

OPTIONS = {
    'name': {'type': 'str', 'required': True},
    'ha': {'type': 'dict', 'options': {
        'enabled': {'type': 'bool'},
        'admission_control': {'type': 'dict', 'options': {
            'enabled': {'type': 'bool'},
            'policy': {'type': 'str', 'choices': list(core.POLICIES)},
            'failover_level': {'type': 'int'},
            'cpu_percentage': {'type': 'int'},
            'memory_percentage': {'type': 'int'},
        }},
        'restart_priority': {'type': 'str', 'choices': list(core.RESTART_PRIORITIES)},
        'isolation_response': {'type': 'str', 'choices': list(core.ISOLATION_RESPONSES)},
        'host_monitoring': {'type': 'bool'},
    }},
    'drs': {'type': 'dict', 'options': {
        'enabled': {'type': 'bool'},
        'automation_level': {'type': 'str', 'choices': list(core.AUTOMATION_LEVELS)},
        'migration_threshold': {'type': 'int', 'choices': [1, 2, 3, 4, 5]},
    }},
}


def main():
    module = _argspec.module(AnsibleModule, argument_spec=_args.argument_spec(**OPTIONS), supports_check_mode=True,
                             mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    try:
        cloud = _args.load_cloud(module)
        changed, before, after = core.configure(cloud, module.params['name'], module.params['ha'], module.params['drs'],
                                                check_mode=module.check_mode)
    except errors.MultihvError as exc:
        # A failure once the reconfiguration was sent may follow a change on vCenter.
        module.fail_json(msg=str(exc), changed=getattr(exc, 'changes_sent', False))
    else:
        _args.exit_with(module, changed, 'cluster', before, after)


if __name__ == '__main__':
    main()
