"""ESXi host maintenance through compute_node on the lab's vcsim (issue 18 §2): two tiny instances on one host of the
lab cluster; check mode plans, entering moves them by vMotion to the cluster's other hosts and the node's capacity
drops, leaving brings it back. Idempotence (changed false) is shown by the unit tests and, for the vSphere driver itself,
by the driver contract; so is every refusal.

What vcsim cannot show: it enters maintenance mode whatever runs on the host (a vCenter without DRS waits until the
VMs are gone), so the refusal of a host that still runs VMs is the driver's own and is what is tested (driver contract);
and it never refuses a vMotion for lack of room, so the refusal of a plan that does not fit is proven on the fake
driver (tests/unit/.../test_host_maintenance.py)."""

from __future__ import annotations

import contextlib

from pyVim.task import WaitForTask
from pyVmomi import vim

from support.cloud import allocations, registry_rows, vcsim, vcsim_vm, vm_name
from support.lab import ansible_module

NODE = 'vcsim/DC0/DC0_C0'
HOST = 'DC0_C0_H0'


def hosts_of(si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    try:
        return dict((h.name, h) for h in view.view)
    finally:
        view.Destroy()


def all_vms(si):
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return [vm for vm in view.view if vm_name(vm)]
    finally:
        view.Destroy()


def vms_on(si, host):
    """The powered-on VMs (templates excluded) whose runtime.host is host, by the slow, independent way."""
    return [vm for vm in all_vms(si) if vm.runtime.host is not None and vm.runtime.host.name == host
            and vm.runtime.powerState == 'poweredOn' and not vm.config.template]


@contextlib.contextmanager
def host_to_ourselves(lab, host):
    """The lab's own VMs on host powered off (they are not the cloud's: a running one blocks maintenance), powered on
    again after, and the host out of maintenance whatever the test did."""
    with vcsim(lab) as si:
        stopped = [vm_name(vm) for vm in vms_on(si, host) if not vm_name(vm).startswith('hm-')]
        for vm in vms_on(si, host):
            if vm_name(vm) in stopped:
                WaitForTask(vm.PowerOffVM_Task())
    try:
        yield
    finally:
        with vcsim(lab) as si:  # a session of its own: the first one's objects are not valid in it
            made = hosts_of(si)[host]
            if made.runtime.inMaintenanceMode:
                WaitForTask(made.ExitMaintenanceMode_Task(timeout=0))
            for vm in all_vms(si):
                if vm_name(vm) in stopped and vm.runtime.powerState != 'poweredOn':
                    WaitForTask(vm.PowerOnVM_Task())


def relocate(lab, name, host):
    """Put a VM on host, as the cluster's DRS would (the registry is not told)."""
    with vcsim(lab) as si:
        vm = next(v for v in all_vms(si) if vm_name(v) == name)
        if vm.runtime.host.name != host:
            WaitForTask(vm.RelocateVM_Task(spec=vim.vm.RelocateSpec(host=hosts_of(si)[host])))


def node_info(cloud):
    return ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=[NODE]))['nodes'][0]


def test_host_maintenance_moves_the_instances_off_and_the_capacity_follows(lab, cloud, template, tmp_path):
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    ansible_module('multihv.cloud.instance', dict(cloud, flavor='tiny', image='tmpl', node=NODE,
                                                  instances=[{'name': 'hm-a'}, {'name': 'hm-b'}]))
    with host_to_ourselves(lab, HOST):
        for name in ('hm-a', 'hm-b'):
            relocate(lab, name, HOST)
        before = node_info(cloud)
        esx = dict((h['name'], h) for h in before['hosts'])
        assert esx[HOST]['usable'] is True

        planned = ansible_module('multihv.cloud.compute_node', dict(cloud, name=NODE, host=HOST, host_maintenance=True), check=True)
        assert planned['changed'] is True and planned['host']['in_maintenance'] is True
        assert sorted((m['instance_name'], m['source_host'], m['status']) for m in planned['migrations']) == [
            ('hm-a', HOST, 'would run'), ('hm-b', HOST, 'would run')]
        assert all(m['dest_host'] in esx and m['dest_host'] != HOST for m in planned['migrations'])
        assert vcsim_vm(lab, 'hm-a') == ('poweredOn', HOST) and vcsim_vm(lab, 'hm-b') == ('poweredOn', HOST)
        assert registry_rows(tmp_path, 'SELECT count(*) FROM migrations') == [(0,)]

        entered = ansible_module('multihv.cloud.compute_node', dict(cloud, name=NODE, host=HOST, host_maintenance=True), diff=True)
        assert entered['changed'] is True and entered['host'] == {'name': HOST, 'node': NODE, 'in_maintenance': True,
                                                                  'connection_state': 'connected'}
        assert '-    "in_maintenance": false' in entered['_output'] and '+    "in_maintenance": true' in entered['_output']
        moved = dict((m['instance_name'], m) for m in entered['migrations'])
        assert sorted(moved) == ['hm-a', 'hm-b'] and {m['status'] for m in moved.values()} == {'completed'}
        for name, migration in moved.items():
            assert (migration['source_host'], migration['dest_node'], migration['migration_type']) == (HOST, NODE, 'live')
            assert vcsim_vm(lab, name) == ('poweredOn', migration['dest_host']) and migration['dest_host'] != HOST
        assert sorted(registry_rows(tmp_path, 'SELECT name, host FROM instances')) == sorted(
            (name, m['dest_host']) for name, m in moved.items())
        assert allocations(tmp_path) == {NODE: 64}  # the moves stay inside the node

        during = node_info(cloud)
        host_now = dict((h['name'], h) for h in during['hosts'])[HOST]
        assert (host_now['in_maintenance'], host_now['usable']) == (True, False)
        assert during['physical']['memory_mb'] == before['physical']['memory_mb'] - esx[HOST]['memory_mb']
        assert during['capacity']['vcpus'] < before['capacity']['vcpus']

        left = ansible_module('multihv.cloud.compute_node', dict(cloud, name=NODE, host=HOST, host_maintenance=False))
        assert (left['changed'], left['host']['in_maintenance'], left['migrations']) == (True, False, [])
        after = node_info(cloud)
        assert after['physical'] == before['physical'] and after['capacity'] == before['capacity']
