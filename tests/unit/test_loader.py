"""Good lab files load with the documented defaults."""

from __future__ import annotations

from pathlib import Path

from kvmlab.loader import DEFAULT_MEMORY_MIB, DEFAULT_VCPUS, load_lab, parse_lab

LABS = Path(__file__).resolve().parents[2] / "labs"


def test_a_small_lab_is_a_few_lines():
    lab = parse_lab("nodes:\n  a: {}\n  b: {roles: [nfs-server]}\n", "x.yaml", default_name="tiny")
    assert lab.name == "tiny"
    assert [n.name for n in lab.networks] == ["mgmt"]
    a = lab.node("a")
    assert (a.memory_mib, a.vcpus, a.networks, a.disks, a.roles) == (DEFAULT_MEMORY_MIB, DEFAULT_VCPUS, ("mgmt",), (), ())
    assert lab.by_role("nfs-server")[0].name == "b"


def test_sizes_accept_common_units():
    text = "nodes:\n  a:\n    memory: 1.5GiB\n    disks: {d1: 2G, d2: 512M, d3: 1024}\n"
    lab = parse_lab(text, "x.yaml", default_name="units")
    node = lab.node("a")
    assert node.memory_mib == 1536
    assert [d.size_mib for d in node.disks] == [2048, 512, 1024]


def test_file_name_with_underscores_gives_a_valid_lab_name(tmp_path):
    path = tmp_path / "my_lab.yaml"
    path.write_text("nodes:\n  a: {}\n")
    assert load_lab(path).name == "my-lab"


def test_smoke_lab():
    lab = load_lab(LABS / "smoke.yaml")
    assert lab.name == "smoke"
    assert [n.name for n in lab.nodes] == ["nfs1", "hv1"]
    (export,) = lab.nfs_server.exports
    assert (export.path, export.clients) == ("/srv/nfs/vms", "storage")
    assert "no_root_squash" in export.options
    (pool,) = lab.hypervisor.netfs_pools
    assert (pool.name, pool.server, pool.network, pool.target) == ("nfsvms", "nfs1", "storage", "/var/lib/libvirt/images/nfsvms")


def test_every_shipped_lab_loads():
    for path in LABS.glob("*.yaml"):
        assert load_lab(path).nodes
