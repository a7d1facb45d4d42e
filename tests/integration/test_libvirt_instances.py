"""The KVM driver's images and instances against the lab's libvirt hosts.

kvm1 and kvm2 each see their own local directory at the instance path and one
shared directory at the shared instance path; this machine reaches a host's local
files through its local_dir (lab.json).
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import pathlib
import shutil
import uuid
import xml.etree.ElementTree as ET

import pycdlib
import pytest
import yaml

from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import domain_xml as domxml
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec, MigrationControls, MigrationTarget
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt import storage
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
from support import guest
from support.driver_contract import with_guest
from support.lab import qemu_running, serial, wait_for

# The admin password the tests' guest data carries: it must reach the drive and no message.
SECRET = 'Lab-Secret-0427'


@pytest.fixture
def drivers(lab):
    made = {h.name: LibvirtDriver(h) for h in _config.load(str(lab.dir / 'multihv-cloud.yml'), env={}).kvm_hosts}
    yield made
    for driver in made.values():
        driver.close()


@pytest.fixture
def cloud(drivers):
    """Images and instances one test makes, all removed after it (instances first)."""
    made = Made(drivers)
    yield made
    made.cleanup()


class Made:
    def __init__(self, drivers):
        self.drivers = drivers
        self.images, self.instances = [], []

    def image(self):
        name = 'test-tick-%s' % uuid.uuid4().hex[:8]
        self.images.append(name)
        return name

    def spec(self, node, image, storage='local', **overrides):
        inst_uuid = str(uuid.uuid4())
        self.instances.append((node, inst_uuid))
        values = dict(uuid=inst_uuid, name='test-%s' % inst_uuid[:8], node=node, vcpus=1, memory_mb=32, disk_gb=1, image=image,
                      storage=storage, hostname='h-%s' % inst_uuid[:8], metadata={'test': 'libvirt <&> instances'})
        values.update(overrides)
        return InstanceSpec(**values)

    def cleanup(self):
        for node, inst_uuid in self.instances:
            self.drivers[node].destroy(inst_uuid, node)
        for name in self.images:
            for driver in self.drivers.values():
                driver.remove_image(name)


def here(lab, host, path):
    """A host-side path as this machine sees it."""
    local = lab.info['local_instance_path']
    if path.startswith(local + '/'):
        return pathlib.Path(lab.hosts[host]['local_dir']) / path[len(local) + 1:]
    return pathlib.Path(path)


def base_files(lab, host, name, fmt='qcow2'):
    """The image's base and checksum in the host's local _base and in the shared _base."""
    local = pathlib.Path(lab.hosts[host]['local_dir']) / '_base' / ('%s.%s' % (name, fmt))
    shared = pathlib.Path(lab.info['shared_instance_path']) / '_base' / ('%s.%s' % (name, fmt))
    return local, shared


def domain_names(lab, host):
    conn = lab.connect(host)
    try:
        return {d.name() for d in conn.listAllDomains(0)}
    finally:
        conn.close()


def read_drive(lab, host, path):
    """The config drive at path on host, downloaded through libvirt's storage stream and read with
    pycdlib: (volume label, {file name: text})."""
    conn = lab.connect(host)
    try:
        vol = conn.storageVolLookupByPath(path)
        data = storage.download(conn, vol, limit=vol.info()[1])
    finally:
        conn.close()
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        files = {}
        for name in ('meta-data', 'user-data', 'network-config'):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path='/' + name)
            files[name] = out.getvalue().decode()
        return iso.pvd.volume_identifier.decode().strip(), files
    finally:
        iso.close()


def live_cdroms(lab, host, inst_uuid):
    """[(path, read-only?)] of the CD-ROMs of the instance's domain as the host runs it."""
    conn = lab.connect(host)
    try:
        root = ET.fromstring(conn.lookupByUUIDString(inst_uuid).XMLDesc(0))
    finally:
        conn.close()
    return [(d.find('source').get('file'), d.find('readonly') is not None) for d in root.findall('devices/disk[@device="cdrom"]')]


