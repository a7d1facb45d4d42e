# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stopped VM's disks copied to the controller (issue 19: moves between hypervisor types).
Private to multihv.cloud: do not import.

Through vCenter's datastore file access over HTTPS, `https://<vcenter>:<port>/folder/<path>?dcPath=<datacenter>&
dsName=<datastore>`, with the SOAP session's cookie (vCenter and the simulator both serve it; the controller reaches
the vCenter, the KVM hosts need not). A VMDK on a datastore is a small text descriptor naming its extents (a
`-flat.vmdk` beside it, for a thick or thin disk on VMFS / NFS): the descriptor is copied, then each extent it names,
into one directory, so that qemu-img opens the descriptor as the disk. A single-file VMDK (monolithic sparse, stream
optimised: what qemu-img writes) is copied as it is. Pure parsing here is tested without a vCenter; the copy is
tested on the lab's simulator.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
import urllib.parse

from ansible.module_utils.urls import open_url
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

CHUNK = 1 << 20
# A descriptor is a few hundred bytes of text; anything larger is a disk's data.
DESCRIPTOR_LIMIT = 64 * 1024
DESCRIPTOR_MAGIC = b'# Disk DescriptorFile'
_DATASTORE_PATH = re.compile(r'^\[(?P<ds>[^\]]+)\]\s*(?P<path>.+)$')
_EXTENT = re.compile(r'^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+\w+\s+"(?P<file>[^"]+)"', re.MULTILINE)


def datastore_path(file_name):
    """(datastore, path inside it) of a datastore path '[ds] dir/file.vmdk'; errors.DriverError otherwise."""
    match = _DATASTORE_PATH.match(file_name or '')
    if match is None:
        raise errors.DriverError('%r is not a datastore path ([datastore] path)' % (file_name,))
    return match.group('ds'), match.group('path').strip()


def extents(descriptor):
    """The file names the extents of a VMDK descriptor's text (bytes) name, in order; [] for a file that is no
    descriptor (a single-file VMDK)."""
    if not descriptor.startswith(DESCRIPTOR_MAGIC):
        return []
    return _EXTENT.findall(descriptor.decode('utf-8', 'replace'))


def folder_url(hostname, port, dc_path, ds_name, path):
    """The datastore file access URL of path on datastore ds_name of datacenter dc_path."""
    query = urllib.parse.urlencode({'dcPath': dc_path, 'dsName': ds_name})
    return 'https://%s:%s/folder/%s?%s' % (hostname, port, urllib.parse.quote(path), query)


class Downloader:
    """Copies datastore files of one vCenter with one session cookie, within a deadline. progress(done, total) after
    each chunk (called on the caller's thread: the copy runs there)."""

    def __init__(self, vcenter, cookie, deadline, progress=None):
        """cookie: the session's Cookie header (VSphereSession.http_cookie); certificates checked as the login does."""
        self.vcenter, self.cookie, self.deadline, self.progress = vcenter, cookie, deadline, progress
        self.done, self.total = 0, 0

    def fetch(self, dc_path, ds_name, path, dest):
        """Copy one file to dest; its size."""
        url = folder_url(self.vcenter.hostname, self.vcenter.port, dc_path, ds_name, path)
        what = '[%s] %s' % (ds_name, path)
        try:
            # No proxy, as the SOAP connection: the controller reaches vCenter itself.
            with open_url(url, headers={'Cookie': self.cookie}, timeout=self.vcenter.timeout, validate_certs=self.vcenter.validate_certs,
                          use_proxy=False) as answer, open(dest, 'wb') as out:
                self.total += int(answer.headers.get('Content-Length') or 0)
                copied = 0
                while True:
                    if time.monotonic() > self.deadline:
                        raise errors.DriverError('copying %s from vCenter %s did not finish in time' % (what, self.vcenter.name))
                    chunk = answer.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    copied += len(chunk)
                    self.done += len(chunk)
                    if self.progress is not None:
                        self.progress(self.done, max(self.total, self.done))
                return copied
        except urllib.error.HTTPError as exc:
            raise errors.DriverError('vCenter %s refused the copy of %s: HTTP %s %s' % (self.vcenter.name, what, exc.code, exc.reason)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise errors.Unreachable('vCenter %s did not serve %s: %s' % (self.vcenter.name, what, getattr(exc, 'reason', None) or exc)) from None

    def fetch_disk(self, dc_path, file_name, dest_dir, prefix):
        """Copy the VMDK at datastore path file_name (its descriptor and extents, or its single file) into dest_dir, its
        files' names prefixed with prefix; the path of the file qemu-img opens."""
        ds_name, path = datastore_path(file_name)
        directory, base = path.rpartition('/')[0], path.rpartition('/')[2]
        first = os.path.join(dest_dir, prefix + base)
        self.fetch(dc_path, ds_name, path, first)
        with open(first, 'rb') as handle:
            head = handle.read(DESCRIPTOR_LIMIT + 1)
        names = extents(head) if len(head) <= DESCRIPTOR_LIMIT else []
        if not names:
            return first
        text = head.decode('utf-8', 'replace')
        for name in names:
            if '/' in name:
                raise errors.DriverError('disk %s names an extent %s outside its directory' % (file_name, name))
            self.fetch(dc_path, ds_name, '%s/%s' % (directory, name) if directory else name, os.path.join(dest_dir, prefix + name))
            text = text.replace('"%s"' % name, '"%s"' % (prefix + name))
        with open(first, 'w', encoding='utf-8') as handle:  # the descriptor names the copies
            handle.write(text)
        return first


def remove_partial(dest_dir, prefix):
    """Remove what a failed copy left in dest_dir (files whose names start with prefix)."""
    for name in os.listdir(dest_dir):
        if name.startswith(prefix):
            path = os.path.join(dest_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


__all__ = ['Downloader', 'datastore_path', 'extents', 'folder_url', 'remove_partial']
