# Copyright: multihv.cloud developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option groups shared by the modules, each documented once by the doc fragment of
the same name (plugins/doc_fragments/cloud.py). Private to multihv.cloud: do not import.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import urllib.parse

from ansible_collections.multihv.cloud.plugins.module_utils import _zip_imports
_zip_imports.install()  # before any other file of ours: from here on each comes out of Ansible's zip compiled once
from ansible_collections.multihv.cloud.plugins.module_utils import _config
from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors

# The inline cloud: the cloud file's keys (_config validates them and sets the defaults). Only what may
# be a secret is no_log: a password, the registry's URL (a PostgreSQL one carries a password) and the
# commands that may hold a BMC's credentials. The whole dict no_log made Ansible mask every value of it
# wherever it appeared (a lease_seconds of 60 turned a flavor's 60 into VALUE_SPECIFIED_IN_NO_LOG_PARAMETER).
_PLACEMENT = {
    'availability_zone': {'type': 'str'},
    'aggregates': {'type': 'list', 'elements': 'str'},
}
CLOUD_OPTIONS = {
    'vcenters': {'type': 'list', 'elements': 'dict', 'options': dict(
        _PLACEMENT,
        name={'type': 'str', 'required': True},
        hostname={'type': 'str', 'required': True},
        port={'type': 'int'},
        username={'type': 'str', 'required': True},
        password={'type': 'str', 'no_log': True},
        validate_certs={'type': 'bool'},
        clusters={'type': 'list', 'elements': 'str'},
        cluster_settings={'type': 'dict'},
        timeout={'type': 'float'},
    )},
    'kvm_hosts': {'type': 'list', 'elements': 'dict', 'options': dict(
        _PLACEMENT,
        name={'type': 'str', 'required': True},
        uri={'type': 'str', 'required': True},
        instance_path={'type': 'str'},
        shared_instance_path={'type': 'str'},
        shared_with={'type': 'list', 'elements': 'str'},
        migration_address={'type': 'str'},
        fence_command={'type': 'str', 'no_log': True},
        power_status_command={'type': 'str', 'no_log': True},
        fence_environment={'type': 'list', 'elements': 'str'},
        timeout={'type': 'float'},
    )},
    'registry': {'type': 'dict', 'options': {
        'url': {'type': 'str', 'no_log': True},
        'lease_seconds': {'type': 'float'},
    }},
    'defaults': {'type': 'dict', 'options': {
        'allocation_ratios': {'type': 'dict', 'options': {
            'cpu': {'type': 'float'},
            'ram': {'type': 'float'},
            'disk': {'type': 'float'},
        }},
        'reserved_host_memory_mb': {'type': 'dict', 'options': {
            'kvm': {'type': 'int'},
            'vsphere': {'type': 'int'},
        }},
    }},
}

# Where the cloud is: documented by multihv.cloud.cloud.
CLOUD_ARGS = {
    'cloud_file': {'type': 'path'},
    'cloud': {'type': 'dict', 'options': CLOUD_OPTIONS},
    'registry_url': {'type': 'str', 'no_log': True},
}
CLOUD_MUTUALLY_EXCLUSIVE = [('cloud_file', 'cloud')]

# How evacuation rebuilds (evacuate, instance_ha): documented by multihv.cloud.cloud.evacuation.
EVACUATION_ARGS = {
    'concurrency': {'type': 'int', 'default': 4},
    'timeout': {'type': 'int', 'default': 600},
}


def argument_spec(**options):
    """The cloud option group plus a module's own options."""
    spec = dict(CLOUD_ARGS)
    spec.update(options)
    return spec


def load_cloud(module):
    """The CloudConfig the module's cloud options point at (errors.ConfigError when it cannot be had),
    its secrets added to the module's no_log values (see secrets)."""
    params = module.params
    config = _config.load(cloud_file=params.get('cloud_file'), cloud=params.get('cloud'))
    if params.get('registry_url'):
        config.registry_url = params['registry_url']
    module.no_log_values.update(secrets(config))
    return config


