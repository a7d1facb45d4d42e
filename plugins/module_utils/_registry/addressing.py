# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The addressing rules of networks and ports, written once. Private to multihv.cloud: do not import.
No I/O.

Two callers, as with rules.py: the registry, inside the transaction that allocates a port (so that
no concurrent run takes the address between the check and the write), and the core
(_compute/networks.py), so that a bad request and check mode fail before anything is written.

- A subnet is an IPv4 or IPv6 CIDR. Its usable addresses are its hosts: not the network address,
  not the IPv4 broadcast (a /31 or /32 has no such addresses to spare: all of it is usable).
- The gateway, when there is one, is a usable address of the subnet and is never given to a port.
- The allocation range (start to end, both usable) is where addresses are allocated from, lowest
  free first; a fixed IP may be any usable address of the subnet, inside the range or not.
- A MAC is six lower-case hex bytes; a MAC not asked for is derived from the instance's uuid and the
  NIC's position (stable_mac), again with a counter while the one derived is another port's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

MAC = re.compile(r'^[0-9a-f]{2}(:[0-9a-f]{2}){5}$')


def stable_mac(instance_uuid, index, attempt=0):
    """A MAC that an instance keeps for life (rebuilds and evacuations included): derived from its
    uuid and the NIC's position, in QEMU's locally administered range. attempt > 0 derives another
    one, for when the first is already a port's (24 bits of a hash do collide in a large cloud)."""
    seed = '%s/%d' % (instance_uuid, index) if not attempt else '%s/%d/%d' % (instance_uuid, index, attempt)
    digest = hashlib.sha256(seed.encode()).digest()
    return '52:54:00:%02x:%02x:%02x' % (digest[0], digest[1], digest[2])


def mac(value, what, untouched):
    """value as a MAC in lower case; errors.MultihvError naming what (say, 'networks[0].mac') otherwise."""
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text is None or not MAC.match(text):
        raise errors.MultihvError('%s must be a MAC address of the form 52:54:00:12:34:56, got %r; %s' % (what, value, untouched))
    return text


def subnet(cidr, what, untouched):
    """The ip_network of cidr (host bits must be zero: 192.0.2.0/24, not 192.0.2.1/24)."""
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except (TypeError, ValueError) as exc:
        raise errors.MultihvError('%s must be an IPv4 or IPv6 subnet in CIDR form (192.0.2.0/24, 2001:db8::/64), got %r (%s); %s'
                                  % (what, cidr, exc, untouched)) from None


def address(value, what, untouched):
    """value as an ip_address; errors.MultihvError naming what otherwise."""
    try:
        return ipaddress.ip_address(value)
    except (TypeError, ValueError):
        raise errors.MultihvError('%s must be an IP address, got %r; %s' % (what, value, untouched)) from None


def reserved(net):
    """The addresses of net that are never a host's: the network address, and the IPv4 broadcast (a /31 or
    /32 has none to spare, as RFC 3021 says)."""
    if net.version == 4 and net.prefixlen >= 31:
        return set()
    if net.version == 4:
        return {net.network_address, net.broadcast_address}
    return {net.network_address}  # the subnet-router anycast address


def usable(net, ip):
    """True when ip is a host address of net (see reserved)."""
    return ip.version == net.version and ip in net and ip not in reserved(net)


def default_range(net):
    """(first, last) host address of net: the default allocation range."""
    if net.version == 4 and net.prefixlen >= 31:
        return net.network_address, net.broadcast_address
    first = net.network_address + 1
    last = net.broadcast_address - 1 if net.version == 4 else net.broadcast_address
    return first, last


class Subnet:
    """A network's addressing as stored (cidr, gateway, allocation_start, allocation_end: text), checked."""

    def __init__(self, name, cidr, gateway=None, allocation_start=None, allocation_end=None, untouched=''):
        where = 'network %s' % name
        self.name = name
        self.net = subnet(cidr, '%s: cidr' % where, untouched)
        self.gateway = address(gateway, '%s: gateway' % where, untouched) if gateway else None
        if self.gateway is not None and not usable(self.net, self.gateway):
            raise errors.MultihvError('%s: gateway %s is not a host address of %s; %s' % (where, self.gateway, self.net, untouched))
        first, last = default_range(self.net)
        self.start = address(allocation_start, '%s: allocation_start' % where, untouched) if allocation_start else first
        self.end = address(allocation_end, '%s: allocation_end' % where, untouched) if allocation_end else last
        for label, value in (('allocation_start', self.start), ('allocation_end', self.end)):
            if not usable(self.net, value):
                raise errors.MultihvError('%s: %s %s is not a host address of %s; %s' % (where, label, value, self.net, untouched))
        if self.start > self.end:
            raise errors.MultihvError('%s: allocation_start %s is after allocation_end %s; %s' % (where, self.start, self.end, untouched))

    @classmethod
    def of(cls, row, untouched=''):
        """The Subnet of a network row of the registry."""
        return cls(row['name'], row['cidr'], row.get('gateway'), row.get('allocation_start'), row.get('allocation_end'), untouched)

    @property
    def prefix(self):
        return self.net.prefixlen

    def check_fixed(self, ip_text, what, untouched):
        """A fixed IP asked for on this network, in canonical text; errors.MultihvError when it is not an
        address of the subnet a port may have (the network or broadcast address, the gateway)."""
        ip = address(ip_text, what, untouched)
        if ip.version != self.net.version or ip not in self.net:
            raise errors.MultihvError('%s %s is outside network %s (%s); %s' % (what, ip, self.name, self.net, untouched))
        if not usable(self.net, ip):
            raise errors.MultihvError('%s %s is the network or broadcast address of network %s (%s); %s'
                                      % (what, ip, self.name, self.net, untouched))
        if ip == self.gateway:
            raise errors.MultihvError('%s %s is the gateway of network %s; %s' % (what, ip, self.name, untouched))
        return str(ip)

    def first_free(self, taken):
        """The lowest address of the allocation range that is neither the gateway nor in taken (a set of
        text addresses), as text; None when every one is taken. Walks up from the start, so it costs the
        number of addresses taken at the bottom of the range, never the size of the range (an IPv6 /64)."""
        ip = self.start
        while True:
            if ip != self.gateway and str(ip) not in taken:
                return str(ip)
            if ip == self.end:  # not ip += 1 past it: 255.255.255.255 + 1 is no address
                return None
            ip += 1

    def range_size(self):
        """How many addresses the allocation range holds (the gateway counted out)."""
        size = int(self.end) - int(self.start) + 1
        return size - (1 if self.gateway is not None and self.start <= self.gateway <= self.end else 0)


__all__ = ['MAC', 'Subnet', 'address', 'default_range', 'mac', 'reserved', 'stable_mac', 'subnet', 'usable']
