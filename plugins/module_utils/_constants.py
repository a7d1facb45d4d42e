# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cloud's fixed vocabulary, written once for every layer (registry, core, drivers,
modules). Private to multihv.cloud: do not import. No imports, no I/O.
"""

from __future__ import annotations

# What an allocation holds on a node, and what a scheduler request needs (Nova's placement classes).
RESOURCES = ('vcpus', 'memory_mb', 'disk_gb')
# A flavor's sizes, Nova's names; fixed once instances use the flavor.
FLAVOR_RESOURCES = ('vcpus', 'ram_mb', 'disk_gb')
# Where an instance's disk lives on a KVM host: the host's own directory or one others see too.
STORAGE_MODES = ('shared', 'local')
# Nova's server group policies; the soft ones weigh, the others filter.
GROUP_POLICIES = ('affinity', 'anti-affinity', 'soft-affinity', 'soft-anti-affinity')
# What a driver's set_power does: start, stop (hard), shutdown (ACPI), reboot.
POWER_ACTIONS = ('start', 'stop', 'shutdown', 'reboot')
# A node that answers, and one that does not.
STATE_UP = 'up'
STATE_DOWN = 'down'
# How a running or stopped instance moves between nodes or hosts.
MIGRATION_MODES = ('live', 'block', 'cold')
# What a live migration does when its completion timeout runs out.
COMPLETION_ACTIONS = ('abort', 'force_complete')
# Nova's migration statuses; the last four are final. 'done' is Nova's too: an evacuation whose
# instance runs on the destination while its stale copy on the failed source still waits to be
# destroyed (then it becomes completed), or a resize waiting to be confirmed (completed) or
# reverted (reverted, Nova's name).
MIGRATION_STATUSES = ('accepted', 'preparing', 'running', 'done', 'completed', 'failed', 'cancelled', 'reverted')
# The migration type of a resize, and the state of its instance until it is confirmed or reverted (Nova's).
RESIZE = 'resize'
VERIFY_RESIZE = 'verify_resize'
# The state of an instance record whose VM is being adopted (multihv.cloud.instance_import), until its VM is marked.
ADOPTING = 'adopting'
# How long a run waits for another run's work on the same instance (a boot, a move, a power change) to end.
INSTANCE_LEASE_WAIT_SECONDS = 5.0
# How long a run waits for another run's work on a whole node (drain, evacuation, an HA pass): not at all,
# the second is refused (or, in an HA pass, skipped) with the holder named.
NODE_LEASE_WAIT_SECONDS = 0.0
# How long a lease lives without renewal. Its holder's heartbeat renews it every third of that while the
# work runs, so a live holder's lease never ends and a dead holder's ends within this. The default of the
# cloud file's registry.lease_seconds, which may not be shorter than MIN_LEASE_SECONDS.
LEASE_LIFETIME_SECONDS = 30.0
MIN_LEASE_SECONDS = 6
