"""The lab guest's serial log parser and domain XML (pure logic)."""

import xml.etree.ElementTree as ET

import pytest

from support import guest

LIVE_MIGRATED = """SeaBIOS (version 1.16.2-debian-1.16.2-1)
Booting from Hard Disk...
boot 1 persisted none\r
tick 1\r
tick 2\r
tick 3\r
tick 4\r
"""


def test_one_boot_with_its_ticks():
    boots = guest.parse_serial(LIVE_MIGRATED)
    assert boots == [guest.Boot(1, None, (1, 2, 3, 4))]
    assert not guest.gaps(boots[0].ticks)


def test_restart_from_the_same_disk_is_a_second_boot():
    log = LIVE_MIGRATED + 'SeaBIOS\nboot 2 persisted 4\ntick 1\ntick 2\n'
    boots = guest.parse_serial(log)
    assert [(b.number, b.persisted, b.ticks) for b in boots] == [(1, None, (1, 2, 3, 4)), (2, 4, (1, 2))]


def test_large_counters_and_partial_last_line():
    boots = guest.parse_serial('boot 7 persisted 4294967295\ntick 70000\ntick 70001\ntick 7000')
    assert boots[0].persisted == 4294967295
    # A line still being written parses as a tick of its own digits; callers
    # read the last complete value with a margin, and gaps() shows the jump.
    assert boots[0].ticks[:2] == (70000, 70001)
    assert guest.gaps((70000, 70001, 7000)) == [(70001, 7000)]


def test_ticks_before_any_boot_line_are_ignored():
    assert not guest.parse_serial('tick 5\ntick 6\n')


def test_gaps_find_a_restart_or_a_lost_tick():
    assert guest.gaps((1, 2, 4, 5, 1)) == [(2, 4), (5, 1)]


def test_domain_xml_has_the_disk_and_file_serial():
    xml = guest.domain_xml('g1', '/x/disk.qcow2', '/x/serial.log', domain_type='qemu', uuid='1' * 32)
    root = ET.fromstring(xml)
    assert root.get('type') == 'qemu'
    assert root.findtext('name') == 'g1'
    assert root.find('devices/disk/source').get('file') == '/x/disk.qcow2'
    assert root.find('devices/disk/driver').attrib == {'name': 'qemu', 'type': 'qcow2', 'cache': 'writethrough'}
    serial = root.find('devices/serial')
    assert serial.get('type') == 'file'
    assert serial.find('source').attrib == {'path': '/x/serial.log', 'append': 'on'}
    assert root.find('devices/graphics') is None


def test_domain_xml_escapes_names_and_paths():
    root = ET.fromstring(guest.domain_xml("a<b>&'c", "/x/'q\"&.img", '/x/s.log', disk_format='raw'))
    assert root.findtext('name') == "a<b>&'c"
    assert root.find('devices/disk/source').get('file') == "/x/'q\"&.img"


@pytest.mark.parametrize('kwargs', [{'domain_type': 'xen'}, {'disk_format': 'vmdk'}])
def test_domain_xml_rejects_what_the_lab_cannot_run(kwargs):
    with pytest.raises(ValueError):
        guest.domain_xml('g', '/d', '/s', **kwargs)
