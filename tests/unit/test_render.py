"""Rendering is pure and stable: golden files for the smoke lab, and libvirt accepts every XML."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlab import render
from kvmlab.errors import HarnessError
from kvmlab.loader import load_lab
from kvmlab.model import Lab, Network, Node, Placement

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden" / "smoke"
FAKE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForGoldenRendersOnly0000000000000 test"
FAKE_PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----"


def render_smoke(accel: str = "tcg", mtus: dict[str, int] | None = None) -> dict[str, str]:
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})
    return render.render_lab(
        render.RenderInput(
            lab=lab,
            placement=placement,
            backing=render.Backing("/var/lib/kvmlab/pool", "0123456789abcdef"),
            accel=accel,
            ssh_public_key=FAKE_KEY,
            host_keys={n.name: (FAKE_PRIVATE, FAKE_KEY) for n in lab.nodes},
            owner=render.Owner(pid=4242, user="tester", host="builder", boot_id="boot-1", created="2026-01-01T00:00:00+00:00"),
            console_dir="/var/lib/kvmlab/console",
            mtus=mtus or {},
        )
    )


def test_render_matches_golden_files():
    files = render_smoke()
    if os.environ.get("KVMLAB_UPDATE_GOLDEN"):
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, text in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
    golden = {str(p.relative_to(GOLDEN)): p.read_text() for p in GOLDEN.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(golden)
    for rel, text in files.items():
        assert text == golden[rel], f"{rel} differs from its golden copy (KVMLAB_UPDATE_GOLDEN=1 to accept)"


def test_a_network_that_crosses_hosts_has_the_tunnels_mtu_on_its_bridge_and_in_its_guests():
    files = render_smoke(mtus={"storage": 1450})
    assert "MTUBytes" not in files["seed/nfs1/kvmlab-net-mgmt.network"]
    assert "[Link]\nMTUBytes=1450\n" in files["seed/nfs1/kvmlab-net-storage.network"]
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})
    xml = render.render_network(lab, placement, "storage", address="10.213.5.2", mtu=1450)
    assert "<mtu size='1450'/>" in xml and "<ip address='10.213.5.2' prefix='24'/>" in xml
    assert "<mtu" not in render.render_network(lab, placement, "storage")


def test_preview_placement_fits_any_prefix():
    from kvmlab.loader import parse_lab

    lab = parse_lab("networks:\n  a: {prefix: 16}\n  b: {prefix: 24}\n  c: {prefix: 28}\nnodes:\n  n: {}\n", "p.yaml", "p")
    with pytest.raises(HarnessError, match="network 'b', /24"):  # a /16 takes the whole range: nothing is left
        render.preview_placement(lab)
    lab = parse_lab("networks:\n  a: {prefix: 20}\n  b: {prefix: 24}\n  c: {prefix: 28}\nnodes:\n  n: {}\n", "p.yaml", "p")
    subnets = render.preview_placement(lab).subnets
    assert [str(subnets[k]) for k in "abc"] == ["10.213.0.0/20", "10.213.16.0/24", "10.213.17.0/28"]


def test_render_is_deterministic():
    assert render_smoke() == render_smoke()


def test_tcg_caps_translation_cache_and_uses_maximum_cpu():
    tcg, kvm = render_smoke("tcg")["domains/nfs1.xml"], render_smoke("kvm")["domains/nfs1.xml"]
    assert "<domain type='qemu'>" in tcg and "<tb-cache unit='MiB'>128</tb-cache>" in tcg and "mode='maximum'" in tcg
    assert "<domain type='kvm'>" in kvm and "tb-cache" not in kvm and "mode='host-passthrough'" in kvm


def test_networks_are_isolated():
    for rel, text in render_smoke().items():
        if rel.startswith("networks/"):
            assert "<forward" not in text
            assert "<dns enable='no'/>" in text


def test_every_node_resolves_every_other_by_name():
    files = render_smoke()
    hosts = files["seed/hv1/kvmlab-hosts"].splitlines()
    for line in ("10.213.4.10 nfs1-mgmt nfs1", "10.213.5.10 nfs1-storage", "10.213.4.11 hv1-mgmt hv1", "10.213.5.11 hv1-storage"):
        assert line in hosts
    # The NoCloud user-data of the same seed carries the same table.
    assert all("      " + line in files["seed/hv1/user-data"] for line in hosts)


def test_seed_gives_each_nic_its_address_by_mac():
    files = render_smoke()
    storage = files["seed/nfs1/kvmlab-net-storage.network"]
    assert "MACAddress=52:54:0a:d5:05:0a" in storage and "Address=10.213.5.10/24" in storage
    assert files["seed/nfs1/kvmlab-hostname"] == "nfs1\n"


def test_names_are_tagged_and_bridges_fit_linux_limits():
    files = render_smoke()
    assert "<name>kvmlab-smoke-0a1b2c-nfs1</name>" in files["domains/nfs1.xml"]
    assert "run='0a1b2c'" in files["domains/nfs1.xml"] and "pid='4242'" in files["domains/nfs1.xml"]
    assert len(render.bridge_name("a-very-long-lab-name-indeed", "0a1b2c", "storage")) <= 15


def _validator() -> str:
    tool = shutil.which("virt-xml-validate")
    if not tool:
        pytest.fail("virt-xml-validate is missing: apt-get install libvirt-clients libxml2-utils (or `make deps`)")
    return tool


@pytest.mark.parametrize("kind,schema", [("domains", "domain"), ("networks", "network"), ("volumes", "storagevol")])
def test_rendered_xml_passes_virt_xml_validate(tmp_path, kind, schema):
    tool = _validator()
    docs = {rel: text for rel, text in render_smoke().items() if rel.startswith(kind + "/")}
    assert docs
    for rel, text in docs.items():
        path = tmp_path / rel.replace("/", "_")
        path.write_text(text)
        proc = subprocess.run([tool, str(path), schema], capture_output=True, text=True)
        assert proc.returncode == 0, f"{rel}: {proc.stderr}"


def test_pool_xml_passes_virt_xml_validate(tmp_path):
    tool = _validator()
    pools = {"host-dir.xml": render.render_pool_xml("kvmlab", "/var/lib/kvmlab/pool")}
    pools.update({rel.replace("/", "_"): t for rel, t in render_smoke().items() if "/pool-" in rel})
    assert len(pools) == 3  # host pool, ISO library, netfs
    for name, text in pools.items():
        (tmp_path / name).write_text(text)
        proc = subprocess.run([tool, str(tmp_path / name), "storagepool"], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_volumes_rendered_for_uploads_and_overlays_pass_virt_xml_validate(tmp_path):
    tool = _validator()
    volumes = {
        "upload.xml": render.render_upload_volume("base-0123.vmlinuz", 8123456, "raw"),
        "overlay.xml": render.render_overlay_volume("kvmlab-smoke-0a1b2c-hv1-root.c1.qcow2", "/var/lib/kvmlab/pool/layer.qcow2"),
    }
    assert "<capacity unit='bytes'>8123456</capacity>" in volumes["upload.xml"] and "<format type='raw'/>" in volumes["upload.xml"]
    for name, text in volumes.items():
        (tmp_path / name).write_text(text)
        proc = subprocess.run([tool, str(tmp_path / name), "storagevol"], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_ssh_files_name_every_node_and_pin_its_host_key():
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})
    keys = {n.name: f"ssh-ed25519 AAAA{n.name} {n.name}@kvmlab-smoke-0a1b2c" for n in lab.nodes}
    files = render.render_ssh_files(lab, placement, Path("/run/kvmlab/r"), keys)
    assert files["known_hosts"] == (
        "nfs1,10.213.4.10,10.213.5.10 ssh-ed25519 AAAAnfs1\n"  # the key's comment is not part of the pin
        "hv1,10.213.4.11,10.213.5.11 ssh-ed25519 AAAAhv1\n"
    )
    block = (
        "Host {name}\n  HostName {address}\n  User root\n  IdentityFile /run/kvmlab/r/id_ed25519\n"
        "  UserKnownHostsFile /run/kvmlab/r/known_hosts\n  StrictHostKeyChecking yes\n  IdentitiesOnly yes\n"
    )
    assert files["ssh_config"] == block.format(name="nfs1", address="10.213.4.10") + "\n" + block.format(name="hv1", address="10.213.4.11")


def test_address_problems_names_nodes_outside_their_subnet():
    lab = Lab(
        name="crowded",
        path="crowded.yaml",
        networks=(Network("mgmt", 28),),
        nodes=tuple(Node(f"n{i}", (), 512, 1, (), ("mgmt",)) for i in range(6)),
    )
    placement = Placement("r1", {"mgmt": ipaddress.IPv4Network("10.1.0.0/28")})
    assert render.address_problems(lab, placement) == ["node 'n5' gets 10.1.0.15, not a free address of 10.1.0.0/28 (network 'mgmt')"]
    fits = Lab(name="fits", path="fits.yaml", networks=lab.networks, nodes=lab.nodes[:5])
    assert render.address_problems(fits, placement) == []
