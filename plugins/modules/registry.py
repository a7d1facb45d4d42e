#!/usr/bin/python
# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: registry
short_description: Make sure the registry exists with the collection's schema
version_added: 0.1.0
description:
  - Creates the registry that the cloud options point at (the cloud file's C(registry.url), E(MULTIHV_REGISTRY_URL) or
    O(registry_url)), or upgrades its schema to the one of this collection, so that the first task that uses it does not
    have to, and so that a controller set-up says when it did.
  - For a SQLite registry, the file's directory is created (mode C(0750)) when it is missing, and the file mode C(0600).
    A PostgreSQL registry's database must exist; the tables are created in it (in the first schema of the connection's
    C(search_path)).
  - A registry whose schema is newer than this collection's is refused and left untouched; upgrade the collection.
  - The other modules create or upgrade the registry only when they run to change something (not in check mode); the
    C(_info) modules, the C(nodes) inventory plugin and the C(node_events) event source never do; a registry that does
    not exist yet reads as empty to them.
extends_documentation_fragment:
  - multihv.cloud.cloud
  - multihv.cloud.cloud.attributes
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the registry would be created or upgraded; not even the SQLite file or its directory is created.
  diff_mode:
    support: none
    details:
      - RV(previous_version) and RV(schema_version) say what changed.
  idempotent:
    support: full
author:
  - multihv.cloud developers (@multihv)
'''

EXAMPLES = r'''
- name: The registry of the cloud file exists with the current schema
  multihv.cloud.registry:
    cloud_file: /etc/multihv/cloud.yml

- name: A shared PostgreSQL registry for AWX
  multihv.cloud.registry:
    cloud_file: /etc/multihv/cloud.yml
    registry_url: postgresql://multihv@db.example.com/multihv
'''

RETURN = r'''
engine:
  description: The registry's engine.
  returned: always
  type: str
  choices: [sqlite, postgresql]
  sample: sqlite
url:
  description:
    - The registry's URL, its password masked.
    - Ansible hides it whole when it came from O(registry_url), a C(no_log) option.
  returned: always
  type: str
  sample: sqlite:////var/lib/multihv/registry.sqlite
schema_version:
  description: The schema version after the task (in check mode, as it would be).
  returned: always
  type: int
  sample: 5
previous_version:
  description: The schema version before the task; V(0) when the registry was empty or did not exist.
  returned: always
  type: int
  sample: 0
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multihv.cloud.plugins.module_utils import _args
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine as _engine
from ansible_collections.multihv.cloud.plugins.module_utils._registry import schema as _schema
from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry

DIRECTORY_MODE = 0o750


def ensure(url, check_mode):
    """(changed, result): the registry at url created or upgraded (check_mode: only read)."""
    engine, target = _engine.parse_url(url)
    result = {'engine': engine, 'url': _engine.mask_url(url), 'schema_version': _schema.SCHEMA_VERSION}
    if engine == 'sqlite' and not os.path.exists(target):
        if check_mode:
            return True, dict(result, previous_version=0)
        _make_directory(result['url'], os.path.dirname(os.path.abspath(target)))
    # A newer schema is refused either way; check mode reads the registry as it is (one without a schema as empty).
    with Registry.open(url, upgrade=not check_mode) as registry:
        previous = registry.found_version
    return previous != _schema.SCHEMA_VERSION, dict(result, previous_version=previous)


def _make_directory(where, directory):
    if os.path.isdir(directory):
        return
    try:
        os.makedirs(directory, DIRECTORY_MODE)
        os.chmod(directory, DIRECTORY_MODE)  # whatever the umask
    except OSError as exc:
        raise errors.RegistryError('registry %s: cannot create directory %s: %s; nothing was created'
                                   % (where, directory, exc.strerror)) from None


def main():
    module = AnsibleModule(argument_spec=_args.argument_spec(), supports_check_mode=True,
                           mutually_exclusive=_args.CLOUD_MUTUALLY_EXCLUSIVE)
    try:
        changed, result = ensure(_args.load_cloud(module).registry_url, module.check_mode)
        module.exit_json(changed=changed, **result)
    except errors.MultihvError as exc:
        module.fail_json(msg=str(exc))


if __name__ == '__main__':
    main()
