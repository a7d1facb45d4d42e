"""Fixtures for tests against the running lab (`make lab-up`; `make test` starts it)."""

import os
import pathlib

import pytest

from support.cloud import registry_rows, vm_name
from support.guest_image import debian_image as build_debian_image
from support.lab import LAB_DIR, Guests, Lab, ansible_module


@pytest.fixture(scope='session')
def lab() -> Lab:
    if not (LAB_DIR / 'lab.json').is_file():
        pytest.fail(f'the lab is not up ({LAB_DIR}/lab.json missing): run `make lab-up` first')
    return Lab(LAB_DIR)


@pytest.fixture(scope='session')
def debian_image(lab):  # pylint: disable=redefined-outer-name
    """Path of the lab's Debian 12 guest image (cloud-init, QEMU guest agent), built if missing. Its Linux
    does not boot under the lab machines' KVM: give it the image property virt_type qemu (TCG)."""
    # One build for every worker's lab (see tests/conftest.py): in the first lab's images, where `make lab-up`
    # starts it in the background.
    return build_debian_image(pathlib.Path(os.environ.get('MULTIHV_LAB_DIRS', str(lab.dir)).split()[0]))


@pytest.fixture
def guests(lab):  # pylint: disable=redefined-outer-name
    made = Guests(lab)
    yield made
    made.cleanup()


@pytest.fixture
def cloud(lab, tmp_path):  # pylint: disable=redefined-outer-name
    """Module options for the lab's cloud with a registry of this test's own, a tiny flavor and the lab image."""
    options = {'cloud_file': str(lab.dir / 'multihv-cloud.yml'), 'registry_url': f'sqlite:///{tmp_path}/registry.sqlite'}
    ansible_module('multihv.cloud.flavor', dict(options, name='tiny', vcpus=1, ram_mb=32, disk_gb=1))
    ansible_module('multihv.cloud.image', dict(options, name='tick', hypervisor_type='kvm', source=lab.info['images']['tick_qcow2']))
    yield options
    # Whatever a test booted goes, so that the lab hosts stay empty for the next one.
    for (name,) in registry_rows(tmp_path, 'SELECT name FROM instances'):
        ansible_module('multihv.cloud.instance', dict(options, name=name, state='absent'))


@pytest.fixture
def template(lab):  # pylint: disable=redefined-outer-name
    """A lab VM turned into a template (a vSphere image), turned back afterwards."""
    from pyVim.connect import Disconnect, SmartConnect  # pylint: disable=import-outside-toplevel
    from pyVim.task import WaitForTask  # pylint: disable=import-outside-toplevel
    from pyVmomi import vim  # pylint: disable=import-outside-toplevel
    vcsim = lab.info['vcsim']
    si = SmartConnect(host=vcsim['host'], port=vcsim['port'], user=vcsim['username'], pwd='lab-only-secret',
                      disableSslCertValidation=True)
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    vm = sorted((v for v in view.view if vm_name(v).startswith('DC0_')), key=vm_name)[-1]  # a lab VM, not a test's
    host, pool = vm.runtime.host, vm.resourcePool
    if vm.runtime.powerState == 'poweredOn':
        WaitForTask(vm.PowerOffVM_Task())
    vm.MarkAsTemplate()
    try:
        yield vm.name
    finally:
        vm.MarkAsVirtualMachine(pool=pool, host=host)
        WaitForTask(vm.PowerOnVM_Task())
        Disconnect(si)
