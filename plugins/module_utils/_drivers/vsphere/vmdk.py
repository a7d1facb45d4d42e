# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A disk file turned into a VMDK an ESXi datastore uses as it is, with qemu-img on the controller (issue 19).
Private to multihv.cloud: do not import.

Why on the controller: the controller already streams the disk (from the KVM host, to vCenter's datastore
file access), the ESXi hosts need no tool of ours, and vCenter's datastore HTTPS is reachable from the
controller only.

Which VMDK: a datastore PUT through /folder stores bytes as they come, and ESXi attaches only its own
(VMFS) disk kinds. The hosted kinds qemu-img can write, monolithicSparse and streamOptimized, are refused
when attached ("Unsupported or invalid disk type": they need vmkfstools -i, or an OVF import through an
NFC lease for streamOptimized). A VMFS flat disk is a descriptor plus a raw extent: qemu-img writes it as
monolithicFlat (`<name>.vmdk` + `<name>-flat.vmdk`), and the descriptor is rewritten here to what ESXi
writes for a thick disk (createType "vmfs", extent type VMFS, a geometry with cylinders). The cost: the
extent is the disk's whole virtual size on the wire (no sparseness over HTTP), and the disk is thick
on the datastore. vcsim keeps a disk as that same pair of names (its VirtualDiskManager).
"""

from __future__ import annotations

import os
import re
import subprocess

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

SECTOR = 512
# Formats qemu-img reads that a DiskFile may have.
SOURCE_FORMATS = ('qcow2', 'vmdk', 'raw')
# ESXi's disk geometry for SCSI disks: 255 heads, 63 sectors per track.
HEADS, SECTORS = 255, 63
_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+FLAT\s+"([^"]+)"(?:\s+\d+)?\s*$')


def names(stem):
    """(descriptor, extent) file names of the VMFS flat disk `stem`."""
    return '%s.vmdk' % stem, '%s-flat.vmdk' % stem


def vmfs_descriptor(text):
    """qemu-img's monolithicFlat descriptor rewritten as an ESXi thick (VMFS flat) disk's: createType "vmfs", the
    extent of type VMFS (no offset), cylinders from the size, the adapter lsilogic. errors.DriverError when the
    text is not one flat extent (nothing else is expected of qemu-img)."""
    lines, extents, sectors = [], 0, 0
    for line in text.splitlines():
        stripped = line.strip()
        match = _EXTENT.match(stripped)
        if stripped.startswith('createType='):
            line = 'createType="vmfs"'
        elif match:
            extents += 1
            sectors = int(match.group(2))
            line = '%s %s VMFS "%s"' % (match.group(1), match.group(2), match.group(3))
        elif stripped.startswith('ddb.geometry.cylinders'):
            line = None
        elif stripped.startswith('ddb.adapterType'):
            line = 'ddb.adapterType = "lsilogic"'
        if line is not None:
            lines.append(line)
    if extents != 1:
        raise errors.DriverError('qemu-img wrote a VMDK descriptor with %d flat extents, not one' % extents)
    cylinders = min(-(-sectors // (HEADS * SECTORS)), 65535)
    lines.append('ddb.geometry.cylinders = "%d"' % cylinders)
    return '\n'.join(lines) + '\n'


def convert(source, disk_format, dest_dir, stem, timeout):
    """Convert the controller file `source` (disk_format) into the VMFS flat disk `stem` in dest_dir (qemu-img
    convert, then the descriptor rewritten); (descriptor path, extent path, virtual size in bytes). The virtual
    size is rounded up to a whole sector by qemu-img. On failure whatever it wrote is removed."""
    if disk_format not in SOURCE_FORMATS:
        raise errors.DriverError('a disk in format %r cannot be converted (qemu-img reads %s)' % (disk_format, ', '.join(SOURCE_FORMATS)))
    descriptor, extent = (os.path.join(dest_dir, name) for name in names(stem))
    command = ['qemu-img', 'convert', '-q', '-f', disk_format, '-O', 'vmdk', '-o', 'subformat=monolithicFlat,adapter_type=lsilogic',
               source, descriptor]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            why = done.stderr.strip() or 'exit %d' % done.returncode
            raise errors.DriverError('qemu-img could not convert %s to VMDK: %s' % (os.path.basename(source), why))
        with open(descriptor, encoding='utf-8') as handle:
            text = vmfs_descriptor(handle.read())
        with open(descriptor, 'w', encoding='utf-8') as handle:
            handle.write(text)
        return descriptor, extent, os.path.getsize(extent)
    except FileNotFoundError as exc:
        _remove(descriptor, extent)
        if exc.filename == 'qemu-img':
            raise errors.DriverError('qemu-img is not installed on the controller (Debian: qemu-utils): it converts the disks') from None
        raise
    except subprocess.TimeoutExpired:
        _remove(descriptor, extent)
        raise errors.DriverError('qemu-img did not convert %s to VMDK within %s s' % (os.path.basename(source), timeout)) from None
    except BaseException:
        _remove(descriptor, extent)
        raise


def _remove(*paths):
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


__all__ = ['SOURCE_FORMATS', 'convert', 'names', 'vmfs_descriptor']
