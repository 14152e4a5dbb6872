"""Inner guests: small VMs that run inside a lab's hypervisors (the migration lab, book chapter 7).

Pure: renders a guest's libvirt XML from templates/roles/hypervisor/inner/domain.xml.j2 and
derives its address and MAC on the lab network bridged into the hypervisors.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

from kvmlab.model import VIDEO_MODELS
from kvmlab.roles.hypervisor.files import BRIDGE, INNER_INITRD, INNER_KERNEL, INNER_KERNEL_GENERIC
from kvmlab.templating import render_template

FIRST_HOST = 100  # inner guests take .100, .101, ... of the bridged network; lab nodes take .10 and up
MEMORY_MIB = 96
TB_CACHE_MIB = 24  # TCG translation cache, capped like the lab nodes' (default is sized like guest RAM)

# A disk's options in libvirt's own terms (<driver> and <target> of domain XML); "" leaves libvirt's default.
BUSES = ("virtio", "scsi", "sata")
CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe")
IO_MODES = ("", "native", "threads")
DISCARD_MODES = ("", "unmap", "ignore")
DETECT_ZEROES_MODES = ("", "on", "off", "unmap")
DIRECT_CACHE_MODES = ("none", "directsync")  # the modes that open the image with O_DIRECT
TARGET_DEVS = {"virtio": "vda", "scsi": "sda", "sata": "sda"}


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
    bus: str = "virtio"
    cache: str = "none"
    io: str = ""
    discard: str = ""
    detect_zeroes: str = ""
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
    def target_dev(self) -> str:
        return TARGET_DEVS.get(self.bus, "")

    @property
    def kernel(self) -> str:
        # The hypervisors' cloud kernel has no AHCI driver: a SATA disk needs the generic one.
        return INNER_KERNEL_GENERIC if self.disk and self.bus == "sata" else INNER_KERNEL

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
    check_disk_options(guest)
    return render_template(
        "roles/hypervisor/inner/domain.xml.j2",
        {
            "domain_type": guest.domain_type,
            "name": guest.name,
            "memory_mib": guest.memory_mib,
            "kernel": guest.kernel,
            "initrd": INNER_INITRD,
            "cmdline": kernel_args(guest),
            "tb_cache_mib": TB_CACHE_MIB,
            "disk": guest.disk,
            "bus": guest.bus,
            "target_dev": guest.target_dev,
            "cache": guest.cache,
            "io": guest.io,
            "discard": guest.discard,
            "detect_zeroes": guest.detect_zeroes,
            "bridge": BRIDGE,
            "mac": guest.mac,
            "graphics": guest.graphics,
            "video": guest.video_model,
        },
    )


def check_disk_options(guest: InnerGuest) -> None:
    """Refuse disk options libvirt does not know, and combinations QEMU refuses (or libvirt quietly changes)."""
    for what, value, allowed in (
        ("disk bus", guest.bus, BUSES),
        ("cache mode", guest.cache, CACHE_MODES),
        ("io mode", guest.io, IO_MODES),
        ("discard mode", guest.discard, DISCARD_MODES),
        ("detect_zeroes mode", guest.detect_zeroes, DETECT_ZEROES_MODES),
    ):
        if value not in allowed:
            raise ValueError(f"{guest.name}: {what} {value!r} is not one of {_choices(allowed)}")
    if guest.io == "native" and guest.cache not in DIRECT_CACHE_MODES:
        raise ValueError(
            f"{guest.name}: io 'native' with cache {guest.cache!r}: native AIO needs the image opened with O_DIRECT, "
            f"which only cache {' or '.join(DIRECT_CACHE_MODES)} does (QEMU refuses to start otherwise); use io 'threads'"
        )
    if guest.detect_zeroes == "unmap" and guest.discard != "unmap":
        raise ValueError(
            f"{guest.name}: detect_zeroes 'unmap' with discard {guest.discard!r}: turning zero writes into unmaps "
            "needs discard 'unmap' (QEMU refuses it otherwise, and libvirt quietly passes 'on' instead); "
            "use detect_zeroes 'on' or discard 'unmap'"
        )


def _choices(allowed: tuple[str, ...]) -> str:
    return ", ".join(repr(v) if v else "'' (libvirt's default)" for v in allowed)


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
