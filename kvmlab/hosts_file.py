"""hosts.yaml: the libvirt hosts a user may put labs on, and the one a lab goes to.

    hosts:
      a: {uri: "qemu+ssh://root@host-a/system"}
      here: {uri: "qemu:///system"}

`kvmlab up LAB --hosts FILE` (or KVMLAB_HOSTS=FILE) asks every host for its available memory and
disk at once and brings the lab up on the host with the most memory that fits it; the run records
the host's URI, so later commands (ssh, down, status) find the lab there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kvmlab import settings
from kvmlab.errors import HarnessError, LabFileError
from kvmlab.host_facts import remote_space
from kvmlab.libvirt_host import host_of
from kvmlab.loader import decode_lab_text
from kvmlab.model import Lab
from kvmlab.preflight import available_memory_mib, free_disk_mib, lab_needs
from kvmlab.remote import run_on_host
from kvmlab.spread import Spread, place_nodes
from kvmlab.yaml_errors import compose
from kvmlab.yamlread import Reader, quote

HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+unix")


@dataclass(frozen=True)
class HostEntry:
    name: str
    uri: str


@dataclass(frozen=True)
class Room:
    """What a host said it has free (MiB), or why it could not say."""

    host: HostEntry
    memory_mib: int = 0
    disk_mib: int = 0
    problem: str = ""


def hosts_file_from_env() -> str | None:
    return os.environ.get("KVMLAB_HOSTS") or None


def load_hosts_file(path: str | os.PathLike[str]) -> list[HostEntry]:
    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LabFileError(shown, 1, 1, f"cannot read the hosts file: {exc.strerror}") from exc
    text = decode_lab_text(data, shown)
    root = compose(text, shown, "the hosts file is empty: it needs a 'hosts:' mapping of names to {uri: ...}")
    reader = Reader(shown)
    top = reader.mapping(root, "the hosts file", ("hosts",))
    hosts_node = reader.required(top, "hosts", root, "the hosts file")
    entries = []
    for name, (key, value) in reader.named_mapping(hosts_node, "hosts").items():
        if not HOST_NAME_RE.match(name):
            raise reader.fail(key, f"host name '{quote(name)}' is not valid: use letters, digits, '.', '_' or '-'")
        fields = reader.mapping(value, f"host {name}", ("uri",))
        uri_node = reader.required(fields, "uri", value, f"host {name}")
        uri = reader.string(uri_node, f"the uri of host {name}")
        scheme = uri.partition(":")[0]
        if scheme not in URI_SCHEMES or "://" not in uri:
            raise reader.fail(
                uri_node,
                f"the uri of host {name} '{quote(uri)}' is not a libvirt URI kvmlab drives: write e.g. qemu+ssh://root@HOST/system",
            )
        try:
            host_of(uri)
        except HarnessError as exc:
            raise reader.fail(uri_node, str(exc)) from None
        entries.append(HostEntry(name, uri))
    if not entries:
        raise reader.fail(hosts_node, "'hosts' names no host: add one, e.g. a: {uri: \"qemu+ssh://root@HOST/system\"}")
    return entries


# libvirtd's socket, or the QEMU driver's own daemon's (Debian 13 ships the modular daemons too)
LIBVIRT_SOCKETS = ("/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock")


def measure(entry: HostEntry) -> Room:
    host = host_of(entry.uri)
    try:
        if host.local:
            if not any(Path(sock).exists() for sock in LIBVIRT_SOCKETS):
                return Room(entry, problem=f"libvirtd is not running (no socket {' or '.join(LIBVIRT_SOCKETS)})")
            return Room(entry, available_memory_mib(), free_disk_mib(settings.pool_dir()))
        memory, disk = remote_space(host, settings.pool_dir())
        if run_on_host(host, " || ".join(f"test -S {sock}" for sock in LIBVIRT_SOCKETS), timeout=30).rc != 0:
            return Room(entry, problem=f"libvirtd is not running there (no socket {' or '.join(LIBVIRT_SOCKETS)})")
        return Room(entry, memory, disk)
    except HarnessError as exc:
        return Room(entry, problem=str(exc).splitlines()[0])


def choose_host(lab: Lab, entries: list[HostEntry]) -> tuple[HostEntry, list[Room]]:
    """The host with the most available memory that has room for LAB, and what every host said."""
    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        rooms = list(pool.map(measure, entries))
    return pick(lab, rooms), rooms


def pick(lab: Lab, rooms: list[Room]) -> HostEntry:
    memory, disk = lab_needs(lab)
    fits = [r for r in rooms if not r.problem and r.memory_mib >= memory and r.disk_mib >= disk]
    if fits:
        return max(fits, key=lambda r: (r.memory_mib, r.disk_mib)).host
    said = "; ".join(
        f"{r.host.name}: {r.problem}" if r.problem else f"{r.host.name}: {r.memory_mib} MiB memory, {r.disk_mib} MiB disk free"
        for r in rooms
    )
    raise HarnessError(
        f"no host has room for lab '{lab.name}' ({memory} MiB of memory, about {disk} MiB of disk): {said};"
        " stop labs there (`kvmlab status`), shrink 'memory:', or add a host"
    )


def describe(rooms: list[Room]) -> str:
    return ", ".join(f"{r.host.name} {'unreachable' if r.problem else f'{r.memory_mib} MiB free'}" for r in rooms)


def place(lab: Lab, hosts_path: str, say: Callable[[str], None]) -> str:
    """The URI of the host in HOSTS_PATH that LAB goes to; SAY tells what each host had free."""
    chosen, rooms = choose_host(lab, load_hosts_file(hosts_path))
    say(f"kvmlab: hosts of {hosts_path}: {describe(rooms)}; lab {lab.name} goes to {chosen.name}")
    return chosen.uri


def spread_over(lab: Lab, hosts_path: str, say: Callable[[str], None]) -> tuple[Spread, dict[str, str]] | None:
    """LAB over several hosts of HOSTS_PATH when a node of it names its host (`host:`): each node's host
    and the URI of every host used; None when no node names one (the lab goes to one host, place())."""
    pinned = {node.name: node.host for node in lab.nodes if node.host}
    if not pinned:
        return None
    entries = {entry.name: entry for entry in load_hosts_file(hosts_path)}
    unknown = sorted({host for host in pinned.values() if host not in entries})
    if unknown:
        node = next(n for n, h in pinned.items() if h == unknown[0])
        line, col = _host_key_mark(lab.path, node)
        raise LabFileError(
            lab.path,
            line,
            col,
            f"node '{node}' names host '{unknown[0]}', which {hosts_path} does not have (its hosts: {', '.join(entries) or 'none'})",
        )
    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        rooms = list(pool.map(measure, entries.values()))
    down = [r for r in rooms if r.problem and r.host.name in pinned.values()]
    if down:
        raise HarnessError("; ".join(f"host {r.host.name} of {hosts_path}: {r.problem}" for r in down))
    spread = place_nodes(lab, pinned, {r.host.name: r.memory_mib for r in rooms if not r.problem})
    used = {host: entries[host].uri for host in spread.hosts if spread.nodes_on(host)}
    say(
        f"kvmlab: hosts of {hosts_path}: {describe(rooms)}; lab {lab.name} spread over "
        + ", ".join(f"{host} ({', '.join(spread.nodes_on(host))})" for host in used)
    )
    return spread, used


def _host_key_mark(lab_path: str, node: str) -> tuple[int, int]:
    """Line and column of NODE's `host:` value in the lab file (1, 1 when the file no longer says it)."""
    try:
        root = compose(Path(lab_path).read_text(), lab_path, "")
        nodes = next(v for k, v in root.value if k.value == "nodes")
        spec = next(v for k, v in nodes.value if k.value == node)
        value = next(v for k, v in spec.value if k.value == "host")
    except (OSError, StopIteration, AttributeError, TypeError, ValueError, HarnessError):
        return 1, 1
    return value.start_mark.line + 1, value.start_mark.column + 1
