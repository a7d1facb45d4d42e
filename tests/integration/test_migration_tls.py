"""Native TLS migration between two KVM hosts reached at qemu+tls URIs.

Two scratch lab-style hosts (the lab's kvm-host script), each a libvirtd listening for TLS only on
loopback, admitting the controller's certificate alone (tls_allowed_dn_list), with QEMU's migration
certificates in a directory of their own; a CA and the certificates made here with openssl. The
instance's disk is on a directory both hosts see (cache='none'). A move to a target whose QEMU has no
server certificate fails (so the driver asked for TLS) and leaves the guest running on the source; with
the certificate it completes and the guest keeps counting.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import uuid

import pytest

from ansible_collections.multihv.cloud.plugins.module_utils import _errors as errors
from ansible_collections.multihv.cloud.plugins.module_utils._config import KvmHost
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.base import InstanceSpec, MigrationControls, MigrationTarget
from ansible_collections.multihv.cloud.plugins.module_utils._drivers.libvirt.driver import LibvirtDriver
from support import guest
from support.cloud import ticks, wait_ticks
from support.lab import run, serial

HOSTS = ('tls1', 'tls2')
QEMU_TLS_FILES = ('ca-cert.pem', 'server-cert.pem', 'server-key.pem', 'client-cert.pem', 'client-key.pem')


def _openssl_pki(pki: pathlib.Path):
    """A CA; one host certificate for both hosts (127.0.0.1, server and client purpose: libvirtd's and
    QEMU's); the controller's client certificate in a pkipath directory (cacert, clientcert, clientkey)."""
    pki.mkdir()
    script = r'''
set -euo pipefail
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
sign() { openssl req -new -key "$2" -subj "/O=multihv test/CN=$1" \
           | openssl x509 -req -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 -out "$3" \
               -extfile <(printf 'basicConstraints=critical,CA:FALSE\n%s\n' "$4") 2>/dev/null; }
key ca-key.pem
openssl req -x509 -new -key ca-key.pem -subj "/CN=multihv test CA" -days 1 -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
key host-key.pem
sign kvm-tls host-key.pem host.pem 'extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'
mkdir controller && cp ca.pem controller/cacert.pem
key controller/clientkey.pem
sign controller controller/clientkey.pem controller/clientcert.pem extendedKeyUsage=clientAuth
'''
    subprocess.run(['bash', '-c', script], cwd=pki, check=True, capture_output=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _qemu_tls_dir(pki: pathlib.Path, directory: pathlib.Path, with_server_cert: bool = True):
    directory.mkdir(exist_ok=True)
    sources = {'ca-cert.pem': 'ca.pem', 'server-cert.pem': 'host.pem', 'server-key.pem': 'host-key.pem',
               'client-cert.pem': 'host.pem', 'client-key.pem': 'host-key.pem'}
    for name in QEMU_TLS_FILES:
        if with_server_cert or name != 'server-cert.pem':
            shutil.copy(pki / sources[name], directory / name)


@pytest.fixture(name='tls_hosts')
def fixture_tls_hosts(lab, tmp_path):
    """Two running TLS hosts: {name: (KvmHost, host dir)}; stopped afterwards."""
    pki = tmp_path / 'pki'
    _openssl_pki(pki)
    shared, seen_local = tmp_path / 'shared', tmp_path / 'local'
    shared.mkdir()
    # Incoming migration ports after the lab hosts' (host i of the lab: base + 100 * (i - 1) .. + 99).
    migration_base = lab.info['kvm_hosts'][0]['migration_port'] + 100 * len(lab.hosts)
    kvm_host = str(lab.dir / 'bin' / 'kvm-host')
    made = {}
    try:
        for index, name in enumerate(HOSTS):
            host_dir = tmp_path / name
            for sub in ('etc', 'lib', 'log', 'local'):
                (host_dir / sub).mkdir(parents=True)
            # kvm1's probe of QEMU's capabilities: a fresh libvirtd spends seconds making its own.
            shutil.copytree(pathlib.Path(lab.hosts['kvm1']['dir']) / 'cache', host_dir / 'cache')
            shutil.copy(pathlib.Path(lab.hosts['kvm1']['dir']) / 'hosts', host_dir / 'hosts')
            _qemu_tls_dir(pki, host_dir / 'qemu-tls', with_server_cert=name != 'tls2')
            port = _free_port()
            (host_dir / 'etc' / 'libvirtd.conf').write_text(
                'listen_tls = 1\nlisten_tcp = 0\nlisten_addr = "127.0.0.1"\ntls_port = "%d"\n'
                'ca_file = "%s/ca.pem"\ncert_file = "%s/host.pem"\nkey_file = "%s/host-key.pem"\n'
                'tls_allowed_dn_list = ["*,CN=controller"]\nhost_uuid = "%s"\nlog_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
                % (port, pki, pki, pki, uuid.uuid4()))
            qemu_conf = (pathlib.Path(lab.hosts['kvm1']['dir']) / 'etc' / 'qemu.conf').read_text()
            lines = [line for line in qemu_conf.splitlines() if not line.startswith(('migration_port_', 'migrate_tls_'))]
            lines += ['migration_port_min = %d' % (migration_base + 100 * index), 'migration_port_max = %d' % (migration_base + 100 * index + 99),
                      'migrate_tls_x509_cert_dir = "%s"' % (host_dir / 'qemu-tls')]
            (host_dir / 'etc' / 'qemu.conf').write_text('\n'.join(lines) + '\n')
            uri = 'qemu+tls://127.0.0.1:%d/system?pkipath=%s' % (port, pki / 'controller')
            (host_dir / 'host.env').write_text('NAME=%s\nURI=%s\nLOCAL_PATH=%s\n' % (name, uri, seen_local))
            made[name] = (KvmHost(name=name, uri=uri, instance_path=str(seen_local), shared_instance_path=str(shared),
                                  migration_address='127.0.0.1', timeout=10), host_dir)
        starting = [(subprocess.Popen([kvm_host, 'start', str(host_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), host_dir)
                    for _host, host_dir in made.values()]
        for process, host_dir in starting:
            output = process.communicate(timeout=60)[0]
            assert process.returncode == 0, 'kvm-host start %s: %s' % (host_dir, output)
        yield made
    finally:
        for _host, host_dir in made.values():
            run(kvm_host, 'kill', str(host_dir), timeout=60, check=False)  # scratch hosts: no clean shutdown needed


def _spec(name, storage):
    inst_uuid = str(uuid.uuid4())
    return InstanceSpec(uuid=inst_uuid, name='%s-%s' % (name, inst_uuid[:8]), node='tls1', vcpus=1, memory_mb=32, disk_gb=1,
                        image='tls-tick', storage=storage, hostname=name, metadata={})


def test_live_and_block_migration_between_tls_hosts_use_tls(lab, tls_hosts):
    (host1, dir1), (host2, dir2) = tls_hosts['tls1'], tls_hosts['tls2']
    source, target = LibvirtDriver(host1), LibvirtDriver(host2)
    live, block = _spec('tls-live', 'shared'), _spec('tls-block', 'local')
    try:
        for driver in (source, target):
            driver.ensure_image('tls-tick', lab.info['images']['tick_qcow2'], 'qcow2')
        source.spawn(live)
        source.spawn(block)
        logs = {live.uuid: next(pathlib.Path(host1.shared_instance_path).glob(live.uuid + '*log')),
                block.uuid: next((dir1 / 'local').glob(block.uuid + '*log'))}
        for log in logs.values():
            wait_ticks(log, count=2, timeout=60)

        # tls2's QEMU has the CA and its client certificate but no server certificate, which only a
        # TLS migration needs: both moves fail, and the guests run on at the source.
        for spec, mode in ((live, 'live'), (block, 'block')):
            with pytest.raises(errors.DriverError, match='server-cert.pem') as refused:
                source.migrate(spec.uuid, 'tls1', MigrationTarget(target, 'tls2'), mode, MigrationControls())
            assert 'runs on the source as before' in str(refused.value)
        assert sorted(i.power_state for i in source.list_instances()) == ['running', 'running']
        assert target.list_instances() == [] and not list((dir2 / 'local').glob(block.uuid + '*.qcow2'))

        shutil.copy(dir2 / 'qemu-tls' / 'client-cert.pem', dir2 / 'qemu-tls' / 'server-cert.pem')
        for spec, mode in ((live, 'live'), (block, 'block')):
            before = ticks(logs[spec.uuid])[-1]
            state, stats = source.migrate(spec.uuid, 'tls1', MigrationTarget(target, 'tls2'), mode, MigrationControls())
            assert (state.node, state.power_state) == ('tls2', 'running') and stats['memory_total'] > 0
            # The shared log goes on; a block move's target begins a log of its own, with no boot line.
            log = logs[spec.uuid] if mode == 'live' else next((dir2 / 'local').glob(block.uuid + '*log'))
            assert wait_ticks(log, count=2, after=before)[-1] > before
            boots = serial(log)
            assert (len(boots) == 1 and not guest.gaps(boots[0].ticks)) if mode == 'live' else boots == [], \
                '%s booted again: it did not move live' % spec.name
        assert source.list_instances() == []
    finally:
        for driver in (source, target):
            for spec in (live, block):
                driver.destroy(spec.uuid, driver.host.name)
            driver.close()
