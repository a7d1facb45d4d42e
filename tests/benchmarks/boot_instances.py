"""Benchmark: booting N lab instances in one `instance` task against N raw libvirt define+start calls.

Needs the lab (`make install lab-up`). Ours: one ansible-playbook task booting N instances of a
32 MB flavor from the lab image (scheduler, registry claims, image check, overlay disks through
libvirt, domains) with `concurrency` C, registry in a temporary directory. Baseline, same run:
N qcow2 overlays created with qemu-img and N domains defined and started with libvirt-python,
C at a time, spread over the lab hosts. Both are cleaned up. Prints both times and the ratio;
the baseline is the limit (it does no scheduling, accounting or checking). Also, same run, the
ansible-playbook of one ansible.builtin.ping task (start-up included as in ours): issue 20's goal for
one guest (--count 1) is ours at most that plus 1 s.
Run: .venv/bin/python tests/benchmarks/boot_instances.py [--count 20 --concurrency 4]
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from support import guest  # noqa: E402  pylint: disable=wrong-import-position
from support.bench import lab_run, playbook  # noqa: E402  pylint: disable=wrong-import-position
from support.lab import domain_type as lab_domain_type, remove_domains  # noqa: E402  pylint: disable=wrong-import-position

import libvirt  # noqa: E402  pylint: disable=wrong-import-position


def ours(lab, tmp, count, concurrency, env):
    options = {'cloud_file': lab['cloud_file'], 'registry_url': 'sqlite:///%s/r.sqlite' % tmp}
    # The lab hosts have 2 CPU threads: at the default 4.0 ratio, 16 one-vCPU instances fill them.
    setup = [{'multihv.cloud.compute_node': dict(options, name=host['name'], allocation_ratios={'cpu': 32.0})} for host in lab['kvm_hosts']]
    setup += [{'multihv.cloud.flavor': dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1)},
              {'multihv.cloud.image': dict(options, name='tick', hypervisor_type='kvm', source=lab['images']['tick_qcow2'])}]
    boot = [{'multihv.cloud.instance': dict(options, flavor='tiny', image='tick', concurrency=concurrency,
                                            instances=[{'name': 'bench-%02d' % i} for i in range(count)])}]
    teardown = [{'multihv.cloud.instance': dict(options, state='absent', instances=[{'name': 'bench-%02d' % i} for i in range(count)])}]
    playbook(tmp / 'setup.yml', setup, env)
    start = time.perf_counter()
    try:
        playbook(tmp / 'boot.yml', boot, env)
        return time.perf_counter() - start
    finally:
        playbook(tmp / 'teardown.yml', teardown, env)


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
    domain_type = lab_domain_type(lab['kvm_hosts'][0]['uri'])
    hosts = lab['kvm_hosts']
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        made = list(pool.map(lambda i: raw_one(lab, hosts[i % len(hosts)], i, domain_type), range(count)))
    elapsed = time.perf_counter() - start
    remove_domains(sorted(set(uri for uri, _name, _path in made)), [name for _uri, name, _path in made])
    for _uri, _name, path in made:
        shutil.rmtree(path)
    return elapsed


def ping(tmp, env):
    """Seconds of an ansible-playbook with one ansible.builtin.ping task."""
    start = time.perf_counter()
    playbook(tmp / 'ping.yml', [{'ansible.builtin.ping': None}], env)
    return time.perf_counter() - start


def main():
    setting = lab_run(__doc__, count=20, concurrency=4)
    if setting is None:
        return 2
    args, lab, env = setting
    with tempfile.TemporaryDirectory(prefix='multihv-bench-boot-') as tmp:
        limit = raw(lab, args.count, args.concurrency)
        # One guest is a few seconds on a shared machine: three rounds of (ping, ours), medians of each and of the differences.
        rounds = [(ping(pathlib.Path(tmp), env), ours(lab, pathlib.Path(tmp), args.count, args.concurrency, env))
                  for _round in range(3 if args.count == 1 else 1)]
        pinged, mine = statistics.median(p for p, _o in rounds), statistics.median(o for _p, o in rounds)
        over = statistics.median(o - p for p, o in rounds)
    print('%d instances, concurrency %d' % (args.count, args.concurrency))
    print('raw libvirt define+start (the limit): %6.2f s' % limit)
    print('one multihv.cloud.instance task:      %6.2f s (includes ansible-playbook start-up)' % mine)
    print('ours / limit: %.2fx' % (mine / limit))
    print('one ansible.builtin.ping task:        %6.2f s (the same start-up); ours - ping: %+.2f s (median of %d rounds; '
          'goal for one guest: at most +1 s), ours / ping: %.2fx' % (pinged, over, len(rounds), mine / pinged))
    return 0


if __name__ == '__main__':
    sys.exit(main())
