"""The lab's simulated vCenter, through pyVmomi as a real vCenter is used."""

from __future__ import annotations

import json
import urllib.request

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from support.lab import LAB_DIR


@pytest.fixture(scope='module')
def si(lab):
    import yaml  # pylint: disable=import-outside-toplevel
    vcenter = yaml.safe_load((LAB_DIR / 'multihv-cloud.yml').read_text())['vcenters'][0]
    conn = SmartConnect(host=vcenter['hostname'], port=vcenter['port'], user=vcenter['username'],
                        pwd=vcenter['password'], disableSslCertValidation=True)
    yield conn
    Disconnect(conn)


def _retrieve(si, kind, paths):
    """One ContainerView + RetrievePropertiesEx: {name: {path: value, '_obj': managed object}}."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(
                obj=view, skip=True, selectSet=[vmodl.query.PropertyCollector.TraversalSpec(
                    name='view', path='view', skip=False, type=vim.view.ContainerView)])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=['name'] + paths)])
        result = content.propertyCollector.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        objects = []
        while result:
            objects.extend(result.objects)
            result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return {props['name']: props for props in ({'_obj': o.obj, **{p.name: p.val for p in o.propSet}} for o in objects)}
    finally:
        view.Destroy()


def _control(lab, method, path):
    req = urllib.request.Request(lab.info['vcsim']['control_url'] + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b'null')


def test_topology_has_the_configured_clusters_and_hosts(lab, si):
    clusters = _retrieve(si, vim.ClusterComputeResource, ['host'])
    want = lab.info['vcsim']
    assert len(clusters) == want['datacenters'] * want['clusters'] >= 2
    assert all(len(c['host']) == want['hosts_per_cluster'] for c in clusters.values())
    assert len(_retrieve(si, vim.VirtualMachine, [])) == want['vms']


def test_wrong_password_is_refused(lab):
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(host='127.0.0.1', port=lab.info['vcsim']['port'], user=lab.info['vcsim']['username'],
                     pwd='not-the-password', disableSslCertValidation=True)


def test_esxi_host_stops_responding_and_comes_back(lab, si):
    host = sorted(_retrieve(si, vim.HostSystem, []))[0]

    def state():
        return _retrieve(si, vim.HostSystem, ['runtime.connectionState'])[host]['runtime.connectionState']

    assert state() == 'connected'
    try:
        lab.make('lab-fail', f'HOST={host}')
        assert state() == 'notResponding'
        others = _retrieve(si, vim.HostSystem, ['runtime.connectionState'])
        assert sum(h['runtime.connectionState'] == 'notResponding' for h in others.values()) == 1
    finally:
        lab.make('lab-restore', f'HOST={host}')
    assert state() == 'connected'
    assert [h for h in _control(lab, 'GET', '/hosts') if h['name'] == host][0]['connection_state'] == 'connected'


def test_vmotion_to_another_host_of_the_cluster(lab, si):
    vms = _retrieve(si, vim.VirtualMachine, ['runtime.host'])
    name, props = sorted(vms.items())[0]
    source = props['runtime.host']
    cluster = source.parent
    target = next(h for h in cluster.host if h != source)
    vm = props['_obj']
    WaitForTask(vm.RelocateVM_Task(vim.vm.RelocateSpec(host=target)))
    assert _retrieve(si, vim.VirtualMachine, ['runtime.host'])[name]['runtime.host'] == target
    WaitForTask(vm.RelocateVM_Task(vim.vm.RelocateSpec(host=source)))
