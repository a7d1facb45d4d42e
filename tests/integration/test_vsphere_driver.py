"""The vSphere driver against vcsim: the lab's simulator, and simulators of the test's own
(the lab's launcher binary on free ports) where a test injects faults or needs another
inventory size, so that it neither disturbs nor is disturbed by other users of the lab."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
import urllib.request

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import VCenter
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.inventory import NO_USABLE_HOST
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import properties, streamed
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.properties import PAGE_SIZE

MIB = 1024 ** 2
GIB = 1024 ** 3

# SOAP calls of one get_nodes, whatever the inventory size. A driver that has not
# connected yet: SmartConnect's RetrieveServiceContent and Login, the driver's own
# RetrieveServiceContent (kept for the session), then CreateContainerView,
# RetrievePropertiesEx and DestroyView; a connected driver: the last three only.
# A vCenter that pages adds one ContinueRetrievePropertiesEx per PAGE_SIZE objects
# beyond the first page; vcsim 0.24.2 always answers in one page.
FIRST_GET_NODES = {'RetrieveServiceContent': 2, 'Login': 1, 'CreateContainerView': 1, 'RetrievePropertiesEx': 1, 'DestroyView': 1}
LATER_GET_NODES = {'CreateContainerView': 1, 'RetrievePropertiesEx': 1, 'DestroyView': 1}
NODE_FIELDS = ('state', 'reason', 'vcpus', 'memory_mb', 'disk_gb', 'vcpus_used', 'memory_mb_used', 'disk_gb_free',
               'instances', 'largest_host_free_memory_mb', 'largest_host_free_vcpus', 'hosts')


def control(url, method, path):
    req = urllib.request.Request(url + path, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b'null')


class Simulator:
    """A vcsim of the test's own: the lab's launcher on free loopback ports."""

    def __init__(self, binary, workdir, clusters, hosts, vms):
        state = workdir / 'state.json'
        self.log = workdir / 'vcsim.log'
        with open(self.log, 'wb') as log:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped by stop()
                [str(binary), '-listen', '127.0.0.1:0', '-control', '127.0.0.1:0', '-clusters', str(clusters),
                 '-hosts', str(hosts), '-vms', str(vms), '-username', 'u', '-password', 'p', '-state-file', str(state)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not state.is_file():  # written atomically once it listens
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail('own vcsim did not start:\n' + self.log.read_text()[-2000:])
                time.sleep(0.05)
            self.state = json.loads(state.read_text())
        except BaseException:
            self.stop()
            raise
        self.vcenter = VCenter(name='own', hostname='127.0.0.1', port=self.state['port'], username='u', password='p',
                               validate_certs=False, timeout=10.0)

    def control(self, method, path):
        return control(self.state['control'], method, path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # the launcher removes its datastore files on SIGTERM
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def simulator(lab, tmp_path):
    """simulator(clusters, hosts, vms) starts a vcsim of the test's own, stopped after the test."""
    started = []

    def start(clusters=2, hosts=3, vms=12):
        workdir = tmp_path / ('vcsim%d' % len(started))
        workdir.mkdir()
        started.append(Simulator(lab.dir / 'vcsim' / 'vcsim', workdir, clusters, hosts, vms))
        return started[-1]

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def lab_vcenter(lab):
    return _config.load(str(lab.dir / 'multihv-cloud.yml')).vcenters[0]


@pytest.fixture
def driver(lab_vcenter):
    made = VSphereDriver(lab_vcenter)
    yield made
    made.close()


def connect(vcenter):
    return SmartConnect(host=vcenter.hostname, port=vcenter.port, user=vcenter.username, pwd=vcenter.password,
                        disableSslCertValidation=True)


@pytest.fixture
def lab_si(lab_vcenter):
    si = connect(lab_vcenter)
    yield si
    Disconnect(si)


def _clusters(folder):
    for child in folder.childEntity:
        if isinstance(child, vim.ClusterComputeResource):
            yield child
        elif isinstance(child, vim.Folder):
            yield from _clusters(child)


