"""Snapshots to images on the lab, through real Ansible runs: a running tick guest captured on KVM and booted again
from its image on the other host, the image's files gone from both hosts once it is deleted; a vcsim instance
cloned into a template that boots a new instance, the template gone with its image.

The quiesce of a guest with a QEMU guest agent needs the lab's Debian guest (the tick guest has no agent), too slow
for the suite: its test runs only with MULTIHV_TEST_QUIESCE=1; tests/unit covers the freeze and the thaw on the fake driver."""

from __future__ import annotations

import os
import pathlib

import pytest

from support import guest_agent
from support.cloud import _vcsim_vm, boot, console_log, vcsim, vcsim_vm, wait_ticks
from support.lab import ansible_module


def base_files(lab, image):
    """{directory: names} of the image's files in every _base of the lab (each host's local path, the shared one)."""
    dirs = [pathlib.Path(h['local_dir']) for h in lab.hosts.values()] + [pathlib.Path(lab.info['shared_instance_path'])]
    return dict((str(d), sorted(p.name for p in (d / '_base').glob(image + '.*'))) for d in dirs)


@pytest.fixture
def removed(lab):
    """Image names a test makes: their files and templates are removed after it (only a failed test leaves any),
    so that the next run can make them again."""
    names = []
    yield names
    for name in names:
        for directory in base_files(lab, name):
            for path in (pathlib.Path(directory) / '_base').glob(name + '.*'):
                path.unlink()
        with vcsim(lab) as si:
            vm, _props = _vcsim_vm(si, name)
            if vm is not None:
                vm.Destroy_Task()


def test_a_running_kvm_guest_becomes_an_image_that_boots_on_the_other_host_and_goes_from_both(lab, cloud, tmp_path, removed):
    removed.append('it-snap')
    source = boot(cloud, 'it-snap-src', node='kvm1', storage='local')
    wait_ticks(console_log(lab, source))
    dest = tmp_path / 'it-snap.qcow2'
    args = dict(cloud, name='it-snap', instance='it-snap-src', dest=str(dest))

    planned = ansible_module('multihv.cloud.instance_snapshot', args, check=True)
    assert planned['changed'] is True and not dest.exists() and base_files(lab, 'it-snap') == dict.fromkeys(base_files(lab, 'it-snap'), [])

    made = ansible_module('multihv.cloud.instance_snapshot', args, diff=True)
    props = made['image']['properties']
    assert made['changed'] is True and '-{}' in made['_output'] and '"status": "active"' in made['_output']
    assert (props['status'], props['quiesced'], props['origin']['instance_uuid']) == ('active', False, source['uuid'])
    assert made['image']['locations'] == {'kvm1': 'present', 'kvm2': 'present'}
    header = dest.read_bytes()[:16]
    assert header[:4] == b'QFI\xfb' and header[8:16] == bytes(8), 'the image is not a flattened qcow2'
    assert all(names == ['it-snap.qcow2', 'it-snap.qcow2.sha256'] for names in base_files(lab, 'it-snap').values())
    before = wait_ticks(console_log(lab, source))[-1]
    wait_ticks(console_log(lab, source), count=1, after=before)  # the source guest runs on
    assert ansible_module('multihv.cloud.instance_snapshot', args)['changed'] is False

    copy = ansible_module('multihv.cloud.instance', dict(cloud, name='it-snap-copy', flavor='tiny', image='it-snap', node='kvm2',
                                                         storage='local'))['instance']
    wait_ticks(console_log(lab, copy))  # the captured disk boots

    ansible_module('multihv.cloud.instance', dict(cloud, name='it-snap-copy', state='absent'))
    gone = ansible_module('multihv.cloud.image', dict(cloud, name='it-snap', state='absent'))
    assert gone['changed'] is True
    assert all(names == [] for names in base_files(lab, 'it-snap').values()), base_files(lab, 'it-snap')


def test_a_vsphere_instance_becomes_a_template_that_boots_and_goes_with_its_image(lab, cloud, template, removed):
    removed.append('it-vsnap')
    ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', hypervisor_type='vsphere', template=template))
    ansible_module('multihv.cloud.instance', dict(cloud, name='it-vsnap-src', flavor='tiny', image='tmpl'))
    made = ansible_module('multihv.cloud.instance_snapshot', dict(cloud, name='it-vsnap', instance='it-vsnap-src'))
    assert made['changed'] is True and made['image']['properties']['template'] == 'it-vsnap'
    assert list(made['image']['locations']) == ['vcsim'] and vcsim_vm(lab, 'it-vsnap') is not None

    copy = ansible_module('multihv.cloud.instance', dict(cloud, name='it-vsnap-copy', flavor='tiny', image='it-vsnap'))['instance']
    assert copy['image'] == 'it-vsnap' and vcsim_vm(lab, 'it-vsnap-copy')[0] == 'poweredOn'
    for name in ('it-vsnap-copy', 'it-vsnap-src'):
        ansible_module('multihv.cloud.instance', dict(cloud, name=name, state='absent'))
    assert ansible_module('multihv.cloud.image', dict(cloud, name='it-vsnap', state='absent'))['changed'] is True
    assert vcsim_vm(lab, 'it-vsnap') is None
    assert ansible_module('multihv.cloud.image', dict(cloud, name='tmpl', state='absent'))['changed'] is True
    assert vcsim_vm(lab, template) is not None, 'a template the cloud was given went with its image record'


@pytest.mark.skipif(os.environ.get('MULTIHV_TEST_QUIESCE') != '1',
                    reason='boots the Debian guest twice under TCG (minutes, too slow for the suite): set MULTIHV_TEST_QUIESCE=1')
def test_a_debian_guest_is_frozen_for_its_capture_and_what_it_had_not_synced_is_in_the_image(lab, cloud, debian_image, tmp_path, removed):
    """The quiesce path, which the tick guest (no agent) cannot show: a write the guest has not synced reaches the image
    only because the agent's freeze flushed it; the guest writes again once thawed."""
    removed.append('g-snap-img')
    ansible_module('multihv.cloud.flavor', dict(cloud, name='deb', vcpus=1, ram_mb=512, disk_gb=3))
    ansible_module('multihv.cloud.image', dict(cloud, name='debian', hypervisor_type='kvm', source=str(debian_image),
                                               properties={'virt_type': 'qemu'}))
    ansible_module('multihv.cloud.instance', dict(cloud, name='g-snap', flavor='deb', image='debian', node='kvm1', storage='local'))
    conn = lab.connect('kvm1')
    try:
        domain = conn.lookupByName('g-snap')
        guest_agent.wait_until_answering(domain, 600)
        assert guest_agent.run(domain, ['sh', '-c', 'echo written-not-synced > /var/tmp/marker']).exit_code == 0
        made = ansible_module('multihv.cloud.instance_snapshot', dict(cloud, name='g-snap-img', instance='g-snap',
                                                                      dest=str(tmp_path / 'g-snap-img.qcow2')))
        assert made['image']['properties']['quiesced'] is True and made['image']['properties']['virt_type'] == 'qemu'
        assert guest_agent.run(domain, ['sh', '-c', 'echo thawed > /var/tmp/after && sync'], timeout=30).exit_code == 0
    finally:
        conn.close()
    ansible_module('multihv.cloud.instance', dict(cloud, name='g-copy', flavor='deb', image='g-snap-img', node='kvm2', storage='local'))
    conn = lab.connect('kvm2')
    try:
        copy = conn.lookupByName('g-copy')
        guest_agent.wait_until_answering(copy, 600)
        assert guest_agent.read_file(copy, '/var/tmp/marker') == 'written-not-synced\n'
    finally:
        conn.close()
