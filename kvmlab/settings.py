"""Host-side locations and knobs, each overridable from the environment."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("KVMLAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kvmlab")
    return Path(base)


def state_dir() -> Path:
    """Per-user run records and lab keys."""
    base = os.environ.get("KVMLAB_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "kvmlab"
    )
    return Path(base)


def lease_dir() -> Path:
    """Shared by every user of the host, so that subnets never collide."""
    return Path(os.environ.get("KVMLAB_LEASES", "/var/lib/kvmlab/leases"))


def __getattr__(name: str) -> str:
    # settings.POOL, the libvirt dir pool holding every kvmlab volume, is read when used (PEP 562),
    # so that KVMLAB_POOL (with KVMLAB_POOL_DIR) can point a process or a test at another pool.
    if name == "POOL":
        return os.environ.get("KVMLAB_POOL", "kvmlab")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pool_dir() -> Path:
    """Where libvirt keeps kvmlab's volumes (on the libvirt host)."""
    return Path(os.environ.get("KVMLAB_POOL_DIR", "/var/lib/kvmlab/pool"))


def libvirt_uri() -> str:
    return os.environ.get("KVMLAB_URI", "qemu:///system")


def libvirt_reconnect_s() -> float:
    """How long to keep reconnecting when libvirtd goes away (a restart takes a few seconds)."""
    return float(os.environ.get("KVMLAB_LIBVIRT_RECONNECT_S", "60"))


def debian_mirror() -> str:
    return os.environ.get("KVMLAB_MIRROR", "http://deb.debian.org/debian")


def artifacts_dir() -> Path:
    return Path(os.environ.get("KVMLAB_ARTIFACTS", "artifacts"))


def console_dir() -> Path:
    """Serial console logs, written by virtlogd on the libvirt host."""
    return Path(os.environ.get("KVMLAB_CONSOLE_DIR", "/var/lib/kvmlab/console"))


def checkpoint_dir() -> Path:
    """Saved memory of lab checkpoints (large: about each node's RAM), on the libvirt host."""
    return Path(os.environ.get("KVMLAB_CHECKPOINT_DIR", "/var/lib/kvmlab/checkpoints"))


def generics_dir() -> Path:
    """Saved generic nodes that lab nodes are cloned from, shared by every user (on the libvirt host)."""
    return Path(os.environ.get("KVMLAB_GENERICS_DIR", "/var/lib/kvmlab/generics"))
