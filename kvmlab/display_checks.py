"""Checks of the nodes that have a `display:` (OUTLINE 6.1, 6.3): the domain and QEMU carry the
video model and graphics the lab file asks for, the guest sees the device with its DRM driver
bound, each VNC server asks for a password exactly when the lab file sets one, and a SPICE over
TLS port completes a handshake trusting only the host's kvmlab CA."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab.model import Lab
from kvmlab.roles import Check

ROLE = "display"  # the check group of `kvmlab verify`, present when any node has a display
QEMU_PID_DIR = Path("/run/libvirt/qemu")  # qemu:///system's pid file per running domain


@dataclass(frozen=True)
class VideoFacts:
    pci_id: str  # vendor:device as `lspci -n` shows it
    drm_driver: str  # the driver of card0's device (for virtio-gpu: of the virtio device on it)
    qemu_device: str  # the -device QEMU is given for it


VIDEO = {
    "vga": VideoFacts("1234:1111", "bochs-drm", "VGA"),
    "qxl": VideoFacts("1b36:0100", "qxl", "qxl-vga"),
    "virtio": VideoFacts("1af4:1050", "virtio_gpu", "virtio-vga"),
}
RFB_SECURITY_NONE, RFB_SECURITY_VNC_AUTH = 1, 2


@dataclass(frozen=True)
class VncTarget:
    host: str
    port: int


def vnc_target(domain_xml: str) -> VncTarget | None:
    """Where the running domain's VNC server listens (its port is chosen by libvirt when it starts)."""
    graphics = ET.fromstring(domain_xml).find("./devices/graphics[@type='vnc']")
    if graphics is None or int(graphics.get("port", "-1")) <= 0:
        return None
    listen = graphics.find("listen")
    host = (listen.get("address") if listen is not None else None) or graphics.get("listen") or "127.0.0.1"
    return VncTarget("127.0.0.1" if host in ("0.0.0.0", "::") else host, int(graphics.get("port", "0")))


def _displayed(lab: Any) -> list[Any]:
    return [node for node in lab.nodes if node.model.display]


def qemu_command_line(domain: str) -> list[str]:
    pid_file = QEMU_PID_DIR / f"{domain}.pid"
    if not pid_file.is_file():
        raise AssertionError(f"{domain}: no {pid_file}: QEMU's command line can only be read for a domain of this host's qemu:///system")
    return Path(f"/proc/{pid_file.read_text().strip()}/cmdline").read_bytes().decode().split("\0")


def check_domain_and_qemu(lab: Any) -> None:
    for node in _displayed(lab):
        display = node.model.display
        root = ET.fromstring(lab.provider.domain_xml(node.domain))
        models = [m.get("type") for m in root.findall("./devices/video/model")]
        assert models == [display.video], f"{node.name}: domain XML has video models {models}, the lab file asks for {display.video}"
        graphics = sorted(g.get("type", "") for g in root.findall("./devices/graphics"))
        wanted = sorted(kind for kind, on in (("vnc", display.vnc), ("spice", display.spice)) if on)
        assert graphics == wanted, f"{node.name}: domain XML has graphics {graphics}, the lab file asks for {wanted}"
        argv = qemu_command_line(node.domain)
        joined = " ".join(argv)
        if display.video in VIDEO:
            device = VIDEO[display.video].qemu_device
            assert f'"driver":"{device}"' in joined or f"{device}," in joined, (
                f"{node.name}: QEMU runs with no {device} device: {joined[:300]}…"
            )
        for kind in wanted:
            assert f"-{kind}" in argv, f"{node.name}: QEMU's command line has no -{kind}"


def check_guest_sees_device(lab: Any) -> None:
    for node in _displayed(lab):
        video = node.model.display.video
        pci = node.run_expect("lspci -n -d ::0300", "list the guest's VGA controllers").split()
        card = "/sys/class/drm/card0/device"
        drivers = node.run(f"for d in {card}/driver {card}/virtio*/driver; do [ -e $d ] && basename $(readlink $d); done").stdout.split()
        if video == "none":
            assert not pci, f"{node.name}: video none, yet the guest sees a VGA controller: {' '.join(pci)}"
            continue
        facts = VIDEO[video]
        assert facts.pci_id in pci, f"{node.name}: lspci shows VGA controllers {pci or 'none'}, expected {facts.pci_id} ({video})"
        assert facts.drm_driver in drivers, f"{node.name}: card0's drivers are {drivers or 'none'}, expected {facts.drm_driver} ({video})"


def rfb_security_types(host: str, port: int, timeout: float = 10.0) -> list[int]:
    """The security types a VNC server offers (RFB 3.8 handshake, nothing more)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        version = sock.recv(12)
        assert version.startswith(b"RFB "), f"{host}:{port} is not a VNC server (it said {version!r})"
        sock.sendall(b"RFB 003.008\n")
        count = sock.recv(1)
        assert count and count[0], f"{host}:{port} refused the connection before offering security types"
        return list(sock.recv(count[0]))


def check_vnc_password(lab: Any) -> None:
    for node in _displayed(lab):
        vnc = node.model.display.vnc
        if not vnc:
            continue
        target = vnc_target(lab.provider.domain_xml(node.domain))
        assert target, f"{node.name}: the running domain has no VNC port"
        assert target.host == vnc.listen, f"{node.name}: VNC listens on {target.host}, the lab file asks for {vnc.listen}"
        offered = rfb_security_types(target.host, target.port)
        wanted = RFB_SECURITY_VNC_AUTH if vnc.password else RFB_SECURITY_NONE
        assert offered == [wanted], (
            f"{node.name}: VNC offers security types {offered}, expected [{wanted}] "
            f"({'a password is set' if vnc.password else 'no password is set'} in the lab file)"
        )


def check_spice_tls(lab: Any) -> None:
    from kvmlab import spice_tls

    for node in _displayed(lab):
        spice = node.model.display.spice
        if not (spice and spice.tls):
            continue
        graphics = ET.fromstring(lab.provider.domain_xml(node.domain)).find("./devices/graphics[@type='spice']")
        assert graphics is not None and graphics.get("defaultMode") == "secure", f"{node.name}: SPICE is not TLS-only in the domain XML"
        port = int(graphics.get("tlsPort", "-1"))
        assert port > 0, f"{node.name}: SPICE has no TLS port ({ET.tostring(graphics, encoding='unicode')[:200]})"
        assert graphics.get("port") in (None, "-1"), f"{node.name}: SPICE also listens in clear text on port {graphics.get('port')}"
        folder = spice_tls.cert_dir()
        assert folder is not None, spice_tls.host_problem()
        subject = spice_tls.handshake_subject(spice.listen, port, folder / "ca-cert.pem")
        assert subject.startswith("kvmlab SPICE "), (
            f"{node.name}: SPICE's TLS port presents '{subject}', not the host's kvmlab SPICE certificate"
        )


def _any_display(lab: Lab) -> bool:
    return any(node.display for node in lab.nodes)


def _any_vnc(lab: Lab) -> bool:
    return any(node.display and node.display.vnc for node in lab.nodes)


CHECKS = (
    Check(ROLE, "domain-and-qemu", check_domain_and_qemu, _any_display),
    Check(ROLE, "guest-sees-device", check_guest_sees_device, _any_display),
    Check(ROLE, "vnc-password", check_vnc_password, _any_vnc),
    Check(ROLE, "spice-tls", check_spice_tls, lambda lab: any(n.display and n.display.spice and n.display.spice.tls for n in lab.nodes)),
)
