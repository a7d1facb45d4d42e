# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Power changes of one VM, and its deletion, as vCenter tasks within a deadline. Private to
multihv.cloud: do not import.

pc is the session's PropertyCollector, vm a VirtualMachine reference; `what` names the
operation in errors. A power task that fails is no error when the VM is in the state asked
anyway (another client or vSphere HA changed it meanwhile).
"""

from __future__ import annotations

import time

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import retrieve_objects
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import vim, vmodl

# How long a guest may take to shut down when asked before it is powered off (Nova's default).
SHUTDOWN_TIMEOUT = 60.0


def read_power_state(pc, vm):
    """runtime.powerState of a VM; None when it is gone."""
    answer = retrieve_objects(pc, [vm], 'VirtualMachine', ('runtime.powerState',))
    return str(answer[0].props.get('runtime.powerState')) if answer else None


def wait_power(pc, vm, wanted, deadline):
    """True once the VM's power state is `wanted`; False when the deadline passed first."""
    pause = 0.1
    while read_power_state(pc, vm) != wanted:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 2.0)
    return True


def power(pc, vm, method, wanted, deadline, what):
    """Run a power task; its failure is no error when the VM is in the state wanted anyway
    (another client or vCenter HA changed it meanwhile: InvalidPowerState)."""
    try:
        wait_task(pc, getattr(vm, method)(), deadline, what)
    except (errors.DriverError, vim.fault.InvalidPowerState):
        if read_power_state(pc, vm) != wanted:
            raise


def shutdown(pc, vm, deadline, shutdown_timeout, what):
    """Ask the guest to shut down; power the VM off when it is not off after shutdown_timeout,
    or straight away when vCenter refuses ShutdownGuest (no VMware Tools)."""
    try:
        vm.ShutdownGuest()
    except vim.fault.NotAuthenticated:
        raise
    except vmodl.MethodFault:
        # ToolsUnavailable, InvalidState, NotSupported, or a vCenter (simulator) without the
        # method: no guest can be asked, so it is powered off, as Nova does after its timeout.
        power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
        return
    # ShutdownGuest only asks the guest: wait for it, then force it.
    if not wait_power(pc, vm, 'poweredOff', min(deadline, time.monotonic() + shutdown_timeout)):
        power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)


def power_action(pc, vm, current, action, deadline, shutdown_timeout, what):
    """One of POWER_ACTIONS on a VM whose InstanceState.power_state is `current`; nothing is
    done when it is in the state asked already."""
    if action == 'start' and current != 'running':
        power(pc, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)
    elif action == 'stop' and current != 'stopped':
        power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
    elif action == 'shutdown' and current == 'running':
        shutdown(pc, vm, deadline, shutdown_timeout, what)
    elif action == 'shutdown' and current != 'stopped':  # suspended: no guest runs to ask
        power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
    elif action == 'reboot':
        if current == 'running':
            wait_task(pc, vm.ResetVM_Task(), deadline, what)
        else:
            power(pc, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)


def power_off_and_destroy(pc, vm, deadline, what):
    """Power the VM off unless it is off, then delete it with its disks (Destroy_Task); no
    error when it is gone already."""
    if read_power_state(pc, vm) not in (None, 'poweredOff'):
        power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, 'PowerOffVM_Task of %s' % what)
    try:
        wait_task(pc, vm.Destroy_Task(), deadline, 'Destroy_Task of %s' % what)
    except vmodl.fault.ManagedObjectNotFound:
        pass  # destroyed meanwhile: what was asked


__all__ = ['SHUTDOWN_TIMEOUT', 'power', 'power_action', 'power_off_and_destroy', 'read_power_state', 'shutdown', 'wait_power']
