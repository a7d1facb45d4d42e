# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-VM HA overrides of a cluster node (issue 18 §3): an instance's ha and restart_priority as vSphere HA's
restart priority of its VM. Private to multihv.cloud: do not import.

The mapping (restart_priority_of): ha false is no override: the VM has the cluster's default restart priority (set with
vsphere_cluster's ha.restart_priority; vSphere's own default is `medium`), as every VM of a cluster node had before
the cloud told vSphere anything. Disabling vSphere HA for every instance left at the default ha false would leave
the HA-dependent VMs vSphere clusters are for unprotected; an operator who wants only the ha instances restarted
sets the cluster's default to `disabled`. ha true is a band of restart_priority ("higher first" in this collection,
0 by default) placed one level above vSphere's default, so that ha instances restart before the others as the
collection's order says: 0 `high`, 1 and above `highest`, -1 `medium`, -2 `low`, -3 and below `lowest`.

An override is a ClusterDasVmConfigInfo of the cluster's configurationEx.dasVmConfig, keyed by the VM; it is changed
through ClusterConfigSpecEx.dasVmConfigSpec (add, edit, remove) with ReconfigureComputeResource_Task(modify=True).
Pure functions: the driver reads and sends (node_rules.py).
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import plain
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim

DISABLED = 'disabled'
# vSphere's restart priorities from the lowest to the highest, and where restart_priority 0 of an ha instance falls
# among them: one above vSphere's default (medium), which the instances without ha have unless the cluster says otherwise.
LEVELS = ('lowest', 'low', 'medium', 'high', 'highest')
ZERO = LEVELS.index('high')


def restart_priority_of(ha, restart_priority):
    """vSphere HA's restart priority (ClusterDasVmSettings.restartPriority) of an instance's ha and restart_priority;
    None (no override: the cluster's default) without ha."""
    if not ha:
        return None
    step = int(restart_priority or 0)
    return LEVELS[min(max(ZERO + step, 0), len(LEVELS) - 1)]


def overrides_of(das_vm_config):
    """{VM moid: its restart priority override (None when the entry sets none)} of a configurationEx.dasVmConfig."""
    found = {}
    for entry in das_vm_config or ():
        settings = getattr(entry, 'dasSettings', None)
        priority = getattr(settings, 'restartPriority', None) or getattr(entry, 'restartPriority', None)
        found[plain(entry.key)] = str(priority) if priority else None
    return found


def override_changes(wanted, current, gone):
    """[(operation, moid, priority)] that take the overrides from `current` (overrides_of) to `wanted` ({moid: priority}
    of the instances on the cluster, None for no override), and remove those of `gone` (VMs that are no longer in the
    cluster): add, edit (a different priority), remove. An override of any other VM is left as it is."""
    changes = []
    for moid, priority in sorted(wanted.items()):
        if priority is None:
            if moid in current:
                changes.append(('remove', moid, None))
        elif moid not in current:
            changes.append(('add', moid, priority))
        elif current[moid] != priority:
            changes.append(('edit', moid, priority))
    changes.extend(('remove', moid, None) for moid in sorted(set(gone) & set(current) - set(wanted)))
    return changes


def override_spec(operation, vm, priority):
    """One ClusterDasVmConfigSpec: vm a VirtualMachine reference; priority unused for remove."""
    if operation == 'remove':
        return vim.cluster.DasVmConfigSpec(operation='remove', removeKey=vm)
    info = vim.cluster.DasVmConfigInfo(key=vm, dasSettings=vim.cluster.DasVmSettings(restartPriority=priority))
    return vim.cluster.DasVmConfigSpec(operation=operation, info=info)


__all__ = ['DISABLED', 'LEVELS', 'override_changes', 'override_spec', 'overrides_of', 'restart_priority_of']