def independent_view(si, vcenter_name):
    """What each node should say, read the slow, independent way: object by object through
    the inventory tree, attribute by attribute (config.hardware rather than summary.config).
    {node name: {field: value}}, plus the names of every VM under '_vm_names'."""
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    vms = []
    try:
        for vm in view.view:
            try:
                # The cloud's mark, read here by its first line alone: 'multihv.cloud instance <the VM's own BIOS uuid>'.
                marked = (vm.config.annotation or '').split('\n', 1)[0].strip() == 'multihv.cloud instance %s' % vm.config.uuid.lower()
                vms.append((vm.name, vm.runtime.host, vm.runtime.powerState, vm.config.hardware.numCPU, vm.config.hardware.memoryMB,
                            vm.config.template, marked))
            except vmodl.fault.ManagedObjectNotFound:
                # vcsim 0.24.2 keeps a relocated VM in its old host's and pool's lists, so a container
                # view still names it once it is destroyed: no VM, nothing to count.
                continue
    finally:
        view.Destroy()
    by_host = {}
    for name, host, power, cpus, memory, template, marked in vms:
        if host is not None and not template:
            by_host.setdefault(host._moId, []).append((power, cpus, memory, marked))  # pylint: disable=protected-access
    result = {'_vm_names': sorted(v[0] for v in vms)}
    for dc in content.rootFolder.childEntity:
        if not isinstance(dc, vim.Datacenter):
            continue
        for cluster in _clusters(dc.hostFolder):
            hosts = []
            for host in cluster.host:
                mine = by_host.get(host._moId, [])  # pylint: disable=protected-access
                on = [v for v in mine if v[0] == 'poweredOn']
                memory_mb = host.summary.hardware.memorySize // MIB
                used = sum(v[2] for v in on)
                entry = {
                    'name': host.name, 'connection_state': host.runtime.connectionState,
                    'in_maintenance': host.runtime.inMaintenanceMode, 'vcpus': host.summary.hardware.numCpuThreads,
                    'memory_mb': memory_mb, 'vcpus_used': sum(v[1] for v in on), 'memory_mb_used': used,
                    'memory_mb_free': max(memory_mb - max(host.summary.quickStats.overallMemoryUsage or 0, used), 0),
                    'instances': len(mine),
                    'unmanaged_vms': len([v for v in mine if not v[3]]),
                    'unmanaged_vcpus_used': sum(v[1] for v in on if not v[3]),
                    'unmanaged_memory_mb_used': sum(v[2] for v in on if not v[3]),
                }
                entry['usable'] = entry['connection_state'] == 'connected' and not entry['in_maintenance']
                hosts.append(entry)
            usable = [h for h in hosts if h['usable']]
            stores = dict((ds._moId, ds.summary) for ds in cluster.datastore)  # pylint: disable=protected-access
            result['%s/%s/%s' % (vcenter_name, dc.name, cluster.name)] = {
                'state': 'up', 'reason': None if usable else NO_USABLE_HOST,
                'vcpus': sum(h['vcpus'] for h in usable), 'memory_mb': sum(h['memory_mb'] for h in usable),
                'disk_gb': sum(s.capacity for s in stores.values()) // GIB,
                'vcpus_used': sum(h['vcpus_used'] for h in hosts), 'memory_mb_used': sum(h['memory_mb_used'] for h in hosts),
                'disk_gb_free': sum(s.freeSpace for s in stores.values()) // GIB,
                'instances': sum(h['instances'] for h in hosts),
                'largest_host_free_memory_mb': max([h['memory_mb_free'] for h in usable] or [0]),
                'largest_host_free_vcpus': max([max(h['vcpus'] - h['vcpus_used'], 0) for h in usable] or [0]),
                'hosts': sorted(hosts, key=lambda h: h['name']),
            }
    return result


def as_view(nodes):
    return dict((n.name, dict((k, v) for k, v in n.as_dict().items() if k in NODE_FIELDS)) for n in nodes)


