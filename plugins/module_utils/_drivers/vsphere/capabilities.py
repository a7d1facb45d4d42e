# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the vSphere (pyVmomi) driver can do. Private to multihv.cloud: do not import.
Light on purpose: read without loading pyVmomi."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._constants import MIGRATION_MODES
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import IMAGE_TEMPLATE, Capabilities

HYPERVISOR_TYPE = 'vsphere'

# A node is a cluster of ESXi hosts: a VM must fit one host and may move between them
# (vMotion). vCenter moves or copies the disks itself, live or cold. vSphere HA restarts
# the VMs of a failed host, so the core never evacuates a cluster. Images are template VMs.
CAPABILITIES = Capabilities(
    hypervisor_type=HYPERVISOR_TYPE, label='vSphere', node_noun='vSphere cluster',
    migration_modes=MIGRATION_MODES,
    evacuation=False,
    self_recovery=('vSphere HA restarts the VMs of a failed ESXi host on the other hosts of the cluster by itself, and a '
                   'VM cannot be rebuilt outside its vCenter; configure the cluster\'s HA with multihv.cloud.vsphere_cluster '
                   'instead'),
    hosts_in_node=True,
    image_kind=IMAGE_TEMPLATE,
    resize=True,
    # vSphere HA and DRS of the cluster are told each instance's ha / restart_priority and its server group (issue 18 §3).
    node_rules=True,
    # ESXi host maintenance (issue 18 §2): EnterMaintenanceMode_Task / ExitMaintenanceMode_Task (maintenance.py).
    host_maintenance=True,
    # Rebalancing (issue 18 §1): a cluster node is balanced by DRS among its hosts; the core does not measure it.
    self_balancing=('vSphere DRS balances the VMs among the ESXi hosts of a cluster by itself (configure it with '
                    'multihv.cloud.vsphere_cluster)'),
    # Moves between hypervisor types (issue 19): a stopped VM's disks copied out through the datastore file access and the
    # VM retired after (export_disks, retire_converted, export.py); converted disks imported as a VM (import_instance:
    # qemu-img VMFS flat VMDK, /folder upload, CreateVM_Task).
    convert=True,
)
