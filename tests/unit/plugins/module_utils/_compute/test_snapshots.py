"""Snapshots to images through the core (snapshots.capture) on fake hypervisors and a real registry: the
image it records and where it came from, the guest frozen and thawed, check mode, idempotency, the refusals
that change nothing, a capture that fails or was cut off, and deleting the image (images.ensure absent)."""

from __future__ import annotations

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._compute import images as _images
from ansible_collections.multihv.cloud.plugins.module_utils._compute import leases as _leases
from ansible_collections.multihv.cloud.plugins.module_utils._compute import snapshots as _snapshots
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec
from support.fake_driver import CLUSTER, FAKE, FakeCloud, FakeWorld, two_node_cloud


@pytest.fixture(name='cloud')
def cloud_fixture(tmp_path):
    """fake1 and fake2 (file images), flavor small, image tick; instance web on fake1, running."""
    with two_node_cloud(tmp_path) as made:
        made.boot('web', node='fake1')
        yield made


def snap(cloud, dest, name='web-snap', instance='web', check_mode=False, **extra):
    params = dict({'name': name, 'instance': instance, 'dest': str(dest), 'quiesce': True, 'properties': None,
                   'min_ram': None, 'min_disk': None}, **extra)
    return _snapshots.capture(cloud.context(), params, check_mode)


def delete(cloud, name, check_mode=False):
    return _images.ensure(cloud.context(), {'name': name, 'state': 'absent'}, check_mode)


def nothing_made(cloud, dest, name='web-snap'):
    assert cloud.registry.get_image(name) is None
    assert not dest.exists()
    assert [k for k in cloud.world.images if k[1] == name] == []


def test_a_running_instance_becomes_an_image_that_boots_and_a_second_run_changes_nothing(cloud, tmp_path):
    dest = tmp_path / 'web-snap.qcow2'
    web = cloud.registry.get_instance(name='web')

    changed, before, planned = snap(cloud, dest, check_mode=True)
    assert (changed, before) == (True, None)
    assert planned['properties']['origin']['instance_uuid'] == web.uuid
    nothing_made(cloud, dest)
    assert cloud.world.snapshots == []

    changed, before, after = snap(cloud, dest)
    assert (changed, before) == (True, None)
    props = after['properties']
    assert props['status'] == 'active' and props['quiesced'] is True
    assert props['origin'] == {'instance_uuid': web.uuid, 'instance_name': 'web', 'node': 'fake1', 'image': 'tick', 'flavor': 'small'}
    assert props['source'] == str(dest) and props['format'] == 'qcow2' and dest.read_bytes().startswith(b'QFI\xfb')
    assert after['locations'] == {'fake1': 'present', 'fake2': 'present'}
    assert cloud.world.snapshots == [{'uuid': web.uuid, 'image': 'web-snap', 'power': 'running', 'quiesced': True, 'thawed': True}]
    assert cloud.world.vm('web').power == 'running', 'the instance runs on after its capture'
    assert cloud.registry.get_image('web-snap')['properties'] == props

    # A second run, and its check mode: no change, no second capture.
    assert snap(cloud, dest, check_mode=True)[0] is False
    changed, before, again = snap(cloud, dest)
    assert changed is False and again == before == after
    assert len(cloud.world.snapshots) == 1

    record = cloud.boot('copy', image='web-snap', node='fake2')
    assert cloud.world.vm('copy').image == 'web-snap' and record.image == 'web-snap'


def test_the_snapshot_takes_the_guest_properties_of_its_instances_image_not_its_file(cloud, tmp_path):
    cloud.image('tick', source='/images/tick.qcow2', format='qcow2', virt_type='qemu', min_ram=16)
    props = snap(cloud, tmp_path / 'a.qcow2', properties={'min_ram': 32, 'os': 'tick'})[2]['properties']
    assert (props['virt_type'], props['min_ram'], props['os'], props['source']) == ('qemu', 32, 'tick', str(tmp_path / 'a.qcow2'))


