"""What the API promises reaches a real Linux guest, through the collection's modules, and stays through
an evacuation: the lab's Debian 12 guest (cloud-init, QEMU guest agent) booted by `instance` on a registry
network with a fixed IP, a keypair and user_data, read back through the guest agent; then its host loses
power and `evacuate` rebuilds it elsewhere: with local storage a fresh disk (same uuid, hostname, MAC and
IP; the user_data's marker gone; a new password), with shared storage the same disk and password.

Two rounds of boots, two guests at a time, under TCG (image property virt_type qemu: a Linux kernel does
not boot under the lab machines' KVM): about a minute each on an idle machine.
"""

from __future__ import annotations

import base64
import os
import secrets
import struct
import time
import warnings
import xml.etree.ElementTree as ET

import pytest

from support import guest_agent
from support.cloud import bring_back, registry_rows
from support.lab import ansible_module

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    import crypt  # pylint: disable=deprecated-module  # libxcrypt's crypt(3), as the guest hashes: the only stdlib check of a $y$ hash

# From spawn to cloud-init done, and for the agent to answer at all: generous for a loaded machine.
BOOT_TIMEOUT = 420
MARKER = '/var/tmp/multihv-marker'


def public_key():
    """A well-formed OpenSSH ed25519 public key line (no private key is needed: it is only compared)."""
    blob = struct.pack('>I', 11) + b'ssh-ed25519' + struct.pack('>I', 32) + os.urandom(32)
    return 'ssh-ed25519 %s guest-bootstrap-test' % base64.b64encode(blob).decode()


def hashes_to(password, hashed):
    """Does password hash to hashed? A bool only: no assertion shows the password."""
    return hashed[:1] == '$' and crypt.crypt(password, hashed) == hashed


def root_hash(domain):
    for line in guest_agent.read_file(domain, '/etc/shadow').splitlines():
        fields = line.split(':')
        if fields[0] == 'root':
            return fields[1]
    raise AssertionError("no root in the guest's /etc/shadow")


def has_marker(domain):
    return guest_agent.run(domain, ['test', '-e', MARKER]).exit_code == 0


class Guest:
    """One instance's running guest on a lab host, once its agent answers and cloud-init is done."""

    def __init__(self, lab, record, host, started):
        self.record = record
        self.conn = lab.connect(host)
        self.domain = self.conn.lookupByUUIDString(record['uuid'])
        guest_agent.wait_until_answering(self.domain, BOOT_TIMEOUT)
        status = guest_agent.cloud_init_finished(self.domain, BOOT_TIMEOUT - (time.monotonic() - started))
        assert 'status: done' in status and 'DataSourceNoCloud' in status, status

    def close(self):
        self.conn.close()

    def check_identity(self, key, dns):
        """Hostname, the recorded address on the NIC with the recorded MAC (renamed eth0, default route via the
        gateway), the network's DNS server, the authorized key; the domain is TCG with its config drive."""
        root = ET.fromstring(self.domain.XMLDesc(0))
        assert root.get('type') == 'qemu'
        drives = [d.find('source').get('file') for d in root.findall('devices/disk[@device="cdrom"]')]
        assert [os.path.basename(path) for path in drives] == ['%s.config.iso' % self.record['uuid']]
        assert guest_agent.host_name(self.domain) == self.record['identity']['hostname']
        (nic,) = self.record['identity']['networks']
        seen = guest_agent.interfaces(self.domain)[nic['mac']]
        assert seen.name == 'eth0' and '%s/24' % nic['address'] in seen.addresses, seen
        assert guest_agent.run(self.domain, ['ip', 'route', 'show', 'default']).stdout.split() == [
            'default', 'via', '192.0.2.1', 'dev', 'eth0']
        assert 'nameserver %s' % dns in guest_agent.read_file(self.domain, '/etc/resolv.conf').splitlines()
        assert key in guest_agent.read_file(self.domain, '/home/debian/.ssh/authorized_keys').splitlines()


@pytest.fixture
def guest_cloud(lab, cloud, debian_image):
    """The cloud fixture's registry with the Debian image (TCG), a flavor for it, a network on the lab's guest
    bridge and a keypair."""
    ansible_module('multihv.cloud.flavor', dict(cloud, name='deb', vcpus=1, ram_mb=512, disk_gb=3))
    ansible_module('multihv.cloud.image', dict(cloud, name='debian', hypervisor_type='kvm', source=str(debian_image),
                                               properties={'virt_type': 'qemu'}))
    ansible_module('multihv.cloud.network', dict(cloud, name='gnet', cidr='192.0.2.0/24', gateway='192.0.2.1',
                                                 dns_servers=['192.0.2.53'], allocation_start='192.0.2.100',
                                                 backings=[{'backing': 'bridge:' + lab.bridge, 'hypervisor_type': 'kvm'}]))
    key = public_key()
    ansible_module('multihv.cloud.keypair', dict(cloud, name='gkey', public_key=key))
    return cloud, key


