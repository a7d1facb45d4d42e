# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The registry's catalog: flavors, images and server groups. Private to multihv.cloud: do not import.

A flavor or a server group that instances use is guarded by the catalog rules
(rules.py), checked with its row locked inside the transaction that would write.
An image is not: Nova keeps instances whose image was deleted.
"""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import GROUP_POLICIES
from ansible_collections.multihv.cloud.plugins.module_utils._registry import rules
from ansible_collections.multihv.cloud.plugins.module_utils._registry import store
from ansible_collections.multihv.cloud.plugins.module_utils._registry import tables


class CatalogAccess(store.Store):
    """Flavors, images and server groups: get, list, set (insert or update), delete."""

    def _instance_names(self, column, value):
        """Names of the instances whose column (flavor, server_group) is value, sorted."""
        return [row['name'] for row in self._rows('SELECT name FROM instances WHERE %s = ? ORDER BY name' % column, (value,))]

    # -- flavors ----------------------------------------------------------------------------

    def get_flavor(self, name, lock=False):
        """A flavor as a dict (name, vcpus, ram_mb, disk_gb, extra_specs, timestamps), or None; lock: see get_node."""
        return self._read(tables.FLAVORS, name, lock)

    def list_flavors(self):
        """Every flavor, by name."""
        return self._read_all(tables.FLAVORS)

    def set_flavor(self, name, **fields):
        """Insert flavor name or update only the fields given (FLAVOR_FIELDS); (before, after).

        A new flavor needs vcpus, ram_mb and disk_gb. Once instances use a flavor
        its vcpus, ram_mb and disk_gb are fixed (Nova's flavors are immutable: a
        resize moves an instance to another flavor); extra_specs may change.
        RegistryError naming the instances otherwise, with nothing written.
        """
        stored = tables.encode_fields(tables.FLAVORS, fields)
        with self.transaction():
            with self._failing('set flavor %s' % name):
                return self._upsert(tables.FLAVORS, name, stored, guard=self._keep_used_flavor)

    def _keep_used_flavor(self, name, before, changes):
        rules.keep_used_flavor(name, self._instance_names('flavor', name), changes, error=errors.RegistryError)

    def delete_flavor(self, name):
        """Delete flavor name; the flavor as it was, or None when there was none.

        RegistryError naming the instances that use it, with nothing deleted.
        """
        with self.transaction():
            with self._failing('delete flavor %s' % name):
                return self._delete(tables.FLAVORS, name, guard=self._keep_flavor_in_use)

    def _keep_flavor_in_use(self, name, before):
        rules.keep_flavor_in_use(name, self._instance_names('flavor', name), error=errors.RegistryError)

    # -- images -----------------------------------------------------------------------------

    def get_image(self, name, lock=False):
        """An image as a dict, or None; lock: see get_node.

        hypervisor_type: kvm (a disk file) or vsphere (a template VM); properties:
        {min_ram, min_disk, format, source, ...}; locations: {node: where the image
        is on that node (a volume path, a template's name)}.
        """
        return self._read(tables.IMAGES, name, lock)

    def list_images(self):
        """Every image, by name."""
        return self._read_all(tables.IMAGES)

    def set_image(self, name, **fields):
        """Insert image name or update only the fields given (IMAGE_FIELDS); (before, after).

        A new image needs hypervisor_type. properties and locations are replaced
        whole, not merged.
        """
        stored = tables.encode_fields(tables.IMAGES, fields)
        with self.transaction():
            with self._failing('set image %s' % name):
                return self._upsert(tables.IMAGES, name, stored)

    def delete_image(self, name):
        """Delete image name; the image as it was, or None. Instances booted from it keep
        their record, as in Nova; rebuilding them (evacuation without shared storage) needs it back."""
        with self.transaction():
            with self._failing('delete image %s' % name):
                return self._delete(tables.IMAGES, name)

    # -- server groups ----------------------------------------------------------------------

    def get_server_group(self, name, lock=False):
        """A server group as a dict (name, policy, rules, timestamps), or None; lock: see get_node."""
        return self._read(tables.SERVER_GROUPS, name, lock)

    def list_server_groups(self):
        """Every server group, by name."""
        return self._read_all(tables.SERVER_GROUPS)

    def set_server_group(self, name, policy, **fields):
        """Insert server group name or update it; (before, after).

        policy: one of GROUP_POLICIES (ValueError otherwise); fields: rules
        (a dict, e.g. Nova's max_server_per_host, or None). The policy of a group
        with members cannot change (they were placed under the old one):
        RegistryError naming them, with nothing written.
        """
        if policy not in GROUP_POLICIES:
            raise ValueError('unknown server group policy %r; known: %s' % (policy, ', '.join(GROUP_POLICIES)))
        unknown = sorted(set(fields) - {'rules'})
        if unknown:
            raise TypeError('unknown server group field(s) %s; known: policy, rules' % ', '.join(unknown))
        stored = tables.encode_fields(tables.SERVER_GROUPS, dict(fields, policy=policy))
        with self.transaction():
            with self._failing('set server group %s' % name):
                return self._upsert(tables.SERVER_GROUPS, name, stored, guard=self._keep_policy_of_members)

    def _keep_policy_of_members(self, name, before, changes):
        rules.keep_policy_of_members(name, self._instance_names('server_group', name), before['policy'],
                                     changes.get('policy', before['policy']), error=errors.RegistryError)

    def delete_server_group(self, name):
        """Delete server group name; the group as it was, or None.

        RegistryError naming its members while it has any, with nothing deleted.
        """
        with self.transaction():
            with self._failing('delete server group %s' % name):
                return self._delete(tables.SERVER_GROUPS, name, guard=self._keep_group_with_members)

    def _keep_group_with_members(self, name, before):
        rules.keep_group_with_members(name, self._instance_names('server_group', name), error=errors.RegistryError)