def wait_ticks(log, boots, ticks=2, timeout=30):
    """Wait until the console log shows `boots` boots, the last with `ticks` ticks."""
    wait_for(lambda: len(serial(log)) >= boots and len(serial(log)[-1].ticks) >= ticks, timeout,
             '%d boot(s) and %d ticks in %s' % (boots, ticks, log))
    return serial(log)


def test_ensure_image_uploads_to_each_base_once(lab, drivers, cloud):
    source = pathlib.Path(lab.info['images']['tick_qcow2'])
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    name = cloud.image()
    kvm1, kvm2 = drivers['kvm1'], drivers['kvm2']

    assert kvm1.ensure_image(name, str(source), 'qcow2', check_mode=True) is True
    assert not base_files(lab, 'kvm1', name)[0].exists()
    assert kvm1.ensure_image(name, str(source), 'qcow2') is True
    for path in base_files(lab, 'kvm1', name):
        assert path.read_bytes() == source.read_bytes()
        assert path.with_name(path.name + '.sha256').read_text() == '%s  %s.qcow2\n' % (digest, name)
    assert kvm1.image_path(name, 'qcow2', 'shared') == str(base_files(lab, 'kvm1', name)[1])
    assert kvm1.image_path(name, 'qcow2') == '%s/_base/%s.qcow2' % (lab.info['local_instance_path'], name)

    assert kvm1.ensure_image(name, str(source), 'qcow2') is False
    assert kvm1.ensure_image(name, str(source), 'qcow2', check_mode=True) is False
    # kvm2 finds the shared base kvm1 placed, but still lacks its own local one.
    assert kvm2.ensure_image(name, str(source), 'qcow2') is True
    assert base_files(lab, 'kvm2', name)[0].read_bytes() == source.read_bytes()
    assert kvm2.ensure_image(name, str(source), 'qcow2') is False


def test_concurrent_ensure_image_uploads_each_base_once(lab, drivers, cloud):
    """boot_many places an image from several threads at once, on both hosts, whose
    shared _base is one directory: no thread may delete another's upload."""
    source = lab.info['images']['tick_qcow2']
    name = cloud.image()
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda d: d.ensure_image(name, source, 'qcow2'), [drivers['kvm1'], drivers['kvm2']] * 3))
    assert 1 <= results.count(True) <= 3  # kvm1 local, kvm2 local, shared: each uploaded by one thread
    data = pathlib.Path(source).read_bytes()
    assert [p.read_bytes() == data for p in base_files(lab, 'kvm1', name) + base_files(lab, 'kvm2', name)] == [True] * 4
    assert not drivers['kvm1'].ensure_image(name, source, 'qcow2') and not drivers['kvm2'].ensure_image(name, source, 'qcow2')


def test_ensure_image_refuses_what_it_cannot_place(lab, drivers, tmp_path):
    kvm1 = drivers['kvm1']
    with pytest.raises(errors.DriverError, match='is not a qcow2 file; nothing was uploaded'):
        kvm1.ensure_image('test-bad', lab.info['images']['tick_raw'], 'qcow2')
    with pytest.raises(errors.DriverError, match='is a qcow2 file, not raw'):
        kvm1.ensure_image('test-bad', lab.info['images']['tick_qcow2'], 'raw')
    with pytest.raises(errors.DriverError, match='cannot read'):
        kvm1.ensure_image('test-bad', str(tmp_path / 'missing.qcow2'), 'qcow2')
    with pytest.raises(errors.DriverError, match='must be letters'):
        kvm1.ensure_image('../escape', lab.info['images']['tick_qcow2'], 'qcow2')
    assert not (pathlib.Path(lab.hosts['kvm1']['local_dir']) / '_base' / 'test-bad.qcow2').exists()


