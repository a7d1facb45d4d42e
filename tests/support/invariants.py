"""The invariants every fault test checks after the reconciler ran: read from the lab itself (QEMU
processes in /proc, libvirt on each host, the instance directories, the simulator), never from the
collection's own drivers, and compared with the registry.

- exactly one QEMU process per running instance uuid on the whole lab (none for any other), and one
  VM per vSphere instance in the simulator;
- the registry's node (and host) for each instance is where its VM is, and no other node has one;
- each node's allocations equal the sum of its instances' flavors (an instance waiting in verify_resize: the larger of
  its old and new flavor on its node, or, when the resize moved it, the new one there and the old one where it came from);
- no instance file (disk, console log) without a record, nor a local one away from its instance's node;
- a guest that was running still runs, and a guest that was live-moved ticked on without a new boot.
"""

from __future__ import annotations

import collections
import pathlib
import re

from support import guest
from support.cloud import vm_name
from support.lab import wait_for

from ansible_collections.multihv.cloud.plugins.module_utils._compute.resize import power_before
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

INSTANCE_FILE = re.compile(r'^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.')
# Records in these states hold their node's resources and have a VM there.
PLACED = ('running', 'stopped', 'verify_resize')
RESOURCES = (('vcpus', 'vcpus'), ('memory_mb', 'ram_mb'), ('disk_gb', 'disk_gb'))


def qemu_uuids() -> collections.Counter:
    """How many QEMU processes run for each domain uuid on this machine, in any lab host's namespace."""
    found = collections.Counter()
    for cmdline in pathlib.Path('/proc').glob('[0-9]*/cmdline'):
        try:
            args = cmdline.read_bytes().split(b'\0')
        except OSError:
            continue
        if args and b'qemu-system' in args[0] and b'-uuid' in args:
            found[args[args.index(b'-uuid') + 1].decode()] += 1
    return found


def lab_domains(lab) -> dict[str, dict[str, bool]]:
    """{uuid: {host: active}} of every domain defined on the KVM lab hosts."""
    found: dict[str, dict[str, bool]] = {}
    for host in lab.hosts:
        conn = lab.connect(host)
        try:
            for dom in conn.listAllDomains():
                found.setdefault(dom.UUIDString(), {})[host] = dom.isActive() == 1
        finally:
            conn.close()
    return found


def instance_files(lab) -> list[tuple[str, str | None, pathlib.Path]]:
    """(uuid, host or None for the shared directory, path) of every instance file in the lab."""
    places = [(None, pathlib.Path(lab.info['shared_instance_path']))]
    places += [(name, pathlib.Path(host['local_dir'])) for name, host in lab.hosts.items()]
    found = []
    for host, directory in places:
        for path in sorted(directory.iterdir()) if directory.is_dir() else []:
            match = INSTANCE_FILE.match(path.name)
            if match:
                found.append((match.group(1), host, path))
    return found


def simulator_vms(lab) -> collections.Counter:
    """How many simulator VMs carry each name."""
    from pyVim.connect import Disconnect, SmartConnect  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim  # pylint: disable=import-outside-toplevel
    vcsim = lab.info['vcsim']
    si = SmartConnect(host=vcsim['host'], port=vcsim['port'], user=vcsim['username'], pwd='lab-only-secret',
                      disableSslCertValidation=True)
    try:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        try:
            # vm_name: vcsim 0.24.2 keeps a template destroyed by Destroy_Task in container views (its name then
            # raises ManagedObjectNotFound); the '' it gives is no VM.
            return collections.Counter(name for name in map(vm_name, view.view) if name)
        finally:
            view.Destroy()
    finally:
        Disconnect(si)


def present(lab) -> frozenset:
    """The uuids of every domain and instance file in the lab now: what a test found before its fault
    (another test's leftovers are that test's failure, not this one's)."""
    return frozenset(lab_domains(lab)) | frozenset(inst_uuid for inst_uuid, _host, _path in instance_files(lab))


