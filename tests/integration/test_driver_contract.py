"""The driver contract (support/driver_contract.py) against the real drivers on the lab, the same
promises the fake driver keeps in tests/unit: the KVM driver on kvm1 (migrating to kvm2), the
vSphere driver on vcsim's cluster DC0_C0 (vMotion to another of its hosts).

Images, templates and the removal of what a test made come from the drivers' own integration
tests: test_libvirt_instances (Made: an image of the lab's guest uploaded for the test, instances
destroyed after) and test_vsphere_instances (a template of the test's own on DC0_C0_H0, VMs sent
back to that host and destroyed after: vcsim loses track of a VM destroyed elsewhere). Instances
are made on the template's host for the same reason.
"""

from __future__ import annotations

import dataclasses

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationTarget
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.driver import VSphereDriver
from integration.test_libvirt_instances import Made, drivers, here  # noqa: F401  pylint: disable=unused-import  # drivers: a fixture
from integration.test_vsphere_instances import (  # noqa: F401  pylint: disable=unused-import  # fixtures: instances, lab_vcenter, si, template
    TEMPLATE_HOST, instances, lab_vcenter, si, template,
)
from support.driver_contract import DriverContract, Harness

# A loopback port nothing listens on (discard): connections are refused at once.
NOWHERE_PORT = 9
VSPHERE_NODE = 'vcsim/DC0/DC0_C0'


class TestLibvirtDriverContract(DriverContract):
    @pytest.fixture
    def harness(self, lab, drivers):  # pylint: disable=redefined-outer-name
        made = Made(drivers)
        image = made.image()
        for driver in drivers.values():  # kvm2's base too: a block migration's disk is an overlay on it
            driver.ensure_image(image, lab.info['images']['tick_qcow2'], 'qcow2')

        def spec(**overrides):
            made_spec = made.spec('kvm1', overrides.pop('image', image), **overrides)
            made.instances.append(('kvm2', made_spec.uuid))  # removed wherever a test moved it
            return made_spec

        def unreachable():
            host = drivers['kvm1'].host
            return LibvirtDriver(dataclasses.replace(host, name='kvm-nowhere', uri='qemu+tcp://127.0.0.1:%d/system' % NOWHERE_PORT))

        yield Harness(drivers['kvm1'], 'kvm1', spec, 'test-no-such-image', MigrationTarget(drivers['kvm2'], 'kvm2'), unreachable,
                      lambda found: here(lab, found.node, found.path).read_bytes())
        made.cleanup()


class TestVSphereDriverContract(DriverContract):
    @pytest.fixture
    def harness(self, lab_vcenter, template, instances):  # pylint: disable=redefined-outer-name
        driver = VSphereDriver(lab_vcenter)

        def spec(**overrides):
            # The template's own disk size: vcsim's datastore never gets back what a clone took, and
            # test_vsphere_driver wants free space left on it after the whole suite.
            return instances(**dict({'node': VSPHERE_NODE, 'host': TEMPLATE_HOST, 'image': template, 'disk_gb': 1}, **overrides))

        def unreachable():
            return VSphereDriver(dataclasses.replace(lab_vcenter, name='vcsim-nowhere', port=NOWHERE_PORT, timeout=5))

        yield Harness(driver, VSPHERE_NODE, spec, 'test-no-such-template', MigrationTarget(driver, VSPHERE_NODE, 'DC0_C0_H1'),
                      unreachable)
        driver.close()
