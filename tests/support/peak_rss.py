"""The peak RSS of a command, read from a small launcher process instead of the benchmark itself.

Linux starts a child's ru_maxrss at what its parent had mapped when it forked (the forked copy's high-water
mark outlives the exec), so wait4 on a child of a benchmark that holds 150 MiB reported at least 150 MiB,
even for /bin/true (issue 20). The launcher is a fresh interpreter without site (-I -S, a few MiB) that forks
and execs the command, reaps it with wait4 and writes the child's ru_maxrss to a file: the floor of the
figure is the launcher's size, not the benchmark's. The command keeps the launcher's stdin, stdout and stderr.

Use: Popen(command(argv, report), start_new_session=True, ...), then peak_mib(report) once it has exited;
stop it with kill(proc) (the command is in the launcher's process group).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import sys

LAUNCHER = r'''
import os, signal, sys
report, argv = sys.argv[1], sys.argv[2:]
signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an inherited SIG_IGN would reap the command before wait4 reads it
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
while True:
    try:
        _pid, status, usage = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
with open(report, 'w') as out:
    out.write('%d\n' % usage.ru_maxrss)
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
'''


def command(argv, report):
    """argv run by the launcher, which writes the command's peak RSS (KiB) to report when it exits."""
    return [sys.executable, '-I', '-S', '-c', LAUNCHER, str(report)] + [str(arg) for arg in argv]


def peak_mib(report):
    """The peak RSS in MiB that the launcher wrote, or None (the launcher was killed before its command ended)."""
    with contextlib.suppress(OSError, ValueError):
        return int(pathlib.Path(report).read_text().strip()) / 1024.0
    return None


def kill(proc):
    """Kill the launcher and its command (its process group: Popen with start_new_session=True)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


__all__ = ['command', 'kill', 'peak_mib']
