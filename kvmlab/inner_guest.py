"""Inner guests: small VMs that run inside a lab's hypervisors (the migration lab, book chapter 7).

Pure: renders a guest's libvirt XML from templates/roles/hypervisor/inner/domain.xml.j2 and
derives its address and MAC on the lab network bridged into the hypervisors.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

from kvmlab.model import VIDEO_MODELS
from kvmlab.roles.hypervisor.files import BRIDGE, INNER_INITRD, INNER_KERNEL
from kvmlab.templating import render_template

FIRST_HOST = 100  # inner guests take .100, .101, ... of the bridged network; lab nodes take .10 and up
MEMORY_MIB = 96
TB_CACHE_MIB = 24  # TCG translation cache, capped like the lab nodes' (default is sized like guest RAM)


@dataclass(frozen=True)
class Graphics:
    type: str  # vnc or spice
    port: int
    listen: str
    password: str = ""


@dataclass(frozen=True)
class InnerGuest:
    name: str
    index: int  # 0, 1, ...: fixes its address and MAC
    subnet: str  # the bridged lab network, e.g. 10.213.2.0/24
    disk: str = ""  # qcow2 path; empty: no disk
    cache: str = "none"
    domain_type: str = "qemu"  # kvm when the hypervisor has /dev/kvm (nested)
    memory_mib: int = MEMORY_MIB
    graphics: tuple[Graphics, ...] = field(default=())
    video: str = ""  # vga, qxl, virtio or none; empty: qxl with SPICE, vga with VNC only, no device without graphics

    @property
    def video_model(self) -> str:
        if self.video:
            return self.video
        if not self.graphics:
            return ""
        return "qxl" if any(g.type == "spice" for g in self.graphics) else "vga"

    @property
    def address(self) -> str:
        net = ipaddress.ip_network(self.subnet)
        if FIRST_HOST + self.index >= net.num_addresses - 1:
            raise ValueError(f"inner guest #{self.index} does not fit in {self.subnet}")
        return str(net.network_address + FIRST_HOST + self.index)

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def mac(self) -> str:
        # 52:56 (locally administered) + the address: unique while the subnet is leased, and never
        # equal to a lab node's MAC (52:54 + its address).
        return "52:56:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(self.address).packed)


def domain_xml(guest: InnerGuest) -> str:
    if guest.domain_type not in ("qemu", "kvm"):
        raise ValueError(f"domain type must be qemu or kvm, not {guest.domain_type!r}")
    if guest.video and guest.video not in VIDEO_MODELS:
        raise ValueError(f"video model must be one of {', '.join(VIDEO_MODELS)}, not {guest.video!r}")
    return render_template(
        "roles/hypervisor/inner/domain.xml.j2",
        {
            "domain_type": guest.domain_type,
            "name": guest.name,
            "memory_mib": guest.memory_mib,
            "kernel": INNER_KERNEL,
            "initrd": INNER_INITRD,
            "cmdline": kernel_args(guest),
            "tb_cache_mib": TB_CACHE_MIB,
            "disk": guest.disk,
            "cache": guest.cache,
            "bridge": BRIDGE,
            "mac": guest.mac,
            "graphics": guest.graphics,
            "video": guest.video_model,
        },
    )


def kernel_args(guest: InnerGuest) -> str:
    """The command line that gives a guest made by virt-install (not from our XML) its address."""
    return f"console=ttyS0 quiet kvmlab.ip={guest.address}/{guest.prefix} kvmlab.name={guest.name}"


def parse_state(text: str) -> dict[str, str]:
    """The guest's state CGI output: one 'key value' a line."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            out[key] = value.strip()
    return out


def ping_gaps(lines: list[str]) -> list[float]:
    """Seconds between consecutive replies of `ping -D` output (lines '[epoch] 64 bytes from ...')."""
    stamps: list[float] = []
    for line in lines:
        if line.startswith("[") and "bytes from" in line:
            try:
                stamps.append(float(line[1 : line.index("]")]))
            except ValueError:
                continue
    return [b - a for a, b in itertools.pairwise(stamps)]


def downtime(lines: list[str], interval: float) -> float:
    """The longest time without replies, beyond one normal interval: what a live migration cost the network."""
    gaps = ping_gaps(lines)
    return max(0.0, max(gaps, default=0.0) - interval)
