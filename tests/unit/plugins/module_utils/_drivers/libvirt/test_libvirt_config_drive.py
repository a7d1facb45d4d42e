"""The KVM driver's config drive without a host: the file's name, which CD-ROM is the instance's
own, the ISO built before any I/O, and guest agent failures told without the password."""

from __future__ import annotations

import io
import uuid as uuidlib

import pycdlib
import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec, instance_file_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import driver as libvirt_driver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.domains import config_drives, files_of
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.storage import instance_file_names
from ansible_collections.multihv.cloud.plugins.module_utils._guest.bootstrap import GuestConfig, GuestNic

UUID = '6f1c2b9e-4a55-4c1e-9a57-0d4f5f6e7a81'
SECRET = 'Unit-Secret-9'


def spec(**overrides):
    values = dict(uuid=UUID, name='web-1', node='kvm1', vcpus=1, memory_mb=64, disk_gb=1, image='tick', hostname='web-1',
                  guest=GuestConfig(uuid=UUID, hostname='web-1', admin_password=SECRET, nics=(GuestNic('52:54:00:00:00:07', '192.0.2.7/24'),)))
    values.update(overrides)
    return InstanceSpec(**values)


def read_iso(data, name):
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path='/' + name)
        return out.getvalue().decode()
    finally:
        iso.close()


def test_the_config_drive_is_named_after_the_instance():
    disk, log, drive = instance_file_names(UUID)
    assert (disk, log, drive) == (UUID + '.qcow2', UUID + '.console.log', UUID + '.config.iso')
    assert instance_file_uuid(drive) == UUID  # so listing, leftovers, orphans and destroy cover it


def test_only_the_cdrom_named_after_the_instance_is_its_file():
    own = '/srv/i/%s.config.iso' % UUID
    xml = domxml.build_domain(spec(), '/srv/i/%s.qcow2' % UUID, '/srv/i/%s.console.log' % UUID, config_drive=own)
    info = domxml.parse_domain(xml)
    assert config_drives(info) == [own]
    assert files_of(info) == ['/srv/i/%s.qcow2' % UUID, own, '/srv/i/%s.console.log' % UUID]
    other = domxml.parse_domain(xml.replace(own, '/srv/i/install.iso'))  # attached by hand: not the instance's to delete or copy
    assert config_drives(other) == [] and '/srv/i/install.iso' not in files_of(other)


def test_the_drive_is_built_from_the_guest_data_before_any_io():
    data = LibvirtDriver._config_drive_image(spec(), UUID)  # pylint: disable=protected-access
    assert 'instance-id: %s' % UUID in read_iso(data, 'meta-data') and 'web-1' in read_iso(data, 'meta-data')
    assert '52:54:00:00:00:07' in read_iso(data, 'network-config')
    assert SECRET in read_iso(data, 'user-data')
    assert LibvirtDriver._config_drive_image(spec(guest=None), UUID) is None  # pylint: disable=protected-access


def test_guest_data_of_another_instance_is_refused_without_connecting():
    cloud = _config.parse({'kvm_hosts': [{'name': 'kvm1', 'uri': 'qemu+tcp://192.0.2.1/system'}],
                           'registry': {'url': 'sqlite:////tmp/r.sqlite'}}, 'cloud.yml', {})
    driver = LibvirtDriver(cloud.kvm_hosts[0])  # TEST-NET: a connection attempt would hang, not pass
    other = str(uuidlib.uuid4())
    with pytest.raises(errors.DriverError, match='its guest data is for instance %s; nothing was created' % other) as raised:
        driver.spawn(spec(guest=GuestConfig(uuid=other, hostname='x', admin_password=SECRET)))
    assert SECRET not in str(raised.value) and SECRET not in repr(raised.value)
    driver.close()


class AgentError(Exception):
    """What the driver reads of a libvirtError."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message

    def get_error_code(self):
        return self.code

    def get_error_message(self):
        return self.message


@pytest.mark.parametrize('code, message, expected', [
    ('VIR_ERR_AGENT_UNRESPONSIVE', 'Guest agent is not responding: QEMU guest agent is not connected', 'guest agent does not answer'),
    ('VIR_ERR_ARGUMENT_UNSUPPORTED', 'argument unsupported: QEMU guest agent is not configured', 'no QEMU guest agent channel'),
    ('VIR_ERR_OPERATION_INVALID', 'domain is not running', 'it is not running'),
    ('VIR_ERR_INTERNAL_ERROR', 'unable to execute QEMU agent command', 'the guest agent refused'),
])
def test_guest_agent_failures_say_why(code, message, expected):
    libvirt = pytest.importorskip('libvirt')
    text = libvirt_driver._agent_failure(AgentError(getattr(libvirt, code), message), SECRET)  # pylint: disable=protected-access
    assert expected in text and message in text


def test_a_libvirt_message_that_echoes_the_password_is_left_out():
    libvirt = pytest.importorskip('libvirt')
    text = libvirt_driver._agent_failure(  # pylint: disable=protected-access
        AgentError(libvirt.VIR_ERR_INTERNAL_ERROR, 'chpasswd: bad input root:%s' % SECRET), SECRET)
    assert SECRET not in text and text == 'the guest agent refused'
