# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instances: schedule, claim, spawn, record; power; delete. Private to multihv.cloud: do not import.

The order of a boot is Nova's: the instance is recorded ('building'), a node is
chosen by the scheduler, its resources are claimed atomically in the registry
(a claim that loses a race to another run tries the next node), the driver
builds it, and the record is completed. A failure at any step undoes the steps
before it, so no instance record, allocation, disk or VM is left behind.

Every operation on an instance holds its lease (instance:<uuid>, see leases.py) and checks
it before each irreversible step and in the writes of its outcome: a boot from before its
record exists, a delete, a power change, a rebuild.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import uuid as uuidlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import guest as _guest
from ansible_collections.multihv.cloud.plugins.module_utils._compute import images as _images
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute.records import Placement
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import NoValidHost, Request
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import IMAGE_FILE, IMAGE_TEMPLATE, InstanceSpec
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import utcnow
# A MAC an instance keeps for life; the registry derives one per NIC that asks for none (ports_access.py).
from ansible_collections.multihv.cloud.plugins.module_utils._registry.addressing import stable_mac

CLAIM_RETRIES = 5
# The driver's power action for each state an instance task asks for.
POWER_ACTION_FOR = {'started': 'start', 'stopped': 'stop', 'restarted': 'reboot'}


def request_for(flavor, image, params, group=None, group_nodes=None, hints=None):
    """A scheduler Request from a flavor, an image and the instance's placement options."""
    specs = flavor.get('extra_specs') or {}
    wanted_types = set(k for k in (specs.get('hypervisor_type'), image.get('hypervisor_type')) if k)
    if len(wanted_types) > 1:
        raise errors.MultihvError('flavor %s asks for hypervisor_type %s but image %s is for %s; nothing was created'
                                  % (flavor['name'], specs['hypervisor_type'], image['name'], image['hypervisor_type']))
    props = image.get('properties') or {}
    if props.get('status') == 'saving':  # a snapshot being captured (snapshots.py): its files are not complete
        raise errors.MultihvError('image %s is being captured from instance %s (status saving): nothing boots from it yet; '
                                  'nothing was created' % (image['name'], (props.get('origin') or {}).get('instance_name')))
    if props.get('min_ram') and flavor['ram_mb'] < props['min_ram']:
        raise errors.MultihvError('image %s needs at least %s MB RAM; flavor %s has %s; nothing was created'
                                  % (image['name'], props['min_ram'], flavor['name'], flavor['ram_mb']))
    if props.get('min_disk') and flavor['disk_gb'] < props['min_disk']:
        raise errors.MultihvError('image %s needs at least %s GB disk; flavor %s has %s; nothing was created'
                                  % (image['name'], props['min_disk'], flavor['name'], flavor['disk_gb']))
    hints = hints or {}
    aggregates = specs.get('aggregates') or []
    if isinstance(aggregates, str):
        aggregates = [aggregates]
    return Request(
        vcpus=flavor['vcpus'], memory_mb=flavor['ram_mb'], disk_gb=flavor['disk_gb'],
        hypervisor_type=next(iter(wanted_types)) if wanted_types else None,
        availability_zone=params.get('availability_zone') or specs.get('availability_zone'),
        aggregates=tuple(aggregates), node=params.get('node'),
        group_policy=group['policy'] if group else None, group_nodes=dict(group_nodes or {}),
        different_host=frozenset(hints.get('different_host', ())), same_host=frozenset(hints.get('same_host', ())))


def _hint_nodes(registry, hints):
    """Scheduler hints name instances (uuids or names); the scheduler wants their nodes."""
    result = {}
    for key in ('different_host', 'same_host'):
        nodes = []
        for ref in (hints or {}).get(key) or []:
            inst = registry.get_instance(uuid=ref) or registry.get_instance(name=ref)
            if inst is None:
                raise errors.NotFound('scheduler_hints.%s names instance %s, which does not exist; nothing was created' % (key, ref))
            nodes.append(inst.node)
        result[key] = nodes
    return result


def group_nodes(registry, group_name, without=None, untouched='nothing was created'):
    """(server group, {node: members on it}) for a scheduler Request; (None, {}) without a group.
    without: an instance uuid not to count (the one being moved)."""
    if not group_name:
        return None, {}
    group = registry.get_server_group(group_name)
    if group is None:
        raise errors.NotFound('server group %s does not exist; %s' % (group_name, untouched))
    counts = {}
    for member in registry.list_instances(server_group=group_name):
        if member.node and member.uuid != without:
            counts[member.node] = counts.get(member.node, 0) + 1
    return group, counts


