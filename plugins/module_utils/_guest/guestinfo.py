# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a vSphere guest receives, as VM extraConfig keys. Private to multihv.cloud: do not import.

cloud-init's VMware datasource reads guestinfo.metadata and guestinfo.userdata through VMware
Tools, each with a guestinfo.<key>.encoding saying how it is encoded (base64 or gzip+base64). Its
metadata holds instance-id, local-hostname, public-keys and, under 'network', the version 2
network config the NoCloud network-config file carries on KVM.
"""

from __future__ import annotations

import base64
import gzip

from ansible_collections.multihv.cloud.plugins.module_utils._guest import bootstrap

ENCODING = 'gzip+base64'
METADATA = 'guestinfo.metadata'
USERDATA = 'guestinfo.userdata'


def encode(text):
    """gzip+base64 of text. mtime=0 so that the same text always gives the same value: a driver
    can compare it with what a VM already has instead of reconfiguring it for nothing."""
    return base64.b64encode(gzip.compress(text.encode('utf-8'), mtime=0)).decode('ascii')


def metadata(cfg):
    """The metadata document (YAML text): meta-data plus the network config."""
    data = bootstrap.meta_data_dict(cfg)
    network = bootstrap.network_config_dict(cfg)
    if network is not None:
        data['network'] = network
    return bootstrap.dump_yaml(data)


def guestinfo(cfg):
    """{extraConfig key: value} for cfg. The userdata keys are left out when there is nothing to
    deliver (VMware Tools returns nothing for an absent key, which cloud-init reads as no user-data)."""
    keys = {METADATA: encode(metadata(cfg)), METADATA + '.encoding': ENCODING}
    text = bootstrap.user_data(cfg)
    if text:
        keys[USERDATA] = encode(text)
        keys[USERDATA + '.encoding'] = ENCODING
    return keys
