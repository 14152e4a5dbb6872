"""A node's `display:`: read from the lab file with clear errors, rendered into its domain XML."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvmlab import render
from kvmlab.display_checks import VIDEO
from kvmlab.errors import LabFileError
from kvmlab.loader import load_lab
from kvmlab.model import VIDEO_MODELS, Placement

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForGoldenRendersOnly0000000000000 test"


def lab_with(tmp_path: Path, display: str):
    path = tmp_path / "d.yaml"
    path.write_text(f"nodes:\n  n1:\n    display:\n{display}")
    return load_lab(path)


def domain_xml(lab) -> ET.Element:
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")})
    files = render.render_lab(
        render.RenderInput(
            lab=lab,
            placement=placement,
            backing=render.Backing("/pool", "0123"),
            accel="tcg",
            ssh_public_key=KEY,
            host_keys={n.name: ("private", KEY) for n in lab.nodes},
            owner=render.Owner(pid=1, user="u", host="h", boot_id="b", created="2026-01-01T00:00:00+00:00"),
            console_dir="/console",
        )
    )
    return ET.fromstring(files["domains/n1.xml"])


def test_the_display_lab_has_every_video_model_kvmlab_checks():
    lab = load_lab(ROOT / "labs" / "display.yaml")
    videos = {n.display.video for n in lab.nodes if n.display}
    assert videos == set(VIDEO) and set(VIDEO) < set(VIDEO_MODELS)
    assert any(n.display.vnc and n.display.vnc.password for n in lab.nodes)


def test_vnc_with_password_and_spice_reach_the_domain_xml(tmp_path):
    lab = lab_with(tmp_path, "      video: virtio\n      vnc: {password: abc12345, listen: 127.0.0.1}\n      spice: true\n")
    root = domain_xml(lab)
    vnc = root.find("./devices/graphics[@type='vnc']")
    assert vnc.get("passwd") == "abc12345" and vnc.find("listen").get("address") == "127.0.0.1"
    assert root.find("./devices/graphics[@type='spice']") is not None
    assert [m.get("type") for m in root.findall("./devices/video/model")] == ["virtio"]
    assert root.findtext("./os/kernel").endswith(".vmlinuz-display"), "a node with a screen boots the kernel with DRM drivers"


def test_defaults_vga_for_vnc_qxl_for_spice_and_no_display_keeps_the_cloud_kernel(tmp_path):
    assert lab_with(tmp_path, "      vnc: true\n").nodes[0].display.video == "vga"
    assert lab_with(tmp_path, "      spice: {listen: 127.0.0.1}\n").nodes[0].display.video == "qxl"
    plain = tmp_path / "plain.yaml"
    plain.write_text("nodes:\n  n1:\n")
    root = domain_xml(load_lab(plain))
    assert root.find("./devices/video") is None and root.find("./devices/graphics") is None
    assert root.findtext("./os/kernel").endswith(".vmlinuz")


@pytest.mark.parametrize(
    ("display", "line", "words"),
    [
        ("      video: cirrus\n", 4, "video of display of node 'n1' 'cirrus' is not a video model (vga, qxl, virtio, none)"),
        ("      vnc: {password: longer-than-8}\n", 4, "must be 1 to 8 printable ASCII characters"),
        ("      vnc: {listen: localhost}\n", 4, "'localhost' is not an IPv4 address"),
        ("      video: none\n      vnc: true\n", 4, "'video: none' leaves nothing for vnc/spice to show"),
        ("      vcn: true\n", 4, "unknown key 'vcn'"),
        ("      spice: maybe\n", 4, "spice of display of node 'n1' must be a mapping"),
        ("      vnc: {password: 12345678, port: 5901}\n", 4, "unknown key 'port'"),
    ],
)
def test_bad_display_names_the_line_and_what_would_be_right(tmp_path, display, line, words):
    with pytest.raises(LabFileError) as info:
        lab_with(tmp_path, display)
    assert info.value.line == line and words in info.value.message, info.value.message


def test_vnc_password_is_redacted_from_artifacts(tmp_path):
    from kvmlab.redact import redact

    lab = lab_with(tmp_path, "      vnc: {password: 'S3cr\"t'}\n")
    xml = ET.tostring(domain_xml(lab), encoding="unicode")
    assert "S3cr" in xml
    shown = redact(xml)
    assert "S3cr" not in shown and ET.fromstring(shown).find("./devices/graphics").get("passwd") == "(redacted)"