def move_request(ctx, record, target_node, untouched, keep_backing=False):
    """The scheduler Request that places an existing instance elsewhere (a migration, an evacuation):
    its flavor, image, server group (itself not counted) and networks (with the backings they have on
    its node when keep_backing: a migration moves its NICs as they are), optionally pinned to
    target_node, its current node excluded."""
    registry = ctx.registry
    flavor = registry.get_flavor(record.flavor)
    image = registry.get_image(record.image) or {'name': record.image}
    group, members = group_nodes(registry, record.server_group, without=record.uuid, untouched=untouched)
    request = request_for(flavor, image, {'node': target_node}, group, members)
    return dataclasses.replace(request, exclude=request.exclude | frozenset([record.node]),
                               networks=_networks.for_move(ctx, record, keep_backing))


def plan(ctx, specs, refused=None):
    """Place each instance to boot: [Placement], sequentially on one Scheduler so that the
    placements of one batch see each other. NoValidHost names the filters. The first refusal is
    raised; with a list `refused` (a batch), each is added to it as {name, msg} and the others are placed."""
    placed = []
    scheduler = ctx.scheduler()
    for params in specs:
        try:
            placed.append(_place(ctx, scheduler, params, placed))
        except errors.MultihvError as exc:
            if refused is None:
                raise
            refused.append({'name': params['name'], 'msg': str(exc)})
    return placed


def _place(ctx, scheduler, params, placed):
    """The Placement of one instance to boot, the batch's earlier placements counted."""
    registry = ctx.registry
    flavor = registry.get_flavor(params['flavor'])
    if flavor is None:
        raise errors.NotFound('flavor %s does not exist; nothing was created' % params['flavor'])
    image = registry.get_image(params['image'])
    if image is None:
        raise errors.NotFound('image %s does not exist; nothing was created' % params['image'])
    if params.get('node'):
        kind = _nodes.type_in_cloud(ctx.drivers, params['node'], 'nothing was created')
        if image.get('hypervisor_type') and kind != image['hypervisor_type']:
            raise errors.MultihvError('image %s is for %s nodes; node %s is %s; nothing was created'
                                      % (image['name'], image['hypervisor_type'], params['node'], kind))
    # Guest data that cannot be delivered is refused with the plan, so that check mode says so too.
    _guest.config(params['name'], params['name'], _guest.key_identity(registry, params.get('key_name'), 'nothing was created'),
                  image, [], params.get('user_data'), params.get('admin_password'))
    group, members = group_nodes(registry, params.get('server_group'))
    for earlier in placed:  # members of this batch count for the group too
        if group and earlier.params.get('server_group') == group['name']:
            members[earlier.node] = members.get(earlier.node, 0) + 1
    req = request_for(flavor, image, params, group, members, _hint_nodes(registry, params.get('scheduler_hints')))
    req = dataclasses.replace(req, networks=_networks.required(_networks.requested(registry, params.get('networks'))))
    try:
        node, host = scheduler.place(req)
    except NoValidHost as exc:
        raise errors.MultihvError('cannot place instance %s: %s; nothing was created' % (params['name'], exc))
    return Placement(params, flavor, image, node, host, req)


class ClaimContended(errors.MultihvError):
    """Other runs kept taking the room on every node a claim was tried on (see claim_somewhere)."""


def claim_on(ctx, flavor, node, inst_uuid):
    """Claim the flavor's resources on node for the instance (atomic, see Registry.claim); True when they fit."""
    view = ctx.view(node)
    if view is None:
        return False
    resources = {'vcpus': flavor['vcpus'], 'memory_mb': flavor['ram_mb'], 'disk_gb': flavor['disk_gb']}
    return ctx.registry.claim(inst_uuid, node, view.hypervisor_type, resources, view.capacity)


