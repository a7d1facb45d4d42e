"""Benchmark: booting N lab instances in one `instance` task against N raw libvirt define+start calls.

Needs the lab (`make install lab-up`). Ours: one ansible-playbook task booting N instances of a
32 MB flavor from the lab image (scheduler, registry claims, image check, overlay disks through
libvirt, domains) with `concurrency` C, registry in a temporary directory. Baseline, same run:
N qcow2 overlays created with qemu-img and N domains defined and started with libvirt-python,
C at a time, spread over the lab hosts. Both are cleaned up. Prints both times and the ratio;
the baseline is the limit (it does no scheduling, accounting or checking).
Run: .venv/bin/python tests/benchmarks/boot_instances.py [--count 20 --concurrency 4]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = pathlib.Path(os.environ.get('MULTIHV_LAB_DIR', REPO / '.lab'))
sys.path.insert(0, str(REPO / 'tests'))

from support import guest  # noqa: E402  pylint: disable=wrong-import-position

import libvirt  # noqa: E402  pylint: disable=wrong-import-position


def ansible(playbook, env):
    subprocess.run([str(REPO / '.venv' / 'bin' / 'ansible-playbook'), str(playbook)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ours(lab, tmp, count, concurrency, env):
    options = {'cloud_file': lab['cloud_file'], 'registry_url': 'sqlite:///%s/r.sqlite' % tmp}
    # The lab hosts have 2 CPU threads: at the default 4.0 ratio, 16 one-vCPU instances fill them.
    setup = [{'multihv.cloud.compute_node': dict(options, name=host['name'], allocation_ratios={'cpu': 32.0})} for host in lab['kvm_hosts']]
    setup += [{'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
              {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab['images']['tick_qcow2'])}]
    boot = [{'multihv.cloud.instance': dict(options, flavor='tiny', image='tick', concurrency=concurrency,
                                            instances=[{'name': 'bench-%02d' % i} for i in range(count)])}]
    teardown = [{'multihv.cloud.instance': dict(options, state='absent', instances=[{'name': 'bench-%02d' % i} for i in range(count)])}]
    for name, tasks in (('setup', setup), ('boot', boot), ('teardown', teardown)):
        (tmp / (name + '.yml')).write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]))
    ansible(tmp / 'setup.yml', env)
    start = time.perf_counter()
    try:
        ansible(tmp / 'boot.yml', env)
        return time.perf_counter() - start
    finally:
        ansible(tmp / 'teardown.yml', env)


def raw_one(lab, host, index, domain_type):
    name = 'raw-%02d-%s' % (index, uuid.uuid4().hex[:6])
    path = pathlib.Path(lab['shared_instance_path']) / name
    path.mkdir()
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', lab['images']['tick_qcow2'],
                    str(path / 'disk.qcow2')], check=True)
    conn = libvirt.open(host['uri'])
    try:
        conn.defineXML(guest.domain_xml(name, str(path / 'disk.qcow2'), str(path / 'serial.log'), domain_type=domain_type)).create()
    finally:
        conn.close()
    return host['uri'], name, path


def raw(lab, count, concurrency):
    conn = libvirt.open(lab['kvm_hosts'][0]['uri'])
    try:
        conn.getDomainCapabilities(None, 'x86_64', None, 'kvm')
        domain_type = 'kvm'
    except libvirt.libvirtError:
        domain_type = 'qemu'
    finally:
        conn.close()
    hosts = lab['kvm_hosts']
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        made = list(pool.map(lambda i: raw_one(lab, hosts[i % len(hosts)], i, domain_type), range(count)))
    elapsed = time.perf_counter() - start
    for uri, name, path in made:
        conn = libvirt.open(uri)
        try:
            dom = conn.lookupByName(name)
            dom.destroy()
            dom.undefine()
        finally:
            conn.close()
        shutil.rmtree(path)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--count', type=int, default=20)
    parser.add_argument('--concurrency', type=int, default=4)
    args = parser.parse_args()
    if not (LAB / 'lab.json').is_file():
        print('the lab is not up: run `make install lab-up` first')
        return 2
    lab = json.loads((LAB / 'lab.json').read_text())
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(REPO / '.build' / 'collections')))
    with tempfile.TemporaryDirectory(prefix='multihv-bench-boot-') as tmp:
        limit = raw(lab, args.count, args.concurrency)
        mine = ours(lab, pathlib.Path(tmp), args.count, args.concurrency, env)
    print('%d instances, concurrency %d' % (args.count, args.concurrency))
    print('raw libvirt define+start (the limit): %6.2f s' % limit)
    print('one multihv.cloud.instance task:      %6.2f s (includes ansible-playbook start-up)' % mine)
    print('ours / limit: %.2fx' % (mine / limit))
    return 0


if __name__ == '__main__':
    sys.exit(main())
