"""The benchmarks' peak RSS launcher (support.peak_rss, issue 20): a command's own peak, not its parent's."""

import os
import signal
import subprocess
import sys

from support import peak_rss

MIB = 1 << 20
# A child's ru_maxrss starts at its parent's RSS at fork: this test process holds BIG MiB while it starts commands.
BIG = 150
ALLOCATE = 'import sys; b = bytearray(%d * (1 << 20)); b[::4096] = b"x" * len(b[::4096]); sys.exit(3)'


def run(argv, tmp_path):
    report = tmp_path / 'peak'
    proc = subprocess.run(peak_rss.command(argv, report), start_new_session=True, check=False)
    return proc.returncode, peak_rss.peak_mib(report)


def test_a_small_command_started_by_a_large_process_reports_its_own_small_peak(tmp_path):
    held = bytearray(BIG * MIB)
    held[::4096] = b'x' * len(held[::4096])  # touched: resident, not just reserved
    child = subprocess.Popen(['/bin/true'])  # held: a dropped Popen's __del__ may reap the child before wait4 does
    _pid, child.returncode, usage = os.wait4(child.pid, 0)
    assert usage.ru_maxrss / 1024.0 >= BIG  # what wait4 on a direct child says: the parent's size
    code, peak = run(['/bin/true'], tmp_path)
    assert code == 0 and peak is not None and peak < 40, peak
    del held


def test_the_commands_own_allocation_and_exit_code_come_through(tmp_path):
    code, peak = run([sys.executable, '-c', ALLOCATE % 100], tmp_path)
    assert code == 3 and 100 <= peak < 140, peak


def test_a_command_killed_by_a_signal_kills_the_launcher_with_it_and_kill_stops_both(tmp_path):
    report = tmp_path / 'peak'
    code = subprocess.run(peak_rss.command(['/bin/sh', '-c', 'kill -TERM $$'], report), start_new_session=True, check=False).returncode
    assert code == -signal.SIGTERM and peak_rss.peak_mib(report) is not None
    proc = subprocess.Popen(peak_rss.command(['sleep', '60'], tmp_path / 'never'), start_new_session=True)
    peak_rss.kill(proc)
    assert proc.wait(10) == -signal.SIGKILL and peak_rss.peak_mib(tmp_path / 'never') is None
    # The sleep went with its launcher: nothing of the group is left running (a zombie waits for init to reap it).
    assert not [pid for pid, state, group in processes() if group == proc.pid and state != 'Z']


def processes():
    """(pid, state, process group) of every process, from /proc."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open('/proc/%s/stat' % entry, encoding='ascii', errors='replace') as stat:
                    fields = stat.read().rsplit(')', 1)[1].split()
            except OSError:
                continue  # it ended meanwhile
            found.append((int(entry), fields[0], int(fields[2])))
    return found
