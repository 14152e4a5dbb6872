"""Choose the accelerator by booting a real kernel under KVM, falling back to TCG."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

PROBE_TIMEOUT_S = 8.0  # a kernel reaches its panic in ~1 s under KVM; a hung KVM never does
PANIC_MARK = "Kernel panic"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kvm(kernel: Path, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Boot KERNEL with no root under KVM; working KVM reaches the kernel's panic and exits."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return False, "qemu-system-x86_64 is not installed"
    cmd = [
        qemu,
        "-accel",
        "kvm",
        "-m",
        "256",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-nodefaults",
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"a test kernel under KVM did not reach its panic within {timeout:.0f} s (KVM guests hang here)"
    if PANIC_MARK in out.stdout:
        return True, "a test kernel booted under KVM"
    return False, f"KVM test boot failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"


def choose_accel(kernel: Path, cache_dir: Path, forced: str | None = None) -> tuple[str, str]:
    """Return ("kvm"|"tcg", reason). The probe result is kept until the host reboots."""
    forced = forced or os.environ.get("KVMLAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced, f"forced by KVMLAB_ACCEL={forced}"
    cache = cache_dir / "accel.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("boot_id") == boot_id():
            return cached["accel"], cached["reason"] + " (probed earlier this boot)"
    except (OSError, ValueError, KeyError):
        pass
    ok, reason = probe_kvm(kernel)
    accel = "kvm" if ok else "tcg"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"boot_id": boot_id(), "accel": accel, "reason": reason}))
    return accel, reason