def claim_for_move(ctx, flavor, node, record, migration_id):
    """Claim the instance's resources on the target node of migration migration_id (recorded accepted already; a
    migration or a convert); when that fails, the migration is recorded failed with the reason, and raised."""
    untouched = 'instance %s was not moved' % record.name
    try:
        if claim_on(ctx, flavor, node, record.uuid):
            return
        failure = errors.MultihvError('node %s has no room for instance %s any more (another run took it); %s'
                                      % (node, record.name, untouched))
    except errors.MultihvError as exc:
        failure = errors.MultihvError('claiming its resources on %s failed: %s; %s' % (node, exc, untouched))
    ctx.registry.update_migration(migration_id, status='failed', error=str(failure), finished_at=utcnow())
    raise failure


def claim_somewhere(ctx, flavor, inst_uuid, node, host, req):
    """Claim on the planned node; when another run took the room meanwhile, schedule again
    on the registry's current allocations without the nodes already tried (Nova's retry).
    Returns the (node, host) claimed on; NoValidHost when no node has room any more."""
    tried = []
    while not claim_on(ctx, flavor, node, inst_uuid):
        tried.append(node)
        if len(tried) >= CLAIM_RETRIES:
            raise ClaimContended('could not claim resources for instance %s on %s: other runs kept taking them'
                                 % (inst_uuid, ', '.join(tried)))
        node, host = ctx.scheduler().place(dataclasses.replace(req, exclude=req.exclude | frozenset(tried)))
    return node, host


def _image_ref(image, caps):
    """What a driver boots: a file image by its name (its base volume), a template image by its template."""
    if caps.image_kind == IMAGE_TEMPLATE:
        return (image.get('properties') or {}).get('template') or image['name']
    return image['name']


def ensure_image_on(registry, driver, image):
    """A file image's base on the driver's host: uploaded, or checked against the file."""
    props = image.get('properties') or {}
    if driver.capabilities.image_kind == IMAGE_FILE and props.get('source'):
        _images.upload(registry, driver, image['name'], props['source'], props.get('format', 'qcow2'))


def prepare_images(ctx, placed):
    """Ready each image once per node a plan uses, before any boot: checking a base hashes the
    whole image file, which must not happen once per instance. Returns {(node, image name): error}
    for the pairs that failed."""
    failed = {}
    for (node, name), image in dict((p.image_on_node, p.image) for p in placed).items():
        try:
            ensure_image_on(ctx.registry, ctx.driver_for(node), image)
        except errors.MultihvError as exc:
            failed[(node, name)] = exc
    return failed


def boot_one(ctx, params):
    """Plan, ready the image and boot one instance; errors are raised."""
    placed = plan(ctx, [params])
    for error in prepare_images(ctx, placed).values():
        if isinstance(error, errors.RegistryError):  # its message names the registry, not the boot
            raise errors.RegistryError('%s; nothing was created' % error) from error
        raise error
    return boot(ctx, placed[0])


def boot(ctx, placement):
    """Record, claim, spawn one placed instance whose image prepare_images readied on its node;
    undo everything on failure. Returns the record. The instance's lease is held from before its
    record exists to the end."""
    inst_uuid = placement.params.get('uuid') or str(uuidlib.uuid4())
    with _leases.on_instance(ctx.registry, inst_uuid, 'nothing was created', 'boot') as lease:
        return _boot(ctx, placement, inst_uuid, lease)


