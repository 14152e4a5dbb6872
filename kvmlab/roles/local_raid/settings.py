"""Settings of the local-raid role: the MD array in mdadm's terms (level, members, spares, chunk), volume group, mount, pool."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from yaml.nodes import Node

from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import Fields, Reader, abs_path, quote

KEY = "local-raid"

# mdadm's --level values this role builds, and the fewest member disks each takes.
MIN_MEMBERS = {1: 2, 5: 3, 6: 4, 10: 2}
CHUNK_RE = re.compile(r"^(\d{1,9})\s*([KkMm])(?:i?B)?$")  # 64K, 512KiB, 1M
MIN_CHUNK_KIB = 4  # one page: the kernel's smallest MD chunk
CHUNK_EXAMPLES = "e.g. 64K, 512K or 1M"
# mkfs.xfs refuses filesystems under 300 MiB; md's superblock and LVM's metadata keep a few MiB more.
MIN_ARRAY_MIB = 320


@dataclass(frozen=True)
class LocalRaidSettings:
    level: int = 10  # mdadm --level
    members: tuple[str, ...] = ()  # extra disks of the node, in --raid-devices order
    spares: tuple[str, ...] = ()  # --spare-devices
    chunk_kib: int = 0  # mdadm --chunk in KiB; 0 leaves mdadm's default (never set for RAID1)
    vg: str = "raidvg"
    mount: str = "/var/lib/libvirt/images/raid"
    pool: str = "raid"
    where: str = field(default="", compare=False)  # file:line:col of the settings, named when mdadm refuses them

    @property
    def spare(self) -> str:
        """The first spare disk, or '' (the book's lab has exactly one)."""
        return self.spares[0] if self.spares else ""

    def describe(self) -> str:
        """The array in a few words, e.g. 'RAID5 of r1, r2, r3 with spare r4, chunk 128K'."""
        text = f"RAID{self.level} of {', '.join(self.members)}"
        if self.spares:
            text += f" with spare{'s' if len(self.spares) > 1 else ''} {', '.join(self.spares)}"
        if self.chunk_kib:
            kib = self.chunk_kib
            text += f", chunk {f'{kib // 1024}M' if kib % 1024 == 0 else f'{kib}K'}"  # as a lab file writes it
        return text


def chunk_text(kib: int) -> str:
    """How mdadm --detail shows a chunk size: in K, whatever its size ('Chunk Size : 1024K')."""
    return f"{kib}K"


def parse(sr: SettingsReader) -> LocalRaidSettings:
    nodes = tuple(n.name for n in sr.lab.by_role("local-raid"))
    if not nodes:
        return LocalRaidSettings()
    r = sr.reader
    opts, where = sr.opts("local-raid", ("level", "members", "spares", "spare", "chunk", "vg", "mount", "pool"))
    level = r.optional(opts, "level", lambda n: _level(r, n), LocalRaidSettings.level)
    members_node = r.required(opts, "members", where if opts else sr.node_keys[nodes[0]], "role settings 'local-raid'")
    members = _disks(r, members_node, "members", "member")
    _enough_members(r, members_node, level, members)
    spares = _spares(r, opts, members)
    chunk_kib = r.optional(opts, "chunk", lambda n: _chunk(r, n, level), 0)
    for node in nodes:
        for disk in (*members, *spares):
            key = "members" if disk in members else ("spares" if "spares" in opts else "spare")
            sr.need_disk(opts, key, node, disk, "local-raid")
        _room_for_xfs(sr, members_node, node, level, members)
    d = LocalRaidSettings()
    entry = sr.entry("local-raid")
    return LocalRaidSettings(
        level=level,
        members=members,
        spares=spares,
        chunk_kib=chunk_kib,
        vg=r.optional(opts, "vg", lambda n: r.name(n, "vg"), d.vg),
        mount=r.optional(opts, "mount", lambda n: abs_path(r, n, "mount"), d.mount),
        pool=r.optional(opts, "pool", lambda n: r.name(n, "pool name"), d.pool),
        where=_position(r, entry[0]) if entry else "",
    )


def _position(r: Reader, node: Node) -> str:
    mark = node.start_mark
    return f"{r.path}:{mark.line + 1}:{mark.column + 1}"


def _level(r: Reader, node: Node) -> int:
    """1, 5, 6 or 10; mdadm's spelling raid5 is taken too."""
    text = r.scalar_text(node, "RAID level").strip().lower().removeprefix("raid")
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:str") and text.isdigit() and int(text) in MIN_MEMBERS:
        return int(text)
    known = ", ".join(str(n) for n in MIN_MEMBERS)
    shown = quote(r.scalar_text(node, "RAID level"))
    raise r.fail(node, f"RAID level '{shown}' is not one kvmlab builds: write level: {known} (mdadm's --level)")


def _disks(r: Reader, node: Node, key: str, what: str) -> tuple[str, ...]:
    """A list of distinct disk names."""
    disks: list[str] = []
    for item in r.sequence(node, key):
        disk = r.name(item, f"RAID {what} disk")
        if disk in disks:
            raise r.fail(item, f"disk '{disk}' is listed twice in {key}: each {what} is a disk of its own")
        disks.append(disk)
    return tuple(disks)


def _enough_members(r: Reader, node: Node, level: int, members: tuple[str, ...]) -> None:
    need = MIN_MEMBERS[level]
    if len(members) >= need:
        return
    fits = [str(lv) for lv, n in MIN_MEMBERS.items() if n <= len(members)]
    other = f", or use level {' or '.join(fits)}" if fits else ""
    got = f"{len(members)}: {', '.join(members)}" if members else "none"
    raise r.fail(node, f"RAID{level} needs at least {need} member disks (got {got}); add {need - len(members)} more{other}")


def data_disks(level: int, members: int) -> float:
    """How many members' worth of space the array holds: RAID10 keeps two copies (mdadm's near=2)."""
    return {1: 1, 5: members - 1, 6: members - 2, 10: members / 2}[level]


def _room_for_xfs(sr: SettingsReader, node_yaml: Node, node: str, level: int, members: tuple[str, ...]) -> None:
    sizes = {d.name: d.size_mib for d in sr.lab.node(node).disks}
    smallest = min(sizes[m] for m in members)
    share = data_disks(level, len(members))
    if smallest * share >= MIN_ARRAY_MIB:
        return
    need = -(-MIN_ARRAY_MIB // share)  # rounded up
    raise sr.reader.fail(
        node_yaml,
        f"RAID{level} of {len(members)} disks of {smallest} MiB on node '{node}' holds about {int(smallest * share)} MiB, "
        f"too little for XFS (300 MiB, and md and LVM keep a few): make the member disks at least {int(need)}M",
    )


def _spares(r: Reader, opts: Fields, members: tuple[str, ...]) -> tuple[str, ...]:
    """`spares: [..]`, or the book lab's `spare: DISK`; none when neither is given."""
    if "spare" in opts and "spares" in opts:
        later = max(("spare", "spares"), key=lambda k: opts[k][0].start_mark.index)
        raise r.fail(
            opts[later][0],
            "'spare' and 'spares' cannot go together: keep one, e.g. 'spares: [r5, r6]' for every spare disk",
        )
    if "spare" in opts:
        item = opts["spare"][1]
        spares, items = (r.name(item, "spare disk"),), [item]
    elif "spares" in opts:
        items = r.sequence(opts["spares"][1], "spares")
        spares = _disks(r, opts["spares"][1], "spares", "spare")
    else:
        return ()
    for disk, item in zip(spares, items, strict=True):
        if disk in members:
            raise r.fail(item, f"disk '{disk}' is both a member and a spare: a disk is one or the other")
    return spares


def _chunk(r: Reader, node: Node, level: int) -> int:
    """mdadm's --chunk, in KiB: a power of two of at least 4K, written with its unit."""
    if level == 1:
        raise r.fail(
            node, "chunk is not a setting of RAID1: mdadm mirrors whole disks, without chunks; remove 'chunk' or use level 5, 6 or 10"
        )
    text = r.scalar_text(node, "chunk").strip()
    if text.isdigit():
        raise r.fail(node, f"chunk '{quote(text)}' has no unit: write {quote(text)}K for KiB ({CHUNK_EXAMPLES})")
    match = CHUNK_RE.match(text)
    kib = int(match.group(1)) * (1024 if match.group(2) in "Mm" else 1) if match else 0
    if kib < MIN_CHUNK_KIB or kib & (kib - 1):
        raise r.fail(node, f"chunk '{quote(text)}' is not a power of two of at least 4K: write {CHUNK_EXAMPLES}")
    return kib
