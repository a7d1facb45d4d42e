"""Disks of another hypervisor type made into a KVM instance's qcow2 (issue 19), with the controller's real qemu-img:
a flattened VMDK becomes a qcow2 grown to the flavor's disk, with the guest's bytes intact; what cannot be converted is
refused before anything is made."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import DiskFile
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import importing

pytestmark = pytest.mark.skipif(shutil.which('qemu-img') is None, reason='qemu-img (qemu-utils) is not installed')
MIB = 1 << 20


def qemu_img(*args):
    subprocess.run(('qemu-img',) + args, check=True, capture_output=True)


@pytest.fixture(name='vmdk')
def vmdk_fixture(tmp_path):
    """A 4 MiB raw disk whose first sector is marked, converted to a (flattened, single-file) VMDK."""
    raw = tmp_path / 'disk.raw'
    raw.write_bytes(b'BOOT' + bytes(4 * MIB - 4))
    qemu_img('convert', '-f', 'raw', '-O', 'vmdk', str(raw), str(tmp_path / 'disk.vmdk'))
    return DiskFile(str(tmp_path / 'disk.vmdk'), 'vmdk', 4 * MIB)


def test_a_vmdk_becomes_a_flat_qcow2_grown_to_the_flavor_disk_with_the_same_bytes(tmp_path, vmdk):
    dest = str(tmp_path / 'out.qcow2')
    size, virtual = importing.to_qcow2(vmdk, dest, 8 * MIB, 60, 'test')
    found = importing.info(dest, 'qcow2')
    assert (found['format'], found['virtual-size'], virtual, size) == ('qcow2', 8 * MIB, 8 * MIB, os.path.getsize(dest))
    assert 'backing-filename' not in found
    qemu_img('convert', '-f', 'qcow2', '-O', 'raw', dest, str(tmp_path / 'back.raw'))
    assert (tmp_path / 'back.raw').read_bytes()[:4] == b'BOOT'


def test_a_disk_larger_than_the_flavor_keeps_its_size(tmp_path, vmdk):
    assert importing.to_qcow2(vmdk, str(tmp_path / 'out.qcow2'), 1 * MIB, 60, 'test')[1] == 4 * MIB


@pytest.mark.parametrize('disk_format, message', [('vhdx', 'in format vhdx, which cannot be converted'),
                                                  ('qcow2', 'is not a qcow2 file')])
def test_what_cannot_be_converted_is_refused_and_nothing_is_left(tmp_path, vmdk, disk_format, message):
    dest = tmp_path / 'out.qcow2'
    with pytest.raises(errors.DriverError, match=message):
        importing.to_qcow2(DiskFile(vmdk.path, disk_format, vmdk.virtual_size), str(dest), 0, 60, 'test')
    assert not dest.exists()


def test_a_disk_with_a_backing_file_is_refused(tmp_path, vmdk):
    base = str(tmp_path / 'base.qcow2')
    qemu_img('convert', '-f', 'vmdk', '-O', 'qcow2', vmdk.path, base)
    qemu_img('create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', str(tmp_path / 'top.qcow2'))
    with pytest.raises(errors.DriverError, match='has a backing file: it must be exported flattened'):
        importing.to_qcow2(DiskFile(str(tmp_path / 'top.qcow2'), 'qcow2', 4 * MIB), str(tmp_path / 'out.qcow2'), 0, 60, 'test')
