"""iSCSI CHAP: per-ACL credentials in the lab file, on the target, in the hypervisor's pool and secret, never in artifacts."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from kvmlab.errors import LabFileError
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.redact import redact
from kvmlab.roles.iscsi_target import files as iscsi_files
from kvmlab.roles.iscsi_target.steps import chap_problems

ROOT = Path(__file__).resolve().parents[2]
PLACEMENT = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})
LAB = """networks: {mgmt: {}}
nodes:
  t1: {roles: [iscsi-target], disks: {d: 1G}}
  hv1: {roles: [hypervisor]}
  hv2: {roles: [hypervisor]}
roles:
  iscsi-target:
    luns: [{name: lun0, backend: fileio, disk: d, size: 256M}]
    acls:
      - initiator: hv1
        luns: [lun0]
%s"""


def lab_with(tmp_path, hv1_acl: str, more: str = ""):
    path = tmp_path / "chap.yaml"
    path.write_text(LAB % (hv1_acl + more))
    return load_lab(path)


def test_chap_lab_renders_target_auth_pool_auth_and_a_secret():
    lab = load_lab(ROOT / "labs" / "iscsi-chap.yaml")
    batch = iscsi_files.files(lab, PLACEMENT, lab.node("iscsi1"))["targetcli.batch"]
    assert "tpg1 set attribute generate_node_acls=0 demo_mode_write_protect=1 authentication=1" in batch
    assert "acls/iqn.2026-11.dev.kvmlab:iscsi-chap-hv1 set auth userid=hv1 password=hv1-lab-pass-1" in batch
    assert "acls/iqn.2026-11.dev.kvmlab:iscsi-chap-hv1 set auth mutual_userid=iscsi1 mutual_password=target-lab-pass-1" in batch
    assert "iscsi-chap-hv2 set auth mutual_userid" not in batch
    hv1 = iscsi_files.files(lab, PLACEMENT, lab.node("hv1"))
    assert "<auth type='chap' username='hv1'>" in hv1["pool-iscsi.xml"]
    assert "<secret usage='kvmlab-iscsi-chap-hv1-chap'/>" in hv1["pool-iscsi.xml"]
    assert "<target>kvmlab-iscsi-chap-hv1-chap</target>" in hv1["secret-iscsi-chap.xml"]
    assert "hv1-lab-pass-1" not in hv1["secret-iscsi-chap.xml"]  # the value goes in over SSH stdin, not in a file


def test_passwords_never_reach_artifacts():
    lab = load_lab(ROOT / "labs" / "iscsi-chap.yaml")
    batch = iscsi_files.files(lab, PLACEMENT, lab.node("iscsi1"))["targetcli.batch"]
    masked = redact(batch)
    assert not re.search(r"lab-pass", masked)
    assert "userid=hv1 password=(redacted)" in masked


def test_a_lab_without_chap_renders_no_auth():
    lab = load_lab(ROOT / "labs" / "iscsi.yaml")
    assert "authentication=0" in iscsi_files.files(lab, PLACEMENT, lab.node("iscsi1"))["targetcli.batch"]
    assert "<auth" not in iscsi_files.files(lab, PLACEMENT, lab.node("hv1"))["pool-iscsi.xml"]


def test_multipath_hypervisors_get_chap_on_their_node_records():
    acl = load_lab(ROOT / "labs" / "iscsi-chap.yaml").iscsi_target.acls[0]
    settings = iscsi_files.chap_node_settings(acl)
    assert settings["node.session.auth.authmethod"] == "CHAP"
    assert settings["node.session.auth.username_in"] == "iscsi1"


@pytest.mark.parametrize(
    "acl,more,message",
    [
        ("        chap: {user: hv1, password: short}\n", "", "password must be 12 to 64 characters .* \\(it has 5 characters\\)"),
        ("        chap: {user: hv1}\n", "", "chap of ACL 'hv1' is missing required key 'password'"),
        ("        mutual_chap: {user: t1, password: target-pass-123}\n", "", "mutual_chap of ACL 'hv1' needs chap too"),
        (
            "        chap: {user: hv1, password: the-same-pass-1}\n        mutual_chap: {user: t1, password: the-same-pass-1}\n",
            "",
            "must have a password of its own",
        ),
        (
            "        chap: {user: hv1, password: hv1-pass-12345}\n",
            "      - {initiator: hv2, luns: [lun0]}\n",
            "ACL 'hv1' has chap, 'hv2' has not: with CHAP on, the target asks every initiator",
        ),
        ("        chap: {user: 'a b', password: hv1-pass-12345}\n", "", "user 'a b' is not valid"),
    ],
)
def test_bad_chap_is_refused_at_its_line_without_echoing_a_password(tmp_path, acl, more, message):
    with pytest.raises(LabFileError, match=message) as err:
        lab_with(tmp_path, acl, more)
    assert "short" not in str(err.value) or "5 characters" in str(err.value)
    assert "the-same-pass" not in str(err.value)


def test_saved_chap_is_compared_without_showing_a_password():
    lab = load_lab(ROOT / "labs" / "iscsi-chap.yaml")
    acls = [
        {
            "node_wwn": iscsi_files.initiator_iqn(lab, "hv1"),
            "chap_userid": "hv1",
            "chap_password": "hv1-lab-pass-1",
            "chap_mutual_userid": "iscsi1",
            "chap_mutual_password": "target-lab-pass-1",
        },
        {"node_wwn": iscsi_files.initiator_iqn(lab, "hv2"), "chap_userid": "hv2", "chap_password": "not-the-one-123"},
    ]
    problems = chap_problems(lab, {"attributes": {"authentication": 1}, "node_acls": acls})
    assert problems == ["ACL hv2: chap_password is not the lab file's"]
    assert chap_problems(lab, {"attributes": {"authentication": 0}, "node_acls": acls})[0] == "TPG attribute authentication is 0, want 1"
