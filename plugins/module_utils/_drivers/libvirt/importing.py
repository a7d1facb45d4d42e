# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks of another hypervisor type made into an instance's qcow2 (issue 19: moves between types).
Private to multihv.cloud: do not import.

The conversion runs on the controller with qemu-img (Debian's qemu-utils, in bindep.txt): the controller
already holds the exported files and streams images to hosts through libvirt, and the KVM hosts then need no
tool and no access to the vCenter's datastores (which only the controller reaches over HTTPS). The result is
one flattened qcow2 (no backing file), grown to the flavor's disk when that is larger, uploaded as the
instance's `<uuid>.qcow2` volume.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

# What qemu-img reads that other hypervisors write.
CONVERTIBLE = ('qcow2', 'vmdk', 'raw')
QEMU_IMG = 'qemu-img'


def _qemu_img(args, timeout, what):
    """qemu-img with args; its stdout. errors.DriverError saying what failed (its stderr) otherwise."""
    try:
        done = subprocess.run([QEMU_IMG] + args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise errors.DriverError('%s: qemu-img is not installed on the controller (Debian package qemu-utils)' % what) from None
    except subprocess.TimeoutExpired:
        raise errors.DriverError('%s: qemu-img did not finish within %d s' % (what, timeout)) from None
    if done.returncode != 0:
        raise errors.DriverError('%s: qemu-img %s failed: %s' % (what, args[0], (done.stderr or done.stdout).strip()))
    return done.stdout


def info(path, disk_format, timeout=60):
    """qemu-img's view of the file (format, virtual-size, backing-filename...), read as disk_format."""
    return json.loads(_qemu_img(['info', '--output=json', '-f', disk_format, path], timeout, 'reading disk %s' % path))


def check(disk, what):
    """Refuse (errors.DriverError, nothing made) a DiskFile qemu-img cannot make into a flattened qcow2: an unknown
    format, a file that is not what its format says, or one with a backing file (exports are flattened)."""
    if disk.disk_format not in CONVERTIBLE:
        raise errors.DriverError('%s: disk %s is in format %s, which cannot be converted (qemu-img reads %s)'
                                 % (what, os.path.basename(disk.path), disk.disk_format, ', '.join(CONVERTIBLE)))
    try:
        found = info(disk.path, disk.disk_format)
    except errors.DriverError as exc:
        raise errors.DriverError('%s: disk %s is not a %s file qemu-img can read (%s)'
                                 % (what, os.path.basename(disk.path), disk.disk_format, exc)) from None
    if found.get('format') != disk.disk_format:
        raise errors.DriverError('%s: disk %s is not a %s file qemu-img can read' % (what, os.path.basename(disk.path), disk.disk_format))
    if found.get('backing-filename'):
        raise errors.DriverError('%s: disk %s has a backing file: it must be exported flattened' % (what, os.path.basename(disk.path)))
    return found


def to_qcow2(disk, dest, min_bytes, timeout, what):
    """The DiskFile converted to a flattened qcow2 file at dest on the controller, its virtual size at least min_bytes;
    (file size, virtual size). A failure removes dest."""
    check(disk, what)
    try:
        _qemu_img(['convert', '-f', disk.disk_format, '-O', 'qcow2', disk.path, dest], timeout, what)
        virtual = int(info(dest, 'qcow2')['virtual-size'])
        if virtual < min_bytes:
            _qemu_img(['resize', '-f', 'qcow2', dest, str(min_bytes)], timeout, what)
            virtual = min_bytes
    except BaseException:
        if os.path.exists(dest):
            os.unlink(dest)
        raise
    return os.path.getsize(dest), virtual


__all__ = ['CONVERTIBLE', 'check', 'info', 'to_qcow2']
