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
unknown power state, which is not off. Both commands run without a shell, in a minimal
environment (MINIMAL_ENVIRONMENT: enough to find a program and read its messages), with
MULTIHV_NODE naming the node, plus the variables the host's fence_environment names: never the
controller's whole environment, which holds its own credentials (MULTIHV_VCENTER_PASSWORD, the
registry URL, what AWX injects for other uses).
"""

from __future__ import annotations

import os
import shlex
import subprocess

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

FENCE_TIMEOUT_SECONDS = 120
POWER_OFF = 'off'
UNTOUCHED = 'nothing was evacuated'
# What a fence or power status command gets of the controller's environment by itself.
MINIMAL_ENVIRONMENT = ('PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES', 'TZ', 'TMPDIR')


def environment(node, names=(), source=None):
    """The environment node's commands run in: MINIMAL_ENVIRONMENT and the variables `names` (its
    fence_environment) from source (the controller's), and MULTIHV_NODE. errors.MultihvError when
    one of names is not set: the command would fail for want of it, less clearly."""
    source = os.environ if source is None else source
    missing = [name for name in names if name not in source]
    if missing:
        raise errors.MultihvError('node %s cannot be fenced: its fence_environment names %s, which the controller\'s '
                                  'environment does not set; %s' % (node, ', '.join(missing), UNTOUCHED))
    env = dict((name, source[name]) for name in MINIMAL_ENVIRONMENT + tuple(names) if name in source)
    env['MULTIHV_NODE'] = node
    return env


def _run(node, command, what, names=()):
    """Run command for node (no shell; in environment(node, names)). Returns its stdout; errors.MultihvError
    saying `what` failed unless it exits 0."""
    argv = shlex.split(command)
    env = environment(node, names)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=FENCE_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise errors.MultihvError('%s node %s failed (%s: %s); %s' % (what, node, argv[0], exc, UNTOUCHED)) from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout or '').strip().splitlines()[-1:] or ['no output']
        raise errors.MultihvError('%s node %s failed: %s exited %d (%s); %s' % (what, node, argv[0], done.returncode, said[0], UNTOUCHED))
    return done.stdout or ''


def fence(node, command, names=()):
    """Run node's fence command (with the variables names from the controller's environment);
    errors.MultihvError unless it exits 0."""
    _run(node, command, 'fencing', names)


def power_state(node, command, names=()):
    """'off', 'on' or 'unknown' as node's power_status_command says (run with the variables names
    from the controller's environment); errors.MultihvError when it fails."""
    words = _run(node, command, 'reading the power status of', names).split()
    word = words[-1].lower() if words else ''
    return word if word in (POWER_OFF, 'on') else 'unknown'


def power_off(node, fence_command, power_status_command, names=()):
    """Fence node with its fence command (when it has one), confirmed by its power status (when
    it has a power_status_command; see the module's docstring); both get the variables names (its
    fence_environment) from the controller's environment. Returns None once node is fenced;
    errors.MultihvError saying why it is not (nothing was touched after the fence command)."""
    failed = None
    if fence_command:
        try:
            fence(node, fence_command, names)
        except errors.MultihvError as exc:
            failed = exc
    if not power_status_command:
        if failed is not None:
            raise failed
        return
    state = power_state(node, power_status_command, names)
    if state == POWER_OFF:
        return  # off is off, whatever the fence command said
    after = ('after its fence command failed (%s)' % str(failed).rsplit('; ', 1)[0]) if failed else \
        ('after its fence command exited 0' if fence_command else 'and it has no fence_command')
    raise errors.MultihvError('node %s is not fenced: its power_status_command says the power is %s %s; it may still run its '
                              'instances, so %s' % (node, state, after, UNTOUCHED))


__all__ = ['FENCE_TIMEOUT_SECONDS', 'MINIMAL_ENVIRONMENT', 'environment', 'fence', 'power_off', 'power_state']
