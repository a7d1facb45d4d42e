# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the domains of one KVM host use (rebalancing, issue 18 §1). Private to multihv.cloud: do not import.

Two bulk reads (virConnectGetAllDomainStats) `interval` apart, whatever the number of domains: each
domain's CPU time (cpu.time, nanoseconds, every vCPU and QEMU's own threads) and its memory on the
host (balloon.rss, the QEMU process's resident set in KiB, where QEMU reports it; else balloon.current,
what the guest has now). CPU time is a counter, so one read says nothing: the load is its growth over
the wall time between the reads.
"""

from __future__ import annotations

import time

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceUsage, NodeUsage

try:
    import libvirt
except ImportError:  # pragma: no cover - connection.py reports it on use
    libvirt = None

NANOSECONDS = 1e9
KIB_PER_MIB = 1024.0


def sample(conn):
    """(monotonic time, {domain uuid: its stats}) of every active domain of the host, in one call."""
    stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON,
                                   libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
    return time.monotonic(), dict((domain.UUIDString(), values) for domain, values in stats)


def from_samples(node, first, second):
    """The NodeUsage two samples (each (time, {uuid: stats})) show: a domain in both, its CPU time's growth
    over the seconds between them and its memory at the second. Pure: no I/O."""
    (start, before), (end, after) = first, second
    elapsed = max(end - start, 1e-6)
    found = []
    for uuid in sorted(after):
        if uuid not in before:
            continue  # started (or migrated in) between the reads: no interval to measure it over
        now, then = after[uuid], before[uuid]
        # A counter that went back is a domain restarted between the reads: it used at least what it shows now.
        grown = now.get('cpu.time', 0) - then.get('cpu.time', 0)
        cpu = (grown if grown >= 0 else now.get('cpu.time', 0)) / NANOSECONDS / elapsed
        memory = now.get('balloon.rss') or now.get('balloon.current') or now.get('balloon.maximum') or 0
        found.append(InstanceUsage(uuid, round(cpu, 4), round(memory / KIB_PER_MIB, 1)))
    return NodeUsage(node, round(elapsed, 3), tuple(found))


def measure(conn, node, interval):
    """The NodeUsage of the host over `interval` seconds (two samples, a sleep between them)."""
    first = sample(conn)
    time.sleep(interval)
    return from_samples(node, first, sample(conn))


__all__ = ['from_samples', 'measure', 'sample']
