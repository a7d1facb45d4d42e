"""Looking at what the collection's modules did: the registry file, the lab hosts' domains, vcsim's VMs."""

from __future__ import annotations

import contextlib
import pathlib
import re
import sqlite3

from support import vsphere_guestinfo
from support.lab import ansible_module, wait_for

TICK = re.compile(r'tick (\d+)')


def registry_rows(tmp_path, sql):
    """The rows a query returns from the test's own registry (the `cloud` fixture's, in tmp_path)."""
    with sqlite3.connect(tmp_path / 'registry.sqlite') as db:
        return db.execute(sql).fetchall()


def allocations(tmp_path):
    """{node: MB of RAM allocated on it} in the test's registry."""
    return dict(registry_rows(tmp_path, 'SELECT node, sum(memory_mb) FROM allocations GROUP BY node'))


def domain_active(lab, host, name):
    conn = lab.connect(host)
    try:
        return conn.lookupByName(name).isActive() == 1
    finally:
        conn.close()


def domains(lab, host):
    conn = lab.connect(host)
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def vm_name(vm):
    from pyVmomi import vmodl  # pylint: disable=import-outside-toplevel
    try:
        return vm.name
    except vmodl.fault.ManagedObjectNotFound:
        return ''  # another test's VM, destroyed meanwhile


@contextlib.contextmanager
def vcsim(lab):
    """A pyVmomi ServiceInstance of the lab's vcsim, disconnected afterwards."""
    from pyVim.connect import Disconnect, SmartConnect  # pylint: disable=import-outside-toplevel
    vcsim_info = lab.info['vcsim']
    si = SmartConnect(host=vcsim_info['host'], port=vcsim_info['port'], user=vcsim_info['username'], pwd='lab-only-secret',
                      disableSslCertValidation=True)
    try:
        yield si
    finally:
        Disconnect(si)


def _vcsim_vm(si, name):
    """(VM object, {name, runtime.powerState, runtime.host}) of the vcsim VM called name, or (None, None)."""
    from pyVmomi import vim, vmodl  # pylint: disable=import-outside-toplevel
    collector = vmodl.query.PropertyCollector
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    spec = collector.FilterSpec(
        objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[
            collector.TraversalSpec(name='v', type=vim.view.ContainerView, path='view', skip=False)])],
        propSet=[collector.PropertySpec(type=vim.VirtualMachine, pathSet=['name', 'runtime.powerState', 'runtime.host'])])
    for obj in si.content.propertyCollector.RetrieveContents([spec]):
        props = {p.name: p.val for p in obj.propSet}
        if props.get('name') == name:
            return obj.obj, props
    return None, None


def vcsim_vm(lab, name):
    """(power state, host name) of the vcsim VM called name, or None."""
    with vcsim(lab) as si:
        _vm, props = _vcsim_vm(si, name)
        return (str(props['runtime.powerState']), props['runtime.host'].name) if props else None


def vcsim_guest_documents(lab, name):
    """{'metadata', 'userdata', 'vendordata': text or None} cloud-init would find in the vcsim VM called name."""
    with vcsim(lab) as si:
        vm, _props = _vcsim_vm(si, name)
        return vsphere_guestinfo.documents(si, vm)


# -- lab guests booted through the instance module ---------------------------------------------


def boot(cloud, name, node='kvm1', storage='shared', state='present', **extra):
    return ansible_module('multihv.cloud.instance', dict(cloud, name=name, flavor='tiny', image='tick', node=node, storage=storage,
                                                         state=state, **extra))['instance']


def bring_back(cloud, node, check=False):
    """A failed node back in service, as an operator does it: its stale copies are destroyed first."""
    return ansible_module('multihv.cloud.compute_node', dict(cloud, name=node, enabled=True, forced_down=False), check=check)


def console_log(lab, record, node=None):
    """The instance's serial log as this machine sees it, on its node (or on `node`)."""
    name = f"{record['uuid']}.console.log"
    if record['storage'] == 'shared':
        return pathlib.Path(lab.info['shared_instance_path']) / name
    return pathlib.Path(lab.hosts[node or record['node']]['local_dir']) / name


def ticks(log):
    """Every tick number in a serial log, boot lines or not (a log a migration's target began has none)."""
    return [int(n) for n in TICK.findall(log.read_text(errors='replace'))] if log.exists() else []


def wait_ticks(log, count=3, after=None, timeout=30):
    def enough():
        seen = ticks(log)
        return len(seen) >= count and (after is None or seen[-1] > after + 1)
    wait_for(enough, timeout, f'ticks in {log}')
    return ticks(log)