def _boot(ctx, placement, inst_uuid, lease):
    registry = ctx.registry
    params, flavor, image, node, host = placement.params, placement.flavor, placement.image, placement.node, placement.host
    identity = {'hostname': params.get('hostname') or params['name'], 'macs': [], 'networks': [],
                'metadata': params.get('metadata') or {}}
    # Guest data that cannot be delivered was refused by plan(), before any record, port, disk or VM.
    identity.update(_guest.key_identity(registry, params.get('key_name'), 'nothing was created'))
    registry.create_instance(uuid=inst_uuid, name=params['name'], node=node, host=host, flavor=flavor['name'],
                             image=image['name'], storage=params.get('storage') or 'local', identity=identity,
                             ha=bool(params.get('ha')), restart_priority=params.get('restart_priority') or 0,
                             server_group=params.get('server_group'), state='building')
    try:
        # Its ports (an address and a MAC per NIC), before the claim: a refused address leaves no allocation either.
        identity = _networks.allocate(registry, inst_uuid, identity, _networks.requested(registry, params.get('networks')))
        planned = node
        try:
            node, host = claim_somewhere(ctx, flavor, inst_uuid, node, host, placement.request)
        except NoValidHost as exc:
            raise errors.MultihvError('cannot place instance %s: %s; nothing was created' % (params['name'], exc))
        if node != planned:  # another run took the planned room: the record follows the claim
            registry.update_instance(inst_uuid, node=node, host=host)
        driver = ctx.driver_for(node)
        if node != planned:  # prepare_images readied the planned node only
            ensure_image_on(registry, driver, image)
        guest = _guest_config(registry, inst_uuid, params['name'], identity, image, params.get('user_data'),
                              params.get('admin_password'))
        spec = _spec(ctx, inst_uuid, params['name'], node, host, flavor, image, driver.capabilities, params.get('storage') or 'local',
                     identity, guest)
        power = 'stopped' if params.get('state') == 'stopped' else 'running'
        lease.check()
        state = spawn_in_state(driver, spec, power)
    except errors.SpawnUnconfirmed as exc:
        # A VM may be there, or still be made (a clone the vCenter finishes): its record is the only
        # trace the reconciler can go by, so it stays 'building' and keeps its allocation.
        raise errors.SpawnUnconfirmed('boot of instance %s (%s) on node %s failed: %s; its record stays in state building with '
                                      'its allocation: once node %s answers, multihv.cloud.reconcile destroys whatever VM of it '
                                      'is there and settles the record' % (params['name'], inst_uuid, node, exc, node)) from exc
    except BaseException:
        registry.delete_instance(inst_uuid)  # its allocation goes with it
        raise
    identity['macs'] = state.macs or identity['macs']
    try:
        with lease.guarded():
            return registry.update_instance(inst_uuid, host=state.host, identity=identity, state=power)[1]
    except errors.MultihvError as exc:
        # The VM runs but the registry could not be written (out of reach, locked, the lease lost): a holder that
        # may have lost its lease takes no further step; the record left 'building' tells the reconciler.
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.RegistryError
        raise kind('instance %s (%s) was built on node %s, host %s, but its record could not be completed: %s; the record stays '
                   'in state building: once the registry answers and no run holds the instance, multihv.cloud.reconcile '
                   'destroys that VM and records the instance error' % (params['name'], inst_uuid, node, state.host, exc)) from exc


def _guest_config(registry, inst_uuid, name, identity, image, user_data, password):
    """What the guest receives (guest.config): its recorded identity and key, its NICs with their addresses."""
    return _guest.config(inst_uuid, name, identity, image, _networks.guest_nics(registry, identity), user_data, password)


def _spec(ctx, inst_uuid, name, node, host, flavor, image, caps, storage, identity, guest):
    return InstanceSpec(uuid=inst_uuid, name=name, node=node, vcpus=flavor['vcpus'], memory_mb=flavor['ram_mb'],
                        disk_gb=flavor['disk_gb'], image=_image_ref(image, caps), storage=storage, host=host,
                        networks=_networks.backings_for(ctx, identity, node), hostname=identity.get('hostname') or name,
                        metadata=identity.get('metadata') or {}, guest=guest,
                        image_properties=dict(image.get('properties') or {}))


def spec_for(ctx, record, driver, node, host, flavor, image, user_data=None, password=None):
    """The InstanceSpec that makes a recorded instance again on node (rebuild, evacuation) through
    driver: its uuid, name, storage and identity (hostname, MACs, addresses, key, metadata) kept, its
    NICs on node's backings of their networks; its guest receives user_data and password when given
    (a new disk), else only what its record keeps."""
    identity = record.identity or {}
    guest = _guest_config(ctx.registry, record.uuid, record.name, identity, image, user_data, password)
    return _spec(ctx, record.uuid, record.name, node, host, flavor, image, driver.capabilities, record.storage, identity, guest)


def rebuild(ctx, record, image_name=None, user_data=None, password=None):
    """Nova's rebuild: the instance made again from its image (or image_name, of the node's
    hypervisor type) on the same node and host, keeping its uuid, name, MACs, addresses, key, flavor
    and allocation; its disk starts afresh, its guest receives user_data and password (the caller
    makes it). Returns the record after.

    Everything that can be checked is checked before the old VM goes. A spawn that fails
    after it went leaves the record in state 'error' (the instance has no VM then), as
    Nova does; rebuild again or delete it."""
    with _leases.on_instance(ctx.registry, record.uuid, 'instance %s was left untouched' % record.name, 'rebuild') as lease:
        return _rebuild(ctx, current(ctx.registry, record, 'it was left untouched'), image_name, user_data, password, lease)