def test_changed_image_is_replaced_unless_instances_use_it(lab, drivers, cloud, tmp_path):
    kvm1 = drivers['kvm1']
    name = cloud.image()
    source = tmp_path / 'tick.raw'
    shutil.copy(lab.info['images']['tick_raw'], source)
    local, shared = base_files(lab, 'kvm1', name, 'raw')
    assert kvm1.ensure_image(name, str(source), 'raw') is True
    with source.open('ab') as handle:
        handle.write(b'\0' * 512)  # same image, one more sector: other size, other checksum
    assert kvm1.ensure_image(name, str(source), 'raw') is True
    assert local.read_bytes() == shared.read_bytes() == source.read_bytes()

    spec = cloud.spec('kvm1', name)
    kvm1.spawn(spec)
    with source.open('r+b') as handle:
        handle.write(b'\x90')  # same size, other checksum
    with pytest.raises(errors.DriverError, match=r'is the base of the disks of instances %s; it was left untouched' % spec.uuid):
        kvm1.ensure_image(name, str(source), 'raw')
    assert local.read_bytes()[:1] != b'\x90'
    with pytest.raises(errors.DriverError, match=spec.uuid):
        kvm1.remove_image(name)
    kvm1.destroy(spec.uuid, 'kvm1')
    assert kvm1.remove_image(name) is True
    assert not local.exists() and not shared.exists() and not local.with_name(local.name + '.sha256').exists()


def test_instances_local_and_shared_live_and_die(lab, drivers, cloud, guests):
    kvm1, kvm2 = drivers['kvm1'], drivers['kvm2']
    image = cloud.image()
    kvm1.ensure_image(image, lab.info['images']['tick_qcow2'], 'qcow2')
    foreign, _log = guests.start('kvm1', storage='local')

    local = with_guest(cloud.spec('kvm1', image, 'local', networks=[]), SECRET)
    shared = with_guest(cloud.spec('kvm2', image, 'shared'), SECRET)  # from the shared base kvm1 placed
    state = kvm1.spawn(local)
    assert (state.uuid, state.name, state.node, state.host, state.power_state) == (local.uuid, local.name, 'kvm1', 'kvm1', 'running')
    assert (state.vcpus, state.memory_mb, state.macs) == (1, 32, [])
    assert state.disk_paths == ['%s/%s.qcow2' % (lab.info['local_instance_path'], local.uuid)]
    assert kvm2.spawn(shared).disk_paths == ['%s/%s.qcow2' % (lab.info['shared_instance_path'], shared.uuid)]

    local_log = here(lab, 'kvm1', '%s/%s.console.log' % (lab.info['local_instance_path'], local.uuid))
    shared_log = pathlib.Path(lab.info['shared_instance_path']) / ('%s.console.log' % shared.uuid)
    assert wait_ticks(local_log, 1)[0].persisted is None
    wait_ticks(shared_log, 1)

    listed = {s.uuid: s for s in kvm1.list_instances()}
    assert listed[local.uuid].power_state == 'running' and shared.uuid not in listed
    assert foreign in domain_names(lab, 'kvm1') and foreign not in {s.name for s in listed.values()}
    assert {s.uuid: s.power_state for s in kvm2.list_instances()}.get(shared.uuid) == 'running'

    # The config drive: a cidata ISO beside the disk, the CD-ROM of the running domain, readable by its owner only.
    for host, spec, directory in (('kvm1', local, lab.info['local_instance_path']), ('kvm2', shared, lab.info['shared_instance_path'])):
        drive = '%s/%s.config.iso' % (directory, spec.uuid)
        assert here(lab, host, drive).stat().st_mode & 0o777 == 0o600
        assert live_cdroms(lab, host, spec.uuid) == [(drive, True)]
        label, files = read_drive(lab, host, drive)
        assert label == 'cidata'
        meta, network = yaml.safe_load(files['meta-data']), yaml.safe_load(files['network-config'])
        assert (meta['instance-id'], meta['local-hostname'], meta['public-keys']) == (spec.uuid, spec.hostname, list(spec.guest.public_keys))
        assert network['version'] == 2 and [(n['match']['macaddress'], n['addresses']) for n in network['ethernets'].values()] == [
            ('52:54:00:00:00:01', ['192.0.2.10/24'])]
        assert SECRET in files['user-data'] and 'runcmd' in files['user-data']

    # The tick guest runs no QEMU guest agent: said so, without the password.
    with pytest.raises(errors.DriverError, match=r'cannot set the password of root in instance %s on KVM host kvm1 .*: its QEMU guest '
                                                 r'agent does not answer .*not connected.*; nothing was changed' % local.uuid) as raised:
        kvm1.set_admin_password(local.uuid, 'kvm1', 'root', SECRET)
    assert SECRET not in str(raised.value)

    conn = lab.connect('kvm1')
    try:
        managed = domxml.parse_domain(conn.lookupByUUIDString(local.uuid).XMLDesc(0)).managed
        foreign_uuid = conn.lookupByName(foreign).UUIDString()
    finally:
        conn.close()
    assert managed['metadata'] == local.metadata and (managed['hostname'], managed['image']) == (local.hostname, image)
    with pytest.raises(errors.DriverError, match='was not created by multihv.*left untouched'):
        kvm1.destroy(foreign_uuid, 'kvm1')
    with pytest.raises(errors.DriverError, match='was not created by multihv'):
        kvm1.set_power(foreign_uuid, 'kvm1', 'stop')
    assert qemu_running(foreign)

    assert kvm1.set_power(local.uuid, 'kvm1', 'stop').power_state == 'stopped'
    assert not qemu_running(local.name)
    assert kvm1.set_power(local.uuid, 'kvm1', 'stop').power_state == 'stopped'
    assert kvm1.set_power(local.uuid, 'kvm1', 'start').power_state == 'running'
    assert kvm1.set_power(local.uuid, 'kvm1', 'start').power_state == 'running'
    assert kvm2.set_power(shared.uuid, 'kvm2', 'reboot').power_state == 'running'
    assert [b.number for b in wait_ticks(local_log, 2)] == [1, 2]  # one log, appended to
    assert [b.number for b in wait_ticks(shared_log, 2)] == [1, 2]

    for driver, spec, log in ((kvm1, local, local_log), (kvm2, shared, shared_log)):
        disk, drive = log.with_name('%s.qcow2' % spec.uuid), log.with_name('%s.config.iso' % spec.uuid)
        assert disk.exists() and drive.exists()
        driver.destroy(spec.uuid, spec.node)
        assert spec.name not in domain_names(lab, spec.node) and not qemu_running(spec.name)
        assert not disk.exists() and not log.exists() and not drive.exists()
        assert spec.uuid not in {s.uuid for s in driver.list_instances()}
        driver.destroy(spec.uuid, spec.node)  # gone already: nothing to do, no error
        with pytest.raises(errors.NotFound, match='not defined on KVM host %s' % spec.node):
            driver.set_power(spec.uuid, spec.node, 'start')
    assert foreign in domain_names(lab, 'kvm1')


