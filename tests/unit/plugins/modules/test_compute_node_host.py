"""compute_node's host and host_maintenance options (issue 18 §2): what the module refuses before it opens the cloud."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.modules import compute_node
from support.modules import run_module


def test_a_host_task_with_the_node_s_own_settings_is_refused_before_anything_is_read(capsys, tmp_path):
    result = run_module(capsys, compute_node, {'name': 'vc/DC0/C0', 'host': 'esx1', 'host_maintenance': True, 'enabled': False,
                                               'registry_url': 'sqlite:///%s/registry.sqlite' % tmp_path})
    assert result['failed'] is True
    assert result['msg'] == ('host and host_maintenance change one host of node vc/DC0/C0; enabled change the node itself: give them in '
                             'another task; nothing was changed')
    assert not (tmp_path / 'registry.sqlite').exists()


def test_host_and_host_maintenance_go_together(capsys):
    for given in ({'host': 'esx1'}, {'host_maintenance': False}):
        result = run_module(capsys, compute_node, dict(given, name='vc/DC0/C0'))
        assert result['failed'] is True and 'parameters are required together: host, host_maintenance' in result['msg']
