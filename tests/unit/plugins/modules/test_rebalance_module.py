"""The rebalance module's shell in-process (its main(), a real registry, a cloud with no hypervisor): options the
argument spec refuses before anything is looked at, and what an empty selection returns."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.modules import rebalance as rebalance_module
from support import modules


def run(capsys, tmp_path, check=False, **options):
    args = dict(options, cloud={'registry': {'url': 'sqlite:///%s' % (tmp_path / 'r.sqlite')}}, _ansible_check_mode=check)
    return modules.run_module(capsys, rebalance_module, args)


@pytest.mark.parametrize('options, message', [
    ({'aggressiveness': 7}, 'value of aggressiveness must be one of: 1, 2, 3, 4, 5, got: 7'),
    ({'nodes': ['kvm1'], 'aggregate': 'gold'}, 'parameters are mutually exclusive: nodes|aggregate'),
    ({'nodes': ['kvm1'], 'availability_zone': 'az1'}, 'parameters are mutually exclusive: nodes|availability_zone'),
    ({'concurrency': 0}, 'concurrency must be at least 1, got 0; nothing was moved'),
    ({'interval': 0.05}, 'interval must be at least 0.1, got 0.05; nothing was moved'),
])
def test_bad_options_fail_the_task_and_nothing_is_written(capsys, tmp_path, options, message):
    result = run(capsys, tmp_path, **options)
    assert result['failed'] is True and result['msg'] == message
    assert not (tmp_path / 'r.sqlite').exists(), 'refused before the registry was even created'


@pytest.mark.parametrize('check', [False, True])
def test_a_cloud_without_nodes_has_nothing_to_balance(capsys, tmp_path, check):
    result = run(capsys, tmp_path, check=check, interval=0.1)
    assert result.get('failed') is not True, result
    assert (result['changed'], result['nodes'], result['moves'], result['skipped'], result['failures']) == (False, [], [], [], [])
    assert (result['spread_before'], result['spread_after'], result['threshold'], result['min_gain']) == (0.0, 0.0, 0.1, 0.02)
    assert (tmp_path / 'r.sqlite').exists() is not check, 'check mode does not even create the registry'
