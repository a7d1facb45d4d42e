# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Networks: a subnet with fixed IPs in the registry, and where it exists on each node; the ports of
an instance's NICs. Private to multihv.cloud: do not import.

A network has a subnet (cidr), an optional gateway, DNS servers and an allocation range, and backings:
what it is on the hypervisors, a list of {backing, nodes, aggregates, endpoints, hypervisor_type}. The
first backing whose selector matches a node is the network on that node: a libvirt network, `bridge:NAME`
or a vSphere port group, as the node's driver takes it (InstanceSpec.networks). A selector matches when
each of its keys that is set does: the node is one of `nodes`, is in one of `aggregates`, is served by
one of `endpoints` (a vCenter's or a KVM host's name in the cloud file), is of `hypervisor_type` (a
string compared as the scheduler compares it). A selector with none set matches every node; a network
with no backing exists nowhere.

An instance's NIC names a network and may ask for a fixed IP and a MAC. At boot each NIC gets a port in
the registry (ports_access.py: atomic, unique MACs and addresses); the instance's identity records them
as networks [{network, mac, address}], which stay through every migration, rebuild and evacuation and
go with the instance. A boot or an evacuation spawns each NIC on the backing of the node it goes to;
a migration keeps the VM's NIC as it is, so it needs the same backing on the target (scheduler.Request.networks).
"""

from __future__ import annotations

import contextlib
import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestNic
from ansible_collections.multihv.cloud.plugins.module_utils._registry import addressing
from ansible_collections.multihv.cloud.plugins.module_utils._registry import rules

STATES = ('present', 'absent')
FIELDS = ('cidr', 'gateway', 'dns_servers', 'allocation_start', 'allocation_end', 'backings')
SELECTORS = ('nodes', 'aggregates', 'endpoints')
NIC_KEYS = ('network', 'fixed_ip', 'mac')
CREATE_WITH = 'create it with multihv.cloud.network'


# ------------------------------------------------------------------ the network module's work

def network_view(row):
    """A network as users see it (no timestamps, so that diffs show only what changed), or None."""
    if row is None:
        return None
    return {'name': row['name'], 'cidr': row['cidr'], 'gateway': row['gateway'] or None, 'dns_servers': list(row['dns_servers'] or []),
            'allocation_start': row['allocation_start'], 'allocation_end': row['allocation_end'],
            'backings': [_backing(b, row['name'], index, '') for index, b in enumerate(row['backings'] or [])]}


def _backing(item, name, index, untouched):
    """A backing as stored: {backing, nodes, aggregates, endpoints, hypervisor_type}, every key present."""
    what = 'network %s: backings[%d]' % (name, index)
    if not isinstance(item, dict):
        raise errors.MultihvError('%s must be a mapping with backing and a selector, got %r; %s' % (what, item, untouched))
    unknown = sorted(set(item) - set(('backing', 'hypervisor_type') + SELECTORS))
    if unknown:
        raise errors.MultihvError('%s has unknown key(s) %s (known: backing, nodes, aggregates, endpoints, hypervisor_type); %s'
                                  % (what, ', '.join(unknown), untouched))
    backing = item.get('backing')
    if not isinstance(backing, str) or not backing.strip():
        raise errors.MultihvError('%s.backing must be a libvirt network, bridge:NAME or a vSphere port group, got %r; %s'
                                  % (what, backing, untouched))
    result = {'backing': backing}
    for key in SELECTORS:
        value = item.get(key) or []
        if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise errors.MultihvError('%s.%s must be a list of names, got %r; %s' % (what, key, item.get(key), untouched))
        result[key] = list(value)
    kind = item.get('hypervisor_type')
    if kind is not None and (not isinstance(kind, str) or not kind):
        raise errors.MultihvError('%s.hypervisor_type must be a hypervisor type (kvm, vsphere), got %r; %s' % (what, kind, untouched))
    result['hypervisor_type'] = kind or None
    return result


def _after(name, before, given, untouched):
    """The network as it would be: before (or nothing) with the options given, normalised and checked."""
    if before is None and not given.get('cidr'):
        raise errors.MultihvError('network %s does not exist; give cidr to create it; nothing was created' % name)
    after = dict(before or {'name': name, 'gateway': None, 'dns_servers': [], 'backings': []})
    net = addressing.subnet(given.get('cidr', after.get('cidr')), 'network %s: cidr' % name, untouched)
    if 'cidr' in given:
        after['cidr'] = str(net)
        if before is not None and str(net) != before['cidr']:
            # The old range lies in the old subnet: a new subnet starts from its own default unless given.
            after.pop('allocation_start', None)
            after.pop('allocation_end', None)
    if 'gateway' in given:
        after['gateway'] = str(addressing.address(given['gateway'], 'network %s: gateway' % name, untouched)) if given['gateway'] else None
    if 'dns_servers' in given:
        after['dns_servers'] = [str(addressing.address(server, 'network %s: dns_servers[%d]' % (name, index), untouched))
                                for index, server in enumerate(given['dns_servers'])]
    first, last = addressing.default_range(net)
    for key, default in (('allocation_start', first), ('allocation_end', last)):
        if key in given:
            after[key] = str(addressing.address(given[key], 'network %s: %s' % (name, key), untouched))
        after.setdefault(key, str(default))
    if 'backings' in given:
        if not isinstance(given['backings'], list):
            raise errors.MultihvError('network %s: backings must be a list, got %r; %s' % (name, given['backings'], untouched))
        after['backings'] = [_backing(item, name, index, untouched) for index, item in enumerate(given['backings'])]
    addressing.Subnet.of(after, untouched)  # the gateway and the range inside the subnet, the range in order
    return after


def set_network(registry, name, state, fields, check_mode=False):
    """Make network name present with the fields given (the others kept), or absent.

    fields: FIELDS; None values are not given; gateway '' removes the gateway. A new network needs
    cidr; its allocation range defaults to the subnet's host addresses (the gateway is never
    allocated). A new cidr (allowed only while no instance has a port on the network) takes the default
    range unless one is given. check_mode reads only (no transaction, no write). Returns (changed,
    before, after) as network_view(). errors.MultihvError saying what is wrong, before anything is written.
    """
    if not isinstance(name, str) or not name.strip():
        raise errors.MultihvError('a network needs a non-empty name, got %r; nothing was changed' % (name,))
    if state not in STATES:
        raise errors.MultihvError('state must be present or absent, got %r; network %s was left unchanged' % (state, name))
    given = dict((key, value) for key, value in (fields or {}).items() if value is not None)
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise errors.MultihvError('unknown network setting(s) %s; network %s was left unchanged' % (', '.join(unknown), name))
    untouched = 'network %s was left unchanged' % name
    if state == 'absent' and given:
        # Refused rather than ignored: a setting given with absent is a mistake the user should see.
        raise errors.MultihvError('state absent takes no network settings, got %s; network %s was left untouched'
                                  % (', '.join(sorted(given)), name))
    with contextlib.nullcontext() if check_mode else registry.transaction():
        before = network_view(registry.get_network(name, lock=not check_mode))
        if state == 'absent':
            if before is None:
                return False, None, None
            rules.keep_network_in_use(name, registry.network_users(name))
            if not check_mode:
                registry.delete_network(name)
            return True, before, None
        if before is not None and 'cidr' in given:
            # Said first: a used network's new cidr is refused whatever else would not fit in it.
            cidr = str(addressing.subnet(given['cidr'], 'network %s: cidr' % name, untouched))
            rules.keep_addressing_of_used_network(name, registry.network_users(name) if cidr != before['cidr'] else [], {'cidr': cidr})
        after = _after(name, before, given, untouched if before else 'nothing was created')
        if after == before:
            return False, before, after
        changes = dict((key, value) for key, value in after.items() if key != 'name' and (before is None or before[key] != value))
        if before is not None:
            rules.keep_addressing_of_used_network(name, registry.network_users(name), changes)
            if changes.get('gateway'):
                rules.keep_gateway_free(name, changes['gateway'], registry.port_holder(name, changes['gateway']))
        if check_mode:
            return True, before, after
        return True, before, network_view(registry.set_network(name, **changes)[1])


# ------------------------------------------------------------------ where a network is

@dataclasses.dataclass(frozen=True)
class NodeFacts:
    """What a backing's selector looks at on a node: its name, hypervisor type, endpoint (the cloud
    file's name of the vCenter or KVM host serving it) and aggregates (as the scheduler sees them)."""

    name: str
    hypervisor_type: str | None
    endpoint: str | None
    aggregates: tuple = ()