def test_failed_spawn_leaves_no_domain_and_no_files(lab, drivers, cloud):
    kvm1 = drivers['kvm1']
    local_dir = pathlib.Path(lab.hosts['kvm1']['local_dir'])
    before = set(local_dir.iterdir())

    missing = cloud.spec('kvm1', 'test-no-such-image')
    with pytest.raises(errors.DriverError, match=r'cannot spawn instance %s \(%s\) on KVM host kvm1 .*image test-no-such-image is not '
                                                 r'on .*nothing was created' % (missing.name, missing.uuid)):
        kvm1.spawn(missing)

    image = cloud.image()
    kvm1.ensure_image(image, lab.info['images']['tick_qcow2'], 'qcow2')
    before = set(local_dir.iterdir())
    # The lab hosts define no libvirt network: the domain is defined, its disk made, and
    # starting it fails; both must go again.
    unstartable = with_guest(cloud.spec('kvm1', image, networks=[{'network': 'multihv-test-no-such-network', 'mac': '52:54:00:00:00:01'}]),
                             SECRET)
    with pytest.raises(errors.DriverError, match=r'cannot spawn instance %s .*multihv-test-no-such-network.*removed its domain, disk, '
                                                 r'config drive' % unstartable.name) as raised:
        kvm1.spawn(unstartable)
    assert SECRET not in str(raised.value)

    for spec in (missing, unstartable):
        assert spec.name not in domain_names(lab, 'kvm1')
        assert spec.uuid not in {s.uuid for s in kvm1.list_instances()}
    assert set(local_dir.iterdir()) == before


