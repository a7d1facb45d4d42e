"""The flags and parameters a KVM live or block migration asks libvirt for: native TLS when a host is
reached over qemu+tls, VIR_MIGRATE_UNSAFE only after libvirt itself refused a shared-storage move.
(tests/integration/test_migration_tls.py moves a guest between two TLS hosts for real.)"""

from __future__ import annotations

import libvirt
import pytest

from ansible_collections.multihv.cloud.plugins.module_utils._config import KvmHost
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import MigrationControls
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.migration import _flags, _migrate, _params, uses_tls

BASE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE


class _Side:
    """What _params reads of a target: its KvmHost."""

    def __init__(self, uri, migration_address=''):
        self.host = KvmHost(name='kvm2', uri=uri, migration_address=migration_address)


def test_tls_is_used_when_either_host_is_reached_over_qemu_tls():
    tls, tcp = KvmHost('a', 'qemu+tls://kvm-a.example.com/system'), KvmHost('b', 'qemu+tcp://kvm-b.example.com/system')
    ssh = KvmHost('c', 'qemu+ssh://root@kvm-c/system?keyfile=/k')
    assert uses_tls(tls, tls) and uses_tls(tcp, tls) and uses_tls(tls, tcp)
    assert not uses_tls(tcp, ssh)
    assert not uses_tls(KvmHost('d', 'qemu:///system'))
    assert uses_tls(KvmHost('e', 'qemu+tls://127.0.0.1:16514/system?pkipath=/etc/multihv/pki'))


@pytest.mark.parametrize('block', [False, True])
def test_tls_flag_on_live_and_block_moves(block):
    controls = MigrationControls()
    storage = libvirt.VIR_MIGRATE_NON_SHARED_INC if block else 0
    assert _flags(block, controls, tls=True) == BASE | storage | libvirt.VIR_MIGRATE_TLS
    assert _flags(block, controls) == BASE | storage


def test_unsafe_only_when_asked_and_never_on_a_block_move():
    controls = MigrationControls(auto_converge=True)
    assert not _flags(False, controls) & libvirt.VIR_MIGRATE_UNSAFE
    assert _flags(False, controls, unsafe=True) == BASE | libvirt.VIR_MIGRATE_UNSAFE | libvirt.VIR_MIGRATE_AUTO_CONVERGE
    assert not _flags(True, controls, unsafe=True) & libvirt.VIR_MIGRATE_UNSAFE


def test_tls_destination_is_the_name_in_the_target_uri():
    params = _params(_Side('qemu+tls://kvm-b.example.com/system', '10.0.0.12'), MigrationControls(bandwidth_mib=100), tls=True)
    assert params == {libvirt.VIR_MIGRATE_PARAM_URI: 'tcp://10.0.0.12', libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: '10.0.0.12',
                      libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION: 'kvm-b.example.com', libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 100}
    plain = _params(_Side('qemu+tcp://kvm-b.example.com/system'), MigrationControls())
    assert plain == {}


def _refusal(code):
    exc = libvirt.libvirtError('refused')
    exc.err = (code, 0, 'refused') + (None,) * 6  # what libvirt-python reads the code from
    return exc


class _Domain:
    """Records the flags of each migrate3 call and refuses the first ones with the given codes."""

    def __init__(self, *refusals):
        self.refusals, self.calls = list(refusals), []

    def migrate3(self, _tconn, _params, flags):
        self.calls.append(flags)
        if self.refusals:
            raise _refusal(self.refusals.pop(0))
        return 'moved'


def test_unsafe_follows_only_libvirts_own_unsafe_refusal_of_a_live_move():
    controls = MigrationControls()
    judged_safe = _Domain()
    assert _migrate(judged_safe, None, {}, False, controls, True) == 'moved'
    assert judged_safe.calls == [BASE | libvirt.VIR_MIGRATE_TLS]

    not_believed = _Domain(libvirt.VIR_ERR_MIGRATE_UNSAFE)
    assert _migrate(not_believed, None, {}, False, controls, True) == 'moved'
    assert not_believed.calls == [BASE | libvirt.VIR_MIGRATE_TLS, BASE | libvirt.VIR_MIGRATE_TLS | libvirt.VIR_MIGRATE_UNSAFE]

    other = _Domain(libvirt.VIR_ERR_OPERATION_FAILED)
    with pytest.raises(libvirt.libvirtError):
        _migrate(other, None, {}, False, controls, False)
    assert other.calls == [BASE]

    block = _Domain(libvirt.VIR_ERR_MIGRATE_UNSAFE)
    with pytest.raises(libvirt.libvirtError):
        _migrate(block, None, {}, True, controls, False)
    assert block.calls == [BASE | libvirt.VIR_MIGRATE_NON_SHARED_INC]
