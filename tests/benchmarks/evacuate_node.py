"""Benchmark: evacuating N guests of a failed lab node against raw libvirt define+start of the same domains on the target.

Needs the lab (`make install lab-up`) and nobody else on it: kvm2 loses power (`make lab-fail HOST=kvm2`)
and is booted again (`make lab-restore HOST=kvm2`) in every run, whatever happens. Ours: N running
instances of a 32 MB flavor on kvm2 with their disks on the shared instance path; kvm2 loses power;
then one ansible-playbook task `multihv.cloud.evacuate node=kvm2` with `concurrency` C (the lab's
fence_command, kvm2 forced down, scheduler, claims, each instance rebuilt on kvm1 adopting its shared
disk, evacuation records); checked: N evacuations done, every instance on kvm1 and running. Then kvm2
comes back, `compute_node enabled=true forced_down=false` destroys its stale copies, and the instances
are deleted. Baseline, same run: the domain XML the evacuation defined on kvm1, renamed, with new
uuids, without multihv's metadata nor config drive and each on a qcow2 overlay of its own in a temporary directory under
the shared path (the two never touch each other's disks), defined and started with libvirt-python on
kvm1, C at a time, one connection per worker; then removed. Prints both times, the ratio and the means
per guest; the baseline is the limit (no fencing, scheduling, accounting or checking).
Run: .venv/bin/python tests/benchmarks/evacuate_node.py [--count 20 --concurrency 4]
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from support.bench import LAB, lab_run, playbook  # noqa: E402  pylint: disable=wrong-import-position
from support.cloud import console_log, registry_rows, wait_ticks  # noqa: E402  pylint: disable=wrong-import-position
from support.lab import Lab, remove_domains  # noqa: E402  pylint: disable=wrong-import-position

import libvirt  # noqa: E402  pylint: disable=wrong-import-position

FAILED, TARGET = 'kvm2', 'kvm1'
# Each evacuation record's running time: from its rebuild's start to its record's move (registry timestamps).
REBUILD_SECONDS = "(julianday(finished_at) - julianday(started_at)) * 86400.0"


def ours(lab, tmp, count, concurrency, env):
    """(seconds of the evacuate run, each instance's rebuild seconds, the rebuilt domains' XML on the target)."""
    options = {'cloud_file': lab.info['cloud_file'], 'registry_url': 'sqlite:///%s/registry.sqlite' % tmp}
    names = ['bench-evac-%02d' % i for i in range(count)]
    instances = [{'name': name} for name in names]
    # The lab hosts have 2 CPU threads: at the default 4.0 ratio, 8 one-vCPU instances fill one.
    setup = [{'multihv.cloud.compute_node': dict(options, name=name, allocation_ratios={'cpu': 32.0})} for name in lab.hosts]
    setup += [{'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
              {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab.info['images']['tick_qcow2'])},
              {'multihv.cloud.instance': dict(options, flavor='tiny', image='tick', node=FAILED, storage='shared',
                                              concurrency=concurrency, instances=instances)}]
    try:
        playbook(tmp / 'setup.yml', setup, env)
        for inst_uuid, storage in registry_rows(tmp, 'SELECT uuid, storage FROM instances'):
            wait_ticks(console_log(lab, {'uuid': inst_uuid, 'storage': storage}), count=2, timeout=120)
        try:
            lab.make('lab-fail', 'HOST=' + FAILED)
            start = time.perf_counter()
            playbook(tmp / 'evacuate.yml', [{'multihv.cloud.evacuate': dict(options, node=FAILED, concurrency=concurrency)}], env)
            elapsed = time.perf_counter() - start
            done = registry_rows(tmp, 'SELECT migration_type, status, source_node, dest_node, %s FROM migrations' % REBUILD_SECONDS)
            assert len(done) == count and all(r[:4] == ('evacuation', 'done', FAILED, TARGET) for r in done), done
            assert registry_rows(tmp, 'SELECT DISTINCT node FROM instances') == [(TARGET,)]
            assert registry_rows(tmp, "SELECT forced_down FROM nodes WHERE name = '%s'" % FAILED) == [(1,)]
            return elapsed, [r[4] for r in done], rebuilt_xml(lab, names)
        finally:
            lab.make('lab-restore', 'HOST=' + FAILED)
            playbook(tmp / 'back.yml', [{'multihv.cloud.compute_node': dict(options, name=FAILED, enabled=True, forced_down=False)}], env)
    finally:
        playbook(tmp / 'teardown.yml', [{'multihv.cloud.instance': dict(options, state='absent', instances=instances)}], env)
        remove_domains([lab.uri(host) for host in lab.hosts], names)  # what a failed run left behind


def rebuilt_xml(lab, names):
    """The persistent XML of the domains called names on the target, each checked to run there."""
    conn = lab.connect(TARGET)
    try:
        domains = [conn.lookupByName(name) for name in names]
        assert all(dom.isActive() for dom in domains), 'not every rebuilt instance runs on %s' % TARGET
        return [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for dom in domains]
    finally:
        conn.close()


def copy_of(xml, name, directory, image):
    """xml renamed to name with a new uuid, no multihv metadata (no registry knows it) nor MACs, its
    disk a new qcow2 overlay of image and its serial log in directory."""
    root = ET.fromstring(xml)
    root.find('name').text = name
    root.find('uuid').text = str(uuid.uuid4())
    for metadata in root.findall('metadata'):
        root.remove(metadata)
    for interface in root.iter('interface'):
        for mac in interface.findall('mac'):
            interface.remove(mac)
    disk = directory / (name + '.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', image, str(disk)], check=True)
    disks = root.findall("devices/disk[@device='disk']")
    assert len(disks) == 1, xml
    # The config drive (a CD-ROM) went with our instances' teardown; the limit attaches none (ours builds and uploads
    # one per instance, which is part of what it costs).
    devices = root.find('devices')
    for cdrom in root.findall("devices/disk[@device='cdrom']"):
        devices.remove(cdrom)
    disks[0].find('source').set('file', str(disk))
    for stale in disks[0].findall('backingStore'):
        disks[0].remove(stale)
    for source in root.findall('devices/serial/source') + root.findall('devices/console/source'):
        source.set('path', str(directory / (name + '.console.log')))
    return ET.tostring(root, encoding='unicode')


def raw(lab, xmls, concurrency):
    """(seconds, each guest's define+start seconds) to define and start xmls on the target, C at a time."""
    local, opened = threading.local(), []

    def connect():
        local.conn = libvirt.open(lab.uri(TARGET))
        opened.append(local.conn)

    def define_start(xml):
        began = time.perf_counter()
        local.conn.defineXML(xml).create()
        return time.perf_counter() - began

    start = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency, initializer=connect) as pool:
            each = list(pool.map(define_start, xmls))
        return time.perf_counter() - start, each
    finally:
        for conn in opened:
            conn.close()


