"""What the KVM driver's usage makes of two samples of virConnectGetAllDomainStats (usage.from_samples, pure):
CPU time's growth over the wall time, the resident memory, and the domains it cannot measure."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceUsage, NodeUsage
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import usage


def test_cpu_is_the_growth_of_cpu_time_over_the_seconds_between_the_samples_and_memory_the_resident_set():
    first = (100.0, {'a': {'cpu.time': 5_000_000_000, 'balloon.rss': 65536, 'balloon.current': 32768},
                     'b': {'cpu.time': 0, 'balloon.current': 32768},
                     'gone': {'cpu.time': 1}})
    second = (102.0, {'a': {'cpu.time': 8_000_000_000, 'balloon.rss': 131072, 'balloon.current': 32768},
                      'b': {'cpu.time': 100_000_000, 'balloon.current': 32768},
                      'new': {'cpu.time': 9_000_000_000, 'balloon.rss': 1024}})
    assert usage.from_samples('kvm1', first, second) == NodeUsage('kvm1', 2.0, (
        InstanceUsage('a', 1.5, 128.0),   # 3 s of CPU in 2 s: one and a half host CPUs; 128 MiB resident
        InstanceUsage('b', 0.05, 32.0),   # no resident set reported: the balloon's current size
    ))  # 'new' started between the samples and 'gone' stopped: neither has an interval to be measured over


def test_a_domain_restarted_between_the_samples_counts_what_it_used_since():
    first = (0.0, {'a': {'cpu.time': 9_000_000_000, 'balloon.rss': 1024}})
    second = (1.0, {'a': {'cpu.time': 500_000_000, 'balloon.rss': 1024}})
    assert usage.from_samples('kvm1', first, second).instances == (InstanceUsage('a', 0.5, 1.0),)
