"""labs/multipath.yaml: a portal on each of two networks, and the hypervisor's multipath files."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from kvmlab.errors import LabFileError
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.roles.iscsi_target import files as iscsi_target
from kvmlab.roles.iscsi_target.steps import config_problems

ROOT = Path(__file__).resolve().parents[2]
NETS = {"mgmt": "10.213.4.0/24", "storage": "10.213.5.0/24", "storage2": "10.213.6.0/24"}
PLACEMENT = Placement("0a1b2c", {k: ipaddress.IPv4Network(v) for k, v in NETS.items()})


def _lab():
    return load_lab(ROOT / "labs" / "multipath.yaml")


def test_the_target_has_a_portal_on_each_storage_network():
    lab = _lab()
    assert iscsi_target.portal_networks(lab.iscsi_target) == ("storage", "storage2")
    assert iscsi_target.portals(lab, PLACEMENT) == ["10.213.5.10", "10.213.6.10"]
    batch = iscsi_target.files(lab, PLACEMENT, lab.node("iscsi1"))["targetcli.batch"]
    tpg = "/iscsi/iqn.2026-11.dev.kvmlab:multipath/tpg1"
    assert f"{tpg}/portals create 10.213.5.10 3260\n{tpg}/portals create 10.213.6.10 3260\n" in batch


def test_single_portal_labs_are_unchanged():
    lab = load_lab(ROOT / "labs" / "iscsi.yaml")
    assert not iscsi_target.multipath(lab.iscsi_target)
    files = iscsi_target.files(lab, PLACEMENT, lab.node("hv1"))
    assert "<pool type='iscsi'>" in files["pool-iscsi.xml"] and "multipath.conf" not in files


def test_the_hypervisor_logs_in_through_both_portals_with_short_timers_and_gets_an_mpath_pool():
    lab = _lab()
    files = iscsi_target.files(lab, PLACEMENT, lab.node("hv1"))
    login = files["iscsi-login.sh"]
    for portal in ("10.213.5.10:3260", "10.213.6.10:3260"):
        assert f"-p {portal} --login" in login
        assert f"-p {portal} -o update -n 'node.session.timeo.replacement_timeout' -v '5'" in login
        assert f"-p {portal} -o update -n 'node.startup' -v 'automatic'" in login
    assert "find_multipaths no" in files["multipath.conf"] and 'devnode "^vd[a-z]+"' in files["multipath.conf"]
    assert "<pool type='mpath'>" in files["pool-iscsi.xml"]


def test_saved_config_must_have_both_portals():
    lab = _lab()
    stores = iscsi_target.backstores(lab.iscsi_target)
    tpg = {
        "luns": [{"index": s.index, "storage_object": f"/backstores/{s.plugin}/{s.name}"} for s in stores],
        "portals": [{"ip_address": "10.213.5.10", "port": 3260}],
        "attributes": {"generate_node_acls": 0, "authentication": 0},
        "node_acls": [{"node_wwn": iscsi_target.initiator_iqn(lab, "hv1"), "mapped_luns": [{"index": 0, "tpg_lun": 0}]}],
    }
    saved = {
        "storage_objects": [{"plugin": s.plugin, "name": s.name, "dev": s.path} for s in stores],
        "targets": [{"wwn": lab.iscsi_target.iqn, "tpgs": [tpg]}],
    }
    assert config_problems(lab, PLACEMENT, saved) == [
        "portals: want 10.213.5.10:3260, 10.213.6.10:3260 only, saved [('10.213.5.10', 3260)]"
    ]
    tpg["portals"].append({"ip_address": "10.213.6.10", "port": 3260})
    assert config_problems(lab, PLACEMENT, saved) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("network: storage\n    networks: [storage, storage2]", "give either 'network' (one portal) or 'networks'"),
        ("networks: [storage]", "'networks' takes two distinct networks, one per path (got 1: storage)"),
        ("networks: [storage, storge]", "portal network 'storge' is not a network of node 'iscsi1'"),
    ],
)
def test_portal_networks_errors_point_at_the_setting(tmp_path, settings, message):
    text = (ROOT / "labs" / "multipath.yaml").read_text().replace("networks: [storage, storage2]", settings)
    path = tmp_path / "multipath.yaml"
    path.write_text(text)
    with pytest.raises(LabFileError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as exc:
        load_lab(path)
    assert exc.value.line > 1
