# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One KVM host's libvirt connection, and every call to it bounded by a deadline.
Private to multihv.cloud: do not import.

libvirt's client blocks for as long as TCP or the RPC handshake does, and one dead
host must be reported down, not stall the whole cloud. Connecting gets KvmHost.timeout
(short); work that the caller bounds (an upload, a spawn, a destroy) gets its own
deadline once the host has answered.
"""

from __future__ import annotations

import threading

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import call_within

try:
    import libvirt
    HAS_LIBVIRT = True
except ImportError:  # pragma: no cover - reported when used
    HAS_LIBVIRT = False


def _quiet(_ctx, _err):
    """libvirt prints every error on stderr by default; ours are raised, with context."""


if HAS_LIBVIRT:
    libvirt.registerErrorHandler(_quiet, None)


class HostConnection:
    """The libvirt connection to one KVM host (a KvmHost of the cloud file), opened on first
    use and shared by the threads of one driver."""

    def __init__(self, host):
        self.host = host
        self._conn = None
        self._guard = threading.Lock()

    def what(self):
        """How messages name the host."""
        return 'KVM host %s at %s' % (self.host.name, self.host.uri)

    def open(self):
        """The connection, opened if need be; no deadline of its own (call it inside one).
        errors.MissingLibrary without libvirt-python, errors.Unreachable when the host refuses."""
        if not HAS_LIBVIRT:
            raise errors.MissingLibrary('libvirt-python', 'for KVM hosts')
        with self._guard:  # threads of one driver share one connection
            if self._conn is None:
                try:
                    self._conn = libvirt.open(self.host.uri)
                except libvirt.libvirtError as exc:
                    raise errors.Unreachable('%s did not answer: %s' % (self.what(), exc.get_error_message()))
            return self._conn

    def connect(self):
        """The connection within KvmHost.timeout, so that a dead host is reported as fast as by a probe."""
        return call_within(self.host.timeout, self.what(), self.open)

    def run(self, doing, work, seconds):
        """work(conn) on a connection opened within KvmHost.timeout, the work itself within
        `seconds`. libvirt errors not handled by work become DriverErrors naming the host and
        what was being done.

        A call that overstays is left running (see call_within): the error says so, the
        next list_instances tells what it did.
        """
        conn = self.connect()

        def guarded():
            try:
                return work(conn)
            except libvirt.libvirtError as exc:
                raise errors.DriverError('%s failed %s: %s' % (self.what(), doing, exc.get_error_message())) from exc

        return call_within(seconds, '%s (%s; it may still complete)' % (self.what(), doing), guarded)

    def close(self):
        """Release the connection, if any. Idempotent."""
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass  # a host that died meanwhile has nothing left to release
            self._conn = None


__all__ = ['HAS_LIBVIRT', 'HostConnection']