def test_quiesced_says_whether_the_guest_was_frozen(cloud, tmp_path):
    cloud.world.vm('web').agent = False
    assert snap(cloud, tmp_path / 'a.qcow2', name='no-agent')[2]['properties']['quiesced'] is False
    assert snap(cloud, tmp_path / 'b.qcow2', name='not-asked', quiesce=False)[2]['properties']['quiesced'] is False
    cloud.world.vm('web').power = 'stopped'
    cloud.registry.update_instance(cloud.registry.get_instance(name='web').uuid, state='stopped')
    assert snap(cloud, tmp_path / 'c.qcow2', name='stopped')[2]['properties']['quiesced'] is None
    assert [s['power'] for s in cloud.world.snapshots] == ['running', 'running', 'stopped']


def test_bad_input_is_refused_with_nothing_changed(cloud, tmp_path):
    dest = tmp_path / 'web-snap.qcow2'
    with pytest.raises(errors.NotFound, match='instance nosuch does not exist; image web-snap was not made; nothing was changed'):
        snap(cloud, dest, instance='nosuch')
    with pytest.raises(errors.MultihvError, match='image tick exists already and is an image of /images/tick.qcow2, not a snapshot of '
                                                  'instance web'):
        snap(cloud, dest, name='tick')
    assert cloud.registry.get_image('tick')['properties'] == {'source': '/images/tick.qcow2', 'format': 'qcow2'}
    dest.write_bytes(b'mine')
    with pytest.raises(errors.MultihvError, match='dest .* exists already on the controller'):
        snap(cloud, dest)
    assert dest.read_bytes() == b'mine'
    dest.unlink()
    with pytest.raises(errors.MultihvError, match='needs dest'):
        snap(cloud, '')
    cloud.world.stop_answering('fake1')
    for check_mode in (True, False):
        with pytest.raises(errors.MultihvError, match='instance web is on node fake1, which is down .*; image web-snap was not made'):
            snap(cloud, dest, check_mode=check_mode)
    nothing_made(cloud, dest)
    assert cloud.world.snapshots == []


def test_an_image_of_another_instance_is_not_taken_over(cloud, tmp_path):
    cloud.boot('db', node='fake2')
    snap(cloud, tmp_path / 'web.qcow2')
    with pytest.raises(errors.MultihvError, match='image web-snap exists already and is a snapshot of instance .*, not a snapshot of instance db'):
        snap(cloud, tmp_path / 'db.qcow2', instance='db')
    assert not (tmp_path / 'db.qcow2').exists() and len(cloud.world.snapshots) == 1


def test_an_instance_another_run_holds_is_not_captured(cloud, tmp_path, monkeypatch):
    monkeypatch.setattr(_leases, 'INSTANCE_LEASE_WAIT_SECONDS', 0.2)
    web = cloud.registry.get_instance(name='web')
    with _leases.on_instance(cloud.registry, web.uuid, 'untouched', 'migrate'):
        with pytest.raises(errors.LeaseHeld, match='another run works on instance'):
            snap(cloud, tmp_path / 'web-snap.qcow2')
    nothing_made(cloud, tmp_path / 'web-snap.qcow2')


def test_a_capture_that_fails_half_way_thaws_the_guest_and_leaves_nothing(cloud, tmp_path):
    dest = tmp_path / 'web-snap.qcow2'
    cloud.world.fail_snapshot('web-snap')
    with pytest.raises(errors.DriverError, match='capture of instance web .* into image web-snap failed: injected failure .*; '
                                                 'the instance was left as it was and nothing of image web-snap was kept'):
        snap(cloud, dest)
    nothing_made(cloud, dest)
    assert cloud.world.snapshots[0]['quiesced'] is True and cloud.world.snapshots[0]['thawed'] is True
    assert cloud.world.vm('web').power == 'running'
    assert snap(cloud, dest)[2]['properties']['status'] == 'active', 'a failed capture can be run again'


