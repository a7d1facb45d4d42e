# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What one `instance` task does: idempotency by name, check mode, batches.
Private to multihv.cloud: do not import.

The core works on the registry's Instance records; the task's result (instance, instances,
diff) holds them as plain dicts (as_dict()), made here as the result is filled in.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import bounds as _bounds
from ansible_collections.multihv.cloud.plugins.module_utils._compute import guest as _guest
from ansible_collections.multihv.cloud.plugins.module_utils._compute import instances as _instances
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import node_rules as _node_rules
from ansible_collections.multihv.cloud.plugins.module_utils._compute import resize as _resize
from ansible_collections.multihv.cloud.plugins.module_utils._constants import VERIFY_RESIZE

PER_INSTANCE = ('flavor', 'image', 'node', 'availability_zone', 'scheduler_hints', 'server_group', 'storage', 'networks',
                'hostname', 'key_name', 'user_data', 'admin_password', 'update_password', 'metadata', 'ha', 'restart_priority',
                'state')
# The module's default for concurrency (how many instances of a batch boot at once).
DEFAULT_CONCURRENCY = 4


def items(params):
    """One dict of options per instance: the task's options with each item's own over them (an
    item's option left out is None, and the task's applies)."""
    if params.get('instances') is None:
        return [dict((k, params.get(k)) for k in PER_INSTANCE + ('name',))]
    result = []
    for index, item in enumerate(params['instances']):
        if not isinstance(item, dict) or not item.get('name'):
            raise errors.MultihvError('instances[%d] needs a name; nothing was changed' % index)
        unknown = set(item) - set(PER_INSTANCE) - {'name'}
        if unknown:
            raise errors.MultihvError('instances[%d] (%s) has unknown options %s; nothing was changed'
                                      % (index, item['name'], ', '.join(sorted(unknown))))
        merged = dict((k, params.get(k)) for k in PER_INSTANCE)
        merged.update((k, v) for k, v in item.items() if v is not None)
        result.append(merged)
    return result


def _with_password(item, generated):
    """item with the admin password its new disk's guest receives: the one given, else a new one
    (remembered in generated[name], to be returned once)."""
    if item.get('admin_password'):
        return item
    password = _guest.new_password()
    generated[item['name']] = password
    return dict(item, admin_password=password)


def _check_same(record, wanted):
    """An existing instance is left as it is; asking for another image (except to rebuild it) is an
    error; another flavor is a resize (see _resize_or_finish), refused with a rebuild."""
    for key in ('flavor',) if wanted['state'] == 'rebuilt' else ('image',):
        have = getattr(record, key)
        if wanted.get(key) and wanted[key] != have:
            how = ('a rebuild keeps the flavor: resize it (another flavor, without state rebuilt) in a task of its own' if key == 'flavor'
                   else 'rebuild it on that image with state rebuilt (a fresh disk)')
            raise errors.MultihvError('instance %s exists with %s %s, not %s; %s. Nothing was changed' % (record.name, key, have, wanted[key], how))
    identity = record.identity or {}
    for key, have in (('key_name', identity.get('key_name')), ('hostname', identity.get('hostname') or record.name)):
        if wanted.get(key) and wanted[key] != have:
            raise errors.MultihvError('instance %s exists with %s %s, not %s; its guest got it at its first boot and keeps it: '
                                      'delete the instance first. Nothing was changed' % (record.name, key, have or '(none)', wanted[key]))
    if wanted.get('networks') is not None and not _networks.same_nics(record.identity, wanted['networks']):
        have = ', '.join('%s %s' % (nic['network'], nic.get('address') or nic['mac']) for nic in (record.identity or {}).get('networks') or [])
        raise errors.MultihvError('instance %s exists with other NICs (%s); NICs are not added, removed or re-addressed on an '
                                  'existing instance: delete it first. Nothing was changed' % (record.name, have or 'none'))


def _password(ctx, record, item, check_mode):
    """Set the guest's password when the item says so (update_password always); True then: a password cannot be read
    back from a guest, so setting it always changes."""
    if item.get('update_password') != 'always' or not item.get('admin_password'):
        return False
    if not check_mode:
        _instances.set_guest_password(ctx, record, item['admin_password'])
    return True


