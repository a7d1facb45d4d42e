# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A NoCloud seed ISO for a KVM guest (a config drive). Private to multihv.cloud: do not import.

cloud-init's NoCloud datasource reads an ISO 9660 (or vfat) filesystem labelled 'cidata' holding
meta-data and user-data, and network-config when there is one. The image is built in memory with
pycdlib (pure Python: no genisoimage on the controller, no temporary file holding the password).
"""

from __future__ import annotations

import io

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._guest import bootstrap

VOLUME_LABEL = 'cidata'

# (Rock Ridge and Joliet name, ISO 9660 level 1 name): Linux mounts the Rock Ridge names, which
# are the ones cloud-init opens; level 1 names are 8.3 upper case, so they only stand in for them.
FILES = (
    ('meta-data', 'METADATA.;1'),
    ('user-data', 'USERDATA.;1'),
    ('network-config', 'NETWORKC.;1'),
)


def _pycdlib():
    """pycdlib, imported here: modules import module_utils on controllers where it may be missing
    and that never build a config drive."""
    try:
        import pycdlib  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise errors.MissingLibrary('pycdlib', 'to build the config drive (NoCloud ISO) of a KVM instance') from None
    return pycdlib


def documents(cfg):
    """{name: bytes} of the files on the drive; network-config only when the instance has NICs.
    user-data is always there, empty when there is nothing to deliver: NoCloud wants both files."""
    files = {'meta-data': bootstrap.meta_data(cfg), 'user-data': bootstrap.user_data(cfg)}
    network = bootstrap.network_config(cfg)
    if network is not None:
        files['network-config'] = network
    return {name: text.encode('utf-8') for name, text in files.items()}


def nocloud_iso(cfg):
    """The ISO image (bytes) of cfg's NoCloud seed: volume label cidata, Joliet and Rock Ridge names."""
    pycdlib = _pycdlib()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge='1.09', vol_ident=VOLUME_LABEL)
    try:
        contents = documents(cfg)
        for name, iso_path in FILES:
            if name in contents:
                data = contents[name]
                iso.add_fp(io.BytesIO(data), len(data), '/' + iso_path, rr_name=name, joliet_path='/' + name)
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()
