"""The rebalancing plan as pure logic (balance.py): the load metric and the spread, the aggressiveness levels,
the greedy rule (each move lowers the spread by at least the level's gain, max_moves, once per instance), and the
scheduler's own filters deciding where an instance may go as the moves before it change the claims and the
server group members. No registry, no driver."""

from __future__ import annotations

import math

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._compute import balance as _balance
from ansible_collections.multihv.cloud.plugins.module_utils._compute.scheduler import Candidate, Request


def node(name, cpus=8, memory_mb=8192, items=()):
    return _balance.NodeLoad(name, cpus, memory_mb, list(items))


def vm(name, cpu=1.0, memory_mb=1024, movable=True, group=None):
    return _balance.Item('uuid-' + name, name, cpu, memory_mb, movable, group)


def candidates(*names, memory_mb=8192, **settings):
    return dict((name, Candidate(name, 'kvm', capacity={'vcpus': 32, 'memory_mb': memory_mb, 'disk_gb': 100}, **settings)) for name in names)


class Everywhere:
    """A FilterCheck stand-in that lets every instance anywhere (the greedy rule alone)."""

    def fits(self, item, source, target):
        return True

    def commit(self, item, source, target):
        pass


def check_for(cands, policy=None, groups=None, **request):
    """A FilterCheck over cands whose requests are 1 vCPU / 1024 MB, the source excluded, in `policy`'s group."""
    def request_of(item, source):
        return Request(1, 1024, 0, exclude=frozenset([source]), group_policy=policy if item.group else None, **request)
    return _balance.FilterCheck(cands, request_of, groups)


def test_the_load_weighs_cpu_and_memory_shares_alike_and_the_spread_is_their_standard_deviation():
    busy = node('a', cpus=4, memory_mb=4096, items=[vm('x', cpu=2.0, memory_mb=1024)])
    assert busy.load == pytest.approx(0.5 * 2 / 4 + 0.5 * 1024 / 4096)
    assert _balance.spread([0.6, 0.2]) == pytest.approx(0.2)
    assert _balance.spread([0.3]) == 0.0 and _balance.spread([]) == 0.0
    balance = _balance.Balance([busy, node('b', cpus=4, memory_mb=4096)])
    assert balance.spread() == pytest.approx(_balance.spread([busy.load, 0.0]))
    load_s, load_t, after = balance.after(busy.items[0], 'a', 'b')
    assert (load_s, load_t, after) == (pytest.approx(0.0), pytest.approx(busy.load), pytest.approx(balance.spread()))


def test_the_levels_are_documented_numbers_and_level_one_moves_nothing():
    assert [(level, _balance.LEVELS[level].threshold, _balance.LEVELS[level].min_gain) for level in sorted(_balance.LEVELS)] == [
        (1, None, None), (2, 0.20, 0.05), (3, 0.10, 0.02), (4, 0.05, 0.01), (5, 0.02, 0.005)]
    skewed = [node('a', items=[vm('v%d' % i) for i in range(6)]), node('b')]
    moves, balance = _balance.plan(skewed, _balance.LEVELS[1], 10, Everywhere())
    assert moves == [] and balance.spread() > 0.2


def test_a_skewed_pair_is_halved_and_each_move_lowers_the_spread_by_the_level_gain_at_least():
    skewed = [node('a', items=[vm('v%d' % i) for i in range(6)]), node('b')]
    level = _balance.LEVELS[5]
    moves, balance = _balance.plan(skewed, level, 10, Everywhere())
    assert [(m.source, m.target) for m in moves] == [('a', 'b')] * 3
    assert balance.spread() == pytest.approx(0.0, abs=1e-9)
    for move in moves:
        assert move.spread_before - move.spread_after >= level.min_gain
        assert move.load_before['a'] > move.load_after['a'] and move.load_before['b'] < move.load_after['b']
    assert [m.spread_before for m in moves[1:]] == [m.spread_after for m in moves[:-1]]
    assert len(set(m.item.uuid for m in moves)) == 3


def test_a_move_that_would_only_swap_the_loads_is_not_made():
    # 2 and 1 equal VMs: moving one back and forth never lowers the spread.
    pair = [node('a', items=[vm('x'), vm('y')]), node('b', items=[vm('z')])]
    moves, balance = _balance.plan(pair, _balance.LEVELS[5], 10, Everywhere())
    assert moves == [] and balance.spread() > _balance.LEVELS[5].threshold


