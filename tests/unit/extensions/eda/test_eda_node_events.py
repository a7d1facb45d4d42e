"""The node_events event source (extensions/eda): transitions between reads, its arguments, a read
that fails, and how it finds the collection when ansible-rulebook runs it with runpy (no lab)."""

import asyncio
import logging
import os
import subprocess
import sys

import pytest

from ansible_collections.multihv.cloud.extensions.eda.plugins.event_source import node_events
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from support import REPO

AT = '2026-01-01T00:00:00+00:00'


def node(name, state='up', kind='kvm', reason=None):
    return {'name': name, 'hypervisor_type': kind, 'state': state, 'reason': reason}


def summary(events):
    return [(e['multihv']['event'], e['multihv']['node']) for e in events]


def test_the_first_read_sends_nothing_by_default_and_remembers_the_states():
    events, states = node_events.transitions(None, [node('kvm1'), node('kvm2', 'down', reason='no answer')], AT)
    assert events == []
    assert states == {'kvm1': 'up', 'kvm2': 'down'}


def test_the_first_read_sends_every_state_with_emit_initial():
    events, _states = node_events.transitions(None, [node('kvm1'), node('kvm2', 'down', reason='no answer')], AT, emit_initial=True)
    assert summary(events) == [('node_up', 'kvm1'), ('node_down', 'kvm2')]
    assert all(e['multihv']['initial'] for e in events)
    assert events[1]['multihv'] == {'event': 'node_down', 'node': 'kvm2', 'hypervisor_type': 'kvm', 'reason': 'no answer',
                                    'at': AT, 'initial': True, 'repeat': False}


def test_a_change_of_state_is_one_event_and_no_change_is_none():
    known = {'kvm1': 'up', 'kvm2': 'up', 'vc/DC0/C0': 'down'}
    nodes = [node('kvm1'), node('kvm2', 'down', reason='timed out'), node('vc/DC0/C0', kind='vsphere')]
    events, states = node_events.transitions(known, nodes, AT)
    assert summary(events) == [('node_down', 'kvm2'), ('node_up', 'vc/DC0/C0')]
    assert events[0]['multihv'] == {'event': 'node_down', 'node': 'kvm2', 'hypervisor_type': 'kvm', 'reason': 'timed out',
                                    'at': AT, 'initial': False, 'repeat': False}
    assert events[1]['multihv']['reason'] is None and events[1]['multihv']['hypervisor_type'] == 'vsphere'
    assert states == {'kvm1': 'up', 'kvm2': 'down', 'vc/DC0/C0': 'up'}
    again, _states = node_events.transitions(states, nodes, AT)
    assert again == []


def test_nodes_added_or_removed_later():
    known = {'kvm1': 'up', 'kvm2': 'up'}
    events, states = node_events.transitions(known, [node('kvm1'), node('kvm3'), node('kvm4', 'down')], AT)
    assert summary(events) == [('node_down', 'kvm4')]  # a new node that is up is no news; kvm2 left without one
    assert states == {'kvm1': 'up', 'kvm3': 'up', 'kvm4': 'down'}


def test_a_node_that_stays_down_gets_node_down_again_every_repeat_down_seconds():
    sent = {}
    nodes = [node('kvm1'), node('kvm2', 'down', reason='isolated')]
    events, _states = node_events.transitions({'kvm1': 'up', 'kvm2': 'up'}, nodes, AT)
    assert node_events.repeats(nodes, events, sent, 100.0, 60, AT) == [] and sent == {'kvm2': 100.0}
    assert node_events.repeats(nodes, [], sent, 159.0, 60, AT) == []
    again = node_events.repeats(nodes, [], sent, 160.0, 60, AT)
    assert summary(again) == [('node_down', 'kvm2')] and again[0]['multihv']['repeat'] is True
    assert again[0]['multihv']['reason'] == 'isolated' and sent == {'kvm2': 160.0}
    assert node_events.repeats(nodes, [], sent, 200.0, 60, AT) == []
    # Up again: forgotten; 0: never; down since a first read that sent nothing: no repeat either.
    assert node_events.repeats([node('kvm1'), node('kvm2')], [], sent, 300.0, 60, AT) == [] and sent == {}
    assert node_events.repeats(nodes, events, {}, 100.0, 0, AT) == [] and node_events.repeats(nodes, [], {}, 999.0, 0, AT) == []
    assert node_events.repeats(nodes, [], {}, 999.0, 60, AT) == []


@pytest.mark.parametrize('value, expected', [(None, 0.0), ('', 0.0), (0, 0.0), ('120', 120.0), (1.5, 1.5)])
def test_repeat_down(value, expected):
    assert node_events.as_repeat(value) == expected


@pytest.mark.parametrize('value', [-1, 'soon'])
def test_a_bad_repeat_down_says_what_is_wrong(value):
    with pytest.raises(ValueError, match='repeat_down must be a number of seconds'):
        node_events.as_repeat(value)


@pytest.mark.parametrize('value, expected', [(True, True), (False, False), ('true', True), ('False', False), ('yes', True),
                                             ('0', False), (1, True), (None, False)])
