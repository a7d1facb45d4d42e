"""The image core (images.ensure) on fake hypervisors and a real registry: what check mode reports
for an image that is already everywhere, and that it uploads nothing."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._compute import images as _images
from support.fake_driver import FAKE, two_node_cloud


def params(source, **extra):
    return dict({'name': 'disk', 'state': 'present', 'hypervisor_type': FAKE, 'source': str(source), 'format': 'qcow2',
                 'properties': None, 'min_ram': None, 'min_disk': None, 'template': None}, **extra)


def test_check_mode_reports_no_change_for_an_image_already_on_every_host_and_uploads_nothing(tmp_path):
    source = tmp_path / 'disk.qcow2'
    source.write_bytes(b'QFI\xfb' + b'\0' * 60)
    with two_node_cloud(tmp_path) as cloud:
        assert _images.ensure(cloud.context(), params(source), check_mode=True)[0] is True
        assert cloud.world.uploads == [] and cloud.registry.get_image('disk') is None
        changed, _before, after = _images.ensure(cloud.context(), params(source), check_mode=False)
        assert changed is True and after['locations'] == {'fake1': 'present', 'fake2': 'present'}
        uploads = list(cloud.world.uploads)

        changed, before, after = _images.ensure(cloud.context(), params(source), check_mode=True)
        assert (changed, after) == (False, before), 'check mode reported a change for an image already in place'
        assert _images.ensure(cloud.context(), params(source), check_mode=False)[0] is False

        # A new file for the same image: check mode says it would upload it, and does not.
        other = tmp_path / 'other.qcow2'
        other.write_bytes(b'QFI\xfb' + b'\1' * 60)
        changed, _before, after = _images.ensure(cloud.context(), params(other), check_mode=True)
        assert changed is True and after['locations'] == {'fake1': 'present', 'fake2': 'present'}
        assert cloud.world.uploads == uploads and cloud.registry.get_image('disk')['properties']['source'] == str(source)
