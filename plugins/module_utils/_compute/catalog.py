# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The catalog: flavors and server groups as users manage them. Private to multihv.cloud: do not import.

The rules are Nova's: a flavor used by instances keeps its vcpus, ram_mb and
disk_gb (resize an instance to another flavor instead) and cannot be deleted;
a server group with members keeps its policy and cannot be deleted. They live in
_registry/rules.py: the registry checks them inside its transactions, so that a
concurrent run cannot slip an instance in between the check here and the write;
checking them here too makes check mode fail the way the real run would.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import FLAVOR_RESOURCES, GROUP_POLICIES
from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds
from ansible_collections.multihv.cloud.plugins.module_utils._registry import rules

FLAVOR_MINIMUM = {'vcpus': 1, 'ram_mb': 1, 'disk_gb': 0}
# What the scheduler reads from a flavor's extra_specs; other keys must be
# namespaced (``namespace:key``, as Nova's), so that a typo is an error, not ignored.
EXTRA_SPECS = ('hypervisor_type', 'aggregates', 'availability_zone')
STATES = ('present', 'absent')


def _check_name(kind, name):
    if not isinstance(name, str) or not name.strip():
        raise errors.MultihvError('a %s needs a non-empty name, got %r; nothing was changed' % (kind, name))


def _check_state(kind, name, state):
    if state not in STATES:
        raise errors.MultihvError('state must be present or absent, got %r; %s %s was left unchanged' % (state, kind, name))


# ------------------------------------------------------------------ flavors

def check_flavor_fields(name, fields):
    """The given fields of flavor name are usable; errors.MultihvError saying which is not and why."""
    unknown = sorted(set(fields) - set(FLAVOR_RESOURCES + ('extra_specs',)))
    if unknown:
        raise errors.MultihvError('unknown flavor setting(s) %s; flavor %s was left unchanged' % (', '.join(unknown), name))
    for field, minimum in FLAVOR_MINIMUM.items():
        value = fields.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise errors.MultihvError('%s must be an integer of at least %d, got %r; flavor %s was left unchanged'
                                      % (field, minimum, value, name))
    if fields.get('extra_specs') is not None:
        check_extra_specs(name, fields['extra_specs'])


def check_extra_specs(name, specs):
    """The keys the scheduler reads have values it can use; other keys are namespaced."""
    if not isinstance(specs, dict):
        raise errors.MultihvError('extra_specs must be a dict, got %r; flavor %s was left unchanged' % (specs, name))
    for key, value in specs.items():
        where = 'extra_specs.%s of flavor %s' % (key, name)
        if key == 'hypervisor_type':
            if value not in kinds.HYPERVISOR_TYPES:
                raise errors.MultihvError('%s must be one of %s, got %r; the flavor was left unchanged'
                                          % (where, ', '.join(kinds.HYPERVISOR_TYPES), value))
        elif key == 'aggregates':
            if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
                raise errors.MultihvError('%s must be a list of aggregate names, got %r; the flavor was left unchanged' % (where, value))
        elif key == 'availability_zone':
            if not isinstance(value, str) or not value:
                raise errors.MultihvError('%s must be a zone name, got %r; the flavor was left unchanged' % (where, value))
        elif ':' not in str(key):
            raise errors.MultihvError('unknown extra_specs key %s of flavor %s: the scheduler reads %s; other keys must be '
                                      'namespaced (namespace:key); the flavor was left unchanged' % (key, name, ', '.join(EXTRA_SPECS)))


def flavor_view(row):
    """A flavor as users see it (no timestamps, so that diffs show only what changed), or None."""
    if row is None:
        return None
    return {'name': row['name'], 'vcpus': row['vcpus'], 'ram_mb': row['ram_mb'], 'disk_gb': row['disk_gb'],
            'extra_specs': row['extra_specs'] or {}}


def set_flavor(registry, name, state, fields, check_mode=False):
    """Make flavor name present with the fields given (the others kept), or absent.

    fields: vcpus, ram_mb, disk_gb, extra_specs; None values are not given. A
    new flavor needs vcpus and ram_mb; disk_gb is 0 and extra_specs {} unless
    given; extra_specs replaces the stored ones whole. Returns (changed, before,
    after) with before/after as flavor_view() (None when absent).
    """
    _check_name('flavor', name)
    _check_state('flavor', name, state)
    given = dict((field, value) for field, value in (fields or {}).items() if value is not None)
    check_flavor_fields(name, given)
    with registry.transaction():
        before = flavor_view(registry.get_flavor(name, lock=True))
        if state == 'absent':
            return _delete_flavor(registry, name, before, check_mode)
        after = _flavor_after(name, before, given)
        if after == before:
            return False, before, after
        changes = dict((field, value) for field, value in after.items() if field != 'name' and (before is None or before[field] != value))
        if before is not None:
            rules.keep_used_flavor(name, _users(registry, name), changes)
        if check_mode:
            return True, before, after
        written = registry.set_flavor(name, **changes)[1]
        return True, before, flavor_view(written)


def _flavor_after(name, before, given):
    if before is None:
        missing = [field for field in ('vcpus', 'ram_mb') if field not in given]
        if missing:
            raise errors.MultihvError('flavor %s does not exist; give %s to create it; nothing was created' % (name, ' and '.join(missing)))
        before = {'name': name, 'disk_gb': 0, 'extra_specs': {}}
    after = dict(before)
    after.update(given)
    return after


def _delete_flavor(registry, name, before, check_mode):
    if before is None:
        return False, None, None
    rules.keep_flavor_in_use(name, _users(registry, name))
    if not check_mode:
        registry.delete_flavor(name)
    return True, before, None


def _users(registry, name):
    return [instance.name for instance in registry.list_instances(flavor=name)]


# ------------------------------------------------------------------ server groups

def server_group_view(row, members):
    """A server group as users see it: name, policy and its members' names; None when absent."""
    if row is None:
        return None
    return {'name': row['name'], 'policy': row['policy'], 'members': list(members)}


def set_server_group(registry, name, state, fields, check_mode=False):
    """Make server group name present with the policy given (kept when not given), or absent.

    fields: policy (one of GROUP_POLICIES; needed to create a group).
    A group with members keeps its policy and cannot be deleted. Returns
    (changed, before, after) with before/after as server_group_view().
    """
    _check_name('server group', name)
    _check_state('server group', name, state)
    policy = (fields or {}).get('policy')
    if policy is not None and policy not in GROUP_POLICIES:
        raise errors.MultihvError('unknown server group policy %r; use one of %s; server group %s was left unchanged'
                                  % (policy, ', '.join(GROUP_POLICIES), name))
    with registry.transaction():
        row = registry.get_server_group(name, lock=True)
        members = [instance.name for instance in registry.list_instances(server_group=name)] if row else []
        before = server_group_view(row, members)
        if state == 'absent':
            return _delete_server_group(registry, name, before, check_mode)
        if before is None and policy is None:
            raise errors.MultihvError('server group %s does not exist; give its policy (one of %s) to create it; nothing was created'
                                      % (name, ', '.join(GROUP_POLICIES)))
        after = dict(before or {'name': name, 'members': []})
        after['policy'] = policy or after['policy']
        if after == before:
            return False, before, after
        if before is not None:
            rules.keep_policy_of_members(name, members, before['policy'], after['policy'])
        if not check_mode:
            registry.set_server_group(name, after['policy'])
        return True, before, after


def _delete_server_group(registry, name, before, check_mode):
    if before is None:
        return False, None, None
    rules.keep_group_with_members(name, before['members'])
    if not check_mode:
        registry.delete_server_group(name)
    return True, before, None
