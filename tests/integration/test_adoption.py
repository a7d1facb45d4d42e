"""Adopting the VMs an estate already has (issue 17 §3) on the lab, through real Ansible runs: a domain defined by
hand on kvm1 (the tick guest) and a VM made outside the cloud in vcsim's cluster DC0_C0 become instances with
instance_import, and are then powered, moved (the KVM one, live) and deleted like any other. Small on purpose (the suite's time): flavor
matching, claims, leases, bad input, a second run and interrupted runs are proven on the fake driver (unit tests), the
vSphere counts of unmanaged VMs on Records (test_vsphere_adoption)."""

from __future__ import annotations

import uuid as uuidlib

from support.cloud import _vcsim_vm, allocations, domain_active, domains, registry_rows, vcsim, vcsim_vm
from support.lab import ansible_module

NODE_C0 = 'vcsim/DC0/DC0_C0'


def node_info(cloud, node):
    return ansible_module('multihv.cloud.compute_node_info', dict(cloud, names=[node]))['nodes'][0]


def test_a_domain_defined_by_hand_is_adopted_then_moved_powered_and_deleted_like_any_instance(lab, cloud, guests, tmp_path):
    name, _log = guests.start('kvm1')  # 1 vCPU, 32 MiB, a qcow2 overlay of the tick image under the shared instance path
    conn = lab.connect('kvm1')
    try:
        domain_uuid = conn.lookupByName(name).UUIDString()
    finally:
        conn.close()
    before = node_info(cloud, 'kvm1')
    assert before['unmanaged']['vms'] >= 1 and before['allocated']['instances'] == 0

    plan = ansible_module('multihv.cloud.instance_import', dict(cloud, node='kvm1', names=[name]), check=True)
    assert plan['changed'] and [(i['name'], i['uuid'], i['flavor'], i['storage'], i['state']) for i in plan['instances']] == [
        (name, domain_uuid, 'tiny', 'shared', 'would be adopted')]
    assert registry_rows(tmp_path, 'SELECT name FROM instances') == []  # check mode wrote nothing

    done = ansible_module('multihv.cloud.instance_import', dict(cloud, node='kvm1', names=[name]))
    [record] = done['instances']
    assert (record['uuid'], record['name'], record['node'], record['flavor'], record['storage'], record['state']) == (
        domain_uuid, name, 'kvm1', 'tiny', 'shared', 'running')
    assert allocations(tmp_path) == {'kvm1': 32}
    after = node_info(cloud, 'kvm1')
    assert after['unmanaged']['vms'] == before['unmanaged']['vms'] - 1 and after['allocated']['instances'] == 1

    # Its disk is under the shared instance path, outside any instance directory: it moves live like any instance.
    moved = ansible_module('multihv.cloud.migrate', dict(cloud, instance=name, target_node='kvm2'))
    assert moved['migration']['status'] == 'completed' and allocations(tmp_path) == {'kvm2': 32}
    assert name in domains(lab, 'kvm2') and name not in domains(lab, 'kvm1') and domain_active(lab, 'kvm2', name)
    ansible_module('multihv.cloud.instance', dict(cloud, name=name, state='stopped'))
    assert not domain_active(lab, 'kvm2', name)
    ansible_module('multihv.cloud.instance', dict(cloud, name=name, state='absent'))
    assert name not in domains(lab, 'kvm2') and allocations(tmp_path) == {}


def test_a_vcsim_vm_made_outside_the_cloud_is_adopted_then_powered_and_deleted_like_any_instance(lab, cloud, tmp_path):
    """A clone of one of vcsim's own VMs (1 vCPU, 32 MB, a 1 MB disk on LocalDS_0), given a BIOS uuid of its own and a note
    in its annotation: adopted on cluster node DC0_C0 with the matched flavor tiny, its note kept under the cloud's marker."""
    from pyVim.task import WaitForTask  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim  # pylint: disable=import-outside-toplevel
    name, bios = 'adopt-%s' % uuidlib.uuid4().hex[:8], str(uuidlib.uuid4())
    with vcsim(lab) as si:
        source, _props = _vcsim_vm(si, 'DC0_C0_H0_VM0')
        location = vim.vm.RelocateSpec(pool=source.resourcePool, host=source.runtime.host)
        WaitForTask(source.CloneVM_Task(folder=source.parent, name=name, spec=vim.vm.CloneSpec(location=location, powerOn=True)), si=si)
        clone, _props = _vcsim_vm(si, name)
        WaitForTask(clone.ReconfigVM_Task(spec=vim.vm.ConfigSpec(uuid=bios, annotation='made by hand')), si=si)
        WaitForTask(clone.PowerOnVM_Task(), si=si)  # vcsim 0.24.2 leaves a clone off whatever CloneSpec.powerOn says
    try:
        done = ansible_module('multihv.cloud.instance_import', dict(cloud, node=NODE_C0, names=[name]))
        [record] = done['instances']
        assert (record['uuid'], record['name'], record['node'], record['flavor'], record['state']) == (bios, name, NODE_C0, 'tiny', 'running')
        assert record['identity']['adopted']['datastores'] == ['LocalDS_0'] and allocations(tmp_path) == {NODE_C0: 32}
        with vcsim(lab) as si:
            annotation = _vcsim_vm(si, name)[0].config.annotation
        assert annotation.startswith('multihv.cloud instance %s\n' % bios) and annotation.endswith('\nmade by hand')

        ansible_module('multihv.cloud.instance', dict(cloud, name=name, state='stopped'))
        assert vcsim_vm(lab, name)[0] == 'poweredOff'
        ansible_module('multihv.cloud.instance', dict(cloud, name=name, state='absent'))
        assert vcsim_vm(lab, name) is None and allocations(tmp_path) == {}
    finally:
        with vcsim(lab) as si:
            left, props = _vcsim_vm(si, name)
            if left is not None:  # the test failed before the delete: the clone goes, so that the lab stays as it was
                if str(props['runtime.powerState']) == 'poweredOn':
                    WaitForTask(left.PowerOffVM_Task(), si=si)
                WaitForTask(left.Destroy_Task(), si=si)
