# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the option groups of plugins/module_utils/_args.py."""

from __future__ import annotations


class ModuleDocFragment:

    # The cloud option group (_args.CLOUD_ARGS).
    DOCUMENTATION = r'''
options:
  cloud_file:
    description:
      - Path of the cloud file that says where the cloud is (vCenters, KVM hosts, registry, defaults).
      - When not given, E(MULTIHV_CLOUD_FILE), then C(./multihv-cloud.yml), C(~/.config/multihv/cloud.yml) and
        C(/etc/multihv/cloud.yml) are tried.
      - vCenter passwords may come from E(MULTIHV_VCENTER_PASSWORD) or E(MULTIHV_VCENTER_<NAME>_PASSWORD)
        instead of the file.
      - Use C(module_defaults) with C(group/multihv.cloud.all) to set it once for every module.
    type: path
  cloud:
    description:
      - The cloud definition inline, with the keys of a cloud file.
    type: dict
  registry_url:
    description:
      - The registry, overriding the cloud file's C(registry.url) and E(MULTIHV_REGISTRY_URL).
      - C(sqlite:////absolute/path.sqlite) (embedded, the default mode) or C(postgresql://user:password@host/db)
        (shared by many controllers, AWX).
    type: str
notes:
  - The modules run on the controller (or wherever C(delegate_to) points) and talk to vCenter through pyVmomi and
    to KVM hosts through libvirt-python; a KVM host is one node, a vSphere cluster is one node.
requirements:
  - pyvmomi (vSphere nodes)
  - libvirt-python (KVM nodes)
  - psycopg (a PostgreSQL registry)
'''

    # Shared attributes of modules that change things.
    ACTION = r'''
attributes:
  check_mode:
    support: full
    description: Reports what would change without changing it.
  diff_mode:
    support: full
    description: Shows the node's admin state before and after.
  idempotent:
    support: full
    description: A second run with the same options changes nothing.
'''

    # Shared attributes of the _info modules.
    INFO = r'''
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to show.
  idempotent:
    support: full
    description: Reads only.
'''

    # The evacuation option group (_args.EVACUATION_ARGS): evacuate and instance_ha.
    EVACUATION = r'''
options:
  concurrency:
    description: How many instances of one node are rebuilt at once (they are placed one by one first, in restart order). At least 1.
    type: int
    default: 4
  timeout:
    description: The longest, in seconds, one instance's rebuild may take on its target.
    type: int
    default: 600
'''
