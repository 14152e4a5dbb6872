"""Checks that a host can run a lab, each failing with one line that says the fix."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kvmlab.errors import PreflightError
from kvmlab.model import Lab

# What a node costs the host beyond its guest RAM (QEMU itself, TCG's capped translation cache).
OVERHEAD_MIB_PER_NODE = 200
# A node's overlay grows with what roles install and write; its extra disks are thin.
DISK_MIB_PER_NODE = 1024


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def available_memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 0


def free_disk_mib(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free // (1024 * 1024)


def lab_needs(lab: Lab) -> tuple[int, int]:
    """(memory MiB, disk MiB) the lab needs on the host."""
    memory = lab.memory_mib + OVERHEAD_MIB_PER_NODE * len(lab.nodes)
    # Extra disks are thin, but a test may fill them: count a quarter of their size.
    disk = DISK_MIB_PER_NODE * len(lab.nodes) + lab.disk_mib // 4
    return memory, disk


def host_checks(cache_dir: Path, pool_dir: Path) -> list[Check]:
    checks = []
    qemu = shutil.which("qemu-system-x86_64")
    checks.append(Check("qemu", bool(qemu), qemu or "qemu-system-x86_64 missing: apt-get install qemu-system-x86 (or `make deps`)"))
    img = shutil.which("qemu-img")
    checks.append(Check("qemu-img", bool(img), img or "qemu-img missing: apt-get install qemu-utils"))
    mm = shutil.which("mmdebstrap")
    checks.append(Check("mmdebstrap", bool(mm), mm or "mmdebstrap missing: apt-get install mmdebstrap"))
    sock = Path("/var/run/libvirt/libvirt-sock")
    checks.append(
        Check(
            "libvirtd", sock.exists(), str(sock) if sock.exists() else "libvirtd is not running: start it with `virtlogd -d && libvirtd -d`"
        )
    )
    for name, directory in (("cache dir", cache_dir), ("pool dir", pool_dir)):
        probe = directory
        while not probe.exists():
            probe = probe.parent
        ok = os.access(probe, os.W_OK)
        checks.append(
            Check(
                name,
                ok,
                str(directory) if ok else f"{directory} is not writable: set KVMLAB_CACHE / KVMLAB_POOL_DIR or fix its permissions",
            )
        )
    return checks


def check_fits(lab: Lab, pool_dir: Path, have: tuple[int, int] | None = None, where: str = "") -> None:
    """Refuse a lab the host has no room for. HAVE: (memory, disk) MiB of another host (WHERE), else this machine's."""
    memory, disk = lab_needs(lab)
    have_mem, have_disk = have or (available_memory_mib(), free_disk_mib(pool_dir))
    on = f" on {where}" if where else ""
    if memory > have_mem:
        raise PreflightError(
            f"lab '{lab.name}' needs {memory} MiB of memory ({len(lab.nodes)} nodes, {lab.memory_mib} MiB guest RAM "
            f"+ {OVERHEAD_MIB_PER_NODE} MiB each for QEMU) but only {have_mem} MiB is available{on}: "
            "stop other labs (`kvmlab status`) or shrink 'memory:'"
        )
    if disk > have_disk:
        raise PreflightError(f"lab '{lab.name}' needs about {disk} MiB of disk under {pool_dir}{on} but only {have_disk} MiB is free")


def check_display_support(lab: Lab, local_libvirt: bool) -> None:
    """A node's SPICE over TLS needs the host's SPICE certificates (libvirt reads them from qemu.conf's folder)."""
    from kvmlab import spice_tls

    tls_nodes = [n.name for n in lab.nodes if n.display and n.display.spice and n.display.spice.tls]
    if tls_nodes and local_libvirt and (problem := spice_tls.host_problem()):
        raise PreflightError(f"lab '{lab.name}': {', '.join(tls_nodes)} ask for SPICE over TLS, but {problem}")


def require_host(cache_dir: Path, pool_dir: Path) -> None:
    bad = [c for c in host_checks(cache_dir, pool_dir) if not c.ok]
    if bad:
        raise PreflightError("; ".join(c.detail for c in bad))


BUILDER_CHECKS = ("qemu-img", "mmdebstrap", "cache dir")


def require_builder(cache_dir: Path) -> None:
    """What this machine needs when the lab runs on a remote libvirt host: only what builds the image."""
    bad = [c for c in host_checks(cache_dir, cache_dir) if c.name in BUILDER_CHECKS and not c.ok]
    if bad:
        raise PreflightError("; ".join(c.detail for c in bad))
