# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vCenter tasks: waiting for one within a deadline, and the text of its failure. Private to
multihv.cloud: do not import.
"""

from __future__ import annotations

import time

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import plain, retrieve_pages
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim, vmodl

# A clone copies whole disks on a real vCenter: minutes, not seconds.
TASK_TIMEOUT = 1800.0


def _task_error(error):
    """The text of a task's info.error: pyVmomi gives the MethodFault itself (its msg the
    localized message), a LocalizedMethodFault wrapper is read too."""
    if error is None:
        return 'no error detail'
    fault = getattr(error, 'fault', None) or error
    text = getattr(fault, 'msg', None) or getattr(error, 'localizedMessage', None) or ''
    kind = type(fault).__name__
    detail = getattr(fault, 'invalidProperty', None)
    return '%s%s%s' % (kind, ': ' + text if text and text != kind else '', ' (%s)' % detail if detail else '')


def wait_task(pc, task, deadline, what):
    """The result of a vCenter task (a moid for a managed object) once it succeeded, polling its
    state with a growing pause; errors.DriverError naming `what` when it failed or when it has
    not finished by the deadline (time.monotonic()), after asking vCenter to cancel it."""
    collector = vmodl.query.PropertyCollector
    spec = collector.FilterSpec(objectSet=[collector.ObjectSpec(obj=task, skip=False)],
                                propSet=[collector.PropertySpec(type=vim.Task, pathSet=['info.state', 'info.error', 'info.result'])])
    pause = 0.05
    while True:
        records = retrieve_pages(pc, spec)
        props = records[0].props if records else {}
        state = str(props.get('info.state'))
        if state == 'success':
            return props.get('info.result')
        if state == 'error':
            raise errors.DriverError('%s failed: %s' % (what, _task_error(props.get('info.error'))))
        left = deadline - time.monotonic()
        if left <= 0:
            try:
                task.CancelTask()
            except vmodl.MethodFault:
                pass  # not cancellable, or finished meanwhile: the error below says what is known
            raise errors.DriverError('%s did not finish in time (task %s, cancel requested)' % (what, plain(task)))
        time.sleep(min(pause, left))
        pause = min(pause * 2, 2.0)


__all__ = ['TASK_TIMEOUT', 'wait_task']