def settled(si, driver, vcenter_name):
    """(independent view, driver's nodes) taken while the lab did not change: another user
    of the lab may be creating or moving VMs at the same time."""
    for _attempt in range(5):
        before = independent_view(si, vcenter_name)
        nodes = driver.get_nodes()
        if independent_view(si, vcenter_name) == before:
            return before, nodes
        time.sleep(0.5)
    pytest.fail('the lab kept changing while it was read')
    return None  # pragma: no cover


def soap_calls(control_url, call):
    """{method: count} of the SOAP calls made during call()."""
    control(control_url, 'POST', '/stats/reset')
    call()
    return control(control_url, 'GET', '/stats')['by_method']


# ------------------------------------------------------------------ the lab's vcsim

def test_nodes_match_the_lab_topology(lab, driver, lab_si):
    want = lab.info['vcsim']
    expected, nodes = settled(lab_si, driver, 'vcsim')
    clusters = ['DC%d_C%d' % (d, c) for d in range(want['datacenters']) for c in range(want['clusters'])]
    assert [n.name for n in nodes] == ['vcsim/%s/%s' % (c.split('_')[0], c) for c in clusters]
    for node in nodes:
        cluster = node.name.rsplit('/', 1)[1]
        assert [h.name for h in node.hosts] == ['%s_H%d' % (cluster, i) for i in range(want['hosts_per_cluster'])]
        assert node.state == 'up'
        assert node.extra['vcenter'] == 'vcsim' and node.extra['cluster'] == cluster
        assert node.extra['moid'].startswith('clustercomputeresource-')
        assert [d['name'] for d in node.extra['datastores']] == ['LocalDS_0']
    # The launcher's VMs (HOST_VMn); other users of the lab may have added their own.
    assert len([v for v in expected['_vm_names'] if re.match(r'^DC\d+_C\d+_H\d+_VM\d+$', v)]) == want['vms']
    assert sum(n.instances for n in nodes) == sum(v['instances'] for k, v in expected.items() if k != '_vm_names')


def test_resources_match_an_independent_retrieval(driver, lab_si):
    expected, nodes = settled(lab_si, driver, 'vcsim')
    del expected['_vm_names']
    assert as_view(nodes) == expected
    assert all(n.vcpus > 0 and n.memory_mb > 0 and n.disk_gb > 0 for n in nodes)


def independent_datastores(si, vcenter_name):
    """{node name: its datastores as compute_node_info shows them}, read object by object:
    the cluster's datastore list and each of its hosts' own."""
    content = si.RetrieveContent()
    result = {}
    for dc in content.rootFolder.childEntity:
        if not isinstance(dc, vim.Datacenter):
            continue
        for cluster in _clusters(dc.hostFolder):
            mounts = {}
            for host in cluster.host:
                for ds in host.datastore:
                    mounts.setdefault(ds._moId, set()).add(host.name)  # pylint: disable=protected-access
            result['%s/%s/%s' % (vcenter_name, dc.name, cluster.name)] = sorted((
                {'name': ds.summary.name, 'capacity_gb': ds.summary.capacity // GIB, 'free_gb': ds.summary.freeSpace // GIB,
                 'accessible': bool(ds.summary.accessible), 'hosts': sorted(mounts.get(ds._moId, ()))}  # pylint: disable=protected-access
                for ds in cluster.datastore), key=lambda d: d['name'])
    return result


def test_datastores_match_an_independent_retrieval(lab, driver, lab_si):
    """Each cluster node's datastores, with the hosts that mount them, from get_nodes' one retrieval."""
    for _attempt in range(5):  # others' clones change the free space meanwhile
        before = independent_datastores(lab_si, 'vcsim')
        nodes = dict((n.name, n.extra['datastores']) for n in driver.get_nodes())
        if independent_datastores(lab_si, 'vcsim') == before:
            break
        time.sleep(0.5)
    assert nodes == before
    hosts = lab.info['vcsim']['hosts_per_cluster']
    for name, datastores in nodes.items():
        cluster = name.rsplit('/', 1)[1]
        # The lab's launcher gives every host of every cluster the one datastore LocalDS_0.
        assert [(d['name'], d['accessible'], d['hosts']) for d in datastores] == [
            ('LocalDS_0', True, ['%s_H%d' % (cluster, i) for i in range(hosts)])]
        assert datastores[0]['capacity_gb'] >= datastores[0]['free_gb'] > 0


