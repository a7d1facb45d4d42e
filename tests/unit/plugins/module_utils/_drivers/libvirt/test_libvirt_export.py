"""Issue 19, KVM side, without a host: the names an export and a kept source domain get."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import instance_file_uuid
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import export

UUID = '6f1c1d0e-3c57-4a4b-9f55-2b0e0f1d2c3a'


def test_a_kept_domain_is_renamed_once():
    assert export.moved_name('web-1', UUID) == 'web-1.moved-6f1c1d0e'
    assert export.moved_name('web-1.moved-6f1c1d0e', UUID) == 'web-1.moved-6f1c1d0e'  # retire_converted is idempotent


def test_the_temporary_copy_is_an_instance_file_and_the_controller_files_are_per_disk():
    # Named after the instance: a controller that dies mid-export leaves a file the reconciler's sweep finds.
    assert instance_file_uuid(export.export_name(UUID, 0)) == UUID
    assert export.export_name(UUID, 1) == UUID + '.export-1.qcow2'
    assert [export.controller_name(UUID, i) for i in (0, 1)] == [UUID + '-disk0.qcow2', UUID + '-disk1.qcow2']
