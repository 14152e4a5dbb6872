"""`kvmlab graph`: a lab's picture from its file alone, drawn by Graphviz's dot."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvmlab import graph
from kvmlab.errors import HarnessError
from kvmlab.loader import load_lab

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"


def _svg_text(path: Path) -> str:
    root = ET.parse(path).getroot()  # valid XML, or this raises
    assert root.tag == f"{SVG}svg"
    return "\n".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))


def test_the_storage_lab_picture_names_every_node_network_pool_and_storage_path(tmp_path):
    lab = load_lab(ROOT / "labs" / "storage.yaml")
    text = _svg_text(graph.write(lab, tmp_path / "storage.svg"))

    for node in lab.nodes:
        assert node.name in text
        assert ", ".join(node.roles) in text, f"roles of {node.name}"
    for net in lab.networks:
        assert f"network {net.name}" in text
    nfs_pool = lab.hypervisor.netfs_pools[0]
    assert f"netfs pool {nfs_pool.name}:" in text and f"{nfs_pool.server}:{nfs_pool.path}" in text
    assert f"mounted at {nfs_pool.target}" in text
    iscsi = lab.iscsi_target
    assert f"iscsi pool {iscsi.pool}: {iscsi.iqn}" in text
    for lun in iscsi.luns:
        assert f"{lun.name} ({lun.backend} on disk {lun.disk})" in text
    for node in lab.by_role("gluster"):
        assert f"brick {node.name}:{lab.gluster.brick_dir}" in text
    assert f"Gluster volume {lab.gluster.volume}" in text and f"pool {lab.gluster.pool}: FUSE mount" in text
    assert f"Ceph pool {lab.ceph.pool}" in text
    assert text.count(f"bluestore OSD on disk {lab.ceph.osd_disk}") == len(lab.by_role("ceph-osd"))
    assert text.count(f"libvirt secret: key of client.{lab.ceph.client}") == len(lab.by_role("hypervisor"))
    assert f"pool {lab.local_raid.pool} at {lab.local_raid.mount}" in text


def _edges(path: Path) -> dict[str, list[str]]:
    """Each edge of an SVG drawn by dot (its title, e.g. `node_hv1->node_iscsi1`) with its label's text."""
    out: dict[str, list[str]] = {}
    for g in ET.parse(path).getroot().iter(f"{SVG}g"):
        if g.get("class") == "edge":
            title = g.findtext(f"{SVG}title") or ""
            out.setdefault(title, []).append("\n".join("".join(t.itertext()) for t in g.iter(f"{SVG}text")))
    return out


def test_each_initiator_is_drawn_with_only_the_luns_its_acl_allows(tmp_path):
    lab = load_lab(ROOT / "labs" / "storage.yaml")
    edges = _edges(graph.write(lab, tmp_path / "storage.svg"))
    target = lab.by_role("iscsi-target")[0].name
    for acl in lab.iscsi_target.acls:
        (label,) = edges[f"node_{acl.initiator}->node_{target}"]
        allowed = {lun.name for lun in lab.iscsi_target.luns if f"{lun.name} (" in label}
        assert allowed == set(acl.luns), acl.initiator
    initiators = {title.split("->")[0] for title, labels in edges.items() if any("iscsi pool" in x for x in labels)}
    assert initiators == {f"node_{acl.initiator}" for acl in lab.iscsi_target.acls}


def test_a_lab_without_storage_roles_is_nodes_and_networks(tmp_path):
    lab_file = tmp_path / "bare.yaml"
    lab_file.write_text("nodes:\n  a: {}\n  b: {}\n")
    text = _svg_text(graph.write(load_lab(lab_file), tmp_path / "bare.svg"))
    assert "a\n" in text + "\n" and "b\n" in text + "\n" and "network mgmt" in text
    assert "pool" not in text


@pytest.mark.parametrize("suffix", [".png", ".pdf", ".dot"])
def test_other_formats_come_from_the_file_name(tmp_path, suffix):
    out = graph.write(load_lab(ROOT / "labs" / "smoke.yaml"), tmp_path / f"smoke{suffix}")
    head = out.read_bytes()[:8]
    assert head.startswith({".png": b"\x89PNG", ".pdf": b"%PDF", ".dot": b"digraph"}[suffix])


def test_an_unknown_format_and_a_missing_dot_are_one_clear_error(tmp_path, monkeypatch):
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    with pytest.raises(HarnessError, match=r"lab\.jpg: cannot tell the picture's format from '\.jpg': name the file \.svg"):
        graph.write(lab, tmp_path / "lab.jpg")
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    with pytest.raises(HarnessError, match=r"Graphviz's `dot` is not installed: `apt-get install graphviz`"):
        graph.write(lab, tmp_path / "lab.svg")


def test_the_command_draws_into_the_current_folder_by_default(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "kvmlab.cli", "graph", str(ROOT / "labs" / "smoke.yaml")], cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "lab smoke: 2 nodes, 2 networks drawn to smoke.svg"
    assert "nfs1" in _svg_text(tmp_path / "smoke.svg")