def test_emit_initial_as_the_rulebook_renders_it(value, expected):
    assert node_events.as_bool(value) is expected


@pytest.mark.parametrize('value, expected', [(None, 10.0), (2, 2.0), ('0.5', 0.5)])
def test_interval(value, expected):
    assert node_events.as_interval(value) == expected


@pytest.mark.parametrize('value', [0, -1, 'soon'])
def test_a_bad_interval_says_what_is_wrong(value):
    with pytest.raises(ValueError, match='interval must be a number of seconds greater than 0'):
        node_events.as_interval(value)


def test_a_read_that_fails_is_logged_and_the_watch_goes_on(monkeypatch, caplog):
    reads = iter([
        [node('kvm1'), node('kvm2')],
        errors.RegistryError('cannot open the registry sqlite:////nowhere/registry.sqlite'),
        errors.RegistryError('cannot open the registry sqlite:////nowhere/registry.sqlite'),
        [node('kvm1'), node('kvm2', 'down', reason='no answer')],
        [node('kvm1'), node('kvm2', 'down', reason='no answer')],
        [node('kvm1'), node('kvm2')],
    ])
    seen = []

    def read(_core, cloud_file):
        seen.append(cloud_file)
        value = next(reads, None)
        if value is None:
            raise asyncio.CancelledError()  # the script is over: stop as ansible-rulebook stops a source
        if isinstance(value, Exception):
            raise value
        return value

    caplog.set_level(logging.DEBUG, logger='multihv.cloud.node_events')
    monkeypatch.setattr(node_events, '_import_core', lambda: None)
    monkeypatch.setattr(node_events, 'read_nodes', read)
    monkeypatch.setenv('MULTIHV_CLOUD_FILE', '/etc/multihv/from-env.yml')
    queue = asyncio.Queue()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(node_events.main(queue, {'interval': '0.01'}))
    events = [queue.get_nowait() for _index in range(queue.qsize())]
    assert summary(events) == [('node_down', 'kvm2'), ('node_up', 'kvm2')]
    assert events[0]['multihv']['reason'] == 'no answer' and events[0]['multihv']['at']
    assert set(seen) == {'/etc/multihv/from-env.yml'}
    failures = [r for r in caplog.records if 'cannot read the nodes' in r.getMessage()]
    assert [r.levelname for r in failures] == ['ERROR', 'DEBUG'], 'one error when reads start failing, not one per read'
    assert 'sqlite:////nowhere/registry.sqlite' in failures[0].getMessage()
    assert any('works again' in r.getMessage() for r in caplog.records)


def test_the_source_repeats_node_down_with_repeat_down(monkeypatch):
    reads = iter([[node('kvm2')]] + [[node('kvm2', 'down', reason='isolated')]] * 3)

    def read(_core, _cloud_file):
        value = next(reads, None)
        if value is None:
            raise asyncio.CancelledError()
        return value
    monkeypatch.setattr(node_events, '_import_core', lambda: None)
    monkeypatch.setattr(node_events, 'read_nodes', read)
    queue = asyncio.Queue()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(node_events.main(queue, {'interval': '0.01', 'repeat_down': '0.001'}))
    events = [queue.get_nowait()['multihv'] for _index in range(queue.qsize())]
    assert [(e['event'], e['repeat']) for e in events] == [('node_down', False), ('node_down', True), ('node_down', True)]


def test_a_bad_argument_stops_the_source_with_its_name():
    with pytest.raises(ValueError, match='emit_initial must be true or false'):
        asyncio.run(node_events.main(asyncio.Queue(), {'emit_initial': 'maybe'}))


def test_run_as_ansible_rulebook_runs_it_from_an_installed_tree_it_imports_that_collection(tmp_path):
    # ansible-rulebook loads a source with runpy.run_path in a Python where ansible_collections is not importable.
    tree = tmp_path / 'collections'
    (tree / 'ansible_collections' / 'multihv').mkdir(parents=True)
    (tree / 'ansible_collections' / 'multihv' / 'cloud').symlink_to(REPO)
    source = tree / 'ansible_collections/multihv/cloud/extensions/eda/plugins/event_source/node_events.py'
    code = ('import runpy, sys\n'
            'module = runpy.run_path(sys.argv[1])\n'
            'config, nodes, registry = module["_import_core"]()\n'
            'print(nodes.__file__)\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'ANSIBLE_COLLECTIONS_PATH')}
    result = subprocess.run([sys.executable, '-c', code, str(source)], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tree / 'ansible_collections/multihv/cloud/plugins/module_utils/_compute/nodes.py')


def test_a_read_neither_creates_nor_upgrades_the_registry(tmp_path):
    registry = tmp_path / 'registry.sqlite'
    cloud_file = tmp_path / 'cloud.yml'
    cloud_file.write_text('registry:\n  url: sqlite:///%s\n' % registry)
    assert node_events.read_nodes(node_events._core_modules(), str(cloud_file)) == []  # pylint: disable=protected-access
    assert not registry.exists(), 'the event source created the registry'
