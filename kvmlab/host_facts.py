"""What kvmlab asks a remote libvirt host before a lab goes there: room, accelerator.

(This machine answers the same questions in preflight.py and accel.py, from its own files.)
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from kvmlab.errors import PreflightError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.remote import run_on_host


def remote_space(host: LibvirtHost, pool_dir: Path) -> tuple[int, int]:
    """(available memory MiB, free disk MiB under POOL_DIR or its first existing parent) on HOST."""
    command = (
        "awk '/^MemAvailable:/ {print int($2/1024)}' /proc/meminfo;"
        f' d={shlex.quote(str(pool_dir))}; while [ ! -e "$d" ]; do d=$(dirname "$d"); done;'
        " df -Pm \"$d\" | awk 'NR==2 {print $4}'"
    )
    res = run_on_host(host, command, timeout=30)
    numbers = res.stdout.split()
    if res.rc != 0 or len(numbers) != 2 or not all(n.isdigit() for n in numbers):
        raise PreflightError(f"could not read free memory and disk on {host.describe()}: {res.output or 'no output'}")
    return int(numbers[0]), int(numbers[1])


def remote_accel(host: LibvirtHost) -> tuple[str, str]:
    """("kvm"|"tcg", reason) for HOST: KVMLAB_ACCEL, else whether its /dev/kvm is usable."""
    forced = os.environ.get("KVMLAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"forced by KVMLAB_ACCEL={forced}"
    res = run_on_host(host, "test -r /dev/kvm -a -w /dev/kvm", timeout=30)
    if res.rc == 0:
        return "kvm", f"{host.describe()} has /dev/kvm (not probed there: set KVMLAB_ACCEL=tcg if its KVM guests hang)"
    return "tcg", f"{host.describe()} has no usable /dev/kvm"


def emulated_machine(host: LibvirtHost) -> bool:
    """True when HOST is itself a virtual machine that QEMU emulates (TCG): the KVM it offers its own
    guests is nested in emulation and runs them at about TCG's pace. Under KVM it says 'kvm', not 'qemu'."""
    res = run_on_host(host, "systemd-detect-virt --vm", timeout=30)
    return res.stdout.strip() == "qemu"