def facts(view, drivers):
    """The NodeFacts of a NodeView, its endpoint found among drivers."""
    driver = _nodes.serving(drivers, view.name)
    return NodeFacts(view.name, view.hypervisor_type, driver.endpoint_name() if driver is not None else None,
                     tuple(view.aggregates or ()))


def _matches(backing, node):
    return ((not backing['nodes'] or node.name in backing['nodes'])
            and (not backing['aggregates'] or bool(set(backing['aggregates']) & set(node.aggregates)))
            and (not backing['endpoints'] or node.endpoint in backing['endpoints'])
            and (backing['hypervisor_type'] is None or backing['hypervisor_type'] == node.hypervisor_type))


def backing_on(network, node):
    """The backing of network (a registry row or network_view) on the node (NodeFacts), or None when it is not there."""
    for backing in network_view(network)['backings']:
        if _matches(backing, node):
            return backing['backing']
    return None


def on_node(networks, node):
    """{network name: backing} of the networks (registry rows) that exist on the node (NodeFacts)."""
    found = {}
    for network in networks:
        backing = backing_on(network, node)
        if backing is not None:
            found[network['name']] = backing
    return found


def by_node(networks, views, drivers):
    """{node: {network: backing}} for each NodeView: the scheduler's candidates and the inventory show these."""
    return dict((view.name, on_node(networks, facts(view, drivers))) for view in views)


