"""Pure pieces of migration: libvirt job statistics and volume XML as we read them."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.migration import finished_stats, job_stats, most_copied
from ansible_collections.multihv.cloud.plugins.module_utils._compute.migrations import _mode_for
from support.records import instance


def test_job_stats_keeps_the_reported_keys_under_our_names():
    params = {'type': 3, 'data_total': 34086912, 'data_processed': 570528, 'data_remaining': 0, 'downtime': 16,
              'time_elapsed': 342, 'memory_bps': 99, 'disk_total': 0}
    assert job_stats(params) == {'data_total': 34086912, 'data_processed': 570528, 'data_remaining': 0, 'downtime_ms': 16,
                                 'time_elapsed_ms': 342, 'disk_total': 0}
    assert job_stats({}) == {}


def test_a_block_migration_keeps_the_disk_figures_its_source_saw():
    """Polls of a lab block migration's source (libvirt 9.0): the NBD mirror's figures show only near the
    end; the target's record of the finished job has 0 for them, and its own downtime and memory figures."""
    polls = [{'disk_total': 0, 'disk_processed': 0, 'memory_processed': 0},
             {'disk_total': 65536, 'disk_processed': 0, 'memory_processed': 0},
             {'disk_total': 65536, 'disk_processed': 65536, 'memory_processed': 574623, 'downtime_ms': 300},
             {'disk_total': 0, 'disk_processed': 0, 'memory_processed': 574623}]  # the mirror ended before the job
    copied = {}
    for poll in polls:
        copied = most_copied(copied, poll)
    completed = {'disk_total': 0, 'disk_processed': 0, 'disk_remaining': 0, 'memory_processed': 574623, 'downtime_ms': 82}
    assert finished_stats(polls[-1], copied, completed) == {
        'disk_total': 65536, 'disk_processed': 65536, 'disk_remaining': 0, 'memory_processed': 574623, 'downtime_ms': 82}
    # A poll that saw the mirror's total only: the job completed, so all of it was copied.
    assert finished_stats({}, most_copied({}, polls[1]), completed)['disk_processed'] == 65536
    # A live migration (shared disks): no disk figures but the reported zeros, as before.
    assert finished_stats({'memory_processed': 9}, {}, {'memory_processed': 10}) == {'memory_processed': 10}
    assert finished_stats({}, most_copied({}, {'disk_total': 0}), completed)['disk_total'] == 0


def test_parse_volume_round_trips_volume_xml():
    xml = domxml.volume_xml('u.qcow2', 1 << 30, 'qcow2', backing_path='/var/lib/i/_base/tick.qcow2', backing_format='qcow2')
    assert domxml.parse_volume(xml) == domxml.VolumeInfo(1 << 30, 'qcow2', '/var/lib/i/_base/tick.qcow2', 'qcow2')
    assert domxml.parse_volume(domxml.volume_xml('b.raw', 512)) == domxml.VolumeInfo(512, 'raw', None, None)


def test_a_drain_moves_stopped_instances_cold():
    assert _mode_for(instance(state='stopped'), 'auto') == 'cold'
    assert _mode_for(instance(state='stopped'), 'live') == 'cold'
    assert _mode_for(instance(state='running'), 'auto') == 'auto'
    assert _mode_for(instance(state='running'), 'block') == 'block'