def _ha_settings(ctx, record, item, check_mode):
    """(changed, record after) of the item's ha and restart_priority on an existing instance (those it gives and that
    differ), recorded under its lease: the order the core's evacuation and instance HA follow, and what the node's own
    HA is told after the task (node_rules)."""
    given = dict((key, item[key]) for key in ('ha', 'restart_priority') if item.get(key) is not None)
    differs = dict((key, value) for key, value in given.items() if value != (bool(record.ha) if key == 'ha' else record.restart_priority))
    if not differs:
        return False, record
    if check_mode:
        return True, dataclasses.replace(record, **differs)
    untouched = 'the HA settings of instance %s were not changed' % record.name
    with _leases.on_instance(ctx.registry, record.uuid, untouched, 'ha settings') as lease:
        _instances.current(ctx.registry, record, untouched)
        with lease.guarded():
            return True, ctx.registry.update_instance(record.uuid, **differs)[1]


def _resize_or_finish(ctx, record, item, check_mode):
    """(changed, record after) of the resize part of an item: a resize when it names another flavor,
    a confirmation or a revert when its state says so; anything else asked of an instance waiting in
    verify_resize is refused, naming the way out."""
    if item['state'] in (_resize.CONFIRMED, _resize.REVERTED):
        if item.get('flavor') and record.state != VERIFY_RESIZE and item['flavor'] != record.flavor:
            raise errors.MultihvError('instance %s has flavor %s and no resize waiting: state %s with flavor %s confirms nothing; '
                                      'nothing was changed' % (record.name, record.flavor, item['state'], item['flavor']))
        return _resize.finish(ctx, record, item['state'], check_mode)
    resizing = bool(item.get('flavor')) and (item['flavor'] != record.flavor or record.state == VERIFY_RESIZE)
    if resizing or record.state == VERIFY_RESIZE:
        # A resize keeps the instance's power as it was, and until it is confirmed or reverted the power does
        # not change (Nova's RESIZED refuses stop, start, reboot and rebuild): a state that asks otherwise is refused.
        kept = _power_kept(ctx.registry, record)
        wanted = {'started': 'running', 'stopped': 'stopped'}.get(item['state'])
        if item['state'] in ('restarted', 'rebuilt') or (wanted and wanted != kept):
            doing = 'resized to flavor %s' % item['flavor'] if resizing else 'waiting for its resize to flavor %s' % record.flavor
            raise errors.MultihvError('instance %s is %s (%s before the resize): it keeps its power until the resize is confirmed or '
                                      'reverted (state %s or %s), so it cannot be %s in the same step; nothing was changed'
                                      % (record.name, doing, kept, _resize.CONFIRMED, _resize.REVERTED, item['state']))
    if resizing:
        return _resize.resize(ctx, record, item['flavor'], check_mode, item.get('node'))
    return False, record


def _power_kept(registry, record):
    """The power state an instance has through a resize: its recorded one, or the one its waiting resize recorded."""
    if record.state != VERIFY_RESIZE:
        return record.state
    migration = _resize.pending(registry, record)
    return (migration.stats or {}).get('power') if migration is not None else None


def _shown(record):
    """An Instance as the task returns it: a plain dict; None stays None."""
    return record.as_dict() if record is not None else None


