# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vSphere HA and DRS settings of a cluster node. Private to multihv.cloud: do not import.

vSphere HA restarts the VMs of a failed ESXi host inside its cluster, so a cluster node is
never evacuated by the cloud; what the cloud offers instead is to configure HA (admission
control, restart priority, isolation response, host monitoring) and DRS (automation level,
migration threshold) of the cluster.

The settings are a plain dict (settings_of) read from the cluster's
configurationEx.dasConfig and configurationEx.drsConfig; a task's options are merged onto
it (desired), the keys that differ are listed (changed_keys) and only they are sent, in one
ClusterConfigSpecEx with modify=True (config_spec). These are pure functions, tested
without a vCenter. The I/O reuses the vSphere driver's session (session.py): one
PropertyCollector retrieval of every cluster's name, parent and HA/DRS configuration,
then, only when something differs, ReconfigureComputeResource_Task and one retrieval of
the cluster to read the settings back.
"""

from __future__ import annotations

import collections
import copy
import time

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import cluster_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import (
    by_kind, retrieve_inventory, retrieve_objects, stub,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.session import Session
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import TASK_TIMEOUT, wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import require, vim

RESTART_PRIORITIES = ('disabled', 'low', 'medium', 'high')
ISOLATION_RESPONSES = ('none', 'powerOff', 'shutdown')
AUTOMATION_LEVELS = ('manual', 'partiallyAutomated', 'fullyAutomated')
POLICIES = ('failover_level', 'percentage')

# The options of the ha and drs dicts, in the order they are reported.
HA_KEYS = ('enabled', 'admission_control', 'restart_priority', 'isolation_response', 'host_monitoring')
ADMISSION_CONTROL_KEYS = ('enabled', 'policy', 'failover_level', 'cpu_percentage', 'memory_percentage')
DRS_KEYS = ('enabled', 'automation_level', 'migration_threshold')

# The keys that make up the admission control policy object: one of them changed, the whole
# policy is sent (vCenter replaces the policy, a data object of one of several types).
POLICY_KEYS = ('policy', 'failover_level', 'cpu_percentage', 'memory_percentage')
# The keys each policy carries; the other policy's keys are None.
POLICY_VALUES = {'failover_level': ('failover_level',), 'percentage': ('cpu_percentage', 'memory_percentage')}

# Admission control policy types (their WSDL names) and the names the options give them;
# a policy of another type (dedicated failover hosts...) is reported by its own name.
POLICY_TYPES = {
    'ClusterFailoverLevelAdmissionControlPolicy': 'failover_level',
    'ClusterFailoverResourcesAdmissionControlPolicy': 'percentage',
    'ClusterFailoverHostAdmissionControlPolicy': 'dedicated_host',
}

HOST_MONITORING = {'enabled': True, 'disabled': False}

# What is read of every cluster: its name and what names its datacenter, its hosts (references:
# their number bounds the failover level), and the two configurations (not configurationEx
# whole: its VM overrides and rules may be large).
DAS, DRS = 'configurationEx.dasConfig', 'configurationEx.drsConfig'
CLUSTER_PROPERTIES = collections.OrderedDict([
    ('Datacenter', ('name',)),
    ('Folder', ('parent',)),
    ('ClusterComputeResource', ('name', 'parent', 'host', DAS, DRS)),
])


class InvalidSettings(errors.MultihvError):
    """The options ask for settings that cannot be; nothing was sent."""


# ---------------------------------------------------------------- pure logic

def migration_threshold(vmotion_rate):
    """The migration threshold of the vSphere Client (1 conservative .. 5 aggressive) of
    drsConfig.vmotionRate, which runs the other way: vCenter applies the recommendations
    rated vmotionRate or better, 1 being the most aggressive. threshold = 6 - vmotionRate;
    None when unset or out of range."""
    rate = int(vmotion_rate or 0)
    return 6 - rate if 1 <= rate <= 5 else None


def vmotion_rate(threshold):
    """drsConfig.vmotionRate of a migration threshold (see migration_threshold)."""
    return 6 - int(threshold)


def _flag(value):
    """An optional boolean as read: None when vCenter leaves it unset."""
    return None if value is None else bool(value)


def _number(value):
    return None if value is None else int(value)


def _text(value):
    """A string (pyVmomi enum values are str subclasses) as read; None when unset."""
    return str(value) if value else None


def policy_name(policy):
    """The option name of an admission control policy object (None: no policy)."""
    if policy is None:
        return None
    kind = getattr(policy, '_wsdlName', None) or type(policy).__name__
    return POLICY_TYPES.get(kind, kind)


def settings_of(das, drs):
    """The HA and DRS settings of a cluster as options name them, from its dasConfig and
    drsConfig (either may be None). enabled is a boolean (unset: off, as vSphere treats it);
    any other setting vCenter leaves unset is None."""
    vm_settings = getattr(das, 'defaultVmSettings', None)
    policy = getattr(das, 'admissionControlPolicy', None)
    name = policy_name(policy)
    return {
        'ha': {
            'enabled': bool(getattr(das, 'enabled', None)),
            'admission_control': {
                'enabled': _flag(getattr(das, 'admissionControlEnabled', None)),
                'policy': name,
                'failover_level': _number(getattr(policy, 'failoverLevel', None)) if name == 'failover_level' else None,
                'cpu_percentage': _number(getattr(policy, 'cpuFailoverResourcesPercent', None)) if name == 'percentage' else None,
                'memory_percentage': _number(getattr(policy, 'memoryFailoverResourcesPercent', None)) if name == 'percentage' else None,
            },
            'restart_priority': _text(getattr(vm_settings, 'restartPriority', None)),
            'isolation_response': _text(getattr(vm_settings, 'isolationResponse', None)),
            'host_monitoring': HOST_MONITORING.get(getattr(das, 'hostMonitoring', None)),
        },
        'drs': {
            'enabled': bool(getattr(drs, 'enabled', None)),
            'automation_level': _text(getattr(drs, 'defaultVmBehavior', None)),
            'migration_threshold': migration_threshold(getattr(drs, 'vmotionRate', None)),
        },
    }


def requested(ha=None, drs=None):
    """The settings a task gives: {'ha': {...}, 'drs': {...}} without the keys it leaves
    out (None), nested dicts too; a part with nothing left is left out."""
    def given(value):
        if isinstance(value, dict):
            kept = dict((k, given(v)) for k, v in value.items() if v is not None)
            return dict((k, v) for k, v in kept.items() if v != {})
        return value
    return given({'ha': ha, 'drs': drs})


def _check_choice(where, key, value, choices):
    if value is not None and value not in choices:
        raise InvalidSettings('%s: %s must be one of %s, not %r; nothing was changed' % (where, key, ', '.join(map(str, choices)), value))


def _check_range(where, key, value, low, high=None):
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        bounds = 'from %d to %d' % (low, high) if high is not None else 'of at least %d' % low
        raise InvalidSettings('%s: %s must be an integer %s, not %r; nothing was changed' % (where, key, bounds, value))


def _check_failover_hosts(where, level, hosts):
    if level is not None and hosts is not None and level > hosts - 1:
        raise InvalidSettings('%s: ha.admission_control.failover_level must be at most the cluster\'s hosts minus one, %d '
                              '(it has %d host%s), not %d; nothing was changed' % (where, hosts - 1, hosts, '' if hosts == 1 else 's', level))


def _check_keys(where, prefix, given, known):
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidSettings('%s: unknown option %s (known: %s); nothing was changed' % (
            where, ', '.join(prefix + k for k in unknown), ', '.join(known)))


def _admission_control(where, current, wanted):
    """The admission control settings after `wanted` (given keys only) is applied to `current`."""
    after = dict(current, **wanted)
    now, policy = current['policy'], after['policy']
    for name, keys in POLICY_VALUES.items():
        stray = [k for k in keys if k in wanted and policy != name]
        if stray:
            raise InvalidSettings('%s: ha.admission_control.%s applies to policy %s, and the policy would be %s; give '
                                  'ha.admission_control.policy %s with it; nothing was changed' % (
                                      where, ' and '.join(stray), name, policy or 'unset', name))
    if policy != now:
        missing = [k for k in POLICY_VALUES.get(policy, ()) if after[k] is None]
        if missing:
            raise InvalidSettings('%s: admission control policy %s (now %s) needs ha.admission_control.%s; nothing was changed' % (
                where, policy, now or 'unset', ' and '.join(missing)))
        for name, keys in POLICY_VALUES.items():
            if name != policy:
                after.update((k, None) for k in keys)
    return after


def desired(current, request, where='the cluster', hosts=None):
    """The settings after the task: `current` (settings_of) with the keys `request` gives
    (requested) replaced, checked. Switching the admission control policy needs the new
    policy's values and drops the old one's. InvalidSettings says what is wrong; `where`
    names the node in it. hosts: the cluster's number of hosts, when known; a failover level
    given must leave one of them (vSphere's bound)."""
    _check_keys(where, '', request, ('ha', 'drs'))
    ha, drs = request.get('ha') or {}, request.get('drs') or {}
    _check_keys(where, 'ha.', ha, HA_KEYS)
    _check_keys(where, 'drs.', drs, DRS_KEYS)
    admission = ha.get('admission_control') or {}
    _check_keys(where, 'ha.admission_control.', admission, ADMISSION_CONTROL_KEYS)
    _check_choice(where, 'ha.admission_control.policy', admission.get('policy'), POLICIES)
    _check_range(where, 'ha.admission_control.failover_level', admission.get('failover_level'), 1)
    _check_failover_hosts(where, admission.get('failover_level'), hosts)
    _check_range(where, 'ha.admission_control.cpu_percentage', admission.get('cpu_percentage'), 0, 100)
    _check_range(where, 'ha.admission_control.memory_percentage', admission.get('memory_percentage'), 0, 100)
    _check_choice(where, 'ha.restart_priority', ha.get('restart_priority'), RESTART_PRIORITIES)
    _check_choice(where, 'ha.isolation_response', ha.get('isolation_response'), ISOLATION_RESPONSES)
    _check_choice(where, 'drs.automation_level', drs.get('automation_level'), AUTOMATION_LEVELS)
    _check_range(where, 'drs.migration_threshold', drs.get('migration_threshold'), 1, 5)

    after = copy.deepcopy(current)
    after['ha'].update((k, v) for k, v in ha.items() if k != 'admission_control')
    after['ha']['admission_control'] = _admission_control(where, current['ha']['admission_control'], admission)
    after['drs'].update(drs)
    return after


def changed_keys(before, after, prefix=''):
    """Dotted names of the settings that differ ('ha.admission_control.policy'), in order."""
    keys = []
    for key, value in after.items():
        old = before.get(key) if isinstance(before, dict) else None
        if isinstance(value, dict):
            keys.extend(changed_keys(old or {}, value, prefix + key + '.'))
        elif old != value:
            keys.append(prefix + key)
    return keys


def policy_spec(admission):
    """The admission control policy object of the admission control settings."""
    if admission['policy'] == 'failover_level':
        return vim.cluster.FailoverLevelAdmissionControlPolicy(failoverLevel=admission['failover_level'])
    if admission['policy'] == 'percentage':
        return vim.cluster.FailoverResourcesAdmissionControlPolicy(
            cpuFailoverResourcesPercent=admission['cpu_percentage'], memoryFailoverResourcesPercent=admission['memory_percentage'],
            autoComputePercentages=False)
    raise InvalidSettings('admission control policy %s cannot be set; nothing was changed' % admission['policy'])


def config_spec(after, changed):
    """The ClusterConfigSpecEx, for modify=True, that sets the `changed` keys (changed_keys)
    to their value in `after` and leaves every other setting unset, so vCenter keeps it:
    dasConfig only when an HA setting changed, drsConfig only for DRS. The admission control
    policy is sent whole, and defaultVmSettings with both its restart priority and its
    isolation response (where known), whichever of them changed."""
    spec = vim.cluster.ConfigSpecEx()
    ha, drs = after['ha'], after['drs']
    admission = ha['admission_control']
    if any(key.startswith('ha.') for key in changed):
        das = spec.dasConfig = vim.cluster.DasConfigInfo()
        if 'ha.enabled' in changed:
            das.enabled = ha['enabled']
        if 'ha.host_monitoring' in changed:
            das.hostMonitoring = 'enabled' if ha['host_monitoring'] else 'disabled'
        if 'ha.admission_control.enabled' in changed:
            das.admissionControlEnabled = admission['enabled']
        if any('ha.admission_control.' + key in changed for key in POLICY_KEYS):
            das.admissionControlPolicy = policy_spec(admission)
        if 'ha.restart_priority' in changed or 'ha.isolation_response' in changed:
            das.defaultVmSettings = vim.cluster.DasVmSettings(restartPriority=ha['restart_priority'],
                                                              isolationResponse=ha['isolation_response'])
    if any(key.startswith('drs.') for key in changed):
        config = spec.drsConfig = vim.cluster.DrsConfigInfo()
        if 'drs.enabled' in changed:
            config.enabled = drs['enabled']
        if 'drs.automation_level' in changed:
            config.defaultVmBehavior = drs['automation_level']
        if 'drs.migration_threshold' in changed:
            config.vmotionRate = vmotion_rate(drs['migration_threshold'])
    return spec


def _value(settings, key):
    for part in key.split('.'):
        settings = settings.get(part) if isinstance(settings, dict) else None
    return settings


def not_applied(wanted, read_back, changed):
    """The changed keys whose value read back is not the one sent, as 'key = read (sent x)'."""
    return ['%s = %s (sent %s)' % (key, _value(read_back, key), _value(wanted, key))
            for key in changed if _value(read_back, key) != _value(wanted, key)]


def find_cluster(vcenter, records, node):
    """(cluster moid, its props) of node among the Records of one CLUSTER_PROPERTIES retrieval,
    clusters named as the cloud's nodes (the vCenter's clusters filter applies); errors.NotFound
    naming the nodes the vCenter has when none is."""
    objects = by_kind(records)
    names = cluster_nodes(vcenter, objects)
    found = sorted(moid for moid, name in names.items() if name == node)
    if not found:
        raise errors.NotFound('vCenter %s has no cluster node %s; its cluster nodes: %s; nothing was changed' % (
            vcenter.name, node, ', '.join(sorted(names.values())) or 'none'))
    if len(found) > 1:
        raise errors.DriverError('node %s names %d clusters of vCenter %s (%s, in different host folders); rename all but one' % (
            node, len(found), vcenter.name, ', '.join(found)))
    return found[0], objects['ClusterComputeResource'][found[0]]


def vcenter_of(cloud, node):
    """The VCenter of the cloud file whose node `node` is (vcenter/datacenter/cluster);
    errors.NotFound otherwise, naming what the cloud file has."""
    for vcenter in cloud.vcenters:
        if node.startswith(vcenter.name + '/'):
            return vcenter
    if node in cloud.node_names():
        raise errors.NotFound('node %s is a KVM host; HA and DRS are settings of a vSphere cluster node '
                              '(vcenter/datacenter/cluster); nothing was changed' % node)
    raise errors.NotFound('no vSphere cluster node %s: a cluster node is named vcenter/datacenter/cluster, and the cloud '
                          'file has vCenter%s %s; nothing was changed' % (
                              node, '' if len(cloud.vcenters) == 1 else 's', ', '.join(v.name for v in cloud.vcenters) or 'none'))


# ---------------------------------------------------------------- vCenter I/O

class ClusterSettings:
    """The HA and DRS settings of the clusters of one vCenter, on a session of its own."""

    def __init__(self, vcenter):
        self.vcenter = vcenter
        self.session = Session(vcenter)
        # The deadline of the reconfiguration task.
        self.work_timeout = TASK_TIMEOUT

    def close(self):
        self.session.close()

    def configure(self, node, request, check_mode=False):
        """Apply `request` (requested) to cluster node `node`: (changed, before, after), before
        and after being settings_of dicts; after is read back from vCenter once it changed, or
        what it would be in check mode, where nothing is sent."""
        require(self.vcenter)
        where = 'node %s' % node
        progress = {}  # survives the session's second attempt (a session that expired)
        try:
            return self.session.run(lambda content: self._configure(content, node, request, check_mode, where, progress),
                                    'the HA/DRS reconfiguration of %s' % where)
        except errors.DriverError as exc:
            if 'sent' not in progress:
                raise type(exc)('%s; the HA/DRS settings of %s were not changed' % (exc, where)) from exc
            # vCenter may have changed settings: the module reports the failure as changed.
            if 'done' in progress:
                exc.changes_sent = True
                raise
            failure = type(exc)('%s; the reconfiguration of %s was sent, whether vCenter applied it is not known: '
                                'run the task again to see' % (exc, where))
            failure.changes_sent = True
            raise failure from exc

    def _configure(self, content, node, request, check_mode, where, progress):
        records = retrieve_inventory(content, CLUSTER_PROPERTIES)
        moid, props = find_cluster(self.vcenter, records, node)
        current = settings_of(props.get(DAS), props.get(DRS))
        before = progress.setdefault('before', current)  # a second attempt compares with the first reading
        after = desired(current, request, where, hosts=len(props.get('host') or ()))
        if not changed_keys(before, after):
            return False, before, after
        changed = changed_keys(current, after)
        if check_mode or not changed:
            return True, before, after
        cluster = vim.ClusterComputeResource(moid, stub(content))
        spec = config_spec(after, changed)
        progress['sent'] = True
        task = cluster.ReconfigureComputeResource_Task(spec=spec, modify=True)
        wait_task(content.propertyCollector, task, time.monotonic() + self.work_timeout,
                  'ReconfigureComputeResource_Task of cluster %s' % node)
        progress['done'] = True
        answer = retrieve_objects(content.propertyCollector, [cluster], 'ClusterComputeResource', (DAS, DRS))
        if not answer:
            raise errors.NotFound('cluster %s of vCenter %s was deleted while it was reconfigured' % (node, self.vcenter.name))
        read_back = settings_of(answer[0].props.get(DAS), answer[0].props.get(DRS))
        wrong = not_applied(after, read_back, changed)
        if wrong:
            raise errors.DriverError('vCenter %s completed the reconfiguration of cluster %s but reads back %s' % (
                self.vcenter.name, node, ', '.join(wrong)))
        return True, before, read_back


def configure(cloud, node, ha=None, drs=None, check_mode=False):
    """Set the given HA and DRS settings (the module's ha and drs options, None for a key
    left out) of vSphere cluster node `node`: (changed, before, after)."""
    request = requested(ha, drs)
    settings = ClusterSettings(vcenter_of(cloud, node))
    try:
        return settings.configure(node, request, check_mode)
    finally:
        settings.close()