def test_a_debian_guest_gets_what_the_api_promises_and_keeps_its_identity_through_evacuation(lab, guest_cloud, tmp_path):
    cloud, key = guest_cloud
    user_data = ('#cloud-config\nwrite_files:\n  - path: %s\n    content: "from user_data\\n"\n'
                 'runcmd:\n  - [sh, -c, "echo ran >> %s"]\n') % (MARKER, MARKER)
    started = time.monotonic()
    booted = ansible_module('multihv.cloud.instance', dict(
        cloud, instances=[{'name': 'g-local', 'storage': 'local', 'networks': [{'network': 'gnet', 'fixed_ip': '192.0.2.10'}]},
                          {'name': 'g-shared', 'storage': 'shared', 'hostname': 'shared-guest'}],
        networks=[{'network': 'gnet'}], flavor='deb', image='debian', node='kvm2', key_name='gkey', user_data=user_data,
        concurrency=2))
    records = dict((r['name'], r) for r in booted['instances'])
    assert booted['failures'] == [] and sorted(records) == ['g-local', 'g-shared']
    assert records['g-local']['addresses'] == {'gnet': ['192.0.2.10']} and records['g-shared']['addresses'] == {'gnet': ['192.0.2.100']}
    first_password = dict((name, r['admin_password']) for name, r in records.items())

    guests = dict((name, Guest(lab, r, 'kvm2', started)) for name, r in records.items())
    try:
        for name, guest in guests.items():
            guest.check_identity(key, '192.0.2.53')
            assert guest_agent.read_file(guest.domain, MARKER) == 'from user_data\nran\n'
            delivered = hashes_to(first_password[name], root_hash(guest.domain))
            assert delivered, "root's password in %s is not the one its config drive delivered" % name
    finally:
        for guest in guests.values():
            guest.close()

    with lab.power_loss('kvm2'):
        started = time.monotonic()
        result = ansible_module('multihv.cloud.evacuate', dict(cloud, node='kvm2', concurrency=2))
        done = dict((e['name'], e) for e in result['evacuations'])
        assert result['failures'] == [] and sorted((n, e['dest_node'], e['disk']) for n, e in done.items()) == [
            ('g-local', 'kvm1', 'rebuilt'), ('g-shared', 'kvm1', 'kept')]
        assert 'admin_password' not in done['g-shared']
        new_password = done['g-local']['admin_password']
        stored = b''.join(f.read_bytes() for f in tmp_path.glob('registry.sqlite*'))
        assert new_password.encode() not in stored and first_password['g-local'].encode() not in stored

        guests = dict((name, Guest(lab, e['instance'], 'kvm1', started)) for name, e in done.items())
        try:
            for name, guest in guests.items():
                # Same uuid, hostname, MAC and address as at boot, on the new host.
                before, after = records[name], done[name]['instance']
                assert (after['uuid'], after['identity']['hostname'], after['identity']['networks'], after['node']) == (
                    before['uuid'], before['identity']['hostname'], before['identity']['networks'], 'kvm1')
                guest.check_identity(key, '192.0.2.53')
            local, shared = guests['g-local'].domain, guests['g-shared'].domain
            # The local disk is new: the marker went with the old one (user_data is not stored, so not run again).
            assert not has_marker(local) and has_marker(shared)
            renewed = hashes_to(new_password, root_hash(local)) and not hashes_to(first_password['g-local'], root_hash(local))
            assert renewed, "the locally evacuated guest does not have the new password"
            kept = hashes_to(first_password['g-shared'], root_hash(shared))
            assert kept, 'the shared-storage guest lost its password'

            # Nova's set-password: through the module, the QEMU guest agent sets it in the running guest.
            chosen = secrets.token_urlsafe(18)
            changed = ansible_module('multihv.cloud.instance', dict(cloud, name='g-local', admin_password=chosen,
                                                                    update_password='always'))
            assert changed['changed'] is True and chosen not in changed['_output']
            assert hashes_to(chosen, root_hash(local)), 'update_password always did not set the password in the guest'
        finally:
            for guest in guests.values():
                guest.close()
    bring_back(cloud, 'kvm2')
    assert registry_rows(tmp_path, "SELECT DISTINCT status FROM migrations") == [('completed',)]
