"""Reconciler passes over a fake cloud (support.fake_driver) for the unit tests."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile


def run(cloud, **options):
    """A pass that takes work left unwritten for 0 s as interrupted (the tests' records are fresh)."""
    options.setdefault('settle_seconds', 0)
    return reconcile.run(cloud.context(), **options)


def kinds(result):
    """(kind, instance name, node) of each action, sorted."""
    return sorted((a['kind'], a['name'], a['node']) for a in result['actions'])


def second_pass_does_nothing(cloud):
    again = run(cloud, delete_orphans=True)
    assert (again['changed'], again['actions'], again['failures']) == (False, [], [])