def violations(lab, registry_url: str, running=(), vsphere=(), before=frozenset()) -> list[str]:
    """What is wrong, as sentences (empty when every invariant holds). running: names of instances
    that were running before the fault and must still run; vsphere: names of vSphere instances;
    before: present(lab) when the test began (those uuids' domains and files without a record are
    not this test's)."""
    registry = Registry.open(registry_url, upgrade=False)
    try:
        records = registry.list_instances()
        resizes = dict((m.instance_uuid, m) for m in registry.list_migrations(migration_type='resize', status='done'))
        names = set(r.flavor for r in records) | set((m.stats or {}).get('old_flavor') for m in resizes.values())
        flavors = dict((name, registry.get_flavor(name)) for name in names if name)
        allocations = registry.list_allocations()
    finally:
        registry.close()
    wrong = []
    by_uuid = dict((r.uuid, r) for r in records)
    processes, domains = qemu_uuids(), lab_domains(lab)
    kvm = [r for r in records if r.node in lab.hosts or r.name not in vsphere]

    for record in kvm:
        count = processes.get(record.uuid, 0)
        if count != (1 if record.state == 'running' else 0):
            wrong.append('instance %s (%s) has %d QEMU processes' % (record.name, record.state, count))
        where = domains.get(record.uuid, {})
        expected = {record.node} if record.state in PLACED else set()
        if set(where) != expected:
            wrong.append('instance %s (%s, recorded on %s) is defined on %s' % (record.name, record.state, record.node, sorted(where) or 'no host'))
        elif record.state in PLACED and where[record.node] != (_power(record, resizes) == 'running'):
            wrong.append('instance %s is recorded %s but its domain on %s is %s' % (
                record.name, record.state, record.node, 'active' if where[record.node] else 'shut off'))
    for inst_uuid, count in processes.items():
        if inst_uuid in domains and inst_uuid not in by_uuid and inst_uuid not in before:
            wrong.append('a QEMU process (x%d) runs for domain %s, which has no record' % (count, inst_uuid))
    for inst_uuid, hosts in domains.items():
        if inst_uuid not in by_uuid and inst_uuid not in before and _managed(lab, inst_uuid, hosts):
            wrong.append('domain %s is defined on %s and has no record' % (inst_uuid, sorted(hosts)))

    if vsphere:
        vms = simulator_vms(lab)
        for name in vsphere:
            record = next((r for r in records if r.name == name), None)
            expected = 1 if record is not None and record.state in PLACED else 0
            if vms.get(name, 0) != expected:
                wrong.append('vSphere instance %s (%s) has %d VMs in the simulator' % (
                    name, record.state if record else 'no record', vms.get(name, 0)))

    held = collections.defaultdict(lambda: [0, 0, 0])
    for alloc in allocations:
        for i, key in enumerate(('vcpus', 'memory_mb', 'disk_gb')):
            held[alloc['node']][i] += alloc[key]
    owed = collections.defaultdict(lambda: [0, 0, 0])
    for record in records:
        if record.state in PLACED:
            for node, needs in _owed(record, resizes.get(record.uuid), flavors):
                for i, amount in enumerate(needs):
                    owed[node][i] += amount
    for node in sorted(set(held) | set(owed)):
        if held[node] != owed[node]:
            wrong.append('node %s has allocations (vcpus, MB, GB) %s, its instances need %s' % (node, held[node], owed[node]))

    for inst_uuid, host, path in instance_files(lab):
        record = by_uuid.get(inst_uuid)
        if record is None and inst_uuid not in before:
            wrong.append('file %s belongs to no instance' % path)
        elif record is not None and host is not None and record.node != host:
            wrong.append('file %s is on %s, instance %s is on %s' % (path, host, record.name, record.node))

    for name in running:
        record = next((r for r in records if r.name == name), None)
        if record is None or record.state != 'running':
            wrong.append('instance %s was running and is now %s' % (name, record.state if record else 'gone'))
    return wrong


def _power(record, resizes) -> str:
    """The power state record's VM must be in: a resize waiting keeps the one it began with."""
    return power_before(resizes[record.uuid]) if record.state == 'verify_resize' else record.state


def _owed(record, resize, flavors):
    """[(node, [vcpus, MB, GB])] the allocations record must hold."""
    new = [flavors[record.flavor][key] for _alloc, key in RESOURCES]
    if record.state != 'verify_resize':
        return [(record.node, new)]
    old = [flavors[resize.stats['old_flavor']][key] for _alloc, key in RESOURCES]
    if resize.source_node == record.node:
        return [(record.node, [max(a, b) for a, b in zip(old, new)])]
    return [(record.node, new), (resize.source_node, old)]


def _managed(lab, inst_uuid, hosts) -> bool:
    """Is the domain one of the collection's (not a lab guest a test defined by hand)?"""
    conn = lab.connect(next(iter(hosts)))
    try:
        return 'multihv' in conn.lookupByUUIDString(inst_uuid).XMLDesc(0)
    finally:
        conn.close()


def assert_hold(lab, registry_url: str, running=(), vsphere=(), before=frozenset()):
    wrong = violations(lab, registry_url, running, vsphere, before)
    assert not wrong, 'invariants broken:\n  ' + '\n  '.join(wrong)


def ticked_on(log: pathlib.Path, before: int, timeout: float = 30):
    """The guest whose serial log is log ticked past `before` without booting again (the live move kept it)."""
    def went_on():
        boots = guest.parse_serial(log.read_text(errors='replace')) if log.exists() else []
        return len(boots) == 1 and boots[0].ticks and boots[0].ticks[-1] > before + 1
    wait_for(went_on, timeout, f'{log} to tick on past {before} in one boot')