def test_bad_requests_fail_before_touching_the_host(drivers, cloud):
    kvm1 = drivers['kvm1']
    with pytest.raises(errors.DriverError, match='not a UUID; nothing was created'):
        kvm1.spawn(dataclasses.replace(cloud.spec('kvm1', 'x'), uuid='nope'))
    with pytest.raises(errors.DriverError, match='node kvm2 is not KVM host kvm1'):
        kvm1.spawn(cloud.spec('kvm2', 'x'))
    with pytest.raises(errors.DriverError, match='storage must be local or shared'):
        kvm1.spawn(cloud.spec('kvm1', 'x', storage='nfs'))
    with pytest.raises(errors.DriverError, match='power action must be one of'):
        kvm1.set_power(str(uuid.uuid4()), 'kvm1', 'hibernate')
    no_shared = LibvirtDriver(dataclasses.replace(kvm1.host, shared_instance_path=''))
    with pytest.raises(errors.DriverError, match='has no shared_instance_path'):
        no_shared.spawn(cloud.spec('kvm1', 'x', storage='shared'))


def test_the_config_drive_moves_with_block_and_cold_migration(lab, drivers, cloud):
    """A block migration does not copy read-only disks: the driver copies the drive first, removes it
    from the target when the move fails and from the source when it succeeded; a cold one moves it."""
    kvm1, kvm2 = drivers['kvm1'], drivers['kvm2']
    image = cloud.image()
    for driver in (kvm1, kvm2):
        driver.ensure_image(image, lab.info['images']['tick_qcow2'], 'qcow2')
    spec = with_guest(cloud.spec('kvm1', image), SECRET)
    cloud.instances.append(('kvm2', spec.uuid))
    kvm1.spawn(spec)
    local = lab.info['local_instance_path']
    drive, disk = '%s/%s.config.iso' % (local, spec.uuid), '%s/%s.qcow2' % (local, spec.uuid)
    original = here(lab, 'kvm1', drive).read_bytes()

    # A domain of that name on kvm2 makes libvirt refuse the move there, after the copies were made.
    conn = lab.connect('kvm2')
    try:
        stub = conn.defineXML(guest.domain_xml(spec.name, '/nonexistent.qcow2', '/nonexistent.log', domain_type=lab.domain_type(),
                                               uuid=str(uuid.uuid4())))
        try:
            with pytest.raises(errors.DriverError, match='already exists') as raised:
                kvm1.migrate(spec.uuid, 'kvm1', MigrationTarget(kvm2, 'kvm2'), 'block', MigrationControls())
        finally:
            stub.undefine()
    finally:
        conn.close()
    assert SECRET not in str(raised.value)
    assert not here(lab, 'kvm2', drive).exists() and not here(lab, 'kvm2', disk).exists()
    assert here(lab, 'kvm1', drive).read_bytes() == original and live_cdroms(lab, 'kvm1', spec.uuid) == [(drive, True)]

    state, _stats = kvm1.migrate(spec.uuid, 'kvm1', MigrationTarget(kvm2, 'kvm2'), 'block', MigrationControls())
    assert (state.node, state.power_state) == ('kvm2', 'running')
    assert here(lab, 'kvm2', drive).read_bytes() == original and not here(lab, 'kvm1', drive).exists()
    assert live_cdroms(lab, 'kvm2', spec.uuid) == [(drive, True)]

    state, _stats = kvm2.migrate(spec.uuid, 'kvm2', MigrationTarget(kvm1, 'kvm1'), 'cold', MigrationControls())
    assert (state.node, state.power_state) == ('kvm1', 'running')
    assert here(lab, 'kvm1', drive).read_bytes() == original and not here(lab, 'kvm2', drive).exists()
    assert live_cdroms(lab, 'kvm1', spec.uuid) == [(drive, True)]
