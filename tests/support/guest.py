"""The lab guest (tests/lab/roles/lab/files/guest): its domain XML and its serial log.

Pure logic, no I/O beyond reading a log file, so it is unit-tested on its own.
The guest prints `boot B persisted P` once per boot (P is `none` on a fresh
disk) and then `tick N` about twice a second, and keeps the last tick on its
disk. A guest that kept running through a move shows one boot and ticks that
go on by one; a restarted guest shows another boot line.
"""

from __future__ import annotations

import dataclasses
import re
import uuid as uuidlib
from xml.sax.saxutils import escape, quoteattr

_BOOT = re.compile(r'^boot (\d+) persisted (\d+|none)$')
_TICK = re.compile(r'^tick (\d+)$')


@dataclasses.dataclass(frozen=True)
class Boot:
    """One boot of the guest and the ticks it printed."""

    number: int
    persisted: int | None
    ticks: tuple[int, ...]


def parse_serial(text: str) -> list[Boot]:
    """Split a serial log into boots. Lines before the first boot line, partial
    lines and noise (firmware output) are ignored."""
    boots: list[Boot] = []
    number, persisted, ticks = None, None, []
    for raw in text.splitlines():
        line = raw.strip('\r\x00 ')
        match = _BOOT.search(line)
        if match:
            if number is not None:
                boots.append(Boot(number, persisted, tuple(ticks)))
            number = int(match.group(1))
            persisted = None if match.group(2) == 'none' else int(match.group(2))
            ticks = []
            continue
        match = _TICK.search(line)
        if match and number is not None:
            ticks.append(int(match.group(1)))
    if number is not None:
        boots.append(Boot(number, persisted, tuple(ticks)))
    return boots


def gaps(ticks: tuple[int, ...]) -> list[tuple[int, int]]:
    """Pairs of consecutive ticks that do not go on by exactly one."""
    return [(a, b) for a, b in zip(ticks, ticks[1:]) if b != a + 1]


def domain_xml(name: str, disk: str, serial_log: str, *, domain_type: str = 'kvm',
               disk_format: str = 'qcow2', memory_mib: int = 32, uuid: str | None = None) -> str:
    """Domain XML for the lab guest: one IDE disk, the serial port to a file.

    The serial log is opened with append='on', so a live-migrated guest whose log
    sits on shared storage keeps writing one log from both hosts. The disk is
    writethrough: the guest's BIOS writes never flush, and with writeback a
    killed QEMU (a power loss) takes the qcow2 overlay's new mappings with it. No graphics:
    libvirt rejects <graphics type='none'/> and the guest needs none.
    """
    if domain_type not in ('kvm', 'qemu'):
        raise ValueError(f'domain_type must be kvm or qemu, not {domain_type!r}')
    if disk_format not in ('qcow2', 'raw'):
        raise ValueError(f'disk_format must be qcow2 or raw, not {disk_format!r}')
    uuid = uuid or str(uuidlib.uuid4())
    return f"""<domain type={quoteattr(domain_type)}>
  <name>{escape(name)}</name>
  <uuid>{escape(uuid)}</uuid>
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type={quoteattr(disk_format)} cache='writethrough'/>
      <source file={quoteattr(disk)}/>
      <target dev='hda' bus='ide'/>
    </disk>
    <serial type='file'>
      <source path={quoteattr(serial_log)} append='on'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
"""
