"""Locks that every client of a libvirt host shares, held on that host.

Two clients of one host may keep their run registries in different folders, or on different
machines, so only the host can order them. Each lock is a file in the host's /run/lock (writable by
every user, emptied at boot): flock(2) on it here, or flock(1) over SSH on a remote host, held for
as long as its SSH channel is open, so a client that dies lets go of it with its connection.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.remote import HostShell

LOCK_DIR = "/run/lock"


@contextmanager
def host_locked(host: LibvirtHost, name: str, what: str, timeout: float) -> Iterator[None]:
    """Hold the host's lock NAME (described as WHAT in errors) for the block; a remote host's is waited for at most TIMEOUT."""
    path = f"{LOCK_DIR}/kvmlab-{name}"
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
