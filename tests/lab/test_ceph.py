"""labs/ceph.yaml: a hand-bootstrapped Ceph 16 cluster and a hypervisor's rbd pool on it (OUTLINE 5.7)."""

from __future__ import annotations

import json
import uuid

import pytest

from kvmlab.roles.ceph.files import fsid, secret_uuid
from kvmlab.roles.ceph.steps import EXPECTED_WARNINGS

pytestmark = pytest.mark.lab("ceph")

MON = "ceph-mon1"  # also the ceph-admin node
HV = "hv1"
OSDS = 3
CEPH = "ceph --connect-timeout 60"


def test_cluster_has_every_osd_up_and_in_and_is_healthy(lab):
    status = json.loads(lab.node(MON).host.check_output(f"{CEPH} -s --format json"))
    osdmap = status["osdmap"].get("osdmap", status["osdmap"])  # nested before Pacific, flat since
    assert (osdmap["num_osds"], osdmap["num_up_osds"], osdmap["num_in_osds"]) == (OSDS, OSDS, OSDS)
    health = status["health"]
    unexpected = sorted(set(health.get("checks", {})) - set(EXPECTED_WARNINGS))
    assert health["status"] in ("HEALTH_OK", "HEALTH_WARN"), health
    assert unexpected == [], health
    assert status["fsid"] == fsid(lab.lab, lab.placement)


def test_pool_has_the_lab_pg_count_and_one_replica_per_osd_host(lab):
    pool = lab.lab.ceph.pool
    mon = lab.node(MON).host
    assert json.loads(mon.check_output(f"{CEPH} osd pool get {pool} pg_num --format json"))["pg_num"] == lab.lab.ceph.pg_num
    assert json.loads(mon.check_output(f"{CEPH} osd pool get {pool} size --format json"))["size"] == OSDS
    assert "rbd" in json.loads(mon.check_output(f"{CEPH} osd pool application get {pool} --format json"))


def test_client_key_reads_and_writes_its_own_pool(lab):
    s = lab.lab.ceph
    mon = lab.node(MON).host
    name = f"probe-{uuid.uuid4().hex[:8]}"
    keyring = _client_keyring(mon, s.client)
    try:
        rados = f"rados -p {s.pool} --id {s.client} --keyring {keyring}"
        mon.run_expect([0], f"echo {name} > /tmp/{name} && {rados} put {name} /tmp/{name}")
        assert mon.check_output(f"{rados} get {name} -") == name
        mon.run_expect([0], f"{rados} rm {name}")
    finally:
        mon.run(f"rm -f {keyring} /tmp/{name}")


def test_client_key_is_refused_on_another_pool(lab):
    s = lab.lab.ceph
    mon = lab.node(MON).host
    other = f"other-{uuid.uuid4().hex[:6]}"
    keyring = _client_keyring(mon, s.client)
    # The pool is deleted afterwards (ceph.conf allows it) so that later runs of the
    # suite and the health check see only the lab's own pool.
    mon.run_expect([0], f"{CEPH} osd pool create {other} 8 8 && {CEPH} osd pool application enable {other} rados")
    try:
        mon.run_expect([0], f"rados -p {other} put as-admin /etc/hostname")  # the admin may: the pool works
        denied = mon.run(f"rados -p {other} --id {s.client} --keyring {keyring} put {other} /etc/hostname")
        assert denied.rc != 0
        said = (denied.stdout + denied.stderr).lower()
        assert "operation not permitted" in said or "permission denied" in said, said
        assert mon.run(f"rados -p {other} --id {s.client} --keyring {keyring} get as-admin -").rc != 0
    finally:
        mon.run(f"rm -f {keyring}")
        mon.run(f"{CEPH} osd pool rm {other} {other} --yes-i-really-really-mean-it")
    assert other not in mon.check_output(f"{CEPH} osd pool ls").split()


def test_rbd_pool_is_running_on_the_hypervisor(lab):
    s = lab.lab.ceph
    rows = [line.split() for line in lab.node(HV).host.check_output("virsh pool-list --all --details").splitlines()[2:]]
    row = next((r for r in rows if r and r[0] == s.libvirt_pool), None)
    assert row is not None, rows
    assert row[1:3] == ["running", "yes"]  # state, autostart
    xml = lab.node(HV).host.check_output(f"virsh pool-dumpxml {s.libvirt_pool}")
    assert "<pool type='rbd'>" in xml and f"<name>{s.pool}</name>" in xml
    # An rbd pool stays running only while libvirtd does: a libvirtd that exits when
    # idle (Debian's --timeout 120) comes back with the pool inactive.
    assert "--timeout" not in lab.node(HV).host.check_output("ps -o args= -C libvirtd")


def test_volume_created_in_the_libvirt_pool_is_an_rbd_image(lab):
    s = lab.lab.ceph
    hv, mon = lab.node(HV).host, lab.node(MON).host
    name = f"probe-{uuid.uuid4().hex[:8]}"
    hv.run_expect([0], f"virsh vol-create-as {s.libvirt_pool} {name} 64M")
    try:
        assert name in mon.check_output(f"rbd ls {s.pool}").split()
        info = json.loads(mon.check_output(f"rbd info {s.pool}/{name} --format json"))
        assert info["size"] == 64 * 1024 * 1024
    finally:
        hv.run(f"virsh vol-delete --pool {s.libvirt_pool} {name}")
    assert name not in mon.check_output(f"rbd ls {s.pool}").split()


def test_secret_on_the_hypervisor_holds_the_client_key(lab):
    s = lab.lab.ceph
    uuid_ = secret_uuid(lab.lab, lab.placement)
    hv, mon = lab.node(HV).host, lab.node(MON).host
    usage = hv.check_output(f"virsh secret-dumpxml {uuid_}")
    assert f"<name>client.{s.client} secret</name>" in usage
    # Compare digests, so that neither key is ever printed or kept in a report.
    on_hv = hv.check_output(f"virsh secret-get-value {uuid_} | tr -d '\\n' | sha256sum")
    on_mon = mon.check_output(f"{CEPH} auth get-key client.{s.client} | tr -d '\\n' | sha256sum")
    assert on_hv == on_mon
    # ...and it is not the digest of nothing (a secret without a value).
    assert not on_hv.startswith("e3b0c44298fc1c149afbf4c8996fb924")


def _client_keyring(mon, client: str) -> str:
    """A keyring file of the client key, readable by root only, for rados --id."""
    path = f"/root/client-{uuid.uuid4().hex[:8]}.keyring"
    mon.run_expect([0], f"umask 077 && {CEPH} auth get client.{client} -o {path}")
    return path
