"""Benchmark: draining a lab node of N running guests against the same live migrations issued with raw libvirt-python.

Needs the lab (`make install lab-up`). Ours: N instances of a 32 MB flavor on kvm1 with their disks
on the shared instance path, then one ansible-playbook task `multihv.cloud.migrate from_node=kvm1`
with `concurrency` C (node disabled, scheduler, claims, the shared-storage marker check, migration
records with job statistics, registry updates). Baseline, same run: N lab guests on kvm1 on the
shared path, moved to kvm2 with virDomainMigrate3 (the same flags and addresses), C at a time.
Both are cleaned up. Prints both times, the ratio and each guest's downtime as libvirt reports it;
the baseline is the limit (no scheduling, accounting or checking).
Run: .venv/bin/python tests/benchmarks/drain_node.py [--count 10 --concurrency 2]
"""

from __future__ import annotations

import concurrent.futures
import json
import pathlib
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from support import guest  # noqa: E402  pylint: disable=wrong-import-position
from support.bench import lab_run, playbook  # noqa: E402  pylint: disable=wrong-import-position
from support.lab import domain_type, remove_domains  # noqa: E402  pylint: disable=wrong-import-position

import libvirt  # noqa: E402  pylint: disable=wrong-import-position

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
         | libvirt.VIR_MIGRATE_UNSAFE)
PARAMS = {libvirt.VIR_MIGRATE_PARAM_URI: 'tcp://127.0.0.1', libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: '127.0.0.1'}


def ours(lab, tmp, count, concurrency, env):
    options = {'cloud_file': lab['cloud_file'], 'registry_url': 'sqlite:///%s/r.sqlite' % tmp}
    names = [{'name': 'drain-%02d' % i} for i in range(count)]
    # The lab hosts have 2 CPU threads: at the default 4.0 ratio, 8 one-vCPU instances fill one.
    setup = [{'multihv.cloud.compute_node': dict(options, name=host['name'], allocation_ratios={'cpu': 32.0})} for host in lab['kvm_hosts']]
    setup += [{'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
              {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab['images']['tick_qcow2'])},
              {'multihv.cloud.instance': dict(options, flavor='tiny', image='tick', node='kvm1', storage='shared', instances=names)}]
    playbook(tmp / 'setup.yml', setup, env)
    start = time.perf_counter()
    try:
        playbook(tmp / 'drain.yml', [{'multihv.cloud.migrate': dict(options, from_node='kvm1', concurrency=concurrency)}], env)
        elapsed = time.perf_counter() - start
        with sqlite3.connect(tmp / 'r.sqlite') as db:
            rows = db.execute("SELECT migration_type, status, stats FROM migrations").fetchall()
        assert len(rows) == count and all(r[:2] == ('live', 'completed') for r in rows), rows
        return elapsed, [json.loads(r[2]).get('downtime_ms') for r in rows]
    finally:
        playbook(tmp / 'teardown.yml', [{'multihv.cloud.instance': dict(options, state='absent', instances=names)}], env)


def raw(lab, count, concurrency):
    source, target = lab['kvm_hosts'][0]['uri'], lab['kvm_hosts'][1]['uri']
    kind = domain_type(source)
    conn = libvirt.open(source)
    try:
        made = []
        for index in range(count):
            name = 'rawdrain-%02d-%s' % (index, uuid.uuid4().hex[:6])
            path = pathlib.Path(lab['shared_instance_path']) / name
            path.mkdir()
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', lab['images']['tick_qcow2'],
                            str(path / 'disk.qcow2')], check=True)
            conn.defineXML(guest.domain_xml(name, str(path / 'disk.qcow2'), str(path / 'serial.log'), domain_type=kind)).create()
            made.append((name, path))
    finally:
        conn.close()

    def move(name):
        sconn, dconn = libvirt.open(source), libvirt.open(target)
        try:
            sconn.lookupByName(name).migrate3(dconn, PARAMS, FLAGS)
            return dconn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED).get('downtime')
        finally:
            sconn.close()
            dconn.close()

    start = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            downtimes = list(pool.map(move, [name for name, _path in made]))
        return time.perf_counter() - start, downtimes
    finally:
        remove_domains((source, target), [name for name, _path in made])
        for _name, path in made:
            shutil.rmtree(path)


def describe(downtimes):
    known = [d for d in downtimes if d is not None]
    if not known:
        return 'not reported'
    return 'median %d ms, max %d ms (%s)' % (statistics.median(known), max(known), ', '.join(str(d) for d in downtimes))


def main():
    setting = lab_run(__doc__, count=10, concurrency=2)
    if setting is None:
        return 2
    args, lab, env = setting
    with tempfile.TemporaryDirectory(prefix='multihv-bench-drain-') as tmp:
        limit, raw_downtimes = raw(lab, args.count, args.concurrency)
        mine, our_downtimes = ours(lab, pathlib.Path(tmp), args.count, args.concurrency, env)
    print('%d running guests kvm1 -> kvm2, concurrency %d' % (args.count, args.concurrency))
    print('raw libvirt migrate3 (the limit):     %6.2f s; downtime %s' % (limit, describe(raw_downtimes)))
    print('one multihv.cloud.migrate from_node:  %6.2f s; downtime %s' % (mine, describe(our_downtimes)))
    print('   (includes ansible-playbook start-up, disabling the node, scheduling and the records)')
    print('ours / limit: %.2fx' % (mine / limit))
    return 0


if __name__ == '__main__':
    sys.exit(main())
