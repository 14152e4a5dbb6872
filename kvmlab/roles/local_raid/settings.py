"""Settings of the local-raid role: member and spare disks, volume group, mount, pool."""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import abs_path

KEY = "local-raid"


@dataclass(frozen=True)
class LocalRaidSettings:
    members: tuple[str, ...] = ()  # four extra disks
    spare: str = ""
    vg: str = "raidvg"
    mount: str = "/var/lib/libvirt/images/raid"
    pool: str = "raid"


def parse(sr: SettingsReader) -> LocalRaidSettings:
    nodes = tuple(n.name for n in sr.lab.by_role("local-raid"))
    if not nodes:
        return LocalRaidSettings()
    r = sr.reader
    opts, where = sr.opts("local-raid", ("members", "spare", "vg", "mount", "pool"))
    members_node = r.required(opts, "members", where if opts else sr.node_keys[nodes[0]], "role settings 'local-raid'")
    members = tuple(r.name(m, "RAID member disk") for m in r.sequence(members_node, "members"))
    if len(members) != 4 or len(set(members)) != 4:
        raise r.fail(members_node, f"RAID10 here takes exactly 4 distinct member disks (got {len(members)}: {', '.join(members)})")
    spare = r.name(r.required(opts, "spare", where, "role settings 'local-raid'"), "spare disk")
    if spare in members:
        raise r.fail(opts["spare"][1], f"spare disk '{spare}' is also a member")
    for node in nodes:
        for disk in (*members, spare):
            sr.need_disk(opts, "members" if disk in members else "spare", node, disk, "local-raid")
    d = LocalRaidSettings()
    return LocalRaidSettings(
        members=members,
        spare=spare,
        vg=r.optional(opts, "vg", lambda n: r.name(n, "vg"), d.vg),
        mount=r.optional(opts, "mount", lambda n: abs_path(r, n, "mount"), d.mount),
        pool=r.optional(opts, "pool", lambda n: r.name(n, "pool name"), d.pool),
    )
