"""The KVM resize's domain XML: new vCPUs and RAM, the multihv metadata's flavor saying so, the rest kept (pure logic)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import resizing

UUID = '6f1c2b9e-4a55-4c1e-9a57-0d4f5f6e7a81'


def built():
    spec = InstanceSpec(uuid=UUID, name='web-1', node='kvm1', vcpus=1, memory_mb=64, disk_gb=1, image='tick')
    return domxml.build_domain(spec, '/srv/i/%s.qcow2' % UUID, '/srv/i/%s.console.log' % UUID)


def test_sized_xml_sets_vcpus_memory_and_the_metadata_flavor_and_keeps_the_rest():
    before = built()
    after = resizing.sized_xml(before, 3, 256)
    info = domxml.parse_domain(after)
    assert (info.vcpus, info.memory_mb, info.name, info.uuid) == (3, 256, 'web-1', UUID)
    assert info.disk_paths == domxml.parse_domain(before).disk_paths and info.console_log == domxml.parse_domain(before).console_log
    root = ET.fromstring(after)
    assert root.find('currentMemory').text == '256' and root.find('currentMemory').get('unit') == 'MiB'
    flavor = root.find('metadata/{%s}instance/{%s}flavor' % (domxml.NAMESPACE, domxml.NAMESPACE))
    assert (flavor.get('vcpus'), flavor.get('memory_mb'), flavor.get('disk_gb')) == ('3', '256', '1')
    assert info.managed is not None  # still ours


def test_sized_xml_replaces_a_kib_memory_and_a_current_vcpu_count():
    xml = built().replace('<vcpu>1</vcpu>', "<vcpu current='1'>4</vcpu>")
    xml = xml.replace('<memory unit="MiB">64</memory>', "<memory unit='KiB'>65536</memory>")
    assert "current='1'" in xml and "unit='KiB'" in xml  # libvirt's own way of writing them back
    after = ET.fromstring(resizing.sized_xml(xml, 2, 128))
    assert after.find('vcpu').text == '2' and after.find('vcpu').get('current') is None
    assert (after.find('memory').text, after.find('memory').get('unit')) == ('128', 'MiB')


def test_the_kept_copy_sits_beside_the_disk_named_after_the_instance():
    assert resizing.kept_path('/srv/i/%s.qcow2' % UUID, UUID) == '/srv/i/%s.resize.qcow2' % UUID
