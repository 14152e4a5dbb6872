"""Settings of the hypervisor role: netfs pools, the inner guests' bridge, migration."""

from __future__ import annotations

import re
from dataclasses import dataclass

from yaml.nodes import Node, SequenceNode

from kvmlab.model import Lab
from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import Reader, abs_path, as_seq, boolean

KEY = "hypervisor"
MOUNT_OPTION_RE = re.compile(r"^[a-z][a-z0-9_]*(=[A-Za-z0-9_.:-]+)?$")


@dataclass(frozen=True)
class NetfsPool:
    name: str
    server: str  # node name
    path: str  # exported directory on the server
    network: str  # network over which the pool mounts the export
    target: str  # mount point on the hypervisor
    mount_options: tuple[str, ...] = ()  # extra NFS mount options (libvirt's fs:mount_opts)


@dataclass(frozen=True)
class NfsMount:
    server: str  # node name
    path: str  # exported directory on the server
    network: str  # network over which it is mounted


@dataclass(frozen=True)
class MigrationSettings:
    """Between the lab's hypervisors (book 7.3): root SSH both ways, a lock manager, synced clocks."""

    peers_ssh: bool = True  # passwordless root SSH between hypervisors, host keys pinned
    lock: str = "lockd"  # "lockd" (virtlockd) or "none"
    lockspace: NfsMount | None = None  # shared file_lockspace_dir; None: lockd locks the disk files themselves
    port_min: int = 49152  # qemu.conf migration_port_min/max
    port_max: int = 49215


@dataclass(frozen=True)
class GuestDisk:
    """An inner guest's disk in libvirt's terms (book 7.3); "" leaves libvirt's default."""

    size_mib: int = 64
    bus: str = "virtio"
    cache: str = "none"
    io: str = ""
    discard: str = ""
    detect_zeroes: str = ""


@dataclass(frozen=True)
class DeclaredGuest:
    """An inner guest the lab file declares: defined and started on its hypervisor at bring-up."""

    name: str
    on: str  # the hypervisor node it runs on
    index: int  # fixes its address on the bridged network: .100 + index
    disk: GuestDisk | None = None


FIRST_DECLARED_INDEX = 60  # declared guests take .160 and up; tests' own guests stay below


@dataclass(frozen=True)
class HypervisorSettings:
    netfs_pools: tuple[NetfsPool, ...] = ()
    guest_bridge: str = ""  # a lab network bridged (br0) inside each hypervisor for its inner guests
    inner_guests: bool = False  # build the inner guests' kernel + busybox initramfs
    migration: MigrationSettings | None = None
    guests: tuple[DeclaredGuest, ...] = ()  # inner guests started at bring-up (`inner_guests:` as a list)


def parse(sr: SettingsReader) -> HypervisorSettings:
    reader, entry, lab = sr.reader, sr.entry(KEY), sr.lab
    if entry is None:
        return HypervisorSettings()
    fields = reader.mapping(entry[1], "role settings 'hypervisor'", ("netfs_pools", "guest_bridge", "inner_guests", "migration"))
    pools: list[NetfsPool] = []
    servers = tuple(n.name for n in lab.by_role("nfs-server"))
    for item in reader.sequence(fields["netfs_pools"][1], "netfs_pools") if "netfs_pools" in fields else ():
        opts = reader.mapping(item, "a netfs pool", ("name", "server", "path", "network", "target", "mount_options"))
        name = reader.name(reader.required(opts, "name", item, "a netfs pool"), "pool name")
        if name in (p.name for p in pools):
            raise reader.fail(opts["name"][1], f"pool name '{name}' is used twice")
        server_node = reader.required(opts, "server", item, f"netfs pool '{name}'")
        server = reader.scalar_text(server_node, "pool server")
        if server not in servers:
            raise reader.fail(
                server_node, f"pool server '{server}' is not a node with role nfs-server (those are: {', '.join(servers) or 'none'})"
            )
        path_node = reader.required(opts, "path", item, f"netfs pool '{name}'")
        path = abs_path(reader, path_node, "pool path")
        exported = tuple(e.path for e in lab.nfs_server.exports)
        if path not in exported:
            raise reader.fail(
                path_node, f"pool path '{path}' is not exported by the nfs-server role (exports: {', '.join(exported) or 'none'})"
            )
        server_nets = lab.node(server).networks
        network = reader.optional(
            opts,
            "network",
            lambda n: reader.one_of(n, "pool network", server_nets, f"a network of its server '{server}'"),
            server_nets[0],
        )
        target = reader.optional(opts, "target", lambda n: abs_path(reader, n, "pool target"), f"/var/lib/libvirt/images/{name}")
        mount_options = reader.optional(opts, "mount_options", lambda n: _mount_options(reader, n), ())
        pools.append(NetfsPool(name, server, path, network, target, mount_options))
    hv_nets = set.intersection(*(set(n.networks) for n in lab.by_role("hypervisor"))) if lab.by_role("hypervisor") else set()
    bridge = reader.optional(
        fields,
        "guest_bridge",
        lambda n: reader.one_of(n, "guest_bridge", tuple(sorted(hv_nets)), "a network that every hypervisor is on"),
        "",
    )
    guests: tuple[DeclaredGuest, ...] = ()
    if "inner_guests" in fields and isinstance(fields["inner_guests"][1], SequenceNode):
        guests = _declared_guests(reader, fields["inner_guests"], lab, bridge)
        inner = True
    else:
        inner = reader.optional(fields, "inner_guests", lambda n: boolean(reader, n, "inner_guests"), False)
    migration = reader.optional(fields, "migration", lambda n: _migration_settings(reader, n, lab), None)
    return HypervisorSettings(tuple(pools), bridge, inner, migration, guests)