def test_a_capture_cut_off_leaves_a_saving_image_nothing_boots_from_and_a_rerun_completes_it(cloud, tmp_path):
    dest = tmp_path / 'web-snap.qcow2'
    web = cloud.registry.get_instance(name='web')
    # What a run killed during the capture leaves: the intent, a partial file and an incomplete base on the source host.
    cloud.registry.set_image('web-snap', hypervisor_type=FAKE, locations={}, properties={
        'status': 'saving', 'source': str(dest), 'format': 'qcow2', 'origin': {'instance_uuid': web.uuid, 'instance_name': 'web'}})
    dest.write_bytes(b'QFI\xfb partial')
    cloud.world.images[('fake1', 'web-snap')] = (str(dest), 'qcow2')
    with pytest.raises(errors.MultihvError, match='image web-snap is being captured from instance web .status saving.'):
        cloud.boot('copy', image='web-snap')
    assert cloud.registry.get_instance(name='copy') is None

    changed, before, after = snap(cloud, dest)
    assert changed is True and before['properties']['status'] == 'saving'
    assert after['properties']['status'] == 'active' and dest.read_bytes() != b'QFI\xfb partial'
    assert after['locations'] == {'fake1': 'present', 'fake2': 'present'}


def test_deleting_an_image_removes_it_from_every_host_but_not_while_a_disk_is_backed_by_it(cloud, tmp_path):
    dest = tmp_path / 'web-snap.qcow2'
    snap(cloud, dest)
    assert ('fake2', 'web-snap') in cloud.world.images
    # A VM the registry does not know (a leftover, one made by hand) whose disk is an overlay on the image.
    cloud.world.driver('fake2').spawn(InstanceSpec(uuid='6f1c0f4e-0000-4000-8000-000000000001', name='stray', node='fake2', vcpus=1,
                                                   memory_mb=64, disk_gb=1, image='web-snap'))
    for check_mode in (True, False):
        with pytest.raises(errors.MultihvError, match='image web-snap is the base .backing file. of the disks of instances '
                                                      '6f1c0f4e-0000-4000-8000-000000000001 on fake2; image web-snap was left in place'):
            delete(cloud, 'web-snap', check_mode)
    assert ('fake1', 'web-snap') in cloud.world.images and cloud.registry.get_image('web-snap') is not None

    cloud.world.driver('fake2').destroy('6f1c0f4e-0000-4000-8000-000000000001', 'fake2')
    assert delete(cloud, 'web-snap', check_mode=True)[0] is True
    assert ('fake1', 'web-snap') in cloud.world.images
    assert delete(cloud, 'web-snap')[0] is True
    assert [k for k in cloud.world.images if k[1] == 'web-snap'] == [] and cloud.registry.get_image('web-snap') is None
    assert dest.exists(), 'the controller file is the user\'s dest: it is kept'
    assert delete(cloud, 'web-snap') == (False, None, None)


def test_an_image_is_not_deleted_while_a_host_does_not_answer(cloud, tmp_path):
    snap(cloud, tmp_path / 'web-snap.qcow2')
    cloud.world.stop_answering('fake2')
    with pytest.raises(errors.MultihvError, match='Fake fake2 does not answer, so its copy there cannot be removed'):
        delete(cloud, 'web-snap')
    assert ('fake1', 'web-snap') in cloud.world.images and cloud.registry.get_image('web-snap') is not None


