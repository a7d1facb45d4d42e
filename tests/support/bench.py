"""What the lab benchmarks share: their command line, the lab and Ansible's environment,
and running a playbook of tasks (raw lab guests: support.lab's domain_type and remove_domains)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess

from support import REPO
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
