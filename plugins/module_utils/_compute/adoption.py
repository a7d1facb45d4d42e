# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Adoption: the VMs an estate already has made instances of the cloud (issue 17 §3). Private to
multihv.cloud: do not import.

The candidates are the reconciler's orphan VMs (reconcile.unrecorded: VMs whose uuid the registry
does not have) among every VM of one node, the cloud's mark or not (ComputeDriver.list_vms). For
each, before anything is written: a flavor (named: it must fit the VM, vcpus, ram and disk each at
least the VM's; else matched: the smallest flavor whose vcpus and ram_mb equal the VM's and whose
disk_gb is at least its disks' GiB, rounded up, as disk sizes rarely are whole GiB), its NICs (one on
a registry network whose backing on the node is the NIC's gets a port with the VM's MAC; the others
are recorded on their backing as they are, with no port nor address), and room on the node (the
registry's allocations and the batch's earlier adoptions against the node's capacity).

Then, for each, in the order of a boot: the instance's lease, its record (state 'adopting'), its
ports and its claim (atomic; refused: the record goes, nothing is left), the VM's mark (driver.adopt),
the record's power state. A run cut off between the record and the mark leaves the record 'adopting'
with its claim; the VM carries no mark or the instance's: the next instance_import of that VM
finishes it (the reconciler leaves 'adopting' records alone: they are never 'building', whose VMs it
destroys).
"""

from __future__ import annotations

import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile
from ansible_collections.multihv.cloud.plugins.module_utils._compute.instances import claim_on
from ansible_collections.multihv.cloud.plugins.module_utils._constants import ADOPTING, RESOURCES

# The record's state between its write and the VM's mark (see the module docstring).
# How many VMs one task adopts at most when it takes all of a node's (a bound the task may raise).
DEFAULT_LIMIT = 20
UNTOUCHED = 'nothing was changed'
# The image a record names when the task names none (the registry wants one): no image of the catalog has
# this name, so a rebuild or an evacuation that would boot the instance from its image says it does not exist.
NO_IMAGE = '-'


@dataclasses.dataclass
class Adoption:
    """One VM to adopt, checked: its VMDetails, the flavor and image (a registry row or None) its record
    names, its NICs as the record will hold them ([{network, mac, port}]: port True for a registry network's
    port), and resume: a record of it is 'adopting' already (a run was cut off)."""

    vm: object
    flavor: dict
    image: dict | None
    nics: list
    resume: bool = False

    @property
    def name(self):
        return self.vm.name

    def as_dict(self):
        """What check mode shows (and the result names): the VM, the flavor and image, its NICs, where its disks are."""
        vm = self.vm
        return {'name': vm.name, 'uuid': vm.uuid, 'node': vm.node, 'host': vm.host, 'power_state': vm.power_state,
                'flavor': self.flavor['name'], 'image': self.image['name'] if self.image else NO_IMAGE, 'storage': vm.storage,
                'datastores': list(vm.datastores), 'disks_outside': list(vm.outside),
                'vm': {'vcpus': vm.vcpus, 'memory_mb': vm.memory_mb, 'disk_gb': vm.disk_gb},
                'nics': [{'network': nic['network'], 'mac': nic['mac'], 'port': nic['port']} for nic in self.nics]}


def _needs(flavor):
    return {'vcpus': flavor['vcpus'], 'memory_mb': flavor['ram_mb'], 'disk_gb': flavor['disk_gb']}


def _kind_fits(flavor, kind):
    wanted = (flavor.get('extra_specs') or {}).get('hypervisor_type')
    return not wanted or wanted == kind


def match_flavor(flavors, vm, kind, named=None):
    """The flavor a VM's record names: named (its row; it must fit the VM), else the smallest of flavors whose
    vcpus and ram_mb are the VM's and disk_gb at least its disks'. errors.MultihvError saying why there is none."""
    size = '%s vCPUs, %s MB RAM, %s GB disk' % (vm.vcpus, vm.memory_mb, vm.disk_gb)
    if named is not None:
        if not _kind_fits(named, kind):
            raise errors.MultihvError('flavor %s is for %s nodes; VM %s is on a %s node' % (
                named['name'], named['extra_specs']['hypervisor_type'], vm.name, kind))
        short = [key for key, have in (('vcpus', vm.vcpus), ('ram_mb', vm.memory_mb), ('disk_gb', vm.disk_gb)) if named[key] < have]
        if short:
            raise errors.MultihvError('flavor %s (%s vCPUs, %s MB RAM, %s GB disk) is smaller than VM %s (%s) in %s: a named flavor '
                                      'must fit the VM' % (named['name'], named['vcpus'], named['ram_mb'], named['disk_gb'], vm.name,
                                                           size, ', '.join(short)))
        return named
    fitting = [f for f in flavors if f['vcpus'] == vm.vcpus and f['ram_mb'] == vm.memory_mb and f['disk_gb'] >= vm.disk_gb
               and _kind_fits(f, kind)]
    if not fitting:
        raise errors.MultihvError('no flavor has the %s vCPUs and %s MB RAM of VM %s with at least its %s GB disk: create one, or '
                                  'name one with flavor (it must fit the VM)' % (vm.vcpus, vm.memory_mb, vm.name, vm.disk_gb))
    return min(fitting, key=lambda f: (f['disk_gb'], f['name']))


def nic_plan(registry, vm, networks_here):
    """[{network, mac, port}] of the VM's NICs in order: on the registry network whose backing on the node is the
    NIC's (networks_here: {network: backing}; the first by name when several are), port True; else on the NIC's
    backing as it is, port False. A MAC another instance's port holds refuses the VM."""
    by_backing = {}
    for name, backing in sorted(networks_here.items()):
        by_backing.setdefault(backing, name)
    result = []
    for index, nic in enumerate(vm.nics):
        holder = registry.port_holder(mac=nic['mac'])
        if holder is not None:
            raise errors.MultihvError('the MAC %s of NIC %d of VM %s is the MAC of a port of instance %s' % (nic['mac'], index, vm.name, holder))
        network = by_backing.get(nic.get('backing'))
        result.append({'network': network or nic.get('backing') or '', 'mac': nic['mac'], 'port': network is not None})
    return result


class Survey:
    """What one node has, read once: its VMs (list_vms), the registry's records, flavors and networks."""

    def __init__(self, ctx, node):
        self.ctx, self.node = ctx, node
        self.kind = ctx.hypervisor_type(node)
        if self.kind is None:
            raise errors.NotFound('node %s is not in the cloud file; %s' % (node, UNTOUCHED))
        view = ctx.view(node)
        if view is None or not view.up:
            reason = view.reason if view else 'no endpoint reports it'
            raise errors.MultihvError('node %s cannot be reached (%s); %s' % (node, reason, UNTOUCHED))
        self.view = view
        self.vms = ctx.driver_for(node).list_vms(node)
        registry = ctx.registry
        self.records = dict((r.uuid, r) for r in registry.list_instances())
        self.by_name = dict((r.name, r) for r in self.records.values())
        self.flavors = registry.list_flavors()
        self.networks_here = _networks.on_node(registry.list_networks(), _networks.node_facts(ctx, node))
        uuids = {}
        for vm in self.vms:
            uuids.setdefault(vm.uuid, []).append(vm)
        self.shared_uuid = dict((u, vms) for u, vms in uuids.items() if len(vms) > 1)
        # The reconciler's orphans on this node: VMs whose uuid the registry does not have.
        self.unrecorded = [vm for _uuid, _node, vm in _reconcile.unrecorded(dict((u, {node: vms[0]}) for u, vms in uuids.items()),
                                                                            self.records)]
        # Records a run cut off between their write and the VM's mark.
        self.interrupted = [uuids[r.uuid][0] for r in self.records.values()
                            if r.state == ADOPTING and r.node == node and r.uuid in uuids and len(uuids[r.uuid]) == 1]

    def named(self, name):
        """The VM of that name on the node; errors.NotFound naming the VMs without a record there."""
        found = [vm for vm in self.vms if vm.name == name]
        if len(found) > 1:
            raise errors.MultihvError('node %s has %d VMs named %s (%s): adopt them apart by renaming' % (
                self.node, len(found), name, ', '.join(vm.uuid for vm in found)))
        if not found:
            names = sorted(vm.name for vm in self.unrecorded)
            raise errors.NotFound('node %s has no VM named %s; its VMs with no instance record are: %s' % (
                self.node, name, ', '.join(names[:20]) + (' and %d more' % (len(names) - 20) if len(names) > 20 else '') if names else 'none'))
        return found[0]


def _check(survey, vm, flavor_row, image, held):
    """The Adoption of vm, or errors.MultihvError saying why not; held: what the node's allocations and the
    batch's earlier adoptions hold, to which a fitting adoption is added."""
    record = survey.records.get(vm.uuid)
    resume = record is not None and record.state == ADOPTING
    if record is not None and not resume:
        raise errors.MultihvError('VM %s (%s) is instance %s already, which the cloud %s' % (
            vm.name, vm.uuid, record.name, 'adopted on node %s' % record.node if 'adopted' in (record.identity or {}) else 'built'))
    if vm.uuid in survey.shared_uuid:
        raise errors.MultihvError('VM %s shares its uuid %s with VM(s) %s on node %s: an instance needs a uuid of its own' % (
            vm.name, vm.uuid, ', '.join(v.name for v in survey.shared_uuid[vm.uuid] if v is not vm), survey.node))
    if vm.marked and vm.marked_uuid != vm.uuid:
        raise errors.MultihvError('VM %s carries the mark of instance %s, not its own uuid %s (a copy of an instance)' % (
            vm.name, vm.marked_uuid, vm.uuid))
    taken = survey.by_name.get(vm.name)
    if taken is not None and taken.uuid != vm.uuid:
        raise errors.MultihvError('VM %s: an instance of that name exists already (%s on %s); instance names are unique' % (
            vm.name, taken.uuid, taken.node))
    if resume:
        flavor_row = next((f for f in survey.flavors if f['name'] == record.flavor), flavor_row)
    flavor = match_flavor(survey.flavors, vm, survey.kind, flavor_row)
    if resume:  # its ports were allocated with its record
        nics = [{'network': nic['network'], 'mac': nic['mac'], 'port': bool(nic.get('address'))}
                for nic in (record.identity or {}).get('networks') or []]
    else:
        nics = nic_plan(survey.ctx.registry, vm, survey.networks_here)
    needs = _needs(flavor)
    if not resume:
        capacity = survey.view.capacity
        over = [r for r in RESOURCES if held[r] + needs[r] > capacity[r]]
        if over:
            raise errors.MultihvError('VM %s does not fit node %s with flavor %s: %s' % (vm.name, survey.node, flavor['name'], ', '.join(
                '%s %s + %s > capacity %s' % (r, held[r], needs[r], capacity[r]) for r in over)))
        for r in RESOURCES:
            held[r] += needs[r]
    return Adoption(vm, flavor, image, nics, resume)


def plan(ctx, node, names=None, limit=DEFAULT_LIMIT, flavor=None, image=None):
    """(survey, [Adoption], refused [{name, msg}], already [{name, uuid}], left): what adopting names (or,
    without names, the node's VMs with no record, the first `limit` by name, left: how many more there are)
    would do. Reads only. With names every refusal is raised (errors.MultihvError naming each); without,
    the VMs refused are listed and the others adopted."""
    registry = ctx.registry
    flavor_row = None
    if flavor:
        flavor_row = registry.get_flavor(flavor)
        if flavor_row is None:
            raise errors.NotFound('flavor %s does not exist; %s' % (flavor, UNTOUCHED))
    image_row = None
    if image:
        image_row = registry.get_image(image)
        if image_row is None:
            raise errors.NotFound('image %s does not exist; %s' % (image, UNTOUCHED))
    survey = Survey(ctx, node)  # after the options' checks: a bad option is refused before any VM is looked at
    if image_row and image_row.get('hypervisor_type') and image_row['hypervisor_type'] != survey.kind:
        raise errors.MultihvError('image %s is for %s nodes; node %s is %s; %s'
                                  % (image, image_row['hypervisor_type'], node, survey.kind, UNTOUCHED))
    allocated = registry.allocations_by_node().get(node, {})
    held = dict((r, allocated.get(r, 0)) for r in RESOURCES)
    adoptions, refused, already, left = [], [], [], 0
    if names is not None:
        seen = set()
        for name in names:
            if name in seen:
                raise errors.MultihvError('names lists VM %s twice; %s' % (name, UNTOUCHED))
            seen.add(name)
        for name in names:
            try:
                vm = survey.named(name)
                record = survey.records.get(vm.uuid)
                if record is not None and record.state != ADOPTING and 'adopted' in (record.identity or {}) and record.node == node:
                    already.append({'name': record.name, 'uuid': vm.uuid})  # adopted by an earlier run: nothing to do
                    continue
                adoptions.append(_check(survey, vm, flavor_row, image_row, held))
            except errors.MultihvError as exc:
                refused.append({'name': name, 'msg': str(exc)})
        if refused:
            raise errors.MultihvError('%s; %s' % ('; '.join('%s: %s' % (r['name'], r['msg']) for r in refused), UNTOUCHED))
        return survey, adoptions, refused, already, left
    pending = sorted(survey.interrupted + survey.unrecorded, key=lambda vm: (vm.name, vm.uuid))
    left = max(len(pending) - limit, 0)
    for vm in pending[:limit]:
        try:
            adoptions.append(_check(survey, vm, flavor_row, image_row, held))
        except errors.MultihvError as exc:
            refused.append({'name': vm.name, 'msg': str(exc)})
    return survey, adoptions, refused, already, left


def adopt(ctx, adoption):
    """Adopt one checked VM (see the module docstring) under its instance's lease, held from before its record
    exists; the record after. A refusal (another run adopted it, the room went meanwhile, the driver refused)
    leaves nothing written; a driver that stopped answering after the record leaves it 'adopting' with its claim,
    for the next run to finish."""
    vm = adoption.vm
    untouched = 'VM %s on node %s was not adopted' % (vm.name, vm.node)
    registry = ctx.registry
    with _leases.on_instance(registry, vm.uuid, untouched, 'adopt') as lease:
        record = registry.get_instance(uuid=vm.uuid)
        made = False
        if record is not None and record.state != ADOPTING:
            raise errors.MultihvError('VM %s became instance %s meanwhile (another run adopted it); %s' % (vm.name, record.name, untouched))
        if record is None:
            if registry.get_instance(name=vm.name) is not None:
                raise errors.MultihvError('an instance named %s was made meanwhile (another run); %s' % (vm.name, untouched))
            _record(ctx, adoption, untouched)
            made = True
        lease.check()
        driver = ctx.driver_for(vm.node)
        metadata = {'flavor': adoption.flavor['name'], 'image': adoption.image['name'] if adoption.image else NO_IMAGE,
                    'storage': vm.storage, 'vcpus': adoption.flavor['vcpus'], 'memory_mb': adoption.flavor['ram_mb'],
                    'disk_gb': adoption.flavor['disk_gb']}
        try:
            state = driver.adopt(vm.uuid, vm.node, vm.name, metadata)
        except errors.Unreachable:
            raise  # the mark may have landed: the record stays 'adopting' for the next run
        except errors.MultihvError as exc:
            if made:
                registry.delete_instance(vm.uuid)  # its ports and allocation go with it
            raise errors.MultihvError('VM %s on node %s could not be adopted: %s; %s' % (vm.name, vm.node, exc, untouched)) from exc
        with lease.guarded():
            return registry.update_instance(vm.uuid, host=state.host, state='stopped' if state.power_state == 'stopped' else 'running')[1]


def _record(ctx, adoption, untouched):
    """The instance's record ('adopting'), its ports and its claim, or nothing (raised) when one is refused."""
    vm, flavor, registry = adoption.vm, adoption.flavor, ctx.registry
    identity = {'hostname': vm.name, 'macs': vm.macs, 'metadata': {},
                'networks': [{'network': nic['network'], 'mac': nic['mac']} for nic in adoption.nics],
                'adopted': {'disk_paths': list(vm.disk_paths), 'disks_outside': list(vm.outside), 'datastores': list(vm.datastores)}}
    registry.create_instance(uuid=vm.uuid, name=vm.name, node=vm.node, host=vm.host, flavor=flavor['name'],
                             image=adoption.image['name'] if adoption.image else NO_IMAGE, storage=vm.storage, identity=identity,
                             state=ADOPTING)
    try:
        ports = registry.allocate_ports(vm.uuid, [{'network': nic['network'], 'fixed_ip': None, 'mac': nic['mac']}
                                                  for nic in adoption.nics if nic['port']], untouched)
        by_mac = dict((port['mac'], port) for port in ports)
        identity['networks'] = [by_mac.get(nic['mac']) or {'network': nic['network'], 'mac': nic['mac']} for nic in adoption.nics]
        registry.update_instance(vm.uuid, identity=identity)
        if not claim_on(ctx, flavor, vm.node, vm.uuid):
            raise errors.MultihvError('VM %s no longer fits node %s with flavor %s (another run took the room); %s'
                                      % (vm.name, vm.node, flavor['name'], untouched))
    except BaseException:
        registry.delete_instance(vm.uuid)  # its ports and allocation go with it
        raise


def run(ctx, params, check_mode):
    """The instance_import task: plan, then adopt each (check mode: only plan). {changed, instances (records, or
    the plans in check mode), refused, already, left, failures}."""
    names = params.get('names')
    limit = params.get('limit')
    limit = DEFAULT_LIMIT if limit is None else limit
    if limit < 1:
        raise errors.MultihvError('limit must be at least 1, got %s; %s' % (limit, UNTOUCHED))
    if names is None and not params.get('all'):
        raise errors.MultihvError('give names (the VMs to adopt) or all=true (the node\'s VMs with no record); %s' % UNTOUCHED)
    if names is not None and params.get('all'):
        raise errors.MultihvError('names and all=true are mutually exclusive; %s' % UNTOUCHED)
    _survey, adoptions, refused, already, left = plan(ctx, params['node'], names, limit, params.get('flavor'), params.get('image'))
    result = {'changed': bool(adoptions), 'refused': refused, 'already': already, 'left': left, 'failures': []}
    if check_mode:
        result['instances'] = [dict(a.as_dict(), state='would be adopted') for a in adoptions]
        return result
    done = []
    for adoption in adoptions:
        try:
            done.append(adopt(ctx, adoption).as_dict())
        except errors.MultihvError as exc:
            result['failures'].append({'name': adoption.name, 'msg': str(exc)})
    result['instances'] = done
    result['changed'] = bool(done)
    return result


__all__ = ['ADOPTING', 'Adoption', 'DEFAULT_LIMIT', 'NO_IMAGE', 'Survey', 'adopt', 'match_flavor', 'nic_plan', 'plan', 'run']
