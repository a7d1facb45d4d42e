"""A lab guest's QEMU guest agent, reached through libvirt (qemu-agent-command), for integration tests.

Every call is bounded: the agent's own answer by libvirt's timeout, a command run in the guest by a
deadline on its status. The guest's agent listens on the virtio-serial port org.qemu.guest_agent.0
(the KVM driver's domains have that channel; the lab's Debian image starts the agent from udev).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import libvirt
import libvirt_qemu

# libvirt prints every error to stderr besides raising it; waiting for an agent raises one a second
# until the guest has booted, which buries a test's output. The exceptions still carry the errors.
libvirt.registerErrorHandler(lambda _ctx, _error: None, None)


class AgentError(Exception):
    """The agent did not answer in time, refused a command, or a command failed in the guest."""


@dataclasses.dataclass(frozen=True)
class Interface:
    """One NIC as the guest sees it: its name, MAC and addresses (CIDR form, e.g. 192.0.2.10/24)."""

    name: str
    mac: str
    addresses: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Exec:
    """A finished guest-exec: exit_code None when a signal ended it."""

    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str


def command(domain: libvirt.virDomain, execute: str, arguments: dict | None = None, timeout: int = 10):
    """The 'return' value of one agent command; AgentError with libvirt's message when it fails."""
    request = {'execute': execute, **({'arguments': arguments} if arguments is not None else {})}
    try:
        reply = json.loads(libvirt_qemu.qemuAgentCommand(domain, json.dumps(request), timeout, 0))
    except libvirt.libvirtError as exc:
        raise AgentError(f'{execute} in {domain.name()}: {exc.get_error_message()}') from None
    if 'error' in reply:
        raise AgentError(f'{execute} in {domain.name()}: {reply["error"]}')
    return reply.get('return')


def wait_until_answering(domain: libvirt.virDomain, timeout: float) -> float:
    """Wait until the agent answers guest-ping; the seconds it took. AgentError after timeout."""
    start = time.monotonic()
    while True:
        try:
            command(domain, 'guest-ping', timeout=5)
            return time.monotonic() - start
        except AgentError as exc:
            if time.monotonic() - start > timeout:
                raise AgentError(f'the guest agent of {domain.name()} did not answer within {timeout} s: {exc}') from None
        time.sleep(1)


def host_name(domain: libvirt.virDomain) -> str:
    return command(domain, 'guest-get-host-name')['host-name']


def interfaces(domain: libvirt.virDomain) -> dict[str, Interface]:
    """The guest's NICs by MAC (lower case); interfaces without one (lo) are left out."""
    found = {}
    for nic in command(domain, 'guest-network-get-interfaces'):
        mac = (nic.get('hardware-address') or '').lower()
        if mac and mac != '00:00:00:00:00:00':
            addresses = tuple(f'{a["ip-address"]}/{a["prefix"]}' for a in nic.get('ip-addresses') or [])
            found[mac] = Interface(nic['name'], mac, addresses)
    return found


def run(domain: libvirt.virDomain, argv: list[str], timeout: float = 60) -> Exec:
    """Run argv in the guest (guest-exec; argv[0] is looked up on the agent's PATH) and wait for it
    to end, at most timeout seconds; its exit code and its decoded output."""
    pid = command(domain, 'guest-exec', {'path': argv[0], 'arg': list(argv[1:]), 'capture-output': True})['pid']
    deadline = time.monotonic() + timeout
    while True:
        status = command(domain, 'guest-exec-status', {'pid': pid})
        if status['exited']:
            return Exec(status.get('exitcode'), status.get('signal'), _decoded(status.get('out-data')), _decoded(status.get('err-data')))
        if time.monotonic() > deadline:
            raise AgentError(f'{argv[0]} (pid {pid}) did not end within {timeout} s in {domain.name()}')
        time.sleep(0.2)


def _decoded(data: str | None) -> str:
    return base64.b64decode(data).decode('utf-8', errors='replace') if data else ''


def read_file(domain: libvirt.virDomain, path: str, timeout: float = 30) -> str:
    """A file's text in the guest, through cat: one guest-exec instead of guest-file-open, -read and -close."""
    result = run(domain, ['cat', '--', path], timeout)
    if result.exit_code != 0:
        raise AgentError(f'cannot read {path} in {domain.name()}: exit {result.exit_code}, {result.stderr.strip()}')
    return result.stdout


def cloud_init_finished(domain: libvirt.virDomain, timeout: float) -> str:
    """Wait until cloud-init has run its last stage in the guest (boot-finished written), at most
    timeout seconds; then `cloud-init status --long` (its status, datasource and errors)."""
    deadline = time.monotonic() + timeout
    while run(domain, ['test', '-e', '/var/lib/cloud/instance/boot-finished']).exit_code != 0:
        if time.monotonic() > deadline:
            raise AgentError(f'cloud-init did not finish within {timeout} s in {domain.name()}')
        time.sleep(1)
    return run(domain, ['cloud-init', 'status', '--long']).stdout
