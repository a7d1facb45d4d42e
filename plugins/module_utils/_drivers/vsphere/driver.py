# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vSphere compute driver: one cluster of a vCenter is one node. Private to multihv.cloud: do not import.

VSphereDriver answers the ComputeDriver interface for one vCenter; each job it does is a
module of this package: properties (what is read, through the PropertyCollector), inventory
(nodes from one retrieval), annotations (which VMs are the cloud's instances), instances
(their InstanceState), placement (where a spawn or a move goes), clone (the clone's specs),
tasks (waiting for a vCenter task), power (power tasks and deletion of a VM), session (login,
logout, failures) and vmomi (pyVmomi, imported once).

get_nodes and list_instances cost a constant number of SOAP calls whatever the size of the
inventory; an image is a template VM, cloned for each instance into the cluster's resource
pool, onto the ESXi host the scheduler chose.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._constants import MIGRATION_MODES, POWER_ACTIONS
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import ComputeDriver, DiskFile, NodePlacement, SnapshotImage
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import capabilities as vsphere_capabilities
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import adoption as vm_adoption
# export (ansible.module_utils.urls, cryptography), extra_config, node_rules and the import code (importing, vmdk,
# datastore_files) are imported by the methods that use them: a run that only reads node resources or instances does
# not compile them (every module_utils file a module imports is compiled from source on each run: Ansible ships them
# in a zip without bytecode).
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import maintenance as host_maintenance
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import snapshot as vsphere_snapshot
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import streamed
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import normal_uuid, parse_annotation, without_marker
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.clone import clone_config, clone_spec, grown_disk, missing_config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.instances import (
    disk_bytes, disk_gb_of, disks_of, instance_states, managed_ids, power_state, with_devices,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import build_nodes
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.placement import pick_template, plan_import, plan_relocate, plan_spawn
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.power import (
    SHUTDOWN_TIMEOUT, power, power_action, power_off_and_destroy, read_power_state,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import resizing
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import (
    CLONE_PATHS, DEVICES, EXTRA_CONFIG, LIST_PROPERTIES, SPAWN_PROPERTIES, TEMPLATE_PROPERTIES, by_kind, describe_spec, plain,
    retrieve_inventory, retrieve_objects, retrieve_pages, stub, vm_name,
)
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.session import Session
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.tasks import TASK_TIMEOUT, wait_task
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.vmomi import NETWORK_ERRORS, fault_text, require, vim, vmodl


def _counting(progress, base, total):
    """progress(bytes uploaded, bytes to upload) for one file's upload that starts at base bytes; None for none."""
    if progress is None:
        return None
    return lambda sent: progress(base + sent, max(total, base + sent))


class VSphereDriver(ComputeDriver):
    """One vCenter; each of its clusters (those the `clusters` filter keeps) is a node."""

    capabilities = vsphere_capabilities.CAPABILITIES

    def __init__(self, vcenter):
        self.vcenter = vcenter
        self.session = Session(vcenter)
        # Deadlines of a vCenter task (clone, relocate, power...) and of a guest shutdown.
        self.work_timeout = TASK_TIMEOUT
        self.shutdown_timeout = SHUTDOWN_TIMEOUT

    # -- configuration (no I/O)

    def endpoint_name(self):
        return self.vcenter.name

    @property
    def endpoint(self):
        return self.session.endpoint

    def node_names(self):
        """Nodes the cloud file names: the clusters filter's datacenter/cluster entries. A bare
        cluster name says nothing of its datacenter, so it gives no name without asking the
        vCenter; without a filter, which clusters exist is unknown as well."""
        names = []
        for entry in self.vcenter.clusters:
            datacenter, slash, cluster = entry.rpartition('/')
            if slash and datacenter and cluster:
                names.append(self.vcenter.node_name(datacenter, cluster))
        return names

    def serves(self, node):
        """A node of this vCenter is named vcenter/datacenter/cluster: exactly two slashes
        (vCenter keeps a '/' in a datacenter's or a cluster's name escaped)."""
        return node.startswith(self.vcenter.name + '/') and node.count('/') == 2

    def placement(self, node):
        """The cluster's availability zone and aggregates (the vCenter's, or its cluster_settings
        entry's), and the vCenter's SDK URL."""
        if not self.serves(node):
            raise errors.NotFound('node %s is not a cluster of vCenter %s (vcenter/datacenter/cluster)' % (node, self.vcenter.name))
        zone, aggregates = self.vcenter.placement(node.rsplit('/', 1)[-1])
        return NodePlacement(availability_zone=zone, aggregates=tuple(aggregates),
                             endpoint='https://%s:%d/sdk' % (self.vcenter.hostname, self.vcenter.port))

    # -- nodes

    def get_nodes(self):
        require(self.vcenter)
        # Read as it arrives (streamed.py): the node view of a large estate at a fraction of pyVmomi's peak memory.
        return build_nodes(self.vcenter, self.session.run(lambda content: streamed.retrieve_inventory(self.session, content)))

    # -- images and instances

    def find_template(self, name, datacenter=None):
        """The template VM `name` as {name, moid, datacenter, vcpus, memory_mb, disk_gb, guest_id}:
        one retrieval of every VM's name and template flag, then the found one's devices.
        datacenter breaks a tie between templates of one name in several datacenters."""
        require(self.vcenter)
        return self.session.run(lambda content: self._find_template(content, name, datacenter), 'the lookup of template %s' % name)

    def _find_template(self, content, name, datacenter):
        template = pick_template(self.vcenter.name, by_kind(retrieve_inventory(content, TEMPLATE_PROPERTIES)), name, datacenter)
        template['disk_gb'] = disk_gb_of(self._template_props(content, template['moid'], (DEVICES,)).get(DEVICES) or [])
        return template

    def _template_props(self, content, moid, paths):
        """{path: value} of a template VM (one RetrievePropertiesEx)."""
        answer = retrieve_objects(content.propertyCollector, [vim.VirtualMachine(moid, stub(content))], 'VirtualMachine', paths)
        if not answer:
            raise errors.NotFound('template VM %s of vCenter %s was deleted while it was read' % (moid, self.vcenter.name))
        return answer[0].props

    def list_instances(self):
        """InstanceState of every managed VM on the nodes: CreateContainerView, RetrievePropertiesEx,
        DestroyView, then one RetrievePropertiesEx of the managed VMs' devices for their MACs
        and disks (skipped when there is none): a constant number of SOAP calls."""
        require(self.vcenter)
        return self.session.run(self._list_instances, 'the instance listing')

    def _list_instances(self, content):
        records = retrieve_inventory(content, LIST_PROPERTIES)
        refs = stub(content)
        managed = [vim.VirtualMachine(moid, refs) for moid in managed_ids(records)]
        answer = retrieve_objects(content.propertyCollector, managed, 'VirtualMachine', (DEVICES,)) if managed else []
        return instance_states(self.vcenter, with_devices(records, answer))

    def spawn(self, spec):
        """Clone template spec.image into the node's resource pool onto spec.host (or the usable
        host with the most free RAM), apply what the clone lacks, power it on; InstanceState.
        spec.guest reaches cloud-init's VMware datasource as the clone's guestinfo extraConfig,
        set before the first power-on; the template's own cloud-init keys never reach the clone
        (extra_config.py). A failure after the clone began destroys the half-made VM, then raises
        errors.DriverError naming the instance, cluster and host and saying what was left; the
        guest data is in no message (a vCenter fault's quote of it is redacted)."""
        require(self.vcenter)
        instance = normal_uuid(spec.uuid)
        if instance is None:
            raise errors.DriverError('instance uuid %r is not a UUID; nothing was created' % (spec.uuid,))
        if spec.reuse_disk:  # vSphere HA restarts a VM on its datastore; the core never asks this of a cluster
            raise errors.DriverError('instance %s: a vSphere node clones a template, it does not adopt an existing disk; '
                                     'nothing was created' % spec.name)
        spec = dataclasses.replace(spec, uuid=instance)
        return self.session.run(lambda content: self._spawn(content, spec), 'the build of instance %s' % instance)

    def _spawn(self, content, spec):
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config  # pylint: disable=import-outside-toplevel
        plan = plan_spawn(self.vcenter, retrieve_inventory(content, SPAWN_PROPERTIES), spec)
        template = self._template_props(content, plan.template['moid'], (DEVICES, 'config.hardware.numCoresPerSocket', EXTRA_CONFIG))
        guest_keys = extra_config.wanted(spec.guest, template.get(EXTRA_CONFIG))
        config = clone_config(spec, plan, template.get(DEVICES) or [], template.get('config.hardware.numCoresPerSocket'), guest_keys)
        deadline = time.monotonic() + self.work_timeout
        made = []
        try:
            vm = self._clone(content, spec, plan, config, deadline, made)
            props = self._complete(content, spec, plan, vm, deadline, guest_keys)
            if props.get('runtime.powerState') != 'poweredOn':
                power(content.propertyCollector, vm, 'PowerOnVM_Task', 'poweredOn', deadline, 'PowerOnVM_Task of instance %s' % spec.uuid)
            state = self._describe(content, vm)
            if state is None:
                raise errors.DriverError('the clone does not read back as instance %s' % spec.uuid)
            return state
        except BaseException as exc:
            left = self._remove_half_made(content, spec, made)
            where = 'vCenter %s could not build instance %s (%s) on cluster %s/%s, host %s' % (
                self.vcenter.name, spec.uuid, spec.name, plan.datacenter, plan.cluster, plan.host_name)
            raise self._failure(exc, where, left, guest_keys, errors.DriverError)

    def _clone(self, content, spec, plan, config, deadline, made):
        refs = stub(content)
        template = vim.VirtualMachine(plan.template['moid'], refs)
        task = template.CloneVM_Task(folder=vim.Folder(plan.folder, refs), name=spec.name, spec=clone_spec(plan, config))
        moid = wait_task(content.propertyCollector, task, deadline, 'CloneVM_Task of template %s' % plan.template['name'])
        made.append(vim.VirtualMachine(moid, refs))
        return made[-1]

    def _complete(self, content, spec, plan, vm, deadline, guest_keys):
        """Move the clone to the chosen host and apply the configuration it lacks (missing_config,
        the guest data included), while it is still powered off; its CLONE_PATHS props."""
        pc = content.propertyCollector
        answer = retrieve_objects(pc, [vm], 'VirtualMachine', CLONE_PATHS)
        if not answer:
            raise errors.DriverError('the clone %s disappeared' % plain(vm))
        props = answer[0].props
        if props.get('runtime.host') != plan.host:
            refs = stub(content)
            relocate = vim.vm.RelocateSpec(host=vim.HostSystem(plan.host, refs), pool=vim.ResourcePool(plan.pool, refs))
            wait_task(pc, vm.RelocateVM_Task(spec=relocate), deadline, 'RelocateVM_Task to host %s' % plan.host_name)
        config = missing_config(spec, props, guest_keys)
        if config is not None:
            wait_task(pc, vm.ReconfigVM_Task(spec=config), deadline, 'ReconfigVM_Task of the clone')
        return props

    def _remove_half_made(self, content, spec, made):
        """Destroy what a failed spawn created; says what was left. Without a reference from the
        clone task, a VM is looked up by the instance uuid and destroyed only if it also has the
        instance's name (spawn refused to start when another VM had the uuid)."""
        try:
            vm = made[0] if made else self._find_by_uuid(content, spec.uuid, spec.name)
            if vm is None:
                return 'no VM was left behind'
            power_off_and_destroy(content.propertyCollector, vm, time.monotonic() + self.work_timeout,
                                  'the half-made VM of instance %s' % spec.uuid)
            return 'the half-made VM %s was destroyed' % plain(vm)
        except (errors.DriverError, vmodl.MethodFault) + NETWORK_ERRORS as exc:
            return 'the half-made VM %s (%s) could not be destroyed and is left behind: %s' % (
                spec.name, plain(made[0]) if made else 'not found', fault_text(exc) if isinstance(exc, vmodl.MethodFault) else exc)

    def shares_storage(self, target, storage):
        """vMotion and relocation move or keep the disks themselves: the core need not know."""
        return True

    def migrate(self, uuid, node, target, mode, controls, progress=None):
        """vMotion (RelocateVM_Task) to target.host in the same cluster node, or relocation into
        another cluster node of this vCenter (its host target.host or the usable one with the
        most free RAM). live and block move a running VM as it runs (vCenter copies the disks
        when the target host does not mount their datastore); cold powers it off first and on
        again after. (InstanceState after, stats)."""
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            raise errors.NotFound('instance uuid %r is not a UUID; nothing moved' % (uuid,))
        if mode not in MIGRATION_MODES:
            raise errors.DriverError('unknown migration mode %s for instance %s (expected %s); nothing moved' % (
                mode, instance, ', '.join(MIGRATION_MODES)))
        if not isinstance(target.driver, VSphereDriver) or target.driver.vcenter.name != self.vcenter.name:
            raise errors.DriverError('instance %s: the target is not a cluster of vCenter %s (moves between vCenters are not '
                                     'supported); nothing moved' % (instance, self.vcenter.name))
        return self.session.run(lambda content: self._migrate(content, instance, node, target, mode),
                                'the migration of instance %s' % instance)

    def _migrate(self, content, instance, node, target, mode):
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); nothing moved' % (self.vcenter.name, instance, node))
        vm, state = located
        self._check_node(state, node, 'moved')
        host_id, host_name, pool = plan_relocate(self.vcenter, retrieve_inventory(content, SPAWN_PROPERTIES), target.node,
                                                 target.host, instance, state.host)
        started = time.monotonic()
        deadline = started + self.work_timeout
        what = 'RelocateVM_Task of instance %s to host %s' % (instance, host_name)
        was_running = state.power_state == 'running'
        pc = content.propertyCollector
        if mode == 'cold' and was_running:
            power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, what)
        refs = stub(content)
        spec = vim.vm.RelocateSpec(host=vim.HostSystem(host_id, refs), pool=vim.ResourcePool(pool, refs))
        try:
            wait_task(pc, vm.RelocateVM_Task(spec=spec, priority='defaultPriority'), deadline, what)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not move instance %s from host %s to %s: %s; it stays on %s' % (
                self.vcenter.name, instance, state.host, host_name, exc, state.host)) from exc
        finally:
            if mode == 'cold' and was_running:  # running again, moved or not
                power(pc, vm, 'PowerOnVM_Task', 'poweredOn', deadline, what)
        after = self._describe(content, vm)
        if after is None:
            raise errors.DriverError('instance %s does not read back after its move to host %s' % (instance, host_name))
        return after, {'time_elapsed_ms': int((time.monotonic() - started) * 1000)}

    # -- moves between hypervisor types (issue 19): see vmdk.py, datastore_files.py, importing.py

    def import_instance(self, spec, disks, progress=None):
        """A VM of spec made on spec.node from the controller's DiskFiles: each converted by qemu-img on the controller
        into a VMFS flat VMDK (vmdk.py says why that kind), uploaded through vCenter's datastore file access into the
        directory `<uuid>` of the datastore plan_import picks (on the host spawn would choose), then CreateVM_Task
        with the flavor, the uuid, the marker, the disks and the spec's MACs (importing.py); powered on unless the
        spec's metadata says power_state stopped. progress(bytes uploaded, bytes to upload). Whatever fails, the VM made
        and the uploaded directory are removed before raising (errors.DriverError saying so)."""
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import vmdk  # pylint: disable=import-outside-toplevel
        require(self.vcenter)
        instance = normal_uuid(spec.uuid)
        if instance is None:
            raise errors.DriverError('instance uuid %r is not a UUID; nothing was created' % (spec.uuid,))
        if not disks:
            raise errors.DriverError('instance %s: no disk to import; nothing was created' % instance)
        for disk in disks:
            if disk.disk_format not in vmdk.SOURCE_FORMATS:
                raise errors.DriverError('instance %s: disk %s is in format %r, which cannot be converted (qemu-img reads %s); '
                                         'nothing was created' % (instance, os.path.basename(disk.path), disk.disk_format,
                                                                  ', '.join(vmdk.SOURCE_FORMATS)))
        spec = dataclasses.replace(spec, uuid=instance)
        # The first disk is grown to the flavor's once the VM exists (thick: the datastore must hold it grown).
        needed = sum(-(-int(disk.virtual_size) // 512) * 512 for disk in disks[1:]) + max(
            -(-int(disks[0].virtual_size) // 512) * 512, int(spec.disk_gb) * 2 ** 30)
        plan, datacenter, datastore = self.session.run(
            lambda content: plan_import(self.vcenter, retrieve_inventory(content, SPAWN_PROPERTIES), spec, needed),
            'the placement of instance %s' % instance)
        deadline = time.monotonic() + self.work_timeout
        workdir = tempfile.mkdtemp(prefix='multihv-import-', dir=os.path.dirname(os.path.abspath(disks[0].path)))
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config  # pylint: disable=import-outside-toplevel
        made, uploaded = [], []
        guest_keys = extra_config.wanted(spec.guest, None)
        try:
            sizes = self._upload_disks(instance, plan, datastore, disks, workdir, deadline, progress, uploaded)
            return self.session.run(lambda content: self._create_imported(content, spec, plan, datastore, sizes, deadline, made),
                                    'the creation of instance %s' % instance)
        except BaseException as exc:
            left = self._remove_imported(spec, datacenter, datastore, made, uploaded)
            where = 'vCenter %s could not import instance %s (%s) on cluster %s/%s, host %s' % (
                self.vcenter.name, instance, spec.name, plan.datacenter, plan.cluster, plan.host_name)
            raise self._failure(exc, where, left, guest_keys, errors.MultihvError)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _upload_disks(self, instance, plan, datastore, disks, workdir, deadline, progress, uploaded):
        """Convert and upload each disk in turn (one converted copy on the controller at a time); their virtual sizes.
        uploaded gets the datastore directory before the first byte is sent. progress counts the extents' bytes."""
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import datastore_files  # pylint: disable=import-outside-toplevel
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import importing  # pylint: disable=import-outside-toplevel
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import vmdk  # pylint: disable=import-outside-toplevel
        sizes, done = [], 0
        total = sum(-(-int(disk.virtual_size) // 512) * 512 for disk in disks)  # qemu-img rounds up to a sector
        for index, disk in enumerate(disks):
            descriptor, extent, size = vmdk.convert(disk.path, disk.disk_format, workdir, importing.disk_stem(index),
                                                    max(deadline - time.monotonic(), 1.0))
            sizes.append(size)
            # The descriptor last: a directory without it holds no usable disk.
            for path, counted in ((extent, True), (descriptor, False)):
                if not uploaded:  # from the first byte sent on, the directory may be there: a failure deletes it
                    uploaded.append(importing.vm_directory(instance))
                url = datastore_files.folder_url(self.vcenter.hostname, self.vcenter.port, plan.datacenter, datastore,
                                                 '%s/%s' % (importing.vm_directory(instance), os.path.basename(path)))
                sent = datastore_files.upload(self.session, url, path, deadline,
                                              _counting(progress, done, total) if counted else None)
                done += sent if counted else 0
                os.remove(path)  # the controller's space back before the next disk is converted
        return sizes

    def _create_imported(self, content, spec, plan, datastore, sizes, deadline, made):
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import importing  # pylint: disable=import-outside-toplevel
        refs = stub(content)
        pc = content.propertyCollector
        config = importing.import_config(spec, plan, datastore, sizes)
        task = vim.Folder(plan.folder, refs).CreateVM_Task(config=config, pool=vim.ResourcePool(plan.pool, refs),
                                                           host=vim.HostSystem(plan.host, refs))
        vm = vim.VirtualMachine(wait_task(pc, task, deadline, 'CreateVM_Task of instance %s' % spec.uuid), refs)
        made.append(vm)
        devices = retrieve_objects(pc, [vm], 'VirtualMachine', (DEVICES,))[0].props.get(DEVICES) or []
        grow = grown_disk(devices, int(spec.disk_gb))  # as a clone is: the flavor's disk is a minimum
        if grow is not None:
            wait_task(pc, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[grow])), deadline,
                      'ReconfigVM_Task growing the disk of instance %s' % spec.uuid)
        if importing.powered_on(spec):
            power(pc, vm, 'PowerOnVM_Task', 'poweredOn', deadline, 'PowerOnVM_Task of instance %s' % spec.uuid)
        state = self._describe(content, vm)
        if state is None:
            raise errors.DriverError('the new VM does not read back as instance %s' % spec.uuid)
        return state

    def _remove_imported(self, spec, datacenter, datastore, made, uploaded):
        """Destroy the VM a failed import made and delete its datastore directory; a sentence saying what went
        and what was left."""
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import datastore_files  # pylint: disable=import-outside-toplevel
        if not made and not uploaded:
            return 'nothing had been created'
        said = []
        deadline = time.monotonic() + self.work_timeout

        def remove(content):
            if made:
                power_off_and_destroy(content.propertyCollector, made[0], deadline, 'the half-made VM of instance %s' % spec.uuid)
                said.append('the VM it made was destroyed')
            if uploaded and datastore_files.delete(content, datacenter, datastore, uploaded[0], deadline):
                said.append('its directory [%s] %s was deleted' % (datastore, uploaded[0]))

        try:
            self.session.run(remove, 'the removal of what the import of instance %s made' % spec.uuid)
        except (errors.MultihvError, vmodl.MethodFault) + NETWORK_ERRORS as exc:
            left = ([] if said or not made else ['its VM %s' % spec.name]) + (['[%s] %s' % (datastore, uploaded[0])] if uploaded else [])
            return '%s; could not remove the rest (%s), left behind: %s' % (', '.join(said) or 'nothing was removed', exc, ', '.join(left))
        return ', '.join(said) or 'nothing had been created'

    def _failure(self, exc, where, left, guest_keys, ours):
        """The error a failed spawn or import raises for exc (caught while making a VM, after its clean-up said
        `left`): errors.Unreachable when the vCenter did not answer, errors.DriverError for a fault or an error of
        kind `ours`; anything else is raised again as it is. A message that quoted the guest data sent is redacted
        and then not chained either: the fault holds the quote too."""
        if isinstance(exc, (errors.Unreachable,) + NETWORK_ERRORS):
            kind, message = errors.Unreachable, '%s: %s did not answer (%s); %s' % (where, self.endpoint, exc, left)
        elif isinstance(exc, (ours, vmodl.MethodFault)):
            text = fault_text(exc) if isinstance(exc, vmodl.MethodFault) else str(exc)
            kind, message = errors.DriverError, '%s: %s; %s' % (where, text, left)
        else:
            raise exc
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import extra_config  # pylint: disable=import-outside-toplevel
        redacted = extra_config.redact(message, guest_keys)
        failure = kind(redacted)
        failure.__cause__ = exc if redacted == message else None
        failure.__suppress_context__ = True
        return failure

    def _find_by_uuid(self, content, instance, name):
        """The VM with the instance uuid (as instance uuid, else as BIOS uuid) and name `name`, or None."""
        for by_instance_uuid in (True, False):
            found = content.searchIndex.FindByUuid(uuid=instance, vmSearch=True, instanceUuid=by_instance_uuid)
            if found is not None:
                answer = retrieve_objects(content.propertyCollector, [found], 'VirtualMachine', ('name',))
                if answer and vm_name(answer[0].props.get('name')) == name:
                    return found
        return None

    def destroy(self, uuid, node, destroy_disks=True):
        """Power off and delete the instance's VM with its disks (Destroy_Task); nothing to do when
        it is gone. A VM of the instance on another node than `node` is left alone (errors.DriverError).
        Without a managed VM, a half-made clone of the instance (its instance uuid, no marker yet) is
        destroyed: what a spawn cut off by the vCenter left, or the vCenter finished later.
        destroy_disks=False is refused: a vSphere VM goes with its disks, and the core, which never
        evacuates a cluster, has no stale copy to keep the disks of."""
        if not destroy_disks:
            raise errors.DriverError('instance %s on node %s: vSphere VMs are destroyed with their disks, they cannot be kept; '
                                     'nothing was destroyed' % (uuid, node))
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            return  # no VM can have it
        self.session.run(lambda content: self._destroy(content, instance, node), 'the destruction of instance %s' % instance)

    def _destroy(self, content, instance, node):
        located = self._locate(content, instance)
        if located is None:
            self._destroy_half_made(content, instance)
            return
        vm, state = located
        self._check_node(state, node, 'destroyed')
        try:
            power_off_and_destroy(content.propertyCollector, vm, time.monotonic() + self.work_timeout, 'instance %s' % instance)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not destroy instance %s (VM %s on %s, host %s): %s; the VM is left in place' % (
                self.vcenter.name, instance, state.name, state.node, state.host, exc)) from exc

    def _destroy_half_made(self, content, instance):
        """Destroy the half-made clone of an instance, if there is one: a VM that carries the instance uuid
        as its instance uuid (the clone spec sets it, vCenter keeps it unique) but not yet the marker that
        makes it the instance (the configuration a spawn applies after the clone never came: the vCenter
        stopped answering, or finished the clone after the spawn gave up). It is no managed VM, so no node
        owns it: wherever it is in this vCenter, it is the instance's and nobody else's."""
        found = content.searchIndex.FindByUuid(uuid=instance, vmSearch=True, instanceUuid=True)
        if found is None:
            return
        answer = retrieve_objects(content.propertyCollector, [found], 'VirtualMachine',
                                  ('name', 'config.annotation', 'summary.config.template'))
        props = answer[0].props if answer else None
        if props is None or props.get('summary.config.template') or parse_annotation(props.get('config.annotation'))[0] not in (None, instance):
            return  # gone meanwhile, a template, or another instance's VM: not this one's leftover
        try:
            power_off_and_destroy(content.propertyCollector, found, time.monotonic() + self.work_timeout,
                                  'the half-made VM of instance %s' % instance)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not destroy the half-made VM %s of instance %s: %s; it is left in place' % (
                self.vcenter.name, vm_name(props.get('name')), instance, exc)) from exc

    def set_power(self, uuid, node, action):
        """start, stop (PowerOff, hard), shutdown (ShutdownGuest, then PowerOff when the guest is
        not off after shutdown_timeout; straight PowerOff when vCenter refuses ShutdownGuest, as
        without VMware Tools), reboot (ResetVM; PowerOn when off). Nothing is done when the VM is
        in the state asked already. Returns the InstanceState after; errors.NotFound when the
        instance has no VM."""
        require(self.vcenter)
        if action not in POWER_ACTIONS:
            raise errors.DriverError('unknown power action %s for instance %s (expected %s); nothing was changed' % (
                action, uuid, ', '.join(POWER_ACTIONS)))
        instance = normal_uuid(uuid) or str(uuid)
        return self.session.run(lambda content: self._set_power(content, instance, node, action), '%s of instance %s' % (action, instance))

    def _set_power(self, content, instance, node, action):
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); nothing was changed' % (self.vcenter.name, instance, node))
        vm, state = located
        self._check_node(state, node, 'changed')
        deadline = time.monotonic() + self.work_timeout
        what = '%s of instance %s' % (action, instance)
        pc = content.propertyCollector
        try:
            power_action(pc, vm, state.power_state, action, deadline, self.shutdown_timeout, what)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not %s instance %s (VM %s on %s, host %s): %s; it is left %s' % (
                self.vcenter.name, action, instance, state.name, state.node, state.host, exc,
                power_state(read_power_state(pc, vm)))) from exc
        return self._describe(content, vm) or state

    def _locate(self, content, instance):
        """(VM reference, InstanceState) of the instance's managed VM, or None: searchIndex by
        instance uuid (spawn sets it), then by BIOS uuid, each checked for the marker."""
        for by_instance_uuid in (True, False):
            found = content.searchIndex.FindByUuid(uuid=instance, vmSearch=True, instanceUuid=by_instance_uuid)
            state = self._describe(content, found) if found is not None else None
            if state is not None and state.uuid == instance:
                return found, state
        return None

    def _describe(self, content, vm):
        """InstanceState of one VM (one RetrievePropertiesEx, describe_spec); None when it is gone,
        not managed, or not in a cluster."""
        try:
            records = retrieve_pages(content.propertyCollector, describe_spec(vm))
        except vmodl.fault.ManagedObjectNotFound:
            return None
        states = instance_states(self.vcenter, records, strict=False)
        return states[0] if states else None

    def _check_node(self, state, node, verb):
        if node and state.node != node:
            raise errors.DriverError('instance %s is on node %s (host %s), not on node %s; it was not %s' % (
                state.uuid, state.node, state.host, node, verb))

    # -- moves between hypervisor types (issue 19)

    def export_disks(self, uuid, node, dest_dir, progress=None):
        """The powered-off instance's VMDKs copied into dest_dir through the datastore file access (export.py), first
        disk first; a DiskFile each (format vmdk, the disk's capacity). A failed copy removes what it left."""
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            raise errors.NotFound('instance %r is not a UUID; nothing was exported' % (uuid,))
        located = self.session.run(lambda content: self._export_plan(content, instance, node), 'the export of instance %s' % instance)
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import export as disk_export  # pylint: disable=import-outside-toplevel
        datacenter, disks = located
        downloader = disk_export.Downloader(self.vcenter, self.session.http_cookie(), time.monotonic() + self.work_timeout, progress)
        prefix = '%s-' % instance
        try:
            return [DiskFile(downloader.fetch_disk(datacenter, file_name, dest_dir, '%s%d-' % (prefix, index)), 'vmdk', size)
                    for index, (file_name, size) in enumerate(disks)]
        except BaseException:
            disk_export.remove_partial(dest_dir, prefix)
            raise

    def _export_plan(self, content, instance, node):
        """(datacenter name, [(datastore path, capacity bytes)] of the VM's disks), checked: on node, powered off."""
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); nothing was exported' % (self.vcenter.name, instance, node))
        vm, state = located
        self._check_node(state, node, 'exported')
        if state.power_state != 'stopped':
            raise errors.DriverError('instance %s (VM %s) is %s: its disks are exported powered off; nothing was exported'
                                     % (instance, state.name, state.power_state))
        answer = retrieve_objects(content.propertyCollector, [vm], 'VirtualMachine', (DEVICES,))
        devices = answer[0].props.get(DEVICES) if answer else []
        disks = [(disk.backing.fileName, disk_bytes(disk)) for disk in disks_of(devices) if getattr(disk.backing, 'fileName', None)]
        if not disks:
            raise errors.DriverError('instance %s (VM %s) has no disk file to export; nothing was exported' % (instance, state.name))
        return node.split('/')[1], disks  # a vSphere node is vcenter/datacenter/cluster

    def retire_converted(self, uuid, node, keep=False):
        """The instance's old VM after a move to another type: destroyed with its disks, or (keep) powered off, renamed
        '<name>.moved-<8 hex of uuid>' and its annotation's marker removed, so that it is no instance any more (the way
        back: adopt it again). Idempotent: a VM already gone or no longer marked is left as it is."""
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            return
        self.session.run(lambda content: self._retire(content, instance, node, keep), 'the retirement of instance %s' % instance)

    def _retire(self, content, instance, node, keep):
        located = self._locate(content, instance)
        if located is None:
            return
        vm, state = located
        self._check_node(state, node, 'retired')
        pc, deadline = content.propertyCollector, time.monotonic() + self.work_timeout
        what = 'instance %s (VM %s)' % (instance, state.name)
        if not keep:
            power_off_and_destroy(pc, vm, deadline, what)
            return
        if read_power_state(pc, vm) not in (None, 'poweredOff'):
            power(pc, vm, 'PowerOffVM_Task', 'poweredOff', deadline, 'PowerOffVM_Task of %s' % what)
        answer = retrieve_objects(pc, [vm], 'VirtualMachine', ('config.annotation',))
        before = without_marker(answer[0].props.get('config.annotation') if answer else '')
        # A note in place of the marker: it says what the VM is, and an empty annotation would change nothing on vcsim.
        annotation = 'moved by multihv.cloud to another hypervisor type (was instance %s)' % instance + ('\n' + before if before else '')
        config = vim.vm.ConfigSpec(name='%s.moved-%s' % (state.name, instance.replace('-', '')[:8]), annotation=annotation)
        wait_task(pc, vm.ReconfigVM_Task(spec=config), deadline, 'ReconfigVM_Task (rename) of %s' % what)

    # -- snapshots to images (issue 17)

    def snapshot_instance(self, uuid, node, image, dest, quiesce=True):
        """Clone the instance's VM (running or stopped) beside it into a template VM named image, without its
        guest data, marked as that image's (snapshot.py); dest is unused. A vCenter quiesces a running VM's clone
        through VMware Tools by itself where it can: the driver does not claim it (quiesced False)."""
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            raise errors.NotFound('instance uuid %r is not a UUID; nothing was changed' % (uuid,))
        return self.session.run(lambda content: self._snapshot(content, instance, node, image),
                                'the capture of instance %s into image %s' % (instance, image))

    def _snapshot(self, content, instance, node, image):
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); image %s was not made' % (self.vcenter.name, instance, node, image))
        vm, state = located
        self._check_node(state, node, 'captured')
        moid = vsphere_snapshot.clone_to_template(content, vm, image, instance, time.monotonic() + self.work_timeout,
                                                  'vCenter %s' % self.vcenter.name)
        return SnapshotImage(template=image, moid=moid, quiesced=None if state.power_state != 'running' else False)

    def remove_image(self, name, check_mode=False):
        """Destroy the template VMs snapshot_instance made for image name (their annotation's marker says so);
        a template the cloud was given is never touched. True when there were (are) some."""
        require(self.vcenter)
        return self.session.run(lambda content: vsphere_snapshot.remove_templates(content, name, time.monotonic() + self.work_timeout,
                                                                                  check_mode),
                                'the removal of the templates of image %s' % name)

    def close(self):
        """Log out (frees the vCenter session now, not at its idle timeout) and drop the sockets."""
        self.session.close()

    # -- resize (issue 17): in place, on the VM's host (resizing.py)

    def resize(self, uuid, node, vcpus, memory_mb, disk_gb):
        """ReconfigVM_Task with vcpus, memory_mb and the first disk grown to disk_gb (powered off for it
        unless hot add allows it); nothing is kept: vSphere cannot shrink the disk back."""
        return self._reconfigure(uuid, node, vcpus, memory_mb, disk_gb, 'resize')

    def confirm_resize(self, uuid, node):
        """Nothing to drop: a vSphere resize keeps no copy."""
        return None

    def revert_resize(self, uuid, node, vcpus, memory_mb):
        """ReconfigVM_Task with the old vcpus and memory_mb; the disk keeps its new size (a virtual disk is never shrunk)."""
        return self._reconfigure(uuid, node, vcpus, memory_mb, None, 'revert of the resize')

    def _reconfigure(self, uuid, node, vcpus, memory_mb, disk_gb, doing):
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            raise errors.NotFound('instance uuid %r is not a UUID; nothing was changed' % (uuid,))
        return self.session.run(lambda content: self._reconfigure_in(content, instance, node, vcpus, memory_mb, disk_gb, doing),
                                'the %s of instance %s' % (doing, instance))

    def _reconfigure_in(self, content, instance, node, vcpus, memory_mb, disk_gb, doing):
        located = self._locate(content, instance)
        if located is None:
            raise errors.NotFound('vCenter %s has no instance %s (node %s); nothing was changed' % (self.vcenter.name, instance, node))
        vm, state = located
        self._check_node(state, node, 'resized')
        what = 'ReconfigVM_Task (%s) of instance %s' % (doing, instance)
        try:
            resizing.reconfigure(content, vm, state, vcpus, memory_mb, disk_gb, time.monotonic() + self.work_timeout, what)
        except errors.DriverError as exc:
            raise errors.DriverError('vCenter %s could not reconfigure instance %s (VM %s on host %s): %s; it keeps %d vCPUs and %d MB'
                                     % (self.vcenter.name, instance, state.name, state.host, exc, state.vcpus, state.memory_mb)) from exc
        return self._describe(content, vm) or state

    # -- adoption (issue 17 §3)

    def list_vms(self, node):
        """Every VM of cluster node `node` (templates excluded), the cloud's or not: one retrieval of the inventory
        (VM_PROPERTIES), one of the node's VMs' devices; a constant number of SOAP calls."""
        require(self.vcenter)
        if not self.serves(node):
            raise errors.NotFound('node %s is not a cluster of vCenter %s (vcenter/datacenter/cluster)' % (node, self.vcenter.name))
        return self.session.run(lambda content: self._list_vms(content, node), 'the VM listing of node %s' % node)

    def _list_vms(self, content, node):
        records = retrieve_inventory(content, vm_adoption.VM_PROPERTIES)
        refs = stub(content)
        wanted = [vim.VirtualMachine(moid, refs) for moid in vm_adoption.node_vms(self.vcenter, records, node)]
        answer = retrieve_objects(content.propertyCollector, wanted, 'VirtualMachine', (DEVICES,)) if wanted else []
        return vm_adoption.vm_details(self.vcenter, records, node, dict((r.moid, r.props.get(DEVICES) or []) for r in answer))

    def adopt(self, uuid, node, name, metadata):
        """Put the cloud's marker line (with its JSON) above the annotation of the VM whose BIOS uuid is uuid, on a
        host of cluster node `node` (ReconfigVM_Task with the annotation only); nothing else of the VM changes."""
        require(self.vcenter)
        instance = normal_uuid(uuid)
        if instance is None:
            raise errors.NotFound('VM uuid %r is not a UUID; nothing was adopted' % (uuid,))
        return self.session.run(lambda content: self._adopt(content, instance, node, name, metadata), 'the adoption of VM %s' % name)

    def _adopt(self, content, instance, node, name, metadata):
        vm = content.searchIndex.FindByUuid(uuid=instance, vmSearch=True, instanceUuid=False)
        if vm is None:
            raise errors.NotFound('vCenter %s has no VM with BIOS uuid %s; nothing was adopted' % (self.vcenter.name, instance))
        try:
            records = retrieve_pages(content.propertyCollector, describe_spec(vm))
        except vmodl.fault.ManagedObjectNotFound:
            raise errors.NotFound('VM %s (%s) was deleted while it was adopted' % (name, instance)) from None
        if vm_adoption.node_vms(self.vcenter, records, node) != [plain(vm)]:
            raise errors.DriverError('VM %s (%s) of vCenter %s is not on a host of node %s; it was left untouched' % (
                name, instance, self.vcenter.name, node))
        props = by_kind(records)['VirtualMachine'][plain(vm)]
        marked = parse_annotation(props.get('config.annotation'))[0]
        if marked is not None and marked != instance:
            raise errors.DriverError('VM %s (%s) carries the marker of instance %s; it was left untouched' % (name, instance, marked))
        if marked is None:
            annotation = vm_adoption.adopted_annotation(instance, name, node, metadata, props.get('config.annotation') or '')
            wait_task(content.propertyCollector, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(annotation=annotation)),
                      time.monotonic() + self.work_timeout, 'ReconfigVM_Task (annotation) of VM %s' % name)
        state = self._describe(content, vm)
        if state is None or state.uuid != instance:
            raise errors.DriverError('VM %s (%s) does not read back as instance %s after its annotation was written' % (name, instance, instance))
        return state

    # -- per-VM HA and DRS rules (issue 18 §3): node_rules.py

    def sync_node_rules(self, node, instances, groups, check_mode=False):
        """The instances' HA restart overrides and the groups' VM-VM rules on cluster node `node`: one retrieval, then one
        ReconfigureComputeResource_Task (modify=True) when something differs, read back."""
        require(self.vcenter)
        if not self.serves(node):
            raise errors.NotFound('node %s is not a cluster of vCenter %s (vcenter/datacenter/cluster)' % (node, self.vcenter.name))
        from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import node_rules  # pylint: disable=import-outside-toplevel
        return self.session.run(lambda content: node_rules.sync(content, self.vcenter, node, list(instances), list(groups), check_mode,
                                                                time.monotonic() + self.work_timeout),
                                'the HA overrides and DRS rules of node %s' % node)

    # -- ESXi host maintenance (issue 18 §2)

    def set_host_maintenance(self, node, host, enter):
        """EnterMaintenanceMode_Task (refused while a powered-on VM is on the host) or ExitMaintenanceMode_Task of host
        `host` of cluster node `node`, after one retrieval of the inventory (maintenance.py); False when it is in that
        state already."""
        require(self.vcenter)
        if not self.serves(node):
            raise errors.NotFound('node %s is not a cluster of vCenter %s (vcenter/datacenter/cluster)' % (node, self.vcenter.name))
        doing = 'entry into' if enter else 'exit from'
        return self.session.run(lambda content: self._set_host_maintenance(content, node, host, enter),
                                'the %s maintenance mode of host %s' % (doing, host))

    def _set_host_maintenance(self, content, node, host, enter):
        records = retrieve_inventory(content, host_maintenance.MAINTENANCE_PROPERTIES)
        moid, _props = host_maintenance.find_host(self.vcenter, records, node, host)
        return host_maintenance.set_maintenance(content, self.vcenter, records, node, host, enter, vim.HostSystem(moid, stub(content)),
                                                time.monotonic() + self.work_timeout)


__all__ = ['VSphereDriver']