def node_facts(ctx, node):
    """The NodeFacts of node in a run's Context: its view when the run has one, else the cloud file's word."""
    view = ctx.view(node)
    driver = ctx.serving(node)
    if view is not None:
        return NodeFacts(node, view.hypervisor_type, driver.endpoint_name() if driver else None, tuple(view.aggregates or ()))
    placement = driver.placement(node) if driver is not None else None
    return NodeFacts(node, ctx.hypervisor_type(node), driver.endpoint_name() if driver else None,
                     tuple(placement.aggregates) if placement else ())


# ------------------------------------------------------------------ an instance's NICs

def requested(registry, nics, untouched='nothing was created'):
    """The instance module's networks option, checked against the registry before anything is written:
    [{network, fixed_ip, mac}] (None for what is not asked). Each network must exist; a fixed IP must be a
    host address of its subnet other than the gateway, and free; a MAC well formed and free; no two NICs
    may ask for one address or one MAC. errors.MultihvError (NotFound for a network) saying which."""
    if nics is None:
        return []
    if not isinstance(nics, list):
        raise errors.MultihvError('networks must be a list of NICs ({network, fixed_ip, mac}), got %r; %s' % (nics, untouched))
    result, seen = [], {}
    for index, nic in enumerate(nics):
        what = 'networks[%d]' % index
        if not isinstance(nic, dict) or not isinstance(nic.get('network'), str) or not nic['network']:
            raise errors.MultihvError('%s must name a network ({network, fixed_ip, mac}), got %r; %s' % (what, nic, untouched))
        unknown = sorted(set(nic) - set(NIC_KEYS))
        if unknown:
            raise errors.MultihvError('%s has unknown key(s) %s (known: %s); %s' % (what, ', '.join(unknown), ', '.join(NIC_KEYS), untouched))
        row = registry.get_network(nic['network'])
        if row is None:
            raise errors.NotFound('%s: network %s does not exist; %s; %s' % (what, nic['network'], CREATE_WITH, untouched))
        wanted = {'network': row['name'], 'fixed_ip': None, 'mac': None}
        if nic.get('fixed_ip'):
            wanted['fixed_ip'] = addressing.Subnet.of(row, untouched).check_fixed(nic['fixed_ip'], '%s.fixed_ip' % what, untouched)
            _refuse_taken(seen, ('address', row['name'], wanted['fixed_ip']), what, '%s.fixed_ip %s on network %s' % (
                what, wanted['fixed_ip'], row['name']), registry.port_holder(row['name'], wanted['fixed_ip']), untouched)
        if nic.get('mac'):
            wanted['mac'] = addressing.mac(nic['mac'], '%s.mac' % what, untouched)
            _refuse_taken(seen, ('mac', wanted['mac']), what, '%s.mac %s' % (what, wanted['mac']),
                          registry.port_holder(mac=wanted['mac']), untouched)
        result.append(wanted)
    return result


