"""Settings of the gluster role: volume, its type in Gluster's own words, bricks, network and volume options.

The type keys mirror `gluster volume create`: `replica: N` (default: every gluster node),
`arbiter: 1` (replica 3 arbiter 1), `disperse: N` with `redundancy: R`. One brick per
gluster node, in file order: N bricks per set, and several sets make the volume
distributed (Distributed-Replicate, Distributed-Disperse).
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab.roles.gluster.options import GlusterOption, parse_options
from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import Fields, abs_path

KEY = "gluster"
TYPE_KEYS = ("replica", "arbiter", "disperse", "redundancy")
MAX_COUNT = 99


@dataclass(frozen=True)
class GlusterSettings:
    volume: str = "kvmgluster"
    brick_disk: str = "brick"
    brick_dir: str = "/gluster/bricks/1"
    network: str = ""  # peers, clients and auth.allow; empty: the first network
    ping_timeout: int = 42
    owner_uid: int = 64055  # libvirt-qemu on Debian (the book's 107 is CentOS's qemu)
    owner_gid: int = 64055
    pool: str = "gluster"
    mount: str = "/var/lib/libvirt/images/GlusterFS"
    replica: int = 0  # bricks per replica set, the arbiter included; 0 for a dispersed volume
    arbiter: int = 0  # 1: the last brick of each replica 3 set holds names and metadata, no data
    disperse: int = 0  # bricks per disperse set; 0 for a replicated volume
    redundancy: int = 0  # bricks each disperse set may lose
    options: tuple[GlusterOption, ...] = ()  # the lab's own `gluster volume set`s, in file order

    @property
    def set_size(self) -> int:
        """Bricks per replica or disperse set."""
        return self.disperse or self.replica

    def create_words(self) -> str:
        """The type words of `gluster volume create`, e.g. `replica 3 arbiter 1` or `disperse 3 redundancy 1`."""
        if self.disperse:
            return f"disperse {self.disperse} redundancy {self.redundancy}"
        return f"replica {self.replica}" + (f" arbiter {self.arbiter}" if self.arbiter else "")

    def type_str(self, bricks: int) -> str:
        """The volume's type as `gluster volume info` names it (typeStr) for BRICKS bricks."""
        kind = "Disperse" if self.disperse else "Replicate"
        return f"Distributed-{kind}" if bricks > self.set_size else kind


