"""The host's locks: what kvmlab holds here is the same lock flock(1) takes for a remote client."""

from __future__ import annotations

import subprocess
import uuid

from kvmlab import host_locks
from kvmlab.libvirt_host import host_of


def flock_now(path: str) -> int:
    """The exit code of flock(1) trying PATH without waiting: 0 if it was free, 1 if it is held."""
    return subprocess.run(["flock", "-n", path, "true"], check=False).returncode


def test_a_held_host_lock_is_the_one_flock_1_takes_and_is_let_go_afterwards() -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    path = f"{host_locks.LOCK_DIR}/kvmlab-{name}"
    local = host_of("qemu:///system")
    assert local.local
    try:
        with host_locks.host_locked(local, name, "a test lock", timeout=10):
            assert flock_now(path) == 1
        assert flock_now(path) == 0
    finally:
        subprocess.run(["rm", "-f", path], check=False)