def _rebuild(ctx, record, image_name, user_data, password, lease):
    registry = ctx.registry
    image = registry.get_image(image_name or record.image)
    if image is None:
        raise errors.NotFound('image %s does not exist; instance %s was left untouched' % (image_name or record.image, record.name))
    flavor = registry.get_flavor(record.flavor)
    kind = _nodes.hypervisor_type_of(ctx.drivers, record.node)
    if image.get('hypervisor_type') and kind and image['hypervisor_type'] != kind:
        raise errors.MultihvError('image %s is for %s nodes; instance %s is on %s node %s; it was left untouched'
                                  % (image['name'], image['hypervisor_type'], record.name, kind, record.node))
    request_for(flavor, image, {})  # the image's min_ram / min_disk against the flavor
    driver = ctx.driver_for(record.node)
    # Made before the old VM goes: guest data that cannot be delivered (user_data over its bound) or a network no
    # longer on the node refuses the rebuild with the instance untouched.
    spec = spec_for(ctx, record, driver, record.node, record.host, flavor, image, user_data, password)
    ensure_image_on(registry, driver, image)
    lease.check()
    driver.destroy(record.uuid, record.node)
    try:
        lease.check()
        state = spawn_in_state(driver, spec, record.state)
    except errors.MultihvError as exc:
        registry.update_instance(record.uuid, state='error')
        kind = errors.LeaseLost if isinstance(exc, errors.LeaseLost) else errors.MultihvError
        raise kind('rebuild of instance %s on %s failed after its old VM was destroyed: %s; the instance is '
                   'in state error: rebuild it again or delete it' % (record.name, record.node, exc)) from exc
    with lease.guarded():
        return registry.update_instance(record.uuid, image=image['name'], host=state.host,
                                        state='stopped' if record.state == 'stopped' else 'running')[1]


def spawn_in_state(driver, spec, power, destroy_disks=True):
    """driver.spawn(spec), then stopped when power is 'stopped'. A spawn that overstayed its
    deadline may still finish on the host, and a stop that failed leaves a VM the caller's
    record will not own: either way the VM is destroyed (its disks unless destroy_disks is
    False: a reused shared disk is not the spawn's to remove) before the error is raised."""
    try:
        state = driver.spawn(spec)
    except errors.Unreachable as exc:
        _destroy_or_say(driver, spec, destroy_disks, exc)
        raise
    if power == 'stopped':
        try:
            state = driver.set_power(spec.uuid, spec.node, 'stop')
        except BaseException as exc:
            _destroy_or_say(driver, spec, destroy_disks, exc)
            raise
    return state


def _destroy_or_say(driver, spec, destroy_disks, cause):
    """Destroy the VM a failed spawn may have left; errors.SpawnUnconfirmed (with the cause) when that
    failed too: the VM may be there, or still be made, and whoever called must keep the record."""
    try:
        driver.destroy(spec.uuid, spec.node, destroy_disks=destroy_disks)
    except errors.MultihvError as exc:
        raise errors.SpawnUnconfirmed('%s; the VM it may have left on node %s could not be destroyed: %s' % (cause, spec.node, exc)) from cause


def _boot_apart(ctx, placement):
    with ctx.apart() as worker:
        return boot(worker, placement)


def boot_many(ctx, specs, concurrency=4):
    """Plan a batch, ready its images, then boot with bounded concurrency. Returns (records, failures);
    an instance whose claim another run beat is scheduled again (claim_somewhere). One the plan
    refuses is a failure too; the others are booted."""
    refused = []
    records, failures = boot_placed(ctx, plan(ctx, specs, refused=refused), concurrency)
    return records, refused + failures


