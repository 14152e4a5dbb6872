"""Settings of the nfs-server role: the exports, checked against the lab's networks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import abs_path

KEY = "nfs-server"


@dataclass(frozen=True)
class NfsExport:
    path: str
    clients: str  # a network name or a CIDR
    options: tuple[str, ...] = ("rw", "sync", "no_root_squash")


@dataclass(frozen=True)
class NfsServerSettings:
    exports: tuple[NfsExport, ...] = ()


NFS_OPTIONS = (
    "rw",
    "ro",
    "sync",
    "async",
    "root_squash",
    "no_root_squash",
    "all_squash",
    "no_all_squash",
    "secure",
    "insecure",
    "subtree_check",
    "no_subtree_check",
    "wdelay",
    "no_wdelay",
    "crossmnt",
    "nohide",
)


def parse(sr: SettingsReader) -> NfsServerSettings:
    reader, entry = sr.reader, sr.entry(KEY)
    net_names = tuple(n.name for n in sr.lab.networks)
    if entry is None:
        return NfsServerSettings()
    fields = reader.mapping(entry[1], "role settings 'nfs-server'", ("exports",))
    exports: list[NfsExport] = []
    for item in reader.sequence(reader.required(fields, "exports", entry[1], "nfs-server"), "exports"):
        opts = reader.mapping(item, "an export", ("path", "clients", "options"))
        path = abs_path(reader, reader.required(opts, "path", item, "an export"), "export path")
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
