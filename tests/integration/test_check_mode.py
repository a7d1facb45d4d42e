"""Check mode and the _info modules write nothing, through one real ansible-playbook run and no hypervisor (the
cloud is given inline with only its registry): every module of the collection runs against a registry that does not
exist yet, in check mode or (the _info modules) for real, and the registry is still not there afterwards."""

from __future__ import annotations

import json

from support.lab import run

# Every module that changes things, in check mode; what each would do needs no hypervisor to be said (or it fails,
# which is fine here: what counts is that nothing was written).
CHECKED = {
    'registry': {},
    'flavor': {'name': 'm1', 'vcpus': 1, 'ram_mb': 512, 'disk_gb': 1},
    'server_group': {'name': 'apart', 'policy': 'anti-affinity'},
    'image': {'name': 'tick', 'hypervisor_type': 'kvm', 'source': '{{ image_file }}'},
    'network': {'name': 'tenant', 'cidr': '192.0.2.0/24'},
    'compute_node': {'name': 'kvm1', 'enabled': False},
    'instance': {'name': 'vm1', 'flavor': 'm1', 'image': 'tick'},
    'migrate': {'instance': 'vm1', 'target_node': 'kvm2'},
    'evacuate': {'node': 'kvm1'},
    'instance_ha': {},
    'reconcile': {},
    'rebalance': {'interval': 0.1},
}
READERS = {'compute_node_info': {}, 'instance_info': {}}


def task(module, args, check):
    return {'name': module, 'multihv.cloud.%s' % module: args, 'check_mode': check, 'ignore_errors': True,
            'register': 'result_%s' % module}


def test_check_mode_and_readers_leave_a_registry_that_does_not_exist_uncreated(tmp_path):
    registry = tmp_path / 'state' / 'registry.sqlite'
    (tmp_path / 'state').mkdir()
    image = tmp_path / 'tick.qcow2'
    image.write_bytes(b'QFI\xfb' + b'\0' * 60)
    results = tmp_path / 'results.json'
    names = list(CHECKED) + list(READERS)
    play = {
        'hosts': 'localhost', 'gather_facts': False,
        'vars': {'image_file': str(image)},
        'module_defaults': {'group/multihv.cloud.all': {'cloud': {'registry': {'url': 'sqlite:///%s' % registry}}}},
        'tasks': [task(m, a, True) for m, a in CHECKED.items()] + [task(m, a, False) for m, a in READERS.items()] + [
            {'ansible.builtin.copy': {'dest': str(results), 'content': '{{ {%s} | to_json }}' % ', '.join(
                "'%s': result_%s" % (m, m) for m in names)}}],
    }
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([play]))
    run('ansible-playbook', str(playbook))
    found = json.loads(results.read_text())
    assert not registry.exists(), 'a module in check mode or an _info module created the registry'
    assert sorted(p.name for p in registry.parent.iterdir()) == []
    # What check mode says of a registry that does not exist: it would be created, and so would what was asked.
    assert (found['registry']['changed'], found['registry']['previous_version']) == (True, 0)
    for module in ('flavor', 'server_group', 'image', 'network'):
        assert found[module].get('failed') is not True and found[module]['changed'] is True, (module, found[module])
    # The readers read it as empty.
    assert (found['compute_node_info']['nodes'], found['instance_info']['instances']) == ([], [])
    # Modules whose request needs what is not there fail saying so, not about the registry.
    for module in CHECKED:
        assert 'registry' not in found[module].get('msg', ''), (module, found[module]['msg'])
