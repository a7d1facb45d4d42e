"""The pure parts of a KVM capture (snapshot.py): which disk is captured, when a block copy is in step, where it
goes. The capture itself runs against real libvirt hosts in tests/integration (test_driver_contract.py, test_snapshots.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import snapshot

DOMAIN = '''<domain><devices>
  <disk type='file' device='cdrom'><source file='/i/u.config.iso'/><target dev='sda'/></disk>
  <disk type='file' device='disk'><source file='/i/u.qcow2'/><target dev='vda'/>%s</disk>
</devices></domain>'''


def test_the_root_disk_is_the_first_file_disk_not_the_config_drive():
    assert snapshot.root_disk(DOMAIN % '') == ('vda', '/i/u.qcow2')
    with pytest.raises(errors.DriverError, match='no file disk'):
        snapshot.root_disk('<domain><devices/></domain>')


def test_a_block_copy_is_in_step_only_once_its_mirror_says_ready():
    assert snapshot.mirror_ready(DOMAIN % '', 'vda') is False
    assert snapshot.mirror_ready(DOMAIN % "<mirror type='file' job='copy'/>", 'vda') is False
    assert snapshot.mirror_ready(DOMAIN % "<mirror type='file' job='copy' ready='yes'/>", 'vda') is True
    assert snapshot.mirror_ready(DOMAIN % "<mirror type='file' job='copy' ready='yes'/>", 'vdb') is False


def test_the_copy_goes_to_a_qcow2_file():
    disk = ET.fromstring(snapshot.copy_xml('/i/_base/web.qcow2'))
    assert (disk.get('type'), disk.find('source').get('file'), disk.find('driver').get('type')) == ('file', '/i/_base/web.qcow2', 'qcow2')
