"""YAML lab file -> Lab model. Every error names file:line:col and what would be right."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kvmlab.errors import LabFileError
from kvmlab.model import (
    ISCSI_BACKENDS,
    KNOWN_ROLES,
    NFS_OPTIONS,
    SETTINGS_KEYS,
    CephSettings,
    Disk,
    GlusterSettings,
    HypervisorSettings,
    IscsiAcl,
    IscsiLun,
    IscsiTargetSettings,
    Lab,
    LocalRaidSettings,
    MigrationSettings,
    NetfsPool,
    Network,
    NfsExport,
    NfsMount,
    NfsServerSettings,
)
from kvmlab.model import Node as LabNode

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")  # node, network, disk: fits a hostname and a disk serial
MOUNT_OPTION_RE = re.compile(r"^[a-z][a-z0-9_]*(=[A-Za-z0-9_.:-]+)?$")
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
UNIT_MIB = {"": 1 / (1024 * 1024), "B": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
DEFAULT_MEMORY_MIB, DEFAULT_VCPUS = 640, 1
MEMORY_RANGE_MIB = (256, 65536)
DISK_RANGE_MIB = (16, 2 * 1024 * 1024)
VCPU_RANGE = (1, 64)
PREFIX_RANGE = (16, 28)

LAB_NAME_HINT = "use 1-32 lowercase letters, digits or '-', starting with a letter"

T = TypeVar("T")


class _Reader:
    """Walks a composed YAML tree, keeping marks so errors point at the user's text."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: Node, message: str) -> LabFileError:
        mark = node.start_mark
        return LabFileError(self.path, mark.line + 1, mark.column + 1, message)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines), got {_kind(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            name = self.scalar_text(key, f"a key of {what}")
            if name in out:
                raise self.fail(key, f"duplicate key '{name}' in {what} (first at line {out[name][0].start_mark.line + 1})")
            if allowed and name not in allowed:
                raise self.fail(key, f"unknown key '{name}' in {what}{_suggest(name, allowed)}")
            out[name] = (key, value)
        return out

    def named_mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        """A mapping whose keys are user-chosen names (nodes, networks)."""
        return self.mapping(node, what, ())

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a list (e.g. [a, b]), got {_kind(node)}")
        return list(node.value)

    def scalar_text(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, f"{what} must be a single value, got {_kind(node)}")
        return str(node.value)

    def string(self, node: Node, what: str) -> str:
        text = self.scalar_text(node, what)
        if node.tag != "tag:yaml.org,2002:str" or text == "":
            raise self.fail(node, f"{what} must be a non-empty string, got '{text}'")
        return text

    def name(self, node: Node, what: str) -> str:
        text = self.scalar_text(node, what)
        if not NAME_RE.match(text):
            raise self.fail(node, f"{what} '{text}' is not a valid name: use 1-15 lowercase letters, digits or '-', starting with a letter")
        return text

    def lab_name(self, node: Node) -> str:
        text = self.scalar_text(node, "lab name")
        if not LAB_NAME_RE.match(text):
            raise self.fail(node, f"lab name '{text}' is not valid: {LAB_NAME_HINT}")
        return text

    def integer(self, node: Node, what: str, bounds: tuple[int, int]) -> int:
        text = self.scalar_text(node, what)
        if node.tag != "tag:yaml.org,2002:int":
            raise self.fail(node, f"{what} must be a whole number between {bounds[0]} and {bounds[1]}, got '{text}'")
        value = int(text, 0)
        if not bounds[0] <= value <= bounds[1]:
            raise self.fail(node, f"{what} {value} is out of range: use {bounds[0]} to {bounds[1]}")
        return value

    def size_mib(self, node: Node, what: str, bounds: tuple[int, int]) -> int:
        text = self.scalar_text(node, what)
        match = SIZE_RE.match(text)
        if not match or node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int"):
            raise self.fail(node, f"{what} '{text}' is not a size: write e.g. 512M, 2G or 1.5GiB")
        unit = (match.group(2) or "").upper()[:1]
        if node.tag == "tag:yaml.org,2002:int" and not match.group(2):
            unit = "M"  # a bare number is MiB, like virsh's default
        mib = int(float(match.group(1)) * UNIT_MIB[unit])
        if not bounds[0] <= mib <= bounds[1]:
            raise self.fail(node, f"{what} {text} is impossible: it must be between {_fmt(bounds[0])} and {_fmt(bounds[1])}")
        return mib

    def names_list(self, node: Node, what: str, known: tuple[str, ...], kind: str) -> tuple[str, ...]:
        items: list[str] = []
        for item in self.sequence(node, what):
            text = self.scalar_text(item, f"an entry of {what}")
            if text not in known:
                raise self.fail(item, f"unknown {kind} '{text}' in {what}{_suggest(text, known)}")
            if text in items:
                raise self.fail(item, f"{kind} '{text}' is listed twice in {what}")
            items.append(text)
        return tuple(items)

    def optional(self, fields: dict[str, tuple[Node, Node]], key: str, parse: Callable[[Node], T], default: T) -> T:
        return parse(fields[key][1]) if key in fields else default

    def required(self, fields: dict[str, tuple[Node, Node]], key: str, where: Node, what: str) -> Node:
        if key not in fields:
            raise self.fail(where, f"{what} is missing required key '{key}'")
        return fields[key][1]


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"'{node.value}'" if node.value != "" else "nothing"


def _suggest(word: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f" (known: {', '.join(known) or 'none'}){hint}"


def _fmt(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load_lab(path: str | os.PathLike[str]) -> Lab:
    file = Path(path)
    shown = _display_path(file)
    try:
        text = file.read_text()
    except OSError as exc:
        raise LabFileError(shown, 1, 1, f"cannot read lab file: {exc.strerror}") from exc
    return parse_lab(text, shown, default_name=file.stem)


def parse_lab(text: str, path: str, default_name: str) -> Lab:
    reader = _Reader(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise LabFileError(path, line, col, f"YAML syntax error: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise LabFileError(path, 1, 1, f"YAML error: {exc}") from exc
    if root is None:
        raise LabFileError(path, 1, 1, "lab file is empty: it needs at least a 'nodes:' mapping")
    top = reader.mapping(root, "the lab", ("name", "networks", "nodes", "roles"))

    name = reader.optional(top, "name", lambda n: reader.lab_name(n), default_name.lower().replace("_", "-"))
    if not LAB_NAME_RE.match(name):
        raise LabFileError(
            path, 1, 1, f"lab name '{name}' (from the file name) is not valid: add 'name: <lowercase name>' ({LAB_NAME_HINT})"
        )

    networks = _networks(reader, top)
    net_names = tuple(n.name for n in networks)
    nodes, node_keys = _nodes(reader, root, top, net_names)
    roles_fields = reader.mapping(top["roles"][1], "roles", tuple(SETTINGS_KEYS)) if "roles" in top else {}
    used_roles = {r for n in nodes for r in n.roles}
    for key_name, (key, _value) in roles_fields.items():
        if not used_roles & set(SETTINGS_KEYS[key_name]):
            raise reader.fail(key, f"settings for role '{key_name}' are given but no node has that role")

    lab = Lab(name=name, path=path, networks=networks, nodes=nodes)
    lab = replace(lab, nfs_server=_nfs_settings(reader, roles_fields.get("nfs-server"), net_names))
    lab = replace(lab, hypervisor=_hypervisor_settings(reader, roles_fields.get("hypervisor"), lab))
    storage = _StorageParser(reader, lab, node_keys, roles_fields, root)
    return replace(lab, iscsi_target=storage.iscsi(), gluster=storage.gluster(), ceph=storage.ceph(), local_raid=storage.local_raid())


def _networks(reader: _Reader, top: dict[str, tuple[Node, Node]]) -> tuple[Network, ...]:
    if "networks" not in top:
        return (Network("mgmt"),)
    value = top["networks"][1]
    fields = reader.named_mapping(value, "networks")
    if not fields:
        raise reader.fail(value, "networks is empty: name at least one network, e.g. 'mgmt: {}'")
    nets = []
    for net_name, (name_node, spec) in fields.items():
        reader.name(name_node, "network name")
        opts = {} if _is_null(spec) else reader.mapping(spec, f"network '{net_name}'", ("prefix",))
        prefix = reader.optional(opts, "prefix", lambda n: reader.integer(n, "network prefix", PREFIX_RANGE), 24)
        nets.append(Network(net_name, prefix))
    return tuple(nets)


def _nodes(
    reader: _Reader, root: Node, top: dict[str, tuple[Node, Node]], net_names: tuple[str, ...]
) -> tuple[tuple[LabNode, ...], dict[str, Node]]:
    value = reader.required(top, "nodes", root, "the lab")
    fields = reader.named_mapping(value, "nodes")
    if not fields:
        raise reader.fail(value, "nodes is empty: a lab needs at least one node")
    nodes = []
    for node_name, (name_node, spec) in fields.items():
        reader.name(name_node, "node name")
        what = f"node '{node_name}'"
        opts = {} if _is_null(spec) else reader.mapping(spec, what, ("roles", "memory", "vcpus", "disks", "networks"))
        roles = reader.optional(opts, "roles", lambda n: reader.names_list(n, f"roles of {what}", KNOWN_ROLES, "role"), ())
        memory = reader.optional(opts, "memory", lambda n: reader.size_mib(n, f"memory of {what}", MEMORY_RANGE_MIB), DEFAULT_MEMORY_MIB)
        vcpus = reader.optional(opts, "vcpus", lambda n: reader.integer(n, f"vcpus of {what}", VCPU_RANGE), DEFAULT_VCPUS)
        networks = reader.optional(opts, "networks", lambda n: reader.names_list(n, f"networks of {what}", net_names, "network"), net_names)
        if not networks:
            raise reader.fail(opts["networks"][1], f"{what} needs at least one network (known: {', '.join(net_names)})")
        disks = _disks(reader, opts["disks"][1], what) if "disks" in opts else ()
        nodes.append(LabNode(node_name, roles, memory, vcpus, disks, networks))
    return tuple(nodes), {name: key for name, (key, _spec) in fields.items()}


def _disks(reader: _Reader, value: Node, what: str) -> tuple[Disk, ...]:
    fields = reader.named_mapping(value, f"disks of {what}")
    disks = []
    for disk_name, (name_node, size) in fields.items():
        reader.name(name_node, f"disk name of {what}")
        disks.append(Disk(disk_name, reader.size_mib(size, f"size of disk '{disk_name}' of {what}", DISK_RANGE_MIB)))
    return tuple(disks)


def _nfs_settings(reader: _Reader, entry: tuple[Node, Node] | None, net_names: tuple[str, ...]) -> NfsServerSettings:
    if entry is None:
        return NfsServerSettings()
    fields = reader.mapping(entry[1], "role settings 'nfs-server'", ("exports",))
    exports: list[NfsExport] = []
    for item in reader.sequence(reader.required(fields, "exports", entry[1], "nfs-server"), "exports"):
        opts = reader.mapping(item, "an export", ("path", "clients", "options"))
        path = _abs_path(reader, reader.required(opts, "path", item, "an export"), "export path")
        if path in (e.path for e in exports):
            raise reader.fail(opts["path"][1], f"export path '{path}' is listed twice")
        clients_node = reader.required(opts, "clients", item, f"export '{path}'")
        clients = reader.scalar_text(clients_node, "export clients")
        if clients not in net_names:
            try:
                ipaddress.ip_network(clients, strict=False)
            except ValueError:
                raise reader.fail(
                    clients_node,
                    f"export clients '{clients}' is neither a lab network nor a CIDR "
                    f"(known networks: {', '.join(net_names)}; or e.g. 10.0.0.0/24)",
                ) from None
        options = reader.optional(
            opts, "options", lambda n: reader.names_list(n, "export options", NFS_OPTIONS, "NFS option"), NfsExport.options
        )
        exports.append(NfsExport(path, clients, options))
    return NfsServerSettings(tuple(exports))


def _hypervisor_settings(reader: _Reader, entry: tuple[Node, Node] | None, lab: Lab) -> HypervisorSettings:
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
        path = _abs_path(reader, path_node, "pool path")
        exported = tuple(e.path for e in lab.nfs_server.exports)
        if path not in exported:
            raise reader.fail(
                path_node, f"pool path '{path}' is not exported by the nfs-server role (exports: {', '.join(exported) or 'none'})"
            )
        server_nets = lab.node(server).networks
        network = reader.optional(
            opts,
            "network",
            lambda n: reader.names_list(_as_seq(n), "pool network", server_nets, "network of the server")[0],
            server_nets[0],
        )
        target = reader.optional(opts, "target", lambda n: _abs_path(reader, n, "pool target"), f"/var/lib/libvirt/images/{name}")
        mount_options = reader.optional(opts, "mount_options", lambda n: _mount_options(reader, n), ())
        pools.append(NetfsPool(name, server, path, network, target, mount_options))
    hv_nets = set.intersection(*(set(n.networks) for n in lab.by_role("hypervisor"))) if lab.by_role("hypervisor") else set()
    bridge = reader.optional(
        fields,
        "guest_bridge",
        lambda n: reader.names_list(_as_seq(n), "guest_bridge", tuple(sorted(hv_nets)), "network of every hypervisor")[0],
        "",
    )
    inner = reader.optional(fields, "inner_guests", lambda n: _boolean(reader, n, "inner_guests"), False)
    migration = reader.optional(fields, "migration", lambda n: _migration_settings(reader, n, lab), None)
    return HypervisorSettings(tuple(pools), bridge, inner, migration)


def _mount_options(reader: _Reader, node: Node) -> tuple[str, ...]:
    options: list[str] = []
    for item in reader.sequence(node, "mount_options"):
        text = reader.scalar_text(item, "a mount option")
        if not MOUNT_OPTION_RE.match(text):
            raise reader.fail(item, f"mount option '{text}' is not valid: use e.g. local_lock=all or vers=4.2 (letters, digits, _ . = -)")
        options.append(text)
    return tuple(options)


def _boolean(reader: _Reader, node: Node, what: str) -> bool:
    if node.tag != "tag:yaml.org,2002:bool":
        raise reader.fail(node, f"{what} must be true or false, got '{reader.scalar_text(node, what)}'")
    return str(node.value).lower() in ("true", "yes", "on")


def _migration_settings(reader: _Reader, node: Node, lab: Lab) -> MigrationSettings:
    opts = reader.mapping(node, "hypervisor migration settings", ("peers_ssh", "lock", "lockspace", "ports"))
    peers = reader.optional(opts, "peers_ssh", lambda n: _boolean(reader, n, "peers_ssh"), True)
    lock = reader.optional(opts, "lock", lambda n: reader.names_list(_as_seq(n), "lock", ("lockd", "none"), "lock manager")[0], "lockd")
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


def _nfs_mount(reader: _Reader, node: Node, lab: Lab, what: str) -> NfsMount:
    opts = reader.mapping(node, what, ("server", "path", "network"))
    servers = tuple(n.name for n in lab.by_role("nfs-server"))
    server_node = reader.required(opts, "server", node, what)
    server = reader.scalar_text(server_node, f"{what} server")
    if server not in servers:
        raise reader.fail(
            server_node, f"{what} server '{server}' is not a node with role nfs-server (those are: {', '.join(servers) or 'none'})"
        )
    path_node = reader.required(opts, "path", node, what)
    path = _abs_path(reader, path_node, f"{what} path")
    exported = tuple(e.path for e in lab.nfs_server.exports)
    if path not in exported:
        raise reader.fail(
            path_node, f"{what} path '{path}' is not exported by the nfs-server role (exports: {', '.join(exported) or 'none'})"
        )
    nets = lab.node(server).networks
    network = reader.optional(
        opts, "network", lambda n: reader.names_list(_as_seq(n), f"{what} network", nets, "network of the server")[0], nets[0]
    )
    return NfsMount(server, path, network)


def _as_seq(node: Node) -> SequenceNode:
    return SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)


def _abs_path(reader: _Reader, node: Node, what: str) -> str:
    text = reader.string(node, what)
    if not text.startswith("/") or "//" in text or any(c in text for c in " \t'\"\\"):
        raise reader.fail(node, f"{what} '{text}' must be an absolute path without spaces or quotes, e.g. /srv/nfs/vms")
    return text.rstrip("/") or "/"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


IQN_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[A-Za-z0-9._:-]+)?$")


class _StorageParser:
    """Settings of the storage roles, checked against the nodes that carry them."""

    def __init__(self, reader: _Reader, lab: Lab, node_keys: dict[str, Node], fields: dict[str, tuple[Node, Node]], root: Node):
        self.reader, self.lab, self.node_keys, self.fields, self.root = reader, lab, node_keys, fields, root

    def _opts(self, key: str, allowed: tuple[str, ...]) -> tuple[dict[str, tuple[Node, Node]], Node]:
        if key not in self.fields:
            return {}, self.root
        value = self.fields[key][1]
        return self.reader.mapping(value, f"role settings '{key}'", allowed), value

    def _where(self, opts: dict[str, tuple[Node, Node]], key: str, node: str) -> Node:
        """Point an error at the setting if the file has it, else at the node it concerns."""
        return opts[key][1] if key in opts else self.node_keys[node]

    def _need_disk(self, opts: dict[str, tuple[Node, Node]], key: str, node: str, disk: str, role: str) -> None:
        have = tuple(d.name for d in self.lab.node(node).disks)
        if disk not in have:
            raise self.reader.fail(
                self._where(opts, key, node),
                f"node '{node}' (role {role}) needs an extra disk '{disk}' (its disks: {', '.join(have) or 'none'}); "
                f"add e.g. 'disks: {{{disk}: 4G}}'",
            )

    def _network(self, opts: dict[str, tuple[Node, Node]], nodes: tuple[str, ...], role: str) -> str:
        common = [n for n in self.lab.node(nodes[0]).networks if all(n in self.lab.node(x).networks for x in nodes)]
        if "network" in opts:
            net = self.reader.scalar_text(opts["network"][1], "network")
            if net not in common:
                raise self.reader.fail(
                    opts["network"][1], f"network '{net}' is not shared by every {role} node (shared: {', '.join(common) or 'none'})"
                )
            return net
        if not common:
            raise self.reader.fail(self.node_keys[nodes[0]], f"the {role} nodes share no network")
        return common[0]

    def _clients_reach(self, network: str, clients: tuple[str, ...], role: str) -> None:
        """Hypervisors that use a storage must sit on its network."""
        for client in clients:
            if network not in self.lab.node(client).networks:
                raise self.reader.fail(
                    self.node_keys[client],
                    f"hypervisor '{client}' uses the {role} storage but is not on its network '{network}': add it to the node's networks",
                )

    def iscsi(self) -> IscsiTargetSettings:
        targets = tuple(n.name for n in self.lab.by_role("iscsi-target"))
        if not targets:
            return IscsiTargetSettings()
        r = self.reader
        opts, where = self._opts("iscsi-target", ("iqn", "luns", "acls", "network", "networks", "pool"))
        if len(targets) > 1:
            raise r.fail(self.node_keys[targets[1]], f"only one node may have role iscsi-target (already: {targets[0]})")
        target = targets[0]
        iqn = r.optional(opts, "iqn", lambda n: r.string(n, "iqn"), f"iqn.2026-11.dev.kvmlab:{self.lab.name}")
        if not IQN_RE.match(iqn):
            raise r.fail(opts["iqn"][1], f"'{iqn}' is not an iSCSI qualified name: write e.g. iqn.2026-11.lab.example:storage")
        luns: list[IscsiLun] = []
        disk_backend: dict[str, str] = {}
        for item in r.sequence(r.required(opts, "luns", where, "role settings 'iscsi-target'"), "luns"):
            lun = r.mapping(item, "a LUN", ("name", "backend", "disk", "size"))
            name = r.name(r.required(lun, "name", item, "a LUN"), "LUN name")
            if name in (x.name for x in luns):
                raise r.fail(lun["name"][1], f"LUN name '{name}' is used twice")
            backend_node = r.required(lun, "backend", item, f"LUN '{name}'")
            backend = r.scalar_text(backend_node, "LUN backend")
            if backend not in ISCSI_BACKENDS:
                raise r.fail(backend_node, f"unknown LUN backend '{backend}'{_suggest(backend, ISCSI_BACKENDS)}")
            disk = r.name(r.required(lun, "disk", item, f"LUN '{name}'"), "LUN disk")
            self._need_disk(lun, "disk", target, disk, "iscsi-target")
            if disk_backend.setdefault(disk, backend) != backend or (backend == "block" and disk in (x.disk for x in luns)):
                raise r.fail(lun["disk"][1], f"disk '{disk}' already backs another LUN; a block LUN needs a disk of its own")
            size = None
            if backend == "block":
                if "size" in lun:
                    raise r.fail(lun["size"][0], "a block LUN is its whole disk: remove 'size'")
            else:
                size = r.size_mib(r.required(lun, "size", item, f"{backend} LUN '{name}'"), f"size of LUN '{name}'", DISK_RANGE_MIB)
                disk_mib = next(d.size_mib for d in self.lab.node(target).disks if d.name == disk)
                if size > disk_mib - 64:
                    raise r.fail(
                        lun["size"][1],
                        f"LUN '{name}' ({size} MiB) does not fit on disk '{disk}' ({disk_mib} MiB, less 64 MiB for metadata)",
                    )
            luns.append(IscsiLun(name, backend, disk, size))
        lun_names = tuple(x.name for x in luns)
        node_names = tuple(n.name for n in self.lab.nodes)
        acls: list[IscsiAcl] = []
        for item in r.sequence(opts["acls"][1], "acls") if "acls" in opts else ():
            acl = r.mapping(item, "an ACL", ("initiator", "luns"))
            initiator_node = r.required(acl, "initiator", item, "an ACL")
            initiator = r.scalar_text(initiator_node, "ACL initiator")
            if initiator not in node_names:
                raise r.fail(initiator_node, f"ACL initiator '{initiator}' is not a node{_suggest(initiator, node_names)}")
            if initiator in (a.initiator for a in acls):
                raise r.fail(initiator_node, f"initiator '{initiator}' has two ACLs")
            mapped = r.names_list(r.required(acl, "luns", item, f"ACL of '{initiator}'"), f"luns of ACL '{initiator}'", lun_names, "LUN")
            acls.append(IscsiAcl(initiator, mapped))
        networks = self._iscsi_networks(opts, target)
        hypervisors = {n.name for n in self.lab.by_role("hypervisor")}
        for network in networks:
            self._clients_reach(network, tuple(a.initiator for a in acls if a.initiator in hypervisors), "iscsi-target")
        pool = r.optional(opts, "pool", lambda n: r.name(n, "pool name"), "iscsi")
        return IscsiTargetSettings(iqn, tuple(luns), tuple(acls), networks[0], pool, networks)

    def _iscsi_networks(self, opts: dict[str, tuple[Node, Node]], target: str) -> tuple[str, ...]:
        """The portal networks: `network` (one) or `networks` (two, for dm-multipath on the hypervisors)."""
        r = self.reader
        if "networks" not in opts:
            return (self._network(opts, (target,), "iscsi-target"),)
        if "network" in opts:
            raise r.fail(opts["networks"][0], "give either 'network' (one portal) or 'networks' (a portal on each), not both")
        value = opts["networks"][1]
        names = tuple(r.scalar_text(n, "portal network") for n in r.sequence(value, "networks"))
        have = self.lab.node(target).networks
        for item, name in zip(r.sequence(value, "networks"), names, strict=True):
            if name not in have:
                raise r.fail(item, f"portal network '{name}' is not a network of node '{target}' (its networks: {', '.join(have)})")
        if len(names) != 2 or len(set(names)) != 2:
            raise r.fail(value, f"'networks' takes two distinct networks, one per path (got {len(names)}: {', '.join(names)})")
        return names

    def gluster(self) -> GlusterSettings:
        nodes = tuple(n.name for n in self.lab.by_role("gluster"))
        if not nodes:
            return GlusterSettings()
        r = self.reader
        allowed = ("volume", "brick_disk", "brick_dir", "network", "ping_timeout", "owner_uid", "owner_gid", "pool", "mount")
        opts, _where = self._opts("gluster", allowed)
        if len(nodes) < 2:
            raise r.fail(
                self.node_keys[nodes[0]], f"a replicated Gluster volume needs at least 2 nodes with role gluster (found 1: {nodes[0]})"
            )
        d = GlusterSettings()
        brick_disk = r.optional(opts, "brick_disk", lambda n: r.name(n, "brick_disk"), d.brick_disk)
        for node in nodes:
            self._need_disk(opts, "brick_disk", node, brick_disk, "gluster")
        network = self._network(opts, nodes, "gluster")
        self._clients_reach(network, tuple(n.name for n in self.lab.by_role("hypervisor")), "gluster")
        return GlusterSettings(
            volume=r.optional(opts, "volume", lambda n: r.name(n, "volume name"), d.volume),
            brick_disk=brick_disk,
            brick_dir=r.optional(opts, "brick_dir", lambda n: _abs_path(r, n, "brick_dir"), d.brick_dir),
            network=network,
            ping_timeout=r.optional(opts, "ping_timeout", lambda n: r.integer(n, "ping_timeout", (1, 300)), d.ping_timeout),
            owner_uid=r.optional(opts, "owner_uid", lambda n: r.integer(n, "owner_uid", (0, 2**31)), d.owner_uid),
            owner_gid=r.optional(opts, "owner_gid", lambda n: r.integer(n, "owner_gid", (0, 2**31)), d.owner_gid),
            pool=r.optional(opts, "pool", lambda n: r.name(n, "pool name"), d.pool),
            mount=r.optional(opts, "mount", lambda n: _abs_path(r, n, "mount"), d.mount),
        )

    def ceph(self) -> CephSettings:
        mons = tuple(n.name for n in self.lab.by_role("ceph-mon"))
        osds = tuple(n.name for n in self.lab.by_role("ceph-osd"))
        admins = tuple(n.name for n in self.lab.by_role("ceph-admin"))
        if not (mons or osds or admins):
            return CephSettings()
        r = self.reader
        opts, _where = self._opts("ceph", ("pool", "pg_num", "client", "osd_disk", "network", "libvirt_pool"))
        anyone = (mons + osds + admins)[0]
        if len(mons) != 1:
            raise r.fail(
                self.node_keys[mons[1] if mons else anyone],
                f"a Ceph cluster here has exactly one node with role ceph-mon (found {len(mons)})",
            )
        if not osds:
            raise r.fail(self.node_keys[anyone], "a Ceph cluster needs at least one node with role ceph-osd")
        d = CephSettings()
        osd_disk = r.optional(opts, "osd_disk", lambda n: r.name(n, "osd_disk"), d.osd_disk)
        for node in osds:
            self._need_disk(opts, "osd_disk", node, osd_disk, "ceph-osd")
        pg_num = r.optional(opts, "pg_num", lambda n: r.integer(n, "pg_num", (8, 512)), d.pg_num)
        if pg_num & (pg_num - 1):
            raise r.fail(opts["pg_num"][1], f"pg_num {pg_num} is not a power of two (e.g. 32, 64, 128)")
        network = self._network(opts, mons + osds + admins, "ceph")
        self._clients_reach(network, tuple(n.name for n in self.lab.by_role("hypervisor")), "ceph")
        return CephSettings(
            pool=r.optional(opts, "pool", lambda n: r.string(n, "pool"), d.pool),
            pg_num=pg_num,
            client=r.optional(opts, "client", lambda n: r.string(n, "client"), d.client),
            osd_disk=osd_disk,
            network=network,
            libvirt_pool=r.optional(opts, "libvirt_pool", lambda n: r.name(n, "libvirt_pool"), d.libvirt_pool),
        )

    def local_raid(self) -> LocalRaidSettings:
        nodes = tuple(n.name for n in self.lab.by_role("local-raid"))
        if not nodes:
            return LocalRaidSettings()
        r = self.reader
        opts, where = self._opts("local-raid", ("members", "spare", "vg", "mount", "pool"))
        members_node = r.required(opts, "members", where if opts else self.node_keys[nodes[0]], "role settings 'local-raid'")
        members = tuple(r.name(m, "RAID member disk") for m in r.sequence(members_node, "members"))
        if len(members) != 4 or len(set(members)) != 4:
            raise r.fail(members_node, f"RAID10 here takes exactly 4 distinct member disks (got {len(members)}: {', '.join(members)})")
        spare = r.name(r.required(opts, "spare", where, "role settings 'local-raid'"), "spare disk")
        if spare in members:
            raise r.fail(opts["spare"][1], f"spare disk '{spare}' is also a member")
        for node in nodes:
            for disk in (*members, spare):
                self._need_disk(opts, "members" if disk in members else "spare", node, disk, "local-raid")
        d = LocalRaidSettings()
        return LocalRaidSettings(
            members=members,
            spare=spare,
            vg=r.optional(opts, "vg", lambda n: r.name(n, "vg"), d.vg),
            mount=r.optional(opts, "mount", lambda n: _abs_path(r, n, "mount"), d.mount),
            pool=r.optional(opts, "pool", lambda n: r.name(n, "pool name"), d.pool),
        )