def boot_placed(ctx, placed, concurrency=4):
    """Ready the images of a planned batch (plan's Placements), then boot it with bounded concurrency:
    (records, failures), as boot_many."""
    unready = prepare_images(ctx, placed)
    records = []
    failures = [{'name': p.name, 'msg': '%s; nothing was created' % unready[p.image_on_node]} for p in placed if p.image_on_node in unready]
    placed = [p for p in placed if p.image_on_node not in unready]
    if len(placed) == 1:
        # One instance boots on this thread with this run's context: its endpoint is open already (the node
        # views), where a worker context would open it a second time (a libvirt connect, a vCenter login).
        try:
            records.append(boot(ctx, placed[0]))
        except errors.MultihvError as exc:
            failures.append({'name': placed[0].name, 'msg': str(exc)})
        return records, failures
    workers = max(1, min(concurrency, len(placed)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = dict((pool.submit(_boot_apart, ctx, p), p.name) for p in placed)
        for future in concurrent.futures.as_completed(futures):
            try:
                records.append(future.result())
            except errors.MultihvError as exc:
                failures.append({'name': futures[future], 'msg': str(exc)})
    return records, failures


def current(registry, record, untouched):
    """The record as it is now that this run holds its lease; errors.NotFound when another run deleted it."""
    now = registry.get_instance(uuid=record.uuid)
    if now is None:
        raise errors.NotFound('instance %s was deleted by another run; %s' % (record.name, untouched))
    return now


def delete(ctx, record):
    """Destroy an instance on its node, then its record and allocation, under its lease."""
    registry = ctx.registry
    with _leases.on_instance(registry, record.uuid, 'instance %s was not deleted' % record.name, 'delete') as lease:
        record = registry.get_instance(uuid=record.uuid)
        if record is None:
            return  # another run deleted it meanwhile
        if record.node and record.state != 'building':
            lease.check()
            ctx.driver_for(record.node).destroy(record.uuid, record.node)
        with lease.guarded():
            registry.delete_instance(record.uuid)


def live_power(ctx, record):
    """The power state the hypervisor reports for record's VM on its node (running, stopped, paused...);
    errors.NotFound when that node has no VM of the instance."""
    for state in ctx.driver_for(record.node).list_instances():
        if state.uuid == record.uuid and state.node == record.node:
            return state.power_state
    raise errors.NotFound('node %s has no VM of instance %s (%s); nothing was changed' % (record.node, record.name, record.uuid))


def power_change_needed(state, power):
    """True when a VM whose hypervisor reports `power` must be acted on to reach `state`."""
    return state == 'restarted' or (state == 'started' and power != 'running') or (state == 'stopped' and power != 'stopped')


def set_power(ctx, record, state):
    """Bring an instance to started / stopped / restarted under its lease, as its hypervisor reports
    it (not as the registry last recorded it: a host that lost power brings its VMs back shut off);
    returns (changed, record after). A record that disagreed with the hypervisor is corrected (changed)."""
    registry = ctx.registry
    untouched = 'instance %s was not %s' % (record.name, state)
    wanted = 'stopped' if state == 'stopped' else 'running'
    with _leases.on_instance(registry, record.uuid, untouched, 'power') as lease:
        record = current(registry, record, untouched)
        if power_change_needed(state, live_power(ctx, record)):
            lease.check()
            ctx.driver_for(record.node).set_power(record.uuid, record.node, POWER_ACTION_FOR[state])
        elif record.state == wanted:
            return False, record
        with lease.guarded():
            return True, registry.update_instance(record.uuid, state=wanted)[1]


def set_guest_password(ctx, record, password):
    """Set the admin password inside the running guest of an instance (Nova's set-password), through
    its driver (KVM: the QEMU guest agent), under the instance's lease. The user is its image's
    admin user. Refused, naming why, when the driver cannot or the instance does not run."""
    registry = ctx.registry
    untouched = 'the password of instance %s was not changed' % record.name
    driver = ctx.driver_for(record.node)
    if not driver.capabilities.guest_password:
        raise errors.MultihvError('%s instances cannot have their password set while they run (instance %s); rebuild it '
                                  'to give it a new one; %s' % (driver.capabilities.label, record.name, untouched))
    with _leases.on_instance(registry, record.uuid, untouched, 'set password') as lease:
        record = current(registry, record, untouched)
        power = live_power(ctx, record)
        if power != 'running':
            raise errors.MultihvError('instance %s is %s: its guest must run to set its password; %s' % (record.name, power, untouched))
        lease.check()
        driver.set_admin_password(record.uuid, record.node, _guest.admin_user(registry.get_image(record.image)), password)


__all__ = ['CLAIM_RETRIES', 'ClaimContended', 'boot', 'boot_many', 'boot_one', 'claim_on', 'spawn_in_state', 'delete', 'ensure_image_on',
           'group_nodes', 'live_power', 'move_request', 'power_change_needed', 'plan', 'prepare_images',
           'rebuild', 'request_for', 'set_guest_password', 'set_power', 'spec_for', 'stable_mac']
