# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A session of one vCenter: login within a deadline, one login shared by threads, a second
login when vCenter dropped the session, logout, and vCenter's failures mapped to errors.*.
Private to multihv.cloud: do not import.
"""

from __future__ import annotations

import http.cookies
import socket
import ssl
import threading

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import call_within
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import (
    NETWORK_ERRORS, fault_text, pyvim_connect, require, vim, vmodl,
)


class Session:
    """The session of one vCenter (a cloud file's VCenter); it logs in when first used."""

    def __init__(self, vcenter):
        self.vcenter = vcenter
        self._si = None
        self._content = None
        # The core boots instances on several threads with one driver: one login for all.
        self._login_lock = threading.Lock()
        self._tls = None

    @property
    def endpoint(self):
        return 'vCenter %s at %s:%s' % (self.vcenter.name, self.vcenter.hostname, self.vcenter.port)

    def run(self, operation, what='the inventory retrieval'):
        """operation(content) on a logged-in session; logs in again once when vCenter
        dropped the session (idle sessions expire), maps failures to errors.*; `what`
        names the operation in the message of a fault nothing else explained."""
        for attempt in (1, 2):
            content = self._connect()
            try:
                return operation(content)
            except vim.fault.NotAuthenticated:
                self._forget()
                if attempt == 2:
                    raise errors.DriverError('%s dropped the session just opened by %s' % (self.endpoint, self.vcenter.username)) from None
            except vmodl.MethodFault as exc:
                raise errors.DriverError('%s refused %s: %s' % (self.endpoint, what, fault_text(exc))) from exc
            except NETWORK_ERRORS as exc:
                self._forget()
                raise self._failure(exc) from exc
        raise AssertionError('unreachable')  # pragma: no cover

    def http_cookie(self):
        """The Cookie header that carries this session to vCenter's other HTTPS services (datastore file access,
        /folder), logging in first if need be. A secret like a password: it is in no message."""
        self._connect()
        morsel = http.cookies.SimpleCookie(self._si._stub.cookie or '').get('vmware_soap_session')  # pylint: disable=protected-access
        if morsel is None:
            raise errors.DriverError('%s gave its SOAP session no vmware_soap_session cookie: its datastore files cannot be '
                                     'reached over HTTPS' % self.endpoint)
        return '%s=%s' % (morsel.key, morsel.coded_value)

    def tls_context(self):
        """The TLS context of HTTPS calls besides SOAP, verifying as the login does (validate_certs). Made once per
        session: loading the system's CA certificates took 0.05 s a call, and the node inventory makes one on every
        retrieval (streamed.py); one that does not verify loads none."""
        with self._login_lock:
            if self._tls is None:
                if self.vcenter.validate_certs:
                    self._tls = ssl.create_default_context()
                else:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    self._tls = context
            return self._tls

    def close(self):
        """Log out (frees the vCenter session now, not at its idle timeout) and drop the sockets."""
        si, content = self._si, self._content
        self._si = self._content = None
        if si is None:
            return
        try:
            content.sessionManager.Logout()
        except (vmodl.MethodFault,) + NETWORK_ERRORS:
            pass  # the session or the vCenter is gone already: nothing left to free
        finally:
            si._stub.DropConnections()  # pylint: disable=protected-access
            if pyvim_connect.GetSi() is si:  # SmartConnect also keeps it as pyVim's default
                pyvim_connect.SetSi(None)

    def _connect(self):
        with self._login_lock:
            if self._content is None:
                self._login()
            return self._content

    def _login(self):
        require(self.vcenter)
        vc = self.vcenter
        if vc.validate_certs:
            # An explicit context: given none, pyVmomi skips verification for localhost,
            # 127.0.0.1 and ::1 whatever validate_certs says.
            tls = {'sslContext': ssl.create_default_context()}
        else:
            tls = {'disableSslCertValidation': True}

        def login():
            si = pyvim_connect.SmartConnect(
                host=vc.hostname, port=vc.port, user=vc.username, pwd=vc.password,
                # Bounds every later SOAP request (per socket operation).
                httpConnectionTimeout=vc.timeout, **tls)
            # RetrieveContent is a SOAP call each time: fetch the ServiceContent once per session.
            return si, si.RetrieveContent()

        try:
            self._si, self._content = call_within(vc.timeout, self.endpoint, login)
        except errors.Unreachable:
            raise  # the deadline passed
        except vim.fault.InvalidLogin:
            raise errors.AuthenticationFailed('%s refused the credentials of user %s' % (self.endpoint, vc.username)) from None
        except vim.fault.HostConnectFault as exc:  # pyVmomi's wrapping of a failed first SOAP call
            raise errors.Unreachable('%s did not answer: %s' % (self.endpoint, fault_text(exc))) from exc
        except vmodl.MethodFault as exc:
            raise errors.DriverError('%s refused the login of user %s: %s' % (self.endpoint, vc.username, fault_text(exc))) from exc
        except NETWORK_ERRORS as exc:
            raise self._failure(exc) from exc
        except Exception as exc:  # pylint: disable=broad-exception-caught  # SmartConnect raises a bare Exception
            if type(exc) is not Exception:  # pylint: disable=unidiomatic-typecheck  # a bug, not the vCenter's answer
                raise
            # "HOST:PORT is down or is not a VIM server": something answered, but no vSphere API.
            raise errors.DriverError('%s is not a vCenter answering the vSphere API: %s' % (self.endpoint, exc)) from exc
        return self._content

    def _forget(self):
        """Drop a session that is dead or expired, without talking to vCenter."""
        si, self._si, self._content = self._si, None, None
        if si is not None:
            si._stub.DropConnections()  # pylint: disable=protected-access

    def _failure(self, exc):
        """The errors.* for a network-level failure."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return errors.DriverError('%s presented a certificate that does not verify (%s); trust its CA on the controller, '
                                      'or set validate_certs: false for a lab only' % (self.endpoint, getattr(exc, 'verify_message', None) or exc))
        if isinstance(exc, ssl.SSLError):
            return errors.DriverError('%s failed the TLS handshake: %s' % (self.endpoint, exc))
        if isinstance(exc, socket.gaierror):
            return errors.Unreachable('%s did not answer: cannot resolve %s: %s' % (self.endpoint, self.vcenter.hostname, exc.strerror or exc))
        if isinstance(exc, socket.timeout):
            return errors.Unreachable('%s did not answer: no reply within %s s' % (self.endpoint, self.vcenter.timeout))
        return errors.Unreachable('%s did not answer: %s' % (self.endpoint, getattr(exc, 'strerror', None) or str(exc) or type(exc).__name__))


__all__ = ['Session']