def run(ctx, params, check_mode):
    """The instance task over a Context: boot, power, rebuild or delete each instance it names.
    In a batch (instances given) an instance refused before anything is made for it is one of
    the result's failures and the others go on; a single instance's refusal is raised."""
    concurrency = _bounds.at_least('concurrency', params.get('concurrency', DEFAULT_CONCURRENCY), 1, 'nothing was changed')
    wanted = items(params)
    batch = params.get('instances') is not None
    registry = ctx.registry
    changed = False
    before, after, to_boot, to_delete, generated, failures = {}, {}, [], [], {}, []
    touched = []  # nodes whose instances came, went, were made again or got new ha settings: their node rules follow
    for item in wanted:
        record = registry.get_instance(name=item['name'])
        before[item['name']] = _shown(record)
        if record is None:
            if item['state'] in (_resize.CONFIRMED, _resize.REVERTED):
                message = 'instance %s does not exist: it has no resize to settle; nothing was changed' % item['name']
                if not batch:
                    raise errors.NotFound(message)
                failures.append({'name': item['name'], 'msg': message})
                after[item['name']] = None
                continue
            if item['state'] != 'absent':
                missing = [key for key in ('flavor', 'image') if not item.get(key)]
                if missing:
                    message = ('instance %s does not exist: %s is required to boot it; nothing was changed'
                               % (item['name'], missing[0]))
                    if not batch:
                        raise errors.MultihvError(message)
                    failures.append({'name': item['name'], 'msg': message})
                    after[item['name']] = None
                    continue
                to_boot.append(item if check_mode else _with_password(item, generated))
            after[item['name']] = None
            continue
        if item['state'] == 'absent':
            changed = True
            if not check_mode:
                to_delete.append(record)
            after[item['name']] = None
            continue
        _check_same(record, item)
        moved, record = _ha_settings(ctx, record, item, check_mode)
        changed = changed or moved
        touched += [record.node] if moved else []
        was = record.node
        moved, record = _resize_or_finish(ctx, record, item, check_mode)
        changed = changed or moved
        touched += [was, record.node] if moved else []
        if item['state'] in (_resize.CONFIRMED, _resize.REVERTED) or record.state == VERIFY_RESIZE:
            # A resize waiting for its confirmation keeps its power as it is (Nova's RESIZED refuses
            # stop, start and rebuild): only confirm, revert or delete move it on.
            after[item['name']] = _shown(record)
            changed = _password(ctx, record, item, check_mode) or changed
            continue
        if item['state'] == 'rebuilt':
            changed = True
            if not check_mode:
                given = _with_password(item, generated)
                record = _instances.rebuild(ctx, record, item.get('image'), item.get('user_data'), given['admin_password'])
                touched.append(record.node)  # a new VM
            after[item['name']] = _shown(record)
        elif item['state'] in ('started', 'present', 'stopped', 'restarted'):
            state = 'started' if item['state'] == 'present' else item['state']
            if check_mode:
                recorded = 'stopped' if state == 'stopped' else 'running'
                moved = (_instances.power_change_needed(state, _instances.live_power(ctx, record))
                         or record.state != recorded)
                changed = changed or moved
                after[item['name']] = _shown(record)
            else:
                moved, record = _instances.set_power(ctx, record, state)
                changed = changed or moved
                after[item['name']] = _shown(record)
            changed = _password(ctx, record, item, check_mode) or changed
    # Deletions before boots: the room they free is there for the batch's new instances.
    touched += _delete_all(ctx, to_delete, concurrency)
    if to_boot and not check_mode and not batch:
        changed = True
        after[to_boot[0]['name']] = _shown(_instances.boot_one(ctx, to_boot[0]))
        touched.append(after[to_boot[0]['name']]['node'])
    elif to_boot:
        # A batch's refusals are its failures; a single instance's is raised.
        placed = _instances.plan(ctx, to_boot, refused=failures if batch else None)
        changed = changed or bool(placed)
        if check_mode:
            for placement in placed:
                after[placement.name] = {'name': placement.name, 'node': placement.node, 'host': placement.host,
                                         'flavor': placement.flavor['name'], 'image': placement.image['name'],
                                         'state': 'would be built'}
        else:
            records, refused = _instances.boot_placed(ctx, placed, concurrency)
            failures += refused
            for record in records:
                after[record.name] = _shown(record)
                touched.append(record.node)
    result = {'changed': changed, 'diff': {'before': before, 'after': after}}
    if touched and not check_mode:
        # Once per node, after the task's work (never in check mode): derived state, a warning on failure (node_rules.py).
        _node_rules.after(ctx, result, touched)
    if params.get('instances') is None:
        result['instance'] = _returned(after[wanted[0]['name']], generated)
        result['diff'] = {'before': before[wanted[0]['name']] or {}, 'after': after[wanted[0]['name']] or {}}
    else:
        result['instances'] = [_returned(after[i['name']], generated) for i in wanted if after.get(i['name'])]
        result['failures'] = failures
    return result


def _delete_apart(ctx, record):
    with ctx.apart(views=False) as worker:
        _instances.delete(worker, record)


def _delete_all(ctx, records, concurrency):
    """Delete the records' instances, `concurrency` at once (each under its own lease, on a worker context
    of its own); the nodes they were on. All are tried; then the one failure is raised as it is, several
    together, naming each instance (the others are deleted)."""
    if len(records) <= 1 or concurrency == 1:
        for record in records:
            _instances.delete(ctx, record)
        return [record.node for record in records]
    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(concurrency, len(records))) as pool:
        futures = dict((pool.submit(_delete_apart, ctx, record), record) for record in records)
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except errors.MultihvError as exc:
                failed.append((futures[future], exc))
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        failed.sort(key=lambda pair: pair[0].name)
        raise errors.MultihvError('%d of %d instances could not be deleted (the others were): %s' % (
            len(failed), len(records), '; '.join('%s: %s' % (record.name, exc) for record, exc in failed))) from failed[0][1]
    return [record.node for record in records]


def _returned(shown, generated):
    """An instance as the task returns it: with the password generated for its new disk, once (never in the diff)."""
    if shown is None or shown.get('name') not in generated or shown.get('state') == 'error':
        return shown
    return dict(shown, admin_password=generated[shown['name']])