def test_balanced_nodes_plan_nothing_and_max_moves_bounds_a_plan():
    even = [node('a', items=[vm('x')]), node('b', items=[vm('y')])]
    assert _balance.plan(even, _balance.LEVELS[5], 10, Everywhere())[0] == []
    skewed = [node('a', items=[vm('v%d' % i) for i in range(8)])] + [node('n%d' % i) for i in range(4)]
    assert len(_balance.plan(skewed, _balance.LEVELS[5], 2, Everywhere())[0]) == 2


def test_what_is_not_movable_still_loads_its_node_and_stays():
    stuck = [node('a', items=[vm('foreign', cpu=4.0, memory_mb=4096, movable=False), vm('mine')]), node('b')]
    moves, _balance_after = _balance.plan(stuck, _balance.LEVELS[5], 10, Everywhere())
    assert [m.item.name for m in moves] == ['mine']


def test_the_plan_is_the_same_for_the_same_input():
    def build():
        return [node('a', items=[vm('v%d' % i, cpu=0.5 + i / 10) for i in range(7)]), node('b', items=[vm('w')]), node('c'), node('d')]
    first = [(m.item.name, m.source, m.target) for m in _balance.plan(build(), _balance.LEVELS[4], 10, Everywhere())[0]]
    assert first and first == [(m.item.name, m.source, m.target) for m in _balance.plan(build(), _balance.LEVELS[4], 10, Everywhere())[0]]


def test_the_scheduler_filters_decide_where_an_instance_may_go():
    # b is disabled, c in another aggregate than the request asks for: only d may take instances.
    cands = candidates('a', 'b', 'c', 'd')
    cands['b'].enabled = False
    for name in ('a', 'd'):
        cands[name].aggregates = ('gold',)
    skewed = [node('a', items=[vm('v%d' % i) for i in range(4)]), node('b'), node('c'), node('d')]
    moves, _after = _balance.plan(skewed, _balance.LEVELS[5], 10, check_for(cands, aggregates=('gold',)))
    assert moves and set(m.target for m in moves) == {'d'}


def test_claims_move_with_the_plan_so_a_full_target_takes_no_more():
    # d has room for two 1024 MB claims; the plan moves claims from a onto it and then stops there.
    cands = candidates('a', 'd', memory_mb=2048)
    cands['a'].capacity['memory_mb'] = 8192
    cands['a'].allocated['memory_mb'] = 6 * 1024
    skewed = [node('a', items=[vm('v%d' % i) for i in range(6)]), node('d')]
    moves, _after = _balance.plan(skewed, _balance.LEVELS[5], 10, check_for(cands))
    assert len(moves) == 2
    assert cands['d'].allocated['memory_mb'] == 2048 and cands['a'].allocated['memory_mb'] == 4 * 1024
    assert (cands['a'].instances, cands['d'].instances) == (-2, 2)


def test_anti_affinity_counts_the_members_the_plan_moved_already():
    # Two members of one anti-affinity group on a; b and c empty: they must end on different nodes.
    cands = candidates('a', 'b', 'c')
    skewed = [node('a', items=[vm('g1', group='g'), vm('g2', group='g'), vm('x'), vm('y')]), node('b'), node('c')]
    groups = {'g': {'a': 2}}
    check = check_for(cands, policy='anti-affinity', groups=groups)
    moves, _after = _balance.plan(skewed, _balance.LEVELS[5], 10, check)
    placed = dict((m.item.name, m.target) for m in moves)
    members = [placed.get(name, 'a') for name in ('g1', 'g2')]
    assert len(set(members)) == 2, moves
    assert sum(check.groups['g'].values()) == 2 and all(count <= 1 for count in check.groups['g'].values())


def test_an_instance_the_scheduler_cannot_place_is_left_where_it_is():
    cands = candidates('a', 'b')
    skewed = [node('a', items=[vm('v%d' % i) for i in range(4)]), node('b')]
    check = _balance.FilterCheck(cands, lambda item, source: None)
    assert _balance.plan(skewed, _balance.LEVELS[5], 10, check)[0] == []


def test_unequal_nodes_are_balanced_by_share_not_by_count():
    # b is four times a's size: each VM is 0.125 of a's load and 0.03125 of b's. Six moves leave a at 0.25 and b at
    # 0.1875 (spread 0.03125); a seventh would give 0.125 and 0.21875 (spread 0.047): the plan stops at six.
    pair = [node('a', cpus=4, memory_mb=4096, items=[vm('v%d' % i, cpu=0.5, memory_mb=512) for i in range(8)]),
            node('b', cpus=16, memory_mb=16384)]
    moves, balance = _balance.plan(pair, _balance.LEVELS[5], 20, Everywhere())
    assert len(moves) == 6
    assert math.isclose(balance.loads['a'], 0.25) and math.isclose(balance.loads['b'], 0.1875)
