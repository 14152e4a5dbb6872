"""Settings of the iscsi-target role: the target, its LUNs and backends, ACLs and portal networks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvmlab.roles.reader import Fields, SettingsReader
from kvmlab.yamlread import DISK_RANGE_MIB, quote, suggest

KEY = "iscsi-target"
IQN_RE = re.compile(r"^iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*(:[A-Za-z0-9._:-]+)?$")


@dataclass(frozen=True)
class IscsiLun:
    name: str
    backend: str  # fileio (a file on XFS), block (a whole extra disk), lvm (an LV on an extra disk)
    disk: str  # extra disk of the target node
    size_mib: int | None  # fileio and lvm; a block LUN is its whole disk


@dataclass(frozen=True)
class Chap:
    user: str
    password: str  # the lab file's own; kept out of logs and artifacts (redact.py masks password= values)


@dataclass(frozen=True)
class IscsiAcl:
    initiator: str  # node name; its IQN is derived from it
    luns: tuple[str, ...]
    chap: Chap | None = None  # the target asks the initiator for these
    mutual_chap: Chap | None = None  # the initiator asks the target for these (needs chap)


@dataclass(frozen=True)
class IscsiTargetSettings:
    iqn: str = ""
    luns: tuple[IscsiLun, ...] = ()
    acls: tuple[IscsiAcl, ...] = ()
    network: str = ""  # portal network; empty: the target's first network
    pool: str = "iscsi"  # the hypervisors' iscsi pool (an mpath pool when there are two portal networks)
    networks: tuple[str, ...] = ()  # every portal network, `network` first; two: hypervisors use dm-multipath


ISCSI_BACKENDS = ("fileio", "block", "lvm")


def parse(sr: SettingsReader) -> IscsiTargetSettings:
    targets = tuple(n.name for n in sr.lab.by_role("iscsi-target"))
    if not targets:
        return IscsiTargetSettings()
    r = sr.reader
    opts, where = sr.opts("iscsi-target", ("iqn", "luns", "acls", "network", "networks", "pool"))
    if len(targets) > 1:
        raise r.fail(sr.node_keys[targets[1]], f"only one node may have role iscsi-target (already: {targets[0]})")
    target = targets[0]
    iqn = r.optional(opts, "iqn", lambda n: r.string(n, "iqn"), f"iqn.2026-11.dev.kvmlab:{sr.lab.name}")
    if not IQN_RE.match(iqn):
        raise r.fail(opts["iqn"][1], f"'{quote(iqn)}' is not an iSCSI qualified name: write e.g. iqn.2026-11.lab.example:storage")
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
            raise r.fail(backend_node, f"unknown LUN backend '{backend}'{suggest(backend, ISCSI_BACKENDS)}")
        disk = r.name(r.required(lun, "disk", item, f"LUN '{name}'"), "LUN disk")
        sr.need_disk(lun, "disk", target, disk, "iscsi-target")
        if disk_backend.setdefault(disk, backend) != backend or (backend == "block" and disk in (x.disk for x in luns)):
            raise r.fail(lun["disk"][1], f"disk '{disk}' already backs another LUN; a block LUN needs a disk of its own")
        size = None
        if backend == "block":
            if "size" in lun:
                raise r.fail(lun["size"][0], "a block LUN is its whole disk: remove 'size'")
        else:
            size = r.size_mib(r.required(lun, "size", item, f"{backend} LUN '{name}'"), f"size of LUN '{name}'", DISK_RANGE_MIB)
            disk_mib = next(d.size_mib for d in sr.lab.node(target).disks if d.name == disk)
            if size > disk_mib - 64:
                raise r.fail(
                    lun["size"][1],
                    f"LUN '{name}' ({size} MiB) does not fit on disk '{disk}' ({disk_mib} MiB, less 64 MiB for metadata)",
                )
        luns.append(IscsiLun(name, backend, disk, size))
    lun_names = tuple(x.name for x in luns)
    node_names = tuple(n.name for n in sr.lab.nodes)
    acls: list[IscsiAcl] = []
    for item in r.sequence(opts["acls"][1], "acls") if "acls" in opts else ():
        acl = r.mapping(item, "an ACL", ("initiator", "luns", "chap", "mutual_chap"))
        initiator_node = r.required(acl, "initiator", item, "an ACL")
        initiator = r.scalar_text(initiator_node, "ACL initiator")
        if initiator not in node_names:
            raise r.fail(initiator_node, f"ACL initiator '{initiator}' is not a node{suggest(initiator, node_names)}")
        if initiator in (a.initiator for a in acls):
            raise r.fail(initiator_node, f"initiator '{initiator}' has two ACLs")
        mapped = r.names_list(r.required(acl, "luns", item, f"ACL of '{initiator}'"), f"luns of ACL '{initiator}'", lun_names, "LUN")
        chap = r.optional(acl, "chap", lambda n: _chap(sr, n, f"chap of ACL '{initiator}'"), None)
        mutual = r.optional(acl, "mutual_chap", lambda n: _chap(sr, n, f"mutual_chap of ACL '{initiator}'"), None)
        if mutual and not chap:
            raise r.fail(acl["mutual_chap"][0], f"mutual_chap of ACL '{initiator}' needs chap too: the initiator proves itself first")
        if mutual and chap and mutual.password == chap.password:
            raise r.fail(acl["mutual_chap"][1], f"mutual_chap of ACL '{initiator}' must have a password of its own, not chap's")
        acls.append(IscsiAcl(initiator, mapped, chap, mutual))
    with_chap = [a for a in acls if a.chap]
    if with_chap and len(with_chap) != len(acls):
        bare = next(a.initiator for a in acls if not a.chap)
        raise r.fail(
            opts["acls"][1],
            f"ACL '{with_chap[0].initiator}' has chap, '{bare}' has not: with CHAP on, the target asks every initiator: give each ACL chap",
        )
    networks = _iscsi_networks(sr, opts, target)
    hypervisors = {n.name for n in sr.lab.by_role("hypervisor")}
    for network in networks:
        sr.clients_reach(network, tuple(a.initiator for a in acls if a.initiator in hypervisors), "iscsi-target")
    pool = r.optional(opts, "pool", lambda n: r.name(n, "pool name"), "iscsi")
    return IscsiTargetSettings(iqn, tuple(luns), tuple(acls), networks[0], pool, networks)


CHAP_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$")
CHAP_PASSWORD_RE = re.compile(r"^[A-Za-z0-9._:@+-]{12,64}$")  # 12 to 16+ characters: what initiators commonly insist on


def _chap(sr: SettingsReader, node, what: str) -> Chap:
    r = sr.reader
    fields = r.mapping(node, what, ("user", "password"))
    user = r.identifier(r.required(fields, "user", node, what), f"{what} user", CHAP_USER_RE, "hv1 (letters, digits, . _ : @ -)")
    password_node = r.required(fields, "password", node, what)
    password = r.scalar_text(password_node, f"{what} password")
    if not CHAP_PASSWORD_RE.match(password):
        # Never echo the password itself, not even in an error.
        raise r.fail(
            password_node,
            f"{what} password must be 12 to 64 characters of letters, digits and . _ : @ + - (it has {len(password)} characters)",
        )
    return Chap(user, password)


def _iscsi_networks(sr: SettingsReader, opts: Fields, target: str) -> tuple[str, ...]:
    """The portal networks: `network` (one) or `networks` (two, for dm-multipath on the hypervisors)."""
    r = sr.reader
    if "networks" not in opts:
        return (sr.network(opts, (target,), "iscsi-target"),)
    if "network" in opts:
        raise r.fail(opts["networks"][0], "give either 'network' (one portal) or 'networks' (a portal on each), not both")
    value = opts["networks"][1]
    names = tuple(r.scalar_text(n, "portal network") for n in r.sequence(value, "networks"))
    have = sr.lab.node(target).networks
    for item, name in zip(r.sequence(value, "networks"), names, strict=True):
        if name not in have:
            raise r.fail(item, f"portal network '{name}' is not a network of node '{target}' (its networks: {', '.join(have)})")
    if len(names) != 2 or len(set(names)) != 2:
        raise r.fail(value, f"'networks' takes two distinct networks, one per path (got {len(names)}: {', '.join(names)})")
    return names
