"""Benchmark: what one task of ours costs, from task start to result, beside ansible.builtin.ping.

Needs the lab (`make install lab-up`). Runs one real ansible-playbook with RUNS rounds of
ping, instance_info and compute_node_info against the lab (a registry of its own in a
temporary directory), timed by a small callback plugin written next to the playbook
(v2_runner_on_start to v2_runner_on_ok). Prints the median per task and its ratio to ping:
the ratio is what the module adds to Ansible's own per-task cost.
Run: .venv/bin/python tests/benchmarks/task_overhead.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB = pathlib.Path(os.environ.get('MULTIHV_LAB_DIR', REPO / '.lab'))

CALLBACK = '''
from __future__ import annotations
import json
import os
import time
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'task_timer'

    def __init__(self):
        super().__init__()
        self.started = {}
        self.times = []

    def v2_runner_on_start(self, host, task):
        self.started[task._uuid] = time.perf_counter()

    def v2_runner_on_ok(self, result):
        task = result._task
        self.times.append([task.get_name(), time.perf_counter() - self.started[task._uuid]])

    def v2_playbook_on_stats(self, stats):
        with open(os.environ['TASK_TIMER_OUT'], 'w') as out:
            json.dump(self.times, out)
'''


def playbook(runs, cloud_file, registry):
    tasks = []
    for _round in range(runs):
        tasks += [
            {'name': 'ping', 'ansible.builtin.ping': None},
            {'name': 'instance_info', 'multihv.cloud.instance_info': {'cloud_file': cloud_file, 'registry_url': registry}},
            {'name': 'compute_node_info', 'multihv.cloud.compute_node_info': {'cloud_file': cloud_file, 'registry_url': registry}},
        ]
    return [{'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks}]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--runs', type=int, default=5)
    args = parser.parse_args()
    cloud_file = LAB / 'multihv-cloud.yml'
    if not cloud_file.is_file():
        print('the lab is not up: run `make install lab-up` first')
        return 2
    with tempfile.TemporaryDirectory(prefix='multihv-bench-tasks-') as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / 'callbacks').mkdir()
        (tmp / 'callbacks' / 'task_timer.py').write_text(CALLBACK)
        (tmp / 'play.yml').write_text(json.dumps(playbook(args.runs, str(cloud_file), 'sqlite:///%s/r.sqlite' % tmp)))
        env = dict(os.environ, ANSIBLE_CALLBACK_PLUGINS=str(tmp / 'callbacks'), ANSIBLE_CALLBACKS_ENABLED='task_timer',
                   TASK_TIMER_OUT=str(tmp / 'times.json'),
                   ANSIBLE_COLLECTIONS_PATH=os.environ.get('ANSIBLE_COLLECTIONS_PATH', str(REPO / '.build' / 'collections')))
        subprocess.run([str(REPO / '.venv' / 'bin' / 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                        '-e', 'ansible_python_interpreter=' + sys.executable, str(tmp / 'play.yml')],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times = json.loads((tmp / 'times.json').read_text())
    by_task = {}
    for name, seconds in times:
        by_task.setdefault(name, []).append(seconds)
    ping = statistics.median(by_task['ping'])
    print('%-20s %8s %10s' % ('task', 'median s', 'x ping'))
    for name in ('ping', 'instance_info', 'compute_node_info'):
        median = statistics.median(by_task[name])
        print('%-20s %8.3f %10.2f' % (name, median, median / ping))
    print('issue 20 goal: instance_info and compute_node_info at most 1.2x ping; load average %s'
          % ' '.join(open('/proc/loadavg', encoding='ascii').read().split()[:3]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
