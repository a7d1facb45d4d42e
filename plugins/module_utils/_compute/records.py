# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records the core passes between its steps. Private to multihv.cloud: do not import.

The registry returns instances and migrations as its own records (_registry/rows.py:
Instance, Migration; modules return their as_dict()) and flavors and images as plain dicts;
these are the core's own decisions, named so that no step reads another's by position.
"""

from __future__ import annotations

import copy
import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils._constants import STATE_UP
from ansible_collections.multihv.cloud.plugins.module_utils._registry.rows import Instance, Migration


@dataclasses.dataclass
class NodeView:
    """A node as users see it: live resources from its driver joined with its admin state from
    the registry and its placement from the cloud file (see nodes.node_view for the sums).

    physical, capacity, used, free, reserved: {vcpus, memory_mb, disk_gb}; capacity is
    (physical - reserved) x allocation ratio. hosts: the HostResources of its hypervisor hosts.
    extra: what only its hypervisor type reports (merged into as_dict()).
    used is what the hypervisor reports of every VM; adoption (issue 17 §3) shows it apart: allocated,
    {vcpus, memory_mb, disk_gb, instances}, what the registry's instances hold there (their claims), and
    unmanaged, {vms, vcpus, memory_mb}, the VMs without the cloud's mark (powered-on ones' vCPUs and RAM).
    """

    name: str
    hypervisor_type: str
    endpoint: str | None
    state: str
    reason: str | None
    enabled: bool
    disabled_reason: str | None
    forced_down: bool
    availability_zone: str | None
    aggregates: list | None
    allocation_ratios: dict
    reserved: dict
    reserved_for_failover: bool
    physical: dict
    capacity: dict
    used: dict
    free: dict
    instances: int
    largest_host_free: dict
    hosts: list
    extra: dict = dataclasses.field(default_factory=dict)
    allocated: dict = dataclasses.field(default_factory=dict)
    unmanaged: dict = dataclasses.field(default_factory=dict)

    @property
    def up(self):
        return self.state == STATE_UP

    def as_dict(self):
        """The view as modules, the inventory and events return it: one flat dict."""
        result = {}
        for field in dataclasses.fields(self):
            if field.name == 'hosts':
                result['hosts'] = [h.as_dict() for h in self.hosts]
            elif field.name != 'extra':
                result[field.name] = copy.deepcopy(getattr(self, field.name))
        result.update(copy.deepcopy(self.extra))
        return result


@dataclasses.dataclass
class Placement:
    """Where one instance to boot goes, as the scheduler chose it.

    params: the instance's options (name, flavor, image, storage, networks, ...);
    flavor and image: their registry rows; node, host: the scheduler's choice (host is
    the ESXi host inside a cluster node, else None); request: the scheduler Request it
    was chosen for, kept so that a lost claim can be scheduled again.
    """

    params: dict
    flavor: dict
    image: dict
    node: str
    host: str | None
    request: object

    @property
    def name(self):
        return self.params['name']

    @property
    def image_on_node(self):
        """(node, image name): what must be ready before the instance boots there."""
        return self.node, self.image['name']


@dataclasses.dataclass
class Move:
    """A checked migration request: the instance, where it goes, and how."""

    record: Instance
    mode: str
    source_node: str
    target_node: str
    target_host: str | None


@dataclasses.dataclass
class Evacuation:
    """One instance of a failed node placed for its rebuild: its record, the node and host
    claimed for it, and its migration record (type evacuation)."""

    record: Instance
    dest: str
    host: str | None
    migration: Migration
    lease: object = None  # the instance's _leases.Lease, held until the rebuild ended


__all__ = ['Evacuation', 'Move', 'NodeView', 'Placement']
