"""Looking at what the collection's modules did: the registry file, the lab hosts' domains, vcsim's VMs."""

from __future__ import annotations

import sqlite3


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


def vcsim_vm(lab, name):
    """(power state, host name) of the vcsim VM called name, or None."""
    from pyVim.connect import Disconnect, SmartConnect  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim, vmodl  # pylint: disable=import-outside-toplevel
    vcsim = lab.info['vcsim']
    si = SmartConnect(host=vcsim['host'], port=vcsim['port'], user=vcsim['username'], pwd='lab-only-secret',
                      disableSslCertValidation=True)
    try:
        collector = vmodl.query.PropertyCollector
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[
                collector.TraversalSpec(name='v', type=vim.view.ContainerView, path='view', skip=False)])],
            propSet=[collector.PropertySpec(type=vim.VirtualMachine, pathSet=['name', 'runtime.powerState', 'runtime.host'])])
        for obj in si.content.propertyCollector.RetrieveContents([spec]):
            props = {p.name: p.val for p in obj.propSet}
            if props.get('name') == name:
                return str(props['runtime.powerState']), props['runtime.host'].name
        return None
    finally:
        Disconnect(si)
