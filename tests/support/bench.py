"""What the lab benchmarks share: their command line, the lab and Ansible's environment,
running a playbook of tasks, and lab guests made and removed with raw libvirt-python."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = pathlib.Path(os.environ.get('MULTIHV_LAB_DIR', REPO / '.lab'))


def lab_run(doc, count, concurrency):
    """(args, lab.json, environment for ansible-playbook) for a benchmark with --count and
    --concurrency; None (after saying so) when the lab is not up."""
    parser = argparse.ArgumentParser(description=doc.split('\n', 1)[0])
    parser.add_argument('--count', type=int, default=count)
    parser.add_argument('--concurrency', type=int, default=concurrency)
    args = parser.parse_args()
    if not (LAB / 'lab.json').is_file():
        print('the lab is not up: run `make install lab-up` first')
        return None
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(REPO / '.build' / 'collections')))
    return args, json.loads((LAB / 'lab.json').read_text()), env


def playbook(path, tasks, env):
    """Write tasks as a playbook for localhost at path and run it with ansible-playbook."""
    path.write_text(json.dumps([{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]))
    subprocess.run([str(REPO / '.venv' / 'bin' / 'ansible-playbook'), str(path)], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def domain_type(uri):
    """kvm where the host runs KVM guests, qemu (TCG) otherwise."""
    import libvirt  # pylint: disable=import-outside-toplevel
    conn = libvirt.open(uri)
    try:
        conn.getDomainCapabilities(None, 'x86_64', None, 'kvm')
        return 'kvm'
    except libvirt.libvirtError:
        return 'qemu'
    finally:
        conn.close()


def remove_domains(uris, names):
    """Destroy and undefine the domains called names wherever they are among the hosts at uris."""
    import libvirt  # pylint: disable=import-outside-toplevel
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # lookups of domains elsewhere fail, as expected
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            for name in names:
                try:
                    dom = conn.lookupByName(name)
                except libvirt.libvirtError:
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        finally:
            conn.close()
