# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pyVmomi for the vSphere driver, imported once. Private to multihv.cloud: do not import.

Without pyVmomi the driver's modules still load (vim, vmodl and pyvim_connect are None);
require() raises errors.MissingLibrary when a vCenter is to be used.
"""

from __future__ import annotations

import http.client

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

try:
    from pyVim import connect as pyvim_connect
    from pyVmomi import vim, vmodl
    HAS_PYVMOMI = True
except ImportError:  # pragma: no cover - reported when used
    pyvim_connect = vim = vmodl = None
    HAS_PYVMOMI = False

# Network failures: the vCenter did not answer (ssl.SSLError is an OSError but
# means it answered with something we refuse; it is told apart first).
NETWORK_ERRORS = (OSError, http.client.HTTPException)


def require(vcenter):
    """errors.MissingLibrary when pyVmomi is not installed, naming the vCenter that needs it."""
    if not HAS_PYVMOMI:
        raise errors.MissingLibrary('pyvmomi', 'for the vSphere nodes of vCenter %s' % vcenter.name)


def fault_text(fault):
    """The message of a vSphere fault, else its type's name."""
    return getattr(fault, 'msg', None) or type(fault).__name__


__all__ = ['HAS_PYVMOMI', 'NETWORK_ERRORS', 'fault_text', 'pyvim_connect', 'require', 'vim', 'vmodl']
