"""Which templates are an image's (vsphere/snapshot.py): the marker a capture writes, and no other template's annotation."""

from __future__ import annotations

from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere import snapshot
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.vsphere.annotations import parse_annotation


def test_a_captured_template_names_its_image_and_is_no_instance():
    text = snapshot.image_annotation('web-golden', '0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01')
    assert snapshot.image_of(text) == 'web-golden'
    assert parse_annotation(text) == (None, {}), 'a template made by a capture carries the instance marker'
    for other in (None, '', 'built by hand', 'multihv.cloud instance 0e3e7f54-6d0e-4d3c-9d8a-1f0c3c2b5a01\n{}'):
        assert snapshot.image_of(other) is None
