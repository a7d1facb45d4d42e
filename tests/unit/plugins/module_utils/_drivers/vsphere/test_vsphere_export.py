"""What the vSphere driver's export of a stopped VM's disks reads (issue 19), without a vCenter: datastore paths,
the extents a VMDK descriptor names, the file access URL, and the annotation a kept (retired) VM is left with."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import export
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import format_annotation, without_marker

DESCRIPTOR = b'''# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 8388608 VMFS "app-1-flat.vmdk"

# The Disk Data Base
ddb.adapterType = "lsilogic"
'''


def test_a_datastore_path_names_its_datastore_and_path():
    assert export.datastore_path('[LocalDS_0] app-1/app-1.vmdk') == ('LocalDS_0', 'app-1/app-1.vmdk')
    with pytest.raises(errors.DriverError, match='is not a datastore path'):
        export.datastore_path('app-1.vmdk')


def test_a_descriptor_names_its_extents_and_a_single_file_vmdk_none():
    assert export.extents(DESCRIPTOR) == ['app-1-flat.vmdk']
    assert export.extents(b'KDMV\x01\x00\x00\x00' + bytes(100)) == []


def test_the_file_access_url_quotes_the_path_and_names_datacenter_and_datastore():
    assert export.folder_url('127.0.0.1', 9089, 'DC0', 'LocalDS_0', 'my vm/my vm.vmdk') == (
        'https://127.0.0.1:9089/folder/my%20vm/my%20vm.vmdk?dcPath=DC0&dsName=LocalDS_0')


def test_a_kept_vm_loses_the_marker_and_keeps_what_its_annotation_said_before():
    marked = format_annotation('0e9c4a5e-0000-4000-8000-000000000001', {'name': 'app-1'}) + '\nbuilt by hand in 2019'
    assert without_marker(marked) == 'built by hand in 2019'
    assert without_marker(format_annotation('0e9c4a5e-0000-4000-8000-000000000001', {})) == ''
    assert without_marker('no marker here') == 'no marker here'