def test_soap_calls_of_get_nodes_on_the_lab(lab, lab_vcenter):
    """6 calls for a first get_nodes (3 of them the login), 3 for each later one. Others
    may use the lab at the same time and only ever add calls: the fewest seen counts."""
    url = lab.info['vcsim']['control_url']
    seen = []
    for _attempt in range(5):
        made = VSphereDriver(lab_vcenter)
        try:
            seen.append((soap_calls(url, made.get_nodes), soap_calls(url, made.get_nodes)))
        finally:
            made.close()
        if seen[-1] == (FIRST_GET_NODES, LATER_GET_NODES):
            break
    assert seen[-1] == (FIRST_GET_NODES, LATER_GET_NODES), seen


def test_wrong_password_is_authentication_failed(lab_vcenter):
    made = VSphereDriver(dataclasses.replace(lab_vcenter, password='not-the-password'))
    with pytest.raises(errors.AuthenticationFailed) as caught:
        made.get_nodes()
    message = str(caught.value)
    assert message == 'vCenter vcsim at 127.0.0.1:%d refused the credentials of user %s' % (lab_vcenter.port, lab_vcenter.username)
    assert 'not-the-password' not in message and lab_vcenter.password not in message
    made.close()


def test_unreachable_port_is_unreachable_fast(lab_vcenter):
    made = VSphereDriver(dataclasses.replace(lab_vcenter, port=1))
    started = time.monotonic()
    with pytest.raises(errors.Unreachable, match=r'^vCenter vcsim at 127\.0\.0\.1:1 did not answer: '):
        made.get_nodes()
    assert time.monotonic() - started < 3
    made.close()


def test_unknown_host_name_is_unreachable(lab_vcenter):
    made = VSphereDriver(dataclasses.replace(lab_vcenter, hostname='vcenter.invalid', timeout=10.0))
    with pytest.raises(errors.Unreachable, match=r'^vCenter vcsim at vcenter\.invalid:\d+ did not answer'):
        made.get_nodes()


def test_certificate_that_does_not_verify_is_refused_not_unreachable(lab_vcenter):
    made = VSphereDriver(dataclasses.replace(lab_vcenter, validate_certs=True))
    with pytest.raises(errors.DriverError, match='presented a certificate that does not verify') as caught:
        made.get_nodes()
    assert not isinstance(caught.value, errors.Unreachable)


def test_cluster_filter(lab_vcenter):
    every = [n.name for n in VSphereDriver(lab_vcenter).get_nodes()]
    assert len(every) >= 2
    first_dc, first_cluster = every[0].split('/')[1:]
    last_cluster = every[-1].split('/')[2]

    by_name = VSphereDriver(dataclasses.replace(lab_vcenter, clusters=[last_cluster]))
    assert by_name.node_names() == []  # a bare cluster name does not say its datacenter
    assert [n.name for n in by_name.get_nodes()] == [every[-1]]

    qualified = VSphereDriver(dataclasses.replace(lab_vcenter, clusters=['%s/%s' % (first_dc, first_cluster)]))
    assert qualified.node_names() == [every[0]]
    assert [n.name for n in qualified.get_nodes()] == [every[0]]

    unknown = VSphereDriver(dataclasses.replace(lab_vcenter, clusters=[first_cluster, 'no-such-cluster']))
    with pytest.raises(errors.NotFound) as caught:
        unknown.get_nodes()
    assert str(caught.value) == 'vCenter vcsim has no cluster no-such-cluster (clusters filter of the cloud file); it has %s' % (
        ', '.join(n.split('/', 1)[1] for n in every))
    for made in (by_name, qualified, unknown):
        made.close()


