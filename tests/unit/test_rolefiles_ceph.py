"""Files of the ceph roles: ceph.conf, the bootstrap scripts, the hypervisors' secret and rbd pool XML."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.roles.ceph import files as ceph

ROOT = Path(__file__).resolve().parents[2]
LAB = load_lab(ROOT / "labs" / "ceph.yaml")
PLACEMENT = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})
MON_ADDR = "10.213.5.10"  # ceph-mon1 is the first node; addresses start at .10


def files(node: str, lab=LAB, pl=PLACEMENT) -> dict[str, str]:
    return ceph.files(lab, pl, lab.node(node))


def conf(node: str = "ceph-mon1", lab=LAB, pl=PLACEMENT) -> dict[str, str]:
    """ceph.conf as {option: value}, comments and section headers dropped."""
    out = {}
    for line in files(node, lab, pl)["ceph.conf"].splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_every_ceph_node_and_hypervisor_gets_the_same_ceph_conf():
    texts = {n.name: files(n.name)["ceph.conf"] for n in LAB.nodes}
    assert len(set(texts.values())) == 1
    assert sorted(files("ceph-mon1")) == ["ceph.conf", "mgr-start.sh", "mon-bootstrap.sh"]
    assert sorted(files("ceph-osd2")) == ["ceph.conf", "osd-block-owner.conf", "osd-create.sh"]
    assert sorted(files("hv1")) == ["ceph.conf", "pool-ceph.xml", "secret-ceph.xml"]


def test_an_osd_is_made_on_its_raw_disk_and_its_key_never_leaves_the_node_but_to_the_monitor():
    script = files("ceph-osd2")["osd-create.sh"]
    assert "DEVICE=/dev/disk/by-id/virtio-osd\n" in script
    assert 'ln -s "$DEVICE" "$data/block"' in script and "--osd-objectstore bluestore" in script
    assert "ceph-volume" not in script.split("set -eu", 1)[1], "no LVM layer"
    # The secret goes to `ceph osd new` on stdin and into the OSD's keyring through shell builtins: no argv holds it.
    assert "| ceph --connect-timeout" in script and 'osd new "$uuid" -i -' in script
    assert [line for line in script.splitlines() if "$secret" in line and not line.lstrip().startswith(("secret=", "id=", "(umask"))] == []
    drop_in = files("ceph-osd2")["osd-block-owner.conf"]
    assert "ExecStartPre=+" in drop_in and "ceph-%i/block" in drop_in


def test_ceph_conf_names_the_monitor_on_the_public_network():
    c = conf()
    assert c["mon_initial_members"] == "ceph-mon1"
    assert c["mon_host"] == f"[v2:{MON_ADDR}:3300,v1:{MON_ADDR}:6789]"
    assert c["public_network"] == "10.213.5.0/24"
    assert c["auth_cluster_required"] == c["auth_service_required"] == c["auth_client_required"] == "cephx"
    assert c["auth_allow_insecure_global_id_reclaim"] == "false"
    assert c["osd_pool_default_pg_autoscale_mode"] == "off"
    assert int(c["osd_memory_target"]) >= 896 * 1024 * 1024  # Ceph refuses less


def test_pool_size_follows_the_osd_count():
    c = conf()
    assert (c["osd_pool_default_size"], c["osd_pool_default_min_size"]) == ("3", "2")
    assert "mon_warn_on_pool_no_redundancy" not in c
    one_osd = replace(LAB, nodes=tuple(n for n in LAB.nodes if n.name not in ("ceph-osd2", "ceph-osd3")))
    c1 = conf(lab=one_osd)
    assert (c1["osd_pool_default_size"], c1["osd_pool_default_min_size"]) == ("1", "1")
    assert c1["mon_warn_on_pool_no_redundancy"] == "false"


def test_fsid_is_stable_per_run_and_differs_between_runs():
    fsid = conf()["fsid"]
    assert uuid.UUID(fsid).version == 5
    assert fsid == ceph.fsid(LAB, PLACEMENT) == conf()["fsid"]
    other_run = Placement("ffffff", PLACEMENT.subnets)
    assert conf(pl=other_run)["fsid"] != fsid
    assert ceph.secret_uuid(LAB, other_run) != ceph.secret_uuid(LAB, PLACEMENT) != fsid
    assert f"--fsid {fsid}" in files("ceph-mon1")["mon-bootstrap.sh"]


def test_bootstrap_script_makes_the_three_keys_and_the_monmap():
    script = files("ceph-mon1")["mon-bootstrap.sh"]
    for name in ("-n mon.", "-n client.admin", "-n client.bootstrap-osd"):
        assert name in script
    assert f"--addv \"$ID\" '[v2:{MON_ADDR}:3300,v1:{MON_ADDR}:6789]'" in script
    assert 'ceph-mon --mkfs -i "$ID"' in script
    assert "ID=ceph-mon1" in script
    mgr = files("ceph-mon1")["mgr-start.sh"]
    assert 'auth get-or-create "mgr.$ID"' in mgr and 'systemctl start "ceph-mgr@$ID"' in mgr


def test_hypervisor_xml_points_at_the_monitor_with_the_client_secret():
    f = files("hv1")
    secret = ceph.secret_uuid(LAB, PLACEMENT)
    assert f"<uuid>{secret}</uuid>" in f["secret-ceph.xml"]
    assert "<name>client.KVMpool secret</name>" in f["secret-ceph.xml"]
    pool = f["pool-ceph.xml"]
    assert "<pool type='rbd'>" in pool and "<name>ceph</name>" in pool and "<name>KVMpool</name>" in pool
    assert f"<host name='{MON_ADDR}' port='6789'/>" in pool
    assert "<auth username='KVMpool' type='ceph'>" in pool and f"<secret uuid='{secret}'/>" in pool


def test_lab_without_ceph_renders_nothing():
    smoke = load_lab(ROOT / "labs" / "smoke.yaml")
    pl = Placement("0a1b2c", PLACEMENT.subnets)
    assert all(ceph.files(smoke, pl, n) == {} for n in smoke.nodes)


def test_hypervisor_xml_passes_virt_xml_validate(tmp_path):
    tool = shutil.which("virt-xml-validate")
    if not tool:
        pytest.fail("virt-xml-validate is missing: apt-get install libvirt-clients libxml2-utils (or `make deps`)")
    for name, schema in (("secret-ceph.xml", "secret"), ("pool-ceph.xml", "storagepool")):
        path = tmp_path / name
        path.write_text(files("hv1")[name])
        proc = subprocess.run([tool, str(path), schema], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
