"""Locks that every client of a libvirt host shares, held on that host.

Two clients of one host may keep their run registries in different folders, or on different
machines, so only the host can order them. Each lock is a file in the host's /run/lock (writable by
every user, emptied at boot): flock(2) on it here, or flock(1) over SSH on a remote host, held for
as long as its SSH channel is open, so a client that dies lets go of it with its connection.

A run also holds a lock of its own on its host for as long as its process lives (RunLock). A client
whose registry does not know that run asks the host whether the lock is held (run_alive) before it
takes the run's networks and volumes for a dead client's leftovers: between a run's first network
and its first domain, nothing else on the host says that its owner is alive.
"""

from __future__ import annotations

import fcntl
import os
import shlex
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.remote import HostShell, run_on_host

LOCK_DIR = "/run/lock"


@contextmanager
def host_locked(host: LibvirtHost, name: str, what: str, timeout: float) -> Iterator[None]:
    """Hold the host's lock NAME (described as WHAT in errors) for the block; a remote host's is waited for at most TIMEOUT."""
    path = _path(name)
    if not host.local:
        with HostShell.of(host).locked(path, what, timeout):
            yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise HarnessError(f"cannot open {what} {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _path(name: str) -> str:
    return f"{LOCK_DIR}/kvmlab-{name}"


def run_lock_name(run_id: str) -> str:
    return f"run-{run_id}"


def run_lock_path(run_id: str) -> str:
    return _path(run_lock_name(run_id))


class RunLock:
    """Run RUN_ID's lock on HOST, held from now until release() or the end of this process."""

    def __init__(self, host: LibvirtHost, run_id: str) -> None:
        self.host, self.name = host, run_lock_name(run_id)
        self._held = ExitStack()
        self._held.enter_context(host_locked(host, self.name, f"run {run_id}'s lock", timeout=60))

    def release(self) -> None:
        """Remove the lock file while still holding it (a reader that opens it later finds nothing), then let go."""
        try:
            if self.host.local:
                os.unlink(_path(self.name))
            else:
                run_on_host(self.host, f"rm -f {shlex.quote(_path(self.name))}", timeout=60)
        except (OSError, HarnessError):
            pass  # an empty file in /run/lock, gone at the host's next boot
        finally:
            self._held.close()


def run_alive(host: LibvirtHost, run_id: str) -> bool:
    """Whether a process still holds run RUN_ID's lock on HOST: the run's owner is alive, wherever it runs."""
    path = run_lock_path(run_id)
    if not host.local:
        quoted = shlex.quote(path)
        res = run_on_host(host, f"[ -e {quoted} ] && ! flock -n -s {quoted} true", timeout=60)
        return res.rc == 0
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise HarnessError(f"cannot read run {run_id}'s lock {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