def main():
    setting = lab_run(__doc__, count=20, concurrency=4)
    if setting is None:
        return 2
    args, _info, env = setting
    lab = Lab(LAB)
    with tempfile.TemporaryDirectory(prefix='multihv-bench-evacuate-') as tmp:
        mine, rebuilds, xmls = ours(lab, pathlib.Path(tmp), args.count, args.concurrency, env)
    print('ours done in %.2f s; the limit next' % mine, flush=True)
    names = ['rawevac-%02d-%s' % (i, uuid.uuid4().hex[:6]) for i in range(len(xmls))]
    with tempfile.TemporaryDirectory(prefix='bench-evac-', dir=lab.info['shared_instance_path']) as shared:
        copies = [copy_of(xml, name, pathlib.Path(shared), lab.info['images']['tick_qcow2']) for xml, name in zip(xmls, names)]
        try:
            limit, starts = raw(lab, copies, args.concurrency)
        finally:
            remove_domains([lab.uri(TARGET)], names)
    print('%d running guests of failed %s rebuilt on %s, concurrency %d' % (args.count, FAILED, TARGET, args.concurrency))
    print('raw libvirt define+start (the limit): %6.2f s; %.2f s a guest, each define+start %.2f s on average'
          % (limit, limit / args.count, statistics.mean(starts)))
    print('one multihv.cloud.evacuate node=%s: %6.2f s; %.2f s a guest, each rebuild %.2f s on average'
          % (FAILED, mine, mine / args.count, statistics.mean(rebuilds)))
    print('   (includes ansible-playbook start-up, fencing, forcing the node down, scheduling, claims and the records)')
    print('ours / limit: %.2fx' % (mine / limit))
    return 0


if __name__ == '__main__':
    sys.exit(main())