# ------------------------------------------------------------------ simulators of our own

def test_failed_host_leaves_the_node_capacity(simulator):
    sim = simulator()
    si = connect(sim.vcenter)
    made = VSphereDriver(sim.vcenter)
    try:
        # Free H0 of cluster C0 (power its VMs off) so that it is the host with the most free vCPUs.
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        for vm in view.view:
            if vm.runtime.host.name == 'DC0_C0_H0':
                WaitForTask(vm.PowerOffVM_Task())
        view.Destroy()

        before = dict((n.name, n) for n in made.get_nodes())['own/DC0/DC0_C0']
        h0 = before.hosts[0]
        assert (h0.name, h0.usable, h0.vcpus_used, h0.instances) == ('DC0_C0_H0', True, 0, 2)
        assert before.largest_host_free_vcpus == h0.vcpus > 0

        try:
            sim.control('POST', '/hosts/DC0_C0_H0/fail')
            expected, nodes = settled(si, made, 'own')
            after = dict((n.name, n) for n in nodes)['own/DC0/DC0_C0']
            assert (after.hosts[0].connection_state, after.hosts[0].usable) == ('notResponding', False)
            assert after.vcpus == before.vcpus - h0.vcpus
            assert after.memory_mb == before.memory_mb - h0.memory_mb
            assert after.largest_host_free_vcpus == 0  # the only host with free vCPUs is gone
            assert after.instances == before.instances  # its VMs are still there (HA's business)
            assert (after.state, after.reason) == ('up', None)
            del expected['_vm_names']
            assert as_view(nodes) == expected

            for name in ('DC0_C0_H1', 'DC0_C0_H2'):
                sim.control('POST', '/hosts/%s/fail' % name)
            dead = dict((n.name, n) for n in made.get_nodes())['own/DC0/DC0_C0']
            assert (dead.state, dead.reason) == ('up', NO_USABLE_HOST)
            assert (dead.vcpus, dead.memory_mb, dead.largest_host_free_memory_mb, dead.largest_host_free_vcpus) == (0, 0, 0, 0)
            assert dead.disk_gb == before.disk_gb
        finally:
            for name in ('DC0_C0_H0', 'DC0_C0_H1', 'DC0_C0_H2'):
                sim.control('POST', '/hosts/%s/restore' % name)
        restored = dict((n.name, n) for n in made.get_nodes())['own/DC0/DC0_C0']
        assert as_view([restored]) == as_view([before])
    finally:
        made.close()
        Disconnect(si)


def test_host_in_maintenance_is_not_usable(simulator):
    sim = simulator(clusters=1, hosts=2, vms=0)
    si = connect(sim.vcenter)
    made = VSphereDriver(sim.vcenter)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
        host = sorted(view.view, key=lambda h: h.name)[0]
        view.Destroy()
        WaitForTask(host.EnterMaintenanceMode_Task(timeout=0))
        (node,) = made.get_nodes()
        assert [(h.name, h.connection_state, h.in_maintenance, h.usable) for h in node.hosts] == [
            ('DC0_C0_H0', 'connected', True, False), ('DC0_C0_H1', 'connected', False, True)]
        assert node.vcpus == node.hosts[1].vcpus
    finally:
        made.close()
        Disconnect(si)


