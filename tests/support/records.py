"""Registry records made by hand, for tests of the core's pure logic and of in-memory stand-ins for
the registry: what the registry would return, with only the fields a test cares about given."""

from __future__ import annotations

import dataclasses

from ansible_collections.multihv.cloud.plugins.module_utils._registry.rows import Instance


def instance(**fields):
    """An Instance with the fields given; the others None, except ha (False) and restart_priority (0),
    which the registry never returns as None."""
    values = dict((field.name, None) for field in dataclasses.fields(Instance))
    values.update(ha=False, restart_priority=0)
    values.update(fields)
    return Instance(**values)


__all__ = ['instance']
