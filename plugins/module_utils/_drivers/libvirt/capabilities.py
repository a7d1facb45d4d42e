# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the KVM (libvirt) driver can do. Private to multihv.cloud: do not import.
Light on purpose: read without loading libvirt-python."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._constants import MIGRATION_MODES
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import IMAGE_FILE, Capabilities

HYPERVISOR_TYPE = 'kvm'

# A KVM host is its own node. Live migration needs the disk on storage both hosts see,
# block migration copies the disk's top layer, and nothing restarts the guests of a failed
# host: the core evacuates them. Images are files uploaded to each host's base pool. A running
# guest's password is set through its QEMU guest agent.
CAPABILITIES = Capabilities(
    hypervisor_type=HYPERVISOR_TYPE, label='KVM', node_noun='KVM host',
    migration_modes=MIGRATION_MODES,
    evacuation=True,
    hosts_in_node=False,
    image_kind=IMAGE_FILE,
    guest_password=True,
    resize=True,
    # Rebalancing (issue 18 §1): the driver measures its domains' CPU time and memory; nothing balances KVM hosts
    # by itself, so the core does it (multihv.cloud.rebalance) with live migrations between hosts.
    usage=True,
    # Moves between hypervisor types (issue 19): converted disks imported as an instance (import_instance, importing.py);
    # a stopped domain's disk exported flattened and the domain retired after (export_disks, retire_converted, export.py).
    convert=True,
)