def test_a_cluster_instance_becomes_a_template_and_only_such_templates_are_deleted_with_their_image(tmp_path):
    world = FakeWorld()
    world.add_cluster('cl1', templates=('tmpl',))
    with FakeCloud(world, tmp_path) as cloud:
        cloud.flavor('small')
        cloud.image('tmpl', hypervisor_type=CLUSTER, template='tmpl')
        cloud.boot('app', image='tmpl')
        with pytest.raises(errors.MultihvError, match='captured into a template, not a file: dest is for instances whose images are files'):
            _snapshots.capture(cloud.context(), {'name': 'app-golden', 'instance': 'app', 'dest': str(tmp_path / 'x.qcow2')}, False)
        changed, _before, after = _snapshots.capture(cloud.context(), {'name': 'app-golden', 'instance': 'app', 'dest': None}, False)
        assert changed is True and after['properties']['template'] == 'app-golden'
        assert list(after['locations']) == ['vc'] and 'app-golden' in world.endpoints['vc'].templates
        assert cloud.boot('app2', image='app-golden').image == 'app-golden'
        cloud.registry.delete_instance(cloud.registry.get_instance(name='app2').uuid)
        assert delete(cloud, 'app-golden')[0] is True and 'app-golden' not in world.endpoints['vc'].templates
        cloud.registry.delete_instance(cloud.registry.get_instance(name='app').uuid)
        assert delete(cloud, 'tmpl')[0] is True
        assert 'tmpl' in world.endpoints['vc'].templates, 'a template the cloud did not make was deleted with its image record'


def test_the_reconciler_removes_a_capture_no_run_holds_and_leaves_one_that_runs(cloud, tmp_path):
    from ansible_collections.multihv.cloud.plugins.module_utils._compute import reconcile as _reconcile  # pylint: disable=import-outside-toplevel
    dest = tmp_path / 'web-snap.qcow2'
    web = cloud.registry.get_instance(name='web')
    origin = {'instance_uuid': web.uuid, 'instance_name': 'web', 'node': 'fake1'}
    cloud.registry.set_image('web-snap', hypervisor_type=FAKE, locations={},
                             properties={'status': 'saving', 'source': str(dest), 'format': 'qcow2', 'origin': origin})
    dest.write_bytes(b'QFI\xfb partial')
    cloud.world.images[('fake1', 'web-snap')] = (str(dest), 'qcow2')

    with _leases.held(cloud.registry, 'image:web-snap', 1, 'held', 'snapshot'):  # a capture still running
        assert [a['kind'] for a in _reconcile.run(cloud.context(), settle_seconds=0)['actions']] == []
    assert _reconcile.run(cloud.context(), settle_seconds=3600)['actions'] == [], 'a capture written just now was judged left'

    planned = _reconcile.run(cloud.context(), check_mode=True, settle_seconds=0)['actions']
    assert [(a['kind'], a['name'], a['node']) for a in planned] == [('snapshot', 'web', 'fake1')]
    assert cloud.registry.get_image('web-snap') is not None and dest.exists()
    result = _reconcile.run(cloud.context(), settle_seconds=0)
    assert result['failures'] == [] and [a['kind'] for a in result['actions']] == ['snapshot']
    nothing_made(cloud, dest)
    assert cloud.world.vm('web').power == 'running'


def test_an_image_task_on_a_snapshot_keeps_its_origin_and_refuses_another_file(cloud, tmp_path):
    dest = tmp_path / 'web-snap.qcow2'
    made = snap(cloud, dest)[2]
    params = {'name': 'web-snap', 'state': 'present', 'hypervisor_type': FAKE, 'source': str(dest), 'format': None,
              'properties': {'os': 'tick'}, 'min_ram': 64, 'min_disk': None, 'template': None}
    changed, _before, after = _images.ensure(cloud.context(), params, False)
    assert changed is True and after['properties']['min_ram'] == 64 and after['properties']['os'] == 'tick'
    for key in ('origin', 'status', 'quiesced', 'sha256', 'source'):
        assert after['properties'][key] == made['properties'][key], key
    other = tmp_path / 'other.qcow2'
    other.write_bytes(dest.read_bytes())
    with pytest.raises(errors.MultihvError, match=r'image web-snap is a snapshot of instance web .*its source stays'):
        _images.ensure(cloud.context(), dict(params, source=str(other)), False)
    assert cloud.registry.get_image('web-snap') == after
