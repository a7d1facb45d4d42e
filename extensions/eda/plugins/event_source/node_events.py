# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_events: an ansible-rulebook event source that watches the compute nodes of a
multihv.cloud cloud and sends an event each time one goes down or comes back.

It reads the nodes live with the collection's own core (the code behind
multihv.cloud.compute_node_info and the multihv.cloud.nodes inventory), every
`interval` seconds, in a thread so that the rule engine's event loop never blocks.
"""

from __future__ import annotations

DOCUMENTATION = r'''
---
short_description: Compute node down and up events of a multihv.cloud cloud.
description:
  - An ansible-rulebook event source plugin that reads every compute node of the cloud (KVM hosts and vSphere
    clusters) live every O(interval) seconds and sends an event when a node goes down (it stopped answering) or
    comes back up.
  - Each event is C({"multihv": {"event": "node_down" | "node_up", "node": NAME, "hypervisor_type": "kvm" | "vsphere",
    "reason": WHY_DOWN, "at": ISO_TIME, "initial": BOOL, "repeat": BOOL}}). C(initial) is true for the events of the
    first read when O(emit_initial) is set; C(repeat) is true for the node_down that O(repeat_down) sends again.
  - A read that fails as a whole (the cloud file or the registry cannot be read) is logged and the next one goes on; it
    sends no event and forgets no state.
  - The registry may be overridden with the environment variable C(MULTIHV_REGISTRY_URL), vCenter passwords come
    from C(MULTIHV_VCENTER_PASSWORD), as for the collection's modules.
  - Needs the collection's Python requirements (libvirt-python, pyvmomi) in the Python that runs ansible-rulebook.
options:
  cloud_file:
    description:
      - Path of the cloud file. Default C($MULTIHV_CLOUD_FILE), else the modules' search path
        (C(./multihv-cloud.yml), C(~/.config/multihv/cloud.yml), C(/etc/multihv/cloud.yml)).
    type: str
  interval:
    description: Seconds from the start of one read of the nodes to the start of the next.
    type: float
    default: 10
  emit_initial:
    description:
      - Also send one event per node for the state the first read finds (node_down for the nodes already down,
        node_up for the others), so that a node that went down while nothing watched is acted on.
      - By default only changes seen after the first read are sent.
    type: bool
    default: false
  repeat_down:
    description:
      - Send node_down again every so many seconds for a node that stays down after one was sent, so that work
        that ended without acting on it runs again (an HA pass that found the node isolated, its storage heartbeat
        advancing, acts once that heartbeat stops). 0 sends one per change only.
    type: float
    default: 0
'''

EXAMPLES = r'''
- name: Instance HA for the KVM nodes
  hosts: localhost
  sources:
    - multihv.cloud.node_events:
        cloud_file: /etc/multihv/cloud.yml
        interval: 10
  rules:
    - name: A KVM node went down
      condition: event.multihv.event == "node_down" and event.multihv.hypervisor_type == "kvm"
      action:
        run_playbook:
          name: multihv.cloud.instance_ha
'''

import asyncio
import datetime
import logging
import os
import pathlib
import sys
import time

NODE_DOWN = 'node_down'
NODE_UP = 'node_up'
STATE_DOWN = 'down'
ENV_CLOUD_FILE = 'MULTIHV_CLOUD_FILE'
DEFAULT_INTERVAL = 10.0

LOG = logging.getLogger('multihv.cloud.node_events')


def _event(kind, node, at, initial=False, repeat=False):
    return {'multihv': {
        'event': kind,
        'node': node['name'],
        'hypervisor_type': node.get('hypervisor_type'),
        'reason': node.get('reason') if kind == NODE_DOWN else None,
        'at': at,
        'initial': initial,
        'repeat': repeat,
    }}


def transitions(known, nodes, at, emit_initial=False):
    """The events between two reads of the nodes, and the states to remember.

    known: {node name: 'up' or 'down'} from the previous read, or None before the first
    read. nodes: the node views of this read (dicts with name, hypervisor_type, state,
    reason). at: the time to stamp the events with.

    Returns (events, states). A node whose state changed gives node_down or node_up. On
    the first read every node gives its state's event when emit_initial is set, none
    otherwise. A node that first appears later (added to the cloud file) gives node_down
    when it is down and nothing when it is up. A node that is no longer listed is
    forgotten without an event.
    """
    states = {}
    events = []
    for node in nodes:
        down = node.get('state') == STATE_DOWN
        state = 'down' if down else 'up'
        states[node['name']] = state
        kind = NODE_DOWN if down else NODE_UP
        if known is None:
            if emit_initial:
                events.append(_event(kind, node, at, initial=True))
        elif node['name'] not in known:
            if down:
                events.append(_event(kind, node, at))
        elif known[node['name']] != state:
            events.append(_event(kind, node, at))
    return events, states


def repeats(nodes, events, sent, now, every, at):
    """node_down again (repeat true) for each node of this read that is still down and whose last
    node_down went out `every` seconds ago or more (every 0: none). sent: {node name: monotonic time
    of its last node_down}, updated with this read's events and repeats; a node that is up or
    no longer listed is forgotten. A node down since the first read without emit_initial had no
    node_down, so it gets no repeat either."""
    for event in events:
        if event['multihv']['event'] == NODE_DOWN:
            sent[event['multihv']['node']] = now
    down = set(node['name'] for node in nodes if node.get('state') == STATE_DOWN)
    for name in list(sent):
        if name not in down:
            del sent[name]
    again = []
    for node in nodes:
        name = node['name']
        if every and name in sent and now - sent[name] >= every:
            again.append(_event(NODE_DOWN, node, at, repeat=True))
            sent[name] = now
    return again


def as_bool(value, name='emit_initial'):
    """A rulebook argument as a bool: rulebook variables rendered by Jinja may arrive as strings."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('', '0', 'false', 'no', 'off', 'none'):
        return False
    raise ValueError('multihv.cloud.node_events: %s must be true or false, got %r' % (name, value))


