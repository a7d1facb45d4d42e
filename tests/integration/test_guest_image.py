"""The lab's Debian 12 guest, booted by the KVM driver with its config drive (a NoCloud ISO made from a
GuestConfig): everything the GuestConfig says reaches the guest, seen through the QEMU guest agent.

One boot, under TCG (image property virt_type qemu), because a Linux kernel does not boot under the
lab machines' KVM. About 40 s from spawn to cloud-init done on an idle machine; more on a loaded one.
"""

import base64
import os
import secrets
import struct
import subprocess
import time
import uuid
import warnings
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestConfig, GuestNic
from support import guest_agent

with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)
    import crypt  # pylint: disable=deprecated-module  # libxcrypt's crypt(3), as the guest hashes: the only stdlib check of a $y$ hash

# A bridge of the test's own for the guest's NIC: down, no address, no uplink; nothing leaves it.
BRIDGE = 'mhv-gimg0'
# From spawn to cloud-init done, and for the agent to answer at all: generous for a loaded machine.
BOOT_TIMEOUT = 420


@pytest.fixture
def bridge():
    subprocess.run(['ip', 'link', 'add', BRIDGE, 'type', 'bridge'], check=True)
    try:
        yield 'bridge:' + BRIDGE
    finally:
        subprocess.run(['ip', 'link', 'del', BRIDGE], check=False)


@pytest.fixture
def kvm1(lab):
    hosts = {h.name: h for h in _config.load(str(lab.dir / 'multihv-cloud.yml'), env={}).kvm_hosts}
    driver = LibvirtDriver(hosts['kvm1'])
    yield driver
    driver.close()


def public_key():
    """A well-formed OpenSSH ed25519 public key line (no private key is needed: it is only compared)."""
    blob = struct.pack('>I', 11) + b'ssh-ed25519' + struct.pack('>I', 32) + os.urandom(32)
    return 'ssh-ed25519 %s guest-image-test' % base64.b64encode(blob).decode()


def password_hash(domain, user):
    """user's password hash in the guest's /etc/shadow."""
    for line in guest_agent.read_file(domain, '/etc/shadow').splitlines():
        fields = line.split(':')
        if fields[0] == user:
            return fields[1]
    raise AssertionError('no %s in the guest\'s /etc/shadow' % user)


def hashes_to(password, hashed):
    """Does password hash to hashed? A bool only: no assertion shows the password."""
    return hashed[:1] == '$' and crypt.crypt(password, hashed) == hashed


def test_debian_guest_gets_hostname_network_keys_password_and_user_data(lab, kvm1, debian_image, bridge):
    image = 'test-debian-%s' % uuid.uuid4().hex[:8]
    inst_uuid = str(uuid.uuid4())
    hostname = 'gimg-%s' % inst_uuid[:8]
    mac = '52:54:00:%02x:%02x:%02x' % tuple(secrets.token_bytes(3))
    password, key, marker = secrets.token_urlsafe(18), public_key(), secrets.token_hex(8)
    user_data = ('#cloud-config\n'
                 'write_files:\n  - path: /var/tmp/multihv-written\n    content: "written %s"\n'
                 'runcmd:\n  - [sh, -c, "echo ran %s > /var/tmp/multihv-ran"]\n') % (marker, marker)
    guest = GuestConfig(uuid=inst_uuid, hostname=hostname, user_data=user_data, public_keys=(key,), admin_password=password,
                        nics=(GuestNic(mac, '192.0.2.10/24', '192.0.2.1', ('192.0.2.53',)),))
    spec = InstanceSpec(uuid=inst_uuid, name='test-%s' % hostname, node='kvm1', vcpus=1, memory_mb=512, disk_gb=3, image=image,
                        storage='local', hostname=hostname, networks=[{'network': bridge, 'mac': mac}], guest=guest,
                        image_properties={'virt_type': 'qemu'})
    kvm1.ensure_image(image, str(debian_image), 'qcow2')
    conn = lab.connect('kvm1')
    try:
        start = time.monotonic()
        kvm1.spawn(spec)
        domain = conn.lookupByUUIDString(inst_uuid)
        root = ET.fromstring(domain.XMLDesc(0))
        # TCG although the lab hosts offer KVM; the drive on the pc machine's IDE bus.
        assert root.get('type') == 'qemu'
        assert [d.find('target').get('bus') for d in root.findall('devices/disk[@device="cdrom"]')] == ['ide']

        guest_agent.wait_until_answering(domain, BOOT_TIMEOUT)
        status = guest_agent.cloud_init_finished(domain, BOOT_TIMEOUT - (time.monotonic() - start))
        booted = time.monotonic() - start
        assert 'status: done' in status and 'DataSourceNoCloud' in status, status

        assert guest_agent.host_name(domain) == hostname
        nic = guest_agent.interfaces(domain)[mac]
        assert nic.name == 'eth0' and '192.0.2.10/24' in nic.addresses, nic  # matched by MAC, renamed, addressed
        assert guest_agent.run(domain, ['ip', 'route', 'show', 'default']).stdout.split() == [
            'default', 'via', '192.0.2.1', 'dev', 'eth0']
        assert 'nameserver 192.0.2.53' in guest_agent.read_file(domain, '/etc/resolv.conf').splitlines()

        assert guest_agent.read_file(domain, '/var/tmp/multihv-written') == 'written %s' % marker
        assert guest_agent.read_file(domain, '/var/tmp/multihv-ran') == 'ran %s\n' % marker
        # The key is the default user's; root's authorized_keys has it too, behind cloud-init's
        # "log in as debian" command (disable_root).
        assert key in guest_agent.read_file(domain, '/home/debian/.ssh/authorized_keys').splitlines()
        assert guest_agent.read_file(domain, '/root/.ssh/authorized_keys').rstrip('\n').endswith(key)

        delivered = hashes_to(password, password_hash(domain, 'root'))
        assert delivered, 'root\'s password in the guest is not the one the config drive delivered'
        # The driver's set_admin_password reaches the same guest through its agent.
        new_password = secrets.token_urlsafe(18)
        kvm1.set_admin_password(inst_uuid, 'kvm1', 'root', new_password)
        hashed = password_hash(domain, 'root')
        changed = hashes_to(new_password, hashed) and not hashes_to(password, hashed)
        assert changed, 'set_admin_password did not change root\'s password in the guest'
        print('spawn to cloud-init done: %.1f s' % booted)  # shown with pytest -rP
    finally:
        conn.close()
        kvm1.destroy(inst_uuid, 'kvm1')
        kvm1.remove_image(image)