def secrets(config, env=None):
    """Every secret the cloud brings that Ansible does not know as one: what the cloud file or the
    environment gives (vCenter passwords, the registry URL's password, raw and URL-decoded) and the
    values of the variables the KVM hosts' fence_environment names. Ansible masks them in a module's
    result, messages included, once they are among its no_log values (as it does for an option
    resolved through an env fallback)."""
    from ansible_collections.multihv.cloud.plugins.module_utils._registry import engine  # pylint: disable=import-outside-toplevel
    env = os.environ if env is None else env
    found = set(vcenter.password for vcenter in config.vcenters)
    password = engine.url_password(config.registry_url or '')
    if password:
        found.update((password, urllib.parse.unquote(password)))
    for host in config.kvm_hosts:
        found.update(env[name] for name in host.fence_environment if name in env)
    return set(value for value in found if value)


def _skip_final_collection():
    """Have the interpreter's last garbage collection skip every object alive at exit (gc.freeze, from atexit).

    A module process ends right after its run; the collection Python does while it finalises walked every
    object pyVmomi and libvirt created (thousands of types) and took 0.15-0.3 s of each run on the lab,
    after the result was printed, while Ansible waited for the process to end (tests/benchmarks/README.md,
    "Fixed cost per run"). Nothing is left to that collection: drivers and the registry are closed by the
    run itself. Registered once per process, so harmless where main() runs in-process (unit tests)."""
    if not getattr(_skip_final_collection, 'registered', False):
        atexit.register(gc.freeze)
        _skip_final_collection.registered = True


@contextlib.contextmanager
def session(module, upgrade):
    """(config, registry) for one module run; any core error becomes fail_json(msg).

    upgrade=True creates or upgrades the registry (a run that may change something); upgrade=False opens it
    as it is (check mode and the _info modules write nothing, not even a schema; one that does not exist
    reads as empty; the core must cope with an older schema, see Registry.open)."""
    # Imported late: the registry pulls in sqlite3/psycopg only when a module runs.
    from ansible_collections.multihv.cloud.plugins.module_utils._registry.registry import Registry
    _skip_final_collection()
    registry = None
    try:
        cloud = load_cloud(module)
        registry = Registry.open(cloud.registry_url, upgrade=upgrade, lease_seconds=cloud.lease_seconds)
        yield cloud, registry
    except errors.MultihvError as exc:
        module.fail_json(msg=str(exc))
    finally:
        if registry is not None:
            registry.close()


@contextlib.contextmanager
def cloud_session(module, timeout=None):
    """session(module, upgrade) as one Context (the core's view of the cloud: config, registry, drivers)
    whose hypervisor work may take up to timeout seconds; its drivers are closed at the end.
    The registry is created or upgraded only when the module may change something (not in check mode)."""
    from ansible_collections.multihv.cloud.plugins.module_utils._compute.context import Context  # pylint: disable=import-outside-toplevel
    with session(module, upgrade=not module.check_mode) as (config, registry):
        ctx = Context(config, registry, timeout=timeout)
        try:
            yield ctx
        finally:
            ctx.close()


def run_evacuation(module, options, work, failures):
    """The body of an evacuating module: the cloud and evacuation option groups plus options,
    work(ctx, params, check_mode) -> result, fail_json with failures(result) when it gives a message."""
    spec = argument_spec(**options)
    spec.update(EVACUATION_ARGS)
    module = module(argument_spec=spec, supports_check_mode=True, mutually_exclusive=CLOUD_MUTUALLY_EXCLUSIVE)
    with cloud_session(module, module.params['timeout']) as ctx:
        result = work(ctx, module.params, module.check_mode)
    message = failures(result)
    if message:
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


def warn_from(module, result):
    """Show the core's warnings of a result (result['warnings'], removed from it: exit_json's own key for them is
    deprecated) through module.warn: what went wrong after the task's work was done (issue 18: node rules)."""
    for warning in result.pop('warnings', None) or ():
        module.warn(warning)
    return result


def exit_with(module, changed, key, before, after, diff_view=None, **extra):
    """exit_json with the object as it is after the task under `key` (and the extra results); its
    before/after only in diff mode, as diff_view(object) when given (say, a fingerprint instead of a key)."""
    result = dict(extra, changed=changed)
    result[key] = after
    if module._diff:  # pylint: disable=protected-access  # AnsibleModule's own flag for --diff
        if diff_view is not None:
            before, after = diff_view(before), diff_view(after)
        result['diff'] = {'before': before or {}, 'after': after or {}}
    module.exit_json(**result)
