"""Pure pieces of migration: libvirt job statistics and volume XML as we read them."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.migration import job_stats
from ansible_collections.multihv.cloud.plugins.module_utils._compute.migrations import _mode_for
from support.records import instance


def test_job_stats_keeps_the_reported_keys_under_our_names():
    params = {'type': 3, 'data_total': 34086912, 'data_processed': 570528, 'data_remaining': 0, 'downtime': 16,
              'time_elapsed': 342, 'memory_bps': 99, 'disk_total': 0}
    assert job_stats(params) == {'data_total': 34086912, 'data_processed': 570528, 'data_remaining': 0, 'downtime_ms': 16,
                                 'time_elapsed_ms': 342, 'disk_total': 0}
    assert job_stats({}) == {}


def test_parse_volume_round_trips_volume_xml():
    xml = domxml.volume_xml('u.qcow2', 1 << 30, 'qcow2', backing_path='/var/lib/i/_base/tick.qcow2', backing_format='qcow2')
    assert domxml.parse_volume(xml) == domxml.VolumeInfo(1 << 30, 'qcow2', '/var/lib/i/_base/tick.qcow2', 'qcow2')
    assert domxml.parse_volume(domxml.volume_xml('b.raw', 512)) == domxml.VolumeInfo(512, 'raw', None, None)


def test_a_drain_moves_stopped_instances_cold():
    assert _mode_for(instance(state='stopped'), 'auto') == 'cold'
    assert _mode_for(instance(state='stopped'), 'live') == 'cold'
    assert _mode_for(instance(state='running'), 'auto') == 'auto'
    assert _mode_for(instance(state='running'), 'block') == 'block'
