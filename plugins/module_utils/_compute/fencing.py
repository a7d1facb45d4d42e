# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fencing a failed node before its instances are rebuilt elsewhere, confirmed by its power
status where the cloud file gives a way to read it. Private to multihv.cloud: do not import.

A fence is confirmed, not assumed (CloudStack's KVM HA, vSphere HA's power-off check): with a
power_status_command the node counts as fenced only when that command says its power is off.
So a host whose power is already gone is fenced even when its fence command fails (its BMC
may refuse to power off what is off), and a host that is still on after a fence command that
exited 0 is not. Without a power_status_command the fence command's exit 0 is believed.

The power_status_command's contract: it exits 0 and the last word of its output is `off`
(case-insensitive; `ipmitool ... chassis power status` prints "Chassis Power is off") when the
power is off, `on` when it is on; anything else (another exit status, another word) is an
unknown power state, which is not off. Both commands run without a shell, with MULTIHV_NODE
naming the node.
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

FENCE_TIMEOUT_SECONDS = 120
POWER_OFF = 'off'
UNTOUCHED = 'nothing was evacuated'


def _run(node, command, what):
    """Run command for node (no shell; MULTIHV_NODE names it). Returns its stdout; errors.MultihvError
    saying `what` failed unless it exits 0."""
    argv = shlex.split(command)
    env = dict(os.environ, MULTIHV_NODE=node)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=FENCE_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.MultihvError('%s node %s failed (%s: %s); %s' % (what, node, argv[0], exc, UNTOUCHED)) from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout or '').strip().splitlines()[-1:] or ['no output']
        raise errors.MultihvError('%s node %s failed: %s exited %d (%s); %s' % (what, node, argv[0], done.returncode, said[0], UNTOUCHED))
    return done.stdout or ''


def fence(node, command):
    """Run node's fence command; errors.MultihvError unless it exits 0."""
    _run(node, command, 'fencing')


def power_state(node, command):
    """'off', 'on' or 'unknown' as node's power_status_command says; errors.MultihvError when it fails."""
    words = _run(node, command, 'reading the power status of').split()
    word = words[-1].lower() if words else ''
    return word if word in (POWER_OFF, 'on') else 'unknown'


def power_off(node, fence_command, power_status_command):
    """Fence node with its fence command (when it has one), confirmed by its power status (when
    it has a power_status_command; see the module's docstring). Returns None once node is fenced;
    errors.MultihvError saying why it is not (nothing was touched after the fence command)."""
    failed = None
    if fence_command:
        try:
            fence(node, fence_command)
        except errors.MultihvError as exc:
            failed = exc
    if not power_status_command:
        if failed is not None:
            raise failed
        return
    state = power_state(node, power_status_command)
    if state == POWER_OFF:
        return  # off is off, whatever the fence command said
    after = ('after its fence command failed (%s)' % str(failed).rsplit('; ', 1)[0]) if failed else \
        ('after its fence command exited 0' if fence_command else 'and it has no fence_command')
    raise errors.MultihvError('node %s is not fenced: its power_status_command says the power is %s %s; it may still run its '
                              'instances, so %s' % (node, state, after, UNTOUCHED))


__all__ = ['FENCE_TIMEOUT_SECONDS', 'fence', 'power_off', 'power_state']
