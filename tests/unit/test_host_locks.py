"""The host's locks: what kvmlab holds here is the same lock flock(1) takes for a remote client."""

from __future__ import annotations

import subprocess
import sys
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


def test_a_run_is_alive_while_its_lock_is_held_here_or_by_another_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(host_locks, "LOCK_DIR", str(tmp_path))
    local = host_of("qemu:///system")
    assert not host_locks.run_alive(local, "a1a1a1"), "no lock file: no run holds it"
    held = host_locks.RunLock(local, "a1a1a1")
    assert host_locks.run_alive(local, "a1a1a1"), "this process holds it"
    path = tmp_path / "kvmlab-run-a1a1a1"
    assert flock_now(str(path)) == 1, "another process (another client's gc) sees it held too"
    held.release()
    assert not path.exists() and not host_locks.run_alive(local, "a1a1a1")

    # Held by another process that then dies: the kernel lets go with it.
    hold = f"import fcntl, os, time; fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    owner = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "held"
        assert host_locks.run_alive(local, "a1a1a1")
    finally:
        owner.kill()
        owner.wait()
    assert not host_locks.run_alive(local, "a1a1a1")
