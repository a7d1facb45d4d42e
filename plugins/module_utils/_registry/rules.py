# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog's rules, written once: what instances hold fixed in the flavors, server groups and
networks they use. Private to multihv.cloud: do not import. No I/O.

Nova's rules: a flavor used by instances keeps its vcpus, ram_mb and disk_gb
(flavors are immutable: an instance is resized to another flavor) and cannot be
deleted; a server group with members keeps its policy (they were placed under
it) and cannot be deleted.

Two callers: the registry, inside the transaction that writes (so that no
concurrent run slips an instance in between the check and the write), and the
catalog core (_compute/catalog.py), so that check mode fails the way the real run
would. Each rule takes what the caller read (the names of the instances concerned,
the change) and raises `error` (errors.MultihvError unless the caller names a
subclass of it) with a message naming them and what was left as it was.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import FLAVOR_RESOURCES

# Messages name at most this many instances, then say how many more.
NAMES_SHOWN = 10


def name_list(names):
    """Instance names for a message: the first few, then how many more."""
    names = list(names)
    shown = ', '.join(names[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        shown += ' and %d more' % (len(names) - NAMES_SHOWN)
    return shown


def keep_used_flavor(name, users, changes, error=errors.MultihvError):
    """Flavor name, used by the instances named in users, may take changes ({field: new value})
    only when they leave its resources (FLAVOR_RESOURCES) as they are; extra_specs may change."""
    resized = [field for field in FLAVOR_RESOURCES if field in changes]
    if users and resized:
        raise error(
            'flavor %s is used by instance(s) %s: its %s cannot change (flavors are immutable; make a new flavor and '
            'resize the instances to it); flavor %s was left unchanged' % (name, name_list(users), ', '.join(resized), name))


def keep_flavor_in_use(name, users, error=errors.MultihvError):
    """Flavor name may be deleted only when no instance uses it (users: their names)."""
    if users:
        raise error('flavor %s is used by instance(s) %s; delete them or resize them to another flavor '
                    'first; flavor %s was left untouched' % (name, name_list(users), name))


def keep_policy_of_members(name, members, policy, new_policy, error=errors.MultihvError):
    """Server group name, whose policy is policy, may take new_policy only while it has no members (their names)."""
    if members and new_policy != policy:
        raise error(
            'server group %s has members %s: its policy cannot change from %s to %s while it has members; '
            'server group %s was left unchanged' % (name, name_list(members), policy, new_policy, name))


def keep_group_with_members(name, members, error=errors.MultihvError):
    """Server group name may be deleted only while it has no members (their names)."""
    if members:
        raise error('server group %s still has members %s; delete them or take them out of the group '
                    'first; server group %s was left untouched' % (name, name_list(members), name))


# Networks: the addressing of a network whose addresses instances hold is theirs (Neutron refuses to
# change a subnet's CIDR too); such a network cannot be deleted.

def keep_addressing_of_used_network(name, users, changes, error=errors.MultihvError):
    """Network name, whose ports the instances named in users hold, may take changes ({field: new value})
    only when they leave its cidr as it is."""
    if users and 'cidr' in changes:
        raise error('network %s has ports of instance(s) %s: its cidr cannot change while they hold addresses in it; '
                    'network %s was left unchanged' % (name, name_list(users), name))


def keep_gateway_free(name, gateway, holder, error=errors.MultihvError):
    """Network name may take gateway only when no port holds that address (holder: that port's instance's name, or None)."""
    if holder:
        raise error('network %s: gateway %s is the address of instance %s; network %s was left unchanged' % (name, gateway, holder, name))


def keep_network_in_use(name, users, error=errors.MultihvError):
    """Network name may be deleted only when no instance has a port on it (users: their names)."""
    if users:
        raise error('network %s is used by instance(s) %s; delete them first; network %s was left untouched'
                    % (name, name_list(users), name))
