"""The libvirt host a lab runs on: this machine, or a remote one named by the libvirt URI.

On a remote host (`qemu+ssh://root@HOST/system`, `qemu+libssh2://...`) the lab's networks are
isolated bridges inside that host, so kvmlab reaches its guests through an SSH connection to the
host (the same user, port and key libvirt uses: the URI's `keyfile`, and its `known_hosts` to pin the
host's key), and reads the files libvirt writes there (console logs) over that connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from kvmlab.errors import HarnessError

LOCAL_NAMES = ("", "localhost", "127.0.0.1", "::1")
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")


@dataclass(frozen=True)
class LibvirtHost:
    uri: str
    hostname: str = ""  # "" for this machine
    user: str = "root"
    port: int = 22
    key_file: Path | None = None  # None: ~/.ssh's default keys
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts

    @property
    def local(self) -> bool:
        return not self.hostname

    @property
    def ssh_destination(self) -> str:
        return f"{self.user}@{self.hostname}"

    def describe(self) -> str:
        return "this machine" if self.local else f"{self.ssh_destination} (port {self.port})"


def host_of(uri: str) -> LibvirtHost:
    """The host URI names. Only SSH transports reach a remote host: kvmlab needs SSH to it to reach its guests."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    hostname = parts.hostname or ""
    if hostname in LOCAL_NAMES or transport in ("unix", "test"):
        return LibvirtHost(uri)
    if transport not in SSH_TRANSPORTS:
        raise HarnessError(
            f"libvirt URI '{uri}': kvmlab reaches a remote host's guests over SSH to that host;"
            f" use an SSH transport, e.g. qemu+ssh://{parts.username or 'root'}@{hostname}/system"
        )
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return LibvirtHost(
        uri=uri,
        hostname=hostname,
        user=parts.username or "root",
        port=parts.port or 22,
        key_file=Path(query["keyfile"]).expanduser() if query.get("keyfile") else None,
        known_hosts=Path(query["known_hosts"]).expanduser() if query.get("known_hosts") else None,
    )
