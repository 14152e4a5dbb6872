"""Settings of the nfs-server role: the exports, checked against the lab's networks."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from yaml.nodes import Node

from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import Reader, abs_path, boolean, quote

KEY = "nfs-server"


@dataclass(frozen=True)
class NfsExport:
    path: str
    clients: str  # a network name or a CIDR
    options: tuple[str, ...] = ("rw", "sync", "no_root_squash")


@dataclass(frozen=True)
class NfsConfOption:
    section: str  # e.g. nfsd
    key: str  # e.g. vers3
    value: str  # as nfs.conf spells it: booleans are y/n


@dataclass(frozen=True)
class NfsServerSettings:
    exports: tuple[NfsExport, ...] = ()
    # nfs.conf in the service's own terms (`nfsd: {vers3: n, grace-time: 10}`), passed through as written
    nfs_conf: tuple[NfsConfOption, ...] = ()


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
    fields = reader.mapping(entry[1], "role settings 'nfs-server'", ("exports", "nfs-conf"))
    nfs_conf = reader.optional(fields, "nfs-conf", lambda n: _nfs_conf(reader, n), ())
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
    return NfsServerSettings(tuple(exports), nfs_conf)


NFS_CONF_NAME = re.compile(r"^[a-z][a-z0-9.-]*$")  # how nfs.conf names its sections and keys (nfsd, vers4.2, grace-time)


def _nfs_conf(reader: Reader, value: Node) -> tuple[NfsConfOption, ...]:
    """nfs.conf's sections and keys are not second-guessed: any name nfs.conf could hold is written as given."""
    options = []
    for section, (section_node, body) in reader.named_mapping(value, "nfs-conf").items():
        if not NFS_CONF_NAME.match(section):
            raise reader.fail(section_node, f"nfs-conf section '{quote(section)}' is not an nfs.conf section name (e.g. nfsd, mountd)")
        for key, (key_node, item) in reader.named_mapping(body, f"nfs-conf section '{section}'").items():
            if not NFS_CONF_NAME.match(key):
                raise reader.fail(key_node, f"nfs-conf key '{quote(key)}' in [{section}] is not an nfs.conf key (e.g. vers3, grace-time)")
            if item.tag == "tag:yaml.org,2002:bool":
                text = "y" if boolean(reader, item, f"nfs-conf {section}.{key}") else "n"
            else:
                text = reader.scalar_text(item, f"nfs-conf {section}.{key}")
                if not text or "\n" in text or not text.isprintable():
                    raise reader.fail(item, f"nfs-conf {section}.{key} must be one printable line, got '{quote(text)}'")
            options.append(NfsConfOption(section, key, text))
    return tuple(options)
