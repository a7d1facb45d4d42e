# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lower bounds of numeric options, which an Ansible argument spec cannot state (it checks types
and choices only). Private to multihv.cloud: do not import."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors


def at_least(name, value, low, untouched):
    """Refuse option `name` below `low` (or not given at all), saying what was left untouched."""
    if value is None or value < low:
        raise errors.MultihvError('%s must be at least %s, got %s; %s' % (name, low, value, untouched))
    return value