def same_nics(identity, nics):
    """True when the NICs an instance has (its identity) are those asked for (the networks option): the same
    networks in order, and the fixed IPs and MACs that are asked for."""
    have = (identity or {}).get('networks') or []
    if len(have) != len(nics or []):
        return False
    for had, nic in zip(have, nics):
        if not isinstance(nic, dict) or had.get('network') != nic.get('network'):
            return False
        if nic.get('fixed_ip') and str(addressing.address(nic['fixed_ip'], 'fixed_ip', 'nothing was changed')) != had.get('address'):
            return False
        if nic.get('mac') and str(nic['mac']).lower() != had.get('mac'):
            return False
    return True


def _refuse_taken(seen, key, what, asked, holder, untouched):
    if key in seen:
        raise errors.MultihvError('%s is asked for by %s too; %s' % (asked, seen[key], untouched))
    seen[key] = what
    if holder is not None:
        raise errors.MultihvError('%s is taken by instance %s; %s' % (asked, holder, untouched))


def required(nics):
    """scheduler.Request.networks for a boot: each network of the NICs ([{network, ...}]), any backing."""
    return tuple(sorted(set((nic['network'], None) for nic in nics)))


def _registered(registry, identity):
    """{name: row} of the registry networks the NICs of identity are on; NICs recorded before networks were
    in the registry (no address: a libvirt network, a bridge or a port group as the user gave it) have none."""
    names = set(nic['network'] for nic in (identity or {}).get('networks') or [] if nic.get('address'))
    rows = dict((name, registry.get_network(name)) for name in sorted(names))
    return dict((name, row) for name, row in rows.items() if row is not None)


def for_move(ctx, record, keep_backing):
    """scheduler.Request.networks for moving record: each registry network of its NICs, with the backing
    they have on its node now when keep_backing (a migration moves the VM's NICs as they are), else any
    (an evacuation spawns them on the target's own)."""
    rows = _registered(ctx.registry, record.identity)
    if not keep_backing:
        return tuple(sorted((name, None) for name in rows))
    here = node_facts(ctx, record.node)
    return tuple(sorted((name, backing_on(row, here)) for name, row in rows.items()))


def allocate(registry, inst_uuid, identity, nics, untouched='nothing was created'):
    """Give the recorded instance a port per NIC (nics: as requested() gives them) and record them in its
    identity (networks [{network, mac, address}], macs), in one transaction; the identity after."""
    identity = dict(identity)
    with registry.transaction():
        ports = registry.allocate_ports(inst_uuid, nics, untouched)
        identity['networks'] = ports
        identity['macs'] = [port['mac'] for port in ports]
        registry.update_instance(inst_uuid, identity=identity)
    return identity


def backings_for(ctx, identity, node, untouched='nothing was created'):
    """InstanceSpec.networks for spawning the instance on node: [{network: its backing on node, mac}], one per
    NIC in order. A NIC recorded before networks were in the registry keeps the backing it was given.
    errors.MultihvError when a network is not on node (the scheduler keeps that from happening, unless the
    network's backings changed since)."""
    rows = _registered(ctx.registry, identity)
    here = node_facts(ctx, node) if rows else None
    result = []
    for nic in (identity or {}).get('networks') or []:
        row = rows.get(nic['network']) if nic.get('address') else None
        if row is None:
            result.append({'network': nic['network'], 'mac': nic['mac']})
            continue
        backing = backing_on(row, here)
        if backing is None:
            raise errors.MultihvError('network %s has no backing on node %s (none of its backings selects it); %s'
                                      % (nic['network'], node, untouched))
        result.append({'network': backing, 'mac': nic['mac']})
    return result


def guest_nics(registry, identity):
    """[GuestNic] of the instance's NICs for its guest: each address with its subnet's prefix, the network's
    gateway and DNS servers; a NIC without an address in the registry gets none (DHCP)."""
    rows = _registered(registry, identity)
    result = []
    for nic in (identity or {}).get('networks') or []:
        row = rows.get(nic['network']) if nic.get('address') else None
        if row is None:
            result.append(GuestNic(mac=nic['mac']))
            continue
        prefix = addressing.subnet(row['cidr'], 'network %s: cidr' % row['name'], '').prefixlen
        result.append(GuestNic(mac=nic['mac'], address='%s/%d' % (nic['address'], prefix), gateway=row['gateway'] or None,
                               dns=tuple(row['dns_servers'] or ())))
    return result


__all__ = ['NodeFacts', 'allocate', 'backing_on', 'backings_for', 'by_node', 'facts', 'for_move', 'guest_nics', 'network_view',
           'node_facts', 'on_node', 'requested', 'required', 'set_network']