def default_redundancy(disperse: int) -> int:
    """Gluster's own choice when `redundancy` is left out: the smallest that leaves a power of two
    of data bricks (disperse 6: 2, so 4 hold data), else 1 (the gluster CLI's create check)."""
    for redundancy in range(1, (disperse - 1) // 2 + 1):
        data = disperse - redundancy
        if data & (data - 1) == 0:
            return redundancy
    return 1


def parse(sr: SettingsReader) -> GlusterSettings:
    nodes = tuple(n.name for n in sr.lab.by_role("gluster"))
    if not nodes:
        return GlusterSettings()
    r = sr.reader
    allowed = (
        "volume",
        "brick_disk",
        "brick_dir",
        "network",
        "ping_timeout",
        "owner_uid",
        "owner_gid",
        "pool",
        "mount",
        *TYPE_KEYS,
        "options",
    )
    opts, _where = sr.opts("gluster", allowed)
    if len(nodes) < 2:
        raise r.fail(sr.node_keys[nodes[0]], f"a replicated Gluster volume needs at least 2 nodes with role gluster (found 1: {nodes[0]})")
    d = GlusterSettings()
    brick_disk = r.optional(opts, "brick_disk", lambda n: r.name(n, "brick_disk"), d.brick_disk)
    for node in nodes:
        sr.need_disk(opts, "brick_disk", node, brick_disk, "gluster")
    network = sr.network(opts, nodes, "gluster")
    sr.clients_reach(network, tuple(n.name for n in sr.lab.by_role("hypervisor")), "gluster")
    replica, arbiter, disperse, redundancy = _volume_type(sr, opts, nodes)
    return GlusterSettings(
        volume=r.optional(opts, "volume", lambda n: r.name(n, "volume name"), d.volume),
        brick_disk=brick_disk,
        brick_dir=r.optional(opts, "brick_dir", lambda n: abs_path(r, n, "brick_dir"), d.brick_dir),
        network=network,
        ping_timeout=r.optional(opts, "ping_timeout", lambda n: r.integer(n, "ping_timeout", (1, 300)), d.ping_timeout),
        owner_uid=r.optional(opts, "owner_uid", lambda n: r.integer(n, "owner_uid", (0, 2**31)), d.owner_uid),
        owner_gid=r.optional(opts, "owner_gid", lambda n: r.integer(n, "owner_gid", (0, 2**31)), d.owner_gid),
        pool=r.optional(opts, "pool", lambda n: r.name(n, "pool name"), d.pool),
        mount=r.optional(opts, "mount", lambda n: abs_path(r, n, "mount"), d.mount),
        replica=replica,
        arbiter=arbiter,
        disperse=disperse,
        redundancy=redundancy,
        options=r.optional(opts, "options", lambda n: parse_options(r, n), ()),
    )


def _volume_type(sr: SettingsReader, opts: Fields, nodes: tuple[str, ...]) -> tuple[int, int, int, int]:
    """(replica, arbiter, disperse, redundancy) of the volume, checked against the number of gluster nodes."""
    r = sr.reader
    counts = {k: r.optional(opts, k, lambda n: r.integer(n, k, (0, MAX_COUNT)), 0) for k in TYPE_KEYS}
    replicated = [k for k in ("replica", "arbiter") if k in opts]
    dispersed = [k for k in ("disperse", "redundancy") if k in opts]
    if replicated and dispersed:
        first, second = sorted((replicated[0], dispersed[0]), key=lambda k: opts[k][0].start_mark.index)
        raise r.fail(
            opts[second][0],
            f"'{second}' and '{first}' cannot go together: a Gluster volume is either replicated "
            "(replica: N, and arbiter: 1 for replica 3) or dispersed (disperse: N, redundancy: R); keep one",
        )
    if dispersed:
        return (0, 0, *_disperse(sr, opts, nodes, counts["disperse"], counts["redundancy"]))
    return (*_replica(sr, opts, nodes, counts["replica"], counts["arbiter"]), 0, 0)


def _replica(sr: SettingsReader, opts: Fields, nodes: tuple[str, ...], replica: int, arbiter: int) -> tuple[int, int]:
    r = sr.reader
    if "arbiter" in opts:
        if arbiter != 1:
            raise r.fail(
                opts["arbiter"][1], f"arbiter {arbiter} is not possible: Gluster has one arbiter per replica 3 set, write arbiter: 1"
            )
        if "replica" in opts and replica != 3:
            raise r.fail(
                opts["replica"][1],
                f"replica {replica} with arbiter 1 is not possible: an arbiter volume is replica 3 arbiter 1 "
                "(two data bricks and the arbiter in each set); write replica: 3, or leave replica out",
            )
        replica = 3
    elif "replica" not in opts:
        replica = len(nodes)  # every node holds a copy: the role's behaviour before the type keys
    if replica < 2:
        raise r.fail(
            opts["replica"][1], f"replica {replica} is too small: a replicated volume keeps at least 2 copies (replica: 2 or more)"
        )
    words = f"replica {replica}" + (" arbiter 1" if arbiter else "")
    _fits(sr, opts, "arbiter" if arbiter else "replica", nodes, replica, words)
    return replica, arbiter


def _disperse(sr: SettingsReader, opts: Fields, nodes: tuple[str, ...], disperse: int, redundancy: int) -> tuple[int, int]:
    r = sr.reader
    if "disperse" not in opts:
        example = f"disperse: {len(nodes)}" if len(nodes) >= 3 else "disperse: 3 with 3 gluster nodes"
        raise r.fail(
            opts["redundancy"][0],
            f"redundancy needs disperse: it is the number of bricks each disperse set may lose; add e.g. '{example}'",
        )
    if disperse < 3:
        raise r.fail(
            opts["disperse"][1],
            f"disperse {disperse} is too small: a disperse set needs at least 3 bricks (e.g. disperse: 3, redundancy: 1)",
        )
    _fits(sr, opts, "disperse", nodes, disperse, f"disperse {disperse}")
    if "redundancy" not in opts:
        return disperse, default_redundancy(disperse)
    most = (disperse - 1) // 2  # Gluster needs disperse > 2 x redundancy
    if not 1 <= redundancy <= most:
        right = "redundancy: 1" if most == 1 else f"redundancy 1 to {most}"
        raise r.fail(
            opts["redundancy"][1],
            f"redundancy {redundancy} is not possible with disperse {disperse}: each set must lose at least 1 brick "
            f"and keep more data bricks than redundant ones (disperse > 2 x redundancy); use {right}",
        )
    return disperse, redundancy


def _fits(sr: SettingsReader, opts: Fields, key: str, nodes: tuple[str, ...], size: int, words: str) -> None:
    """One brick per gluster node: the sets of SIZE bricks must take them all."""
    if len(nodes) % size:
        raise sr.reader.fail(
            opts[key][1] if key in opts else sr.node_keys[nodes[0]],
            f"{words} needs the number of gluster nodes to be a multiple of {size}, this lab has {len(nodes)}: {', '.join(nodes)}",
        )