def _declared_guests(reader: Reader, field: tuple[Node, Node], lab: Lab, bridge: str) -> tuple[DeclaredGuest, ...]:
    key, node = field
    if not bridge:
        raise reader.fail(key, "inner guests need a network to run on: set guest_bridge (a network every hypervisor is on)")
    if lab.network(bridge).prefix > 24:
        raise reader.fail(key, f"inner guests take addresses .160 and up of '{bridge}': give it prefix 24 or less")
    hypervisors = tuple(n.name for n in lab.by_role("hypervisor"))
    guests: list[DeclaredGuest] = []
    for item in reader.sequence(node, "inner_guests"):
        opts = reader.mapping(item, "an inner guest", ("name", "on", "disk"))
        name = reader.name(reader.required(opts, "name", item, "an inner guest"), "inner guest name")
        if name in (g.name for g in guests):
            raise reader.fail(opts["name"][1], f"inner guest name '{name}' is used twice")
        on = reader.optional(opts, "on", lambda n: reader.one_of(n, "inner guest 'on'", hypervisors, "a hypervisor node"), hypervisors[0])
        disk = reader.optional(opts, "disk", lambda n: _guest_disk(reader, n, name), None)
        guests.append(DeclaredGuest(name, on, FIRST_DECLARED_INDEX + len(guests), disk))
    return tuple(guests)


def _guest_disk(reader: Reader, node: Node, guest: str) -> GuestDisk:
    from kvmlab import inner_guest

    opts = reader.mapping(node, f"disk of inner guest '{guest}'", ("size", "bus", "cache", "io", "discard", "detect_zeroes"))
    size = reader.optional(opts, "size", lambda n: reader.size_mib(n, f"size of inner guest '{guest}' disk", (16, 4096)), 64)

    def mode(key: str, allowed: tuple[str, ...], default: str) -> str:
        known = tuple(v for v in allowed if v)
        return reader.optional(opts, key, lambda n: reader.one_of(n, key, known, f"a {key} mode libvirt knows"), default)

    disk = GuestDisk(
        size,
        mode("bus", inner_guest.BUSES, "virtio"),
        mode("cache", inner_guest.CACHE_MODES, "none"),
        mode("io", inner_guest.IO_MODES, ""),
        mode("discard", inner_guest.DISCARD_MODES, ""),
        mode("detect_zeroes", inner_guest.DETECT_ZEROES_MODES, ""),
    )
    options = {k: getattr(disk, k) for k in ("bus", "cache", "io", "discard", "detect_zeroes")}
    try:  # combinations QEMU refuses, or libvirt quietly changes: refused here, with why
        inner_guest.check_disk_options(inner_guest.InnerGuest(guest, 0, "10.0.0.0/24", disk="/x.qcow2", **options))
    except ValueError as exc:
        raise reader.fail(node, str(exc)) from None
    return disk


def _mount_options(reader: Reader, node: Node) -> tuple[str, ...]:
    options: list[str] = []
    for item in reader.sequence(node, "mount_options"):
        text = reader.scalar_text(item, "a mount option")
        if not MOUNT_OPTION_RE.match(text):
            raise reader.fail(item, f"mount option '{text}' is not valid: use e.g. local_lock=all or vers=4.2 (letters, digits, _ . = -)")
        options.append(text)
    return tuple(options)


def _migration_settings(reader: Reader, node: Node, lab: Lab) -> MigrationSettings:
    opts = reader.mapping(node, "hypervisor migration settings", ("peers_ssh", "lock", "lockspace", "ports"))
    peers = reader.optional(opts, "peers_ssh", lambda n: boolean(reader, n, "peers_ssh"), True)
    lock = reader.optional(opts, "lock", lambda n: reader.names_list(as_seq(n), "lock", ("lockd", "none"), "lock manager")[0], "lockd")
    lockspace = None
    if "lockspace" in opts:
        if lock != "lockd":
            raise reader.fail(opts["lockspace"][0], "a lockspace needs lock: lockd")
        lockspace = _nfs_mount(reader, opts["lockspace"][1], lab, "lockspace")
    port_min, port_max = MigrationSettings.port_min, MigrationSettings.port_max
    if "ports" in opts:
        ports = reader.sequence(opts["ports"][1], "ports")
        if len(ports) != 2:
            raise reader.fail(opts["ports"][1], "ports must be [first, last], e.g. [49152, 49215]")
        port_min, port_max = (reader.integer(p, "migration port", (1024, 65535)) for p in ports)
        if port_min > port_max:
            raise reader.fail(opts["ports"][1], f"ports [{port_min}, {port_max}]: the first must not be above the last")
    return MigrationSettings(peers, lock, lockspace, port_min, port_max)


def _nfs_mount(reader: Reader, node: Node, lab: Lab, what: str) -> NfsMount:
    opts = reader.mapping(node, what, ("server", "path", "network"))
    servers = tuple(n.name for n in lab.by_role("nfs-server"))
    server_node = reader.required(opts, "server", node, what)
    server = reader.scalar_text(server_node, f"{what} server")
    if server not in servers:
        raise reader.fail(
            server_node, f"{what} server '{server}' is not a node with role nfs-server (those are: {', '.join(servers) or 'none'})"
        )
    path_node = reader.required(opts, "path", node, what)
    path = abs_path(reader, path_node, f"{what} path")
    exported = tuple(e.path for e in lab.nfs_server.exports)
    if path not in exported:
        raise reader.fail(
            path_node, f"{what} path '{path}' is not exported by the nfs-server role (exports: {', '.join(exported) or 'none'})"
        )
    nets = lab.node(server).networks
    network = reader.optional(
        opts, "network", lambda n: reader.one_of(n, f"{what} network", nets, f"a network of its server '{server}'"), nets[0]
    )
    return NfsMount(server, path, network)
