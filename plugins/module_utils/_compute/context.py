# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One run's context: the cloud file, the registry and the drivers. Private to multihv.cloud: do not import.

Every core operation takes a Context. It reads the node views once per run, finds
the driver that serves a node by asking the drivers (never by a hypervisor's name),
and gives worker threads contexts of their own (apart()).
"""

from __future__ import annotations

import contextlib

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import networks as _networks
from ansible_collections.multihv.cloud.plugins.module_utils._compute import nodes as _nodes
from ansible_collections.multihv.cloud.plugins.module_utils._compute import scheduler as _scheduler
from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds


class Context:
    """One run's view of the cloud: its cloud file (a _config.CloudConfig), registry and drivers,
    with the node views read once and drivers looked up by node.

    driver_factory(config) -> [ComputeDriver] makes the drivers (kinds.drivers_for unless a
    test gives its own); worker contexts get theirs from it too.
    """

    def __init__(self, config, registry, drivers=None, timeout=None, driver_factory=None):
        self.config = config
        self.registry = registry
        self.timeout = timeout
        self._driver_factory = driver_factory or kinds.drivers_for
        self.drivers = drivers if drivers is not None else self._driver_factory(config)
        if timeout:
            for driver in self.drivers:
                driver.work_timeout = float(timeout)
        self._views = None

    def views(self):
        """The NodeView of every node, read once."""
        if self._views is None:
            # Work decides on these views (a node down is not scheduled on, may be evacuated): a probe that overstayed
            # its timeout is asked again before a node counts as down.
            self._views = _nodes.list_nodes(self.config, self.registry, list(self.drivers), retries=_nodes.PROBE_RETRIES)
        return self._views

    def view(self, node):
        """One node's view, or None when the cloud has no such node."""
        return next((v for v in self.views() if v.name == node), None)

    def scheduler(self):
        """A Scheduler over the node views, the registry's allocations as they are now and the networks on each node."""
        views = self.views()
        networks = _networks.by_node(self.registry.list_networks(), views, self.drivers)
        return _scheduler.Scheduler(_scheduler.candidates(views, self.registry.allocations_by_node(),
                                                          self.kind_capabilities, networks=networks))

    def serving(self, node):
        """The driver whose endpoint serves node (or is named node), or None."""
        return _nodes.serving(self.drivers, node) or next((d for d in self.drivers if d.endpoint_name() == node), None)

    def driver_for(self, node):
        driver = self.serving(node)
        if driver is None:
            raise errors.NotFound('no endpoint in the cloud file serves node %s' % node)
        return driver

    def hypervisor_type(self, node):
        """The node's hypervisor type: from the endpoint whose names it follows, else from the live
        views; None for a node the cloud does not have."""
        kind = _nodes.hypervisor_type_of(self.drivers, node)
        if kind is not None:
            return kind
        view = self.view(node)
        return view.hypervisor_type if view else None

    def capabilities(self, node):
        """What node's hypervisor can do; None for a node the cloud does not have."""
        kind = self.hypervisor_type(node)
        return self.kind_capabilities(kind) if kind else None

    def kind_capabilities(self, kind):
        """What a hypervisor type can do, as this run's drivers of that type declare it (the
        drivers package's table when the run has none of them)."""
        driver = next((d for d in self.drivers if d.hypervisor_type == kind), None)
        return driver.capabilities if driver is not None else kinds.capabilities(kind)

    def close(self):
        for driver in self.drivers:
            driver.close()

    @contextlib.contextmanager
    def apart(self, views=True):
        """A Context for a worker thread, with a registry connection and drivers of its own: neither
        sqlite3 nor a pyVmomi session may be shared between threads. The node views are (read first if
        need be); views=False: shared only when already read, for work that needs none (a delete), so
        that starting workers does not probe every endpoint."""
        views = self.views() if views else self._views
        # another(): the same registry as it is, never upgraded (check mode and readers write nothing; a run
        # that writes upgraded it when it opened it).
        worker = Context(self.config, self.registry.another(), timeout=self.timeout,
                         driver_factory=self._driver_factory)
        worker._views = views  # pylint: disable=protected-access
        try:
            yield worker
        finally:
            worker.close()
            worker.registry.close()


__all__ = ['Context']
