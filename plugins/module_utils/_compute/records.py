# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Records the core passes between its steps. Private to multihv.cloud: do not import.

The registry's rows (instances, flavors, images, migrations) stay plain dicts, as the
modules return them; these are the core's own decisions, named so that no step reads
another's by position.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Placement:
    """Where one instance to boot goes, as the scheduler chose it.

    params: the instance's options (name, flavor, image, storage, networks, ...);
    flavor and image: their registry rows; node, host: the scheduler's choice (host is
    the ESXi host inside a cluster node, else None); request: the scheduler Request it
    was chosen for, kept so that a lost claim can be scheduled again.
    """

    params: dict
    flavor: dict
    image: dict
    node: str
    host: str | None
    request: object

    @property
    def name(self):
        return self.params['name']

    @property
    def image_on_node(self):
        """(node, image name): what must be ready before the instance boots there."""
        return self.node, self.image['name']


@dataclasses.dataclass
class Move:
    """A checked migration request: the instance, where it goes, and how."""

    record: dict
    mode: str
    source_node: str
    target_node: str
    target_host: str | None


@dataclasses.dataclass
class Evacuation:
    """One instance of a failed node placed for its rebuild: its record, the node and host
    claimed for it, and its migration record (type evacuation)."""

    record: dict
    dest: str
    host: str | None
    migration: dict


__all__ = ['Evacuation', 'Move', 'Placement']
