# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HA and DRS configuration of one vSphere cluster, read and put back with pyVmomi, apart
from the collection (the scenario checks the collection with it):

  cluster_config.py show    CLOUD_FILE DATACENTER/CLUSTER            JSON of configurationEx's dasConfig and drsConfig
  cluster_config.py save    CLOUD_FILE DATACENTER/CLUSTER SAVED_FILE keep them in SAVED_FILE, unless it exists
  cluster_config.py restore CLOUD_FILE DATACENTER/CLUSTER SAVED_FILE put them back as SAVED_FILE has them, then remove it

The first vCenter of the cloud file is used; its password comes from the cloud file or
$MULTIHV_VCENTER_PASSWORD. save and restore print what they did: saved, kept, restored,
unchanged or nothing.
"""

from __future__ import annotations

import json
import os
import sys

import yaml
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import SoapAdapter, vim


def connect(cloud_file):
    with open(cloud_file, encoding='utf-8') as stream:
        vcenter = yaml.safe_load(stream)['vcenters'][0]
    return SmartConnect(host=vcenter['hostname'], port=int(vcenter.get('port', 443)), user=vcenter['username'],
                        pwd=vcenter.get('password') or os.environ['MULTIHV_VCENTER_PASSWORD'],
                        disableSslCertValidation=not vcenter.get('validate_certs', True))


def find_cluster(si, path):
    datacenter, name = path.split('/', 1)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.ClusterComputeResource], True)
    try:
        for cluster in view.view:
            parent = cluster.parent
            while parent is not None and not isinstance(parent, vim.Datacenter):
                parent = parent.parent
            if cluster.name == name and parent is not None and parent.name == datacenter:
                return cluster
    finally:
        view.Destroy()
    raise SystemExit('no cluster %s' % path)


def spec_of(cluster):
    """The cluster's dasConfig and drsConfig, as a ClusterConfigSpecEx that puts them back."""
    config = cluster.configurationEx
    return vim.cluster.ConfigSpecEx(dasConfig=config.dasConfig, drsConfig=config.drsConfig)


def serialized(spec):
    """A data object as text: to keep it in a file, and to compare two (== compares identities)."""
    text = SoapAdapter.Serialize(spec)
    return text.decode('utf-8') if isinstance(text, bytes) else text


def show(cluster):
    config = cluster.configurationEx
    das, drs = config.dasConfig, config.drsConfig
    policy = das.admissionControlPolicy
    settings = das.defaultVmSettings
    return {
        'das': {
            'enabled': das.enabled,
            'hostMonitoring': das.hostMonitoring,
            'admissionControlEnabled': das.admissionControlEnabled,
            'admissionControlPolicy': type(policy).__name__ if policy is not None else None,
            'failoverLevel': getattr(policy, 'failoverLevel', None),
            'restartPriority': getattr(settings, 'restartPriority', None),
            'isolationResponse': getattr(settings, 'isolationResponse', None),
        },
        'drs': {'enabled': drs.enabled, 'defaultVmBehavior': drs.defaultVmBehavior, 'vmotionRate': drs.vmotionRate},
    }


def save(cluster, saved_file):
    if os.path.exists(saved_file):
        return 'kept'  # what a run that did not finish found first
    with open(saved_file, 'w', encoding='utf-8') as stream:
        stream.write(serialized(spec_of(cluster)))
    return 'saved'


def restore(cluster, saved_file):
    if not os.path.exists(saved_file):
        return 'nothing'
    with open(saved_file, encoding='utf-8') as stream:
        text = stream.read()
    outcome = 'unchanged'
    if serialized(spec_of(cluster)) != text:
        # modify=False: the configuration given replaces the cluster's whole, as it was found.
        WaitForTask(cluster.ReconfigureComputeResource_Task(spec=SoapAdapter.Deserialize(text), modify=False))
        if serialized(spec_of(cluster)) != text:
            raise SystemExit('the HA/DRS configuration of the cluster reads back otherwise than %s has it' % saved_file)
        outcome = 'restored'
    os.remove(saved_file)
    return outcome


def main(argv):
    if len(argv) < 3 or argv[0] not in ('show', 'save', 'restore') or (argv[0] != 'show') != (len(argv) == 4):
        raise SystemExit(__doc__)
    action, cloud_file, path = argv[:3]
    si = connect(cloud_file)
    try:
        cluster = find_cluster(si, path)
        if action == 'show':
            print(json.dumps(show(cluster), sort_keys=True))
        else:
            print(save(cluster, argv[3]) if action == 'save' else restore(cluster, argv[3]))
    finally:
        Disconnect(si)


if __name__ == '__main__':
    main(sys.argv[1:])
