# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instances as instance_info shows them: registry records, with the power state the hypervisors
report when asked. Private to multihv.cloud: do not import.

Apart from instances.py (boot, delete, power) so that a run that only reads imports the registry and
this file, not the scheduler, images, networks and guest code a boot needs: every file a module
imports is compiled from source on each run (Ansible ships module_utils in a zip without bytecode).
"""

from __future__ import annotations

import concurrent.futures

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors


def _live_states(config):
    """{uuid: InstanceState} from every endpoint in parallel; endpoints that fail give nothing."""
    # Imported here: only a run that found instances asks the hypervisors (the drivers' interface and capabilities
    # alone were 15 ms of a run that reads the registry).
    from ansible_collections.multihv.cloud.plugins.module_utils._compute.nodes import MAX_PARALLEL_ENDPOINTS  # pylint: disable=import-outside-toplevel
    from ansible_collections.multihv.cloud.plugins.module_utils._drivers import kinds  # pylint: disable=import-outside-toplevel

    def states(driver):
        try:
            return driver.list_instances()
        except errors.DriverError:
            return []
        finally:
            driver.close()
    drivers = kinds.drivers_for(config)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL_ENDPOINTS, len(drivers)))) as pool:
        return dict((s.uuid, s) for found in pool.map(states, drivers) for s in found)


def info(config, registry, filters):
    """Registry records matching the filters, as dicts, with the hypervisors' power state (and the
    host they report) when asked."""
    records = registry.list_instances(node=filters.get('node'), server_group=filters.get('server_group'))
    if filters.get('names'):
        records = [r for r in records if r.name in filters['names']]
    found = [record.as_dict() for record in records]
    if filters.get('live', True) and found:
        live = _live_states(config)
        for entry in found:
            state = live.get(entry['uuid'])
            entry['power_state'] = state.power_state if state else 'unknown'
            if state:
                entry['host'] = state.host
    return found


__all__ = ['info']