def test_soap_calls_do_not_grow_with_the_inventory(simulator):
    """The same calls for 2 clusters x 3 hosts x 12 VMs as for 4 x 5 x 400. Both inventories
    fit in one page of PAGE_SIZE objects, so even a vCenter that honours maxObjects
    (vcsim does not) would page them alike."""
    counts = {}
    for size in ((2, 3, 12), (4, 5, 400)):
        sim = simulator(*size)
        made = VSphereDriver(sim.vcenter)
        try:
            first = soap_calls(sim.state['control'], made.get_nodes)
            nodes = []
            later = soap_calls(sim.state['control'], lambda: nodes.extend(made.get_nodes()))  # pylint: disable=cell-var-from-loop
        finally:
            made.close()
        clusters, hosts, vms = size
        assert len(nodes) == clusters and sum(len(n.hosts) for n in nodes) == clusters * hosts
        assert sum(n.instances for n in nodes) == vms
        # datacenter, its 4 folders, clusters, hosts, VMs and the datastore: all in one page
        assert 1 + 4 + clusters + clusters * hosts + vms + 1 < PAGE_SIZE
        counts[size] = (first, later)
    assert list(counts.values()) == [(FIRST_GET_NODES, LATER_GET_NODES)] * 2


def test_close_logs_out(simulator):
    sim = simulator(clusters=1, hosts=1, vms=1)
    made = VSphereDriver(sim.vcenter)
    made.get_nodes()
    assert soap_calls(sim.state['control'], made.close) == {'Logout': 1}
    assert soap_calls(sim.state['control'], made.close) == {}  # closing twice is harmless


def test_expired_session_is_opened_again(simulator):
    sim = simulator(clusters=1, hosts=1, vms=1)
    made = VSphereDriver(sim.vcenter)
    try:
        made.get_nodes()
        made.session._content.sessionManager.Logout()  # pylint: disable=protected-access  # as vCenter's idle timeout would
        (node,) = made.get_nodes()
        assert node.instances == 1
    finally:
        made.close()


def test_slow_vcenter_is_unreachable_after_the_timeout(simulator):
    sim = simulator(clusters=1, hosts=1, vms=1)
    vcenter = dataclasses.replace(sim.vcenter, timeout=1.0)
    connected = VSphereDriver(vcenter)
    connected.get_nodes()
    sim.control('PUT', '/delay?ms=3000')
    try:
        started = time.monotonic()
        with pytest.raises(errors.Unreachable, match=r'^vCenter own at 127\.0\.0\.1:\d+ did not answer'):
            VSphereDriver(vcenter).get_nodes()  # while logging in
        with pytest.raises(errors.Unreachable, match=r'did not answer: no reply within 1\.0 s$'):
            connected.get_nodes()  # on a session already open
        assert time.monotonic() - started < 5
    finally:
        sim.control('PUT', '/delay?ms=0')
    (node,) = connected.get_nodes()  # reconnects once vCenter answers again
    assert node.instances == 1
    connected.close()


def records_view(records):
    """Records as comparable data: enums (pyVmomi's str subclasses) as str, longs and shorts as int."""
    def plain_value(value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return int(value)
        if isinstance(value, list):
            return [plain_value(v) for v in value]
        return str(value) if isinstance(value, str) else value
    return sorted((r.kind, r.moid, sorted((k, plain_value(v)) for k, v in r.props.items())) for r in records)


def test_streamed_retrieval_gives_the_records_of_pyvmomis(driver):
    """get_nodes reads its inventory as it arrives (streamed.py, issue 20): the Records of pyVmomi's own retrieval of
    the same paths, value for value, with Python's types (references as ids, numbers as int, flags as bool)."""
    session = driver.session
    for _attempt in range(5):  # others' clones change the lab meanwhile
        mine = session.run(lambda content: streamed.retrieve_inventory(session, content))
        theirs = session.run(properties.retrieve_inventory)
        if records_view(mine) == records_view(theirs):
            break
        time.sleep(0.5)
    assert records_view(mine) == records_view(theirs)
    assert {'Datacenter', 'ClusterComputeResource', 'HostSystem', 'VirtualMachine', 'Datastore'} <= set(r.kind for r in mine)
    host = next(r.props for r in mine if r.kind == 'HostSystem')
    # Python's own types, not pyVmomi's subclasses (long, short, enums)
    assert (type(host['summary.hardware.memorySize']), type(host['runtime.inMaintenanceMode'])) == (int, bool)
    assert host['runtime.connectionState'] == 'connected' and isinstance(host['datastore'], list)
