"""Directories on the libvirt host: this machine's file system, or a remote host's over its SSH connection.

libvirt writes a checkpoint's memory files where the host's QEMU runs; what kvmlab does with their
directories (make, make durable, list, remove) goes to the same host.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.remote import run_on_host

COMMAND_S = 600.0  # a sync of a few GiB of memory files on a slow disk


def _on_host(host: LibvirtHost, command: str, what: str) -> str:
    res = run_on_host(host, command, COMMAND_S)
    if res.rc != 0:
        raise HarnessError(f"{what} on the libvirt host {host.describe()}: {res.output or f'exit {res.rc}'}")
    return res.stdout


def fsync_dir(path: Path) -> None:
    """Make a rename or new file in PATH durable (a file's own fsync does not cover its directory entry)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file under PATH, then PATH: files libvirt or qemu-img wrote may still sit in the page cache."""
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            fsync_dir(p)
    fsync_dir(path)


def make_dir(host: LibvirtHost, path: Path) -> None:
    if host.local:
        path.mkdir(parents=True, exist_ok=True)
    else:
        _on_host(host, f"mkdir -p {shlex.quote(str(path))}", f"make {path}")


def sync_tree(host: LibvirtHost, path: Path) -> None:
    """Every file under PATH, and PATH's entries, on disk: files libvirt wrote may still sit in the page cache."""
    if host.local:
        fsync_tree(path)
    else:  # coreutils' sync fsyncs each file or directory it is given
        quoted = shlex.quote(str(path))
        _on_host(host, f"find {quoted} -print0 | xargs -0 sync --", f"sync {path}")


def remove_tree(host: LibvirtHost, path: Path) -> None:
    if host.local:
        shutil.rmtree(path, ignore_errors=True)
    else:
        _on_host(host, f"rm -rf {shlex.quote(str(path))}", f"remove {path}")


def subdirs(host: LibvirtHost, path: Path) -> list[str]:
    """Names of the directories right under PATH (none when PATH does not exist)."""
    if host.local:
        return sorted(d.name for d in path.iterdir() if d.is_dir()) if path.is_dir() else []
    quoted = shlex.quote(str(path))
    out = _on_host(host, f"[ ! -d {quoted} ] || find {quoted} -mindepth 1 -maxdepth 1 -type d -printf '%f\\n'", f"list {path}")
    return sorted(line for line in out.splitlines() if line)


def exists(host: LibvirtHost, path: Path) -> bool:
    if host.local:
        return path.exists()
    return run_on_host(host, f"test -e {shlex.quote(str(path))}", COMMAND_S).rc == 0