def as_interval(value):
    try:
        interval = float(DEFAULT_INTERVAL if value is None else value)
    except (TypeError, ValueError):
        interval = -1.0
    if interval <= 0:
        raise ValueError('multihv.cloud.node_events: interval must be a number of seconds greater than 0, got %r' % (value,))
    return interval


def as_repeat(value):
    try:
        every = float(0 if value in (None, '') else value)
    except (TypeError, ValueError):
        every = -1.0
    if every < 0:
        raise ValueError('multihv.cloud.node_events: repeat_down must be a number of seconds, 0 or more, got %r' % (value,))
    return every


def _import_core():
    """(_config, _nodes, Registry) of the collection this file belongs to.

    ansible-rulebook runs a source plugin with runpy.run_path in its own Python, where the
    ansible_collections package is not importable by itself. The directory that holds
    ansible_collections/multihv/cloud/extensions/eda/plugins/event_source/<this file> is
    put first on sys.path, so that this file and the core it imports come from one
    installed collection. A copy outside such a tree (a checkout given with -S) falls back
    on Ansible's collection loader, which finds the collection on ANSIBLE_COLLECTIONS_PATH.
    """
    # Not resolved: a collection tree may be a link to a checkout, and the tree is what counts.
    here = pathlib.Path(os.path.abspath(globals().get('__file__') or sys.argv[0]))
    top = here.parents[7] if len(here.parents) > 7 else None
    if top is not None and here.parents[6].name == 'ansible_collections' and str(top) not in sys.path:
        sys.path.insert(0, str(top))
    try:
        return _core_modules()
    except ImportError:
        pass
    try:
        from ansible.plugins.loader import init_plugin_loader  # pylint: disable=import-outside-toplevel
        init_plugin_loader()
        return _core_modules()
    except ImportError as exc:
        raise ImportError('multihv.cloud.node_events: cannot import the multihv.cloud collection (%s); install it where '
                          'ANSIBLE_COLLECTIONS_PATH points and run ansible-rulebook with the Python that has ansible-core '
                          'and the collection\'s requirements' % exc) from exc


def _core_modules():
    # pylint: disable=import-outside-toplevel
    from ansible_collections.multihv.cloud.plugins.module_utils import _config
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
    return _config, _nodes, Registry


def read_nodes(core, cloud_file):
    """Every node's name, hypervisor type, state and reason, read live (blocking)."""
    config, nodes, registry_class = core
    cloud = config.load(cloud_file=cloud_file or None)
    # Read as it is, never created nor upgraded (a registry that does not exist yet reads as empty).
    with registry_class.open(cloud.registry_url, upgrade=False) as registry:
        return [{'name': n.name, 'hypervisor_type': n.hypervisor_type, 'state': n.state, 'reason': n.reason}
                for n in nodes.list_nodes(cloud, registry)]


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


async def main(queue, args):
    """Read the nodes every interval seconds and put node_down / node_up events on the queue."""
    cloud_file = args.get('cloud_file') or os.environ.get(ENV_CLOUD_FILE) or None
    interval = as_interval(args.get('interval'))
    emit_initial = as_bool(args.get('emit_initial', False))
    repeat_down = as_repeat(args.get('repeat_down'))
    sent = {}
    core = _import_core()
    known = None
    failing = False
    while True:
        started = time.monotonic()
        try:
            nodes = await asyncio.to_thread(read_nodes, core, cloud_file)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # a failed read must not end the watch
            # An error when it starts failing (and a warning when it works again), not one every interval.
            (LOG.debug if failing else LOG.error)('multihv.cloud.node_events: cannot read the nodes, trying again every %s s: %s',
                                                  interval, exc)
            failing = True
        else:
            if failing:
                LOG.warning('multihv.cloud.node_events: reading the nodes works again')
            failing = False
            at = _now()
            events, known = transitions(known, nodes, at, emit_initial)
            events += repeats(nodes, events, sent, time.monotonic(), repeat_down, at)
            for event in events:
                LOG.info('multihv.cloud.node_events: %s %s%s', event['multihv']['event'], event['multihv']['node'],
                         ' (again)' if event['multihv']['repeat'] else '')
                await queue.put(event)
        await asyncio.sleep(max(interval - (time.monotonic() - started), 0))


if __name__ == '__main__':
    # Run directly: print the events of the cloud that MULTIHV_CLOUD_FILE names.

    class MockQueue(asyncio.Queue):
        """A queue that prints what is put on it."""

        async def put(self, item):
            print(item)

    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(MockQueue(), {'interval': 5, 'emit_initial': True}))
