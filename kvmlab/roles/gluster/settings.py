"""Settings of the gluster role: volume, bricks, network and volume options."""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import abs_path

KEY = "gluster"


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


def parse(sr: SettingsReader) -> GlusterSettings:
    nodes = tuple(n.name for n in sr.lab.by_role("gluster"))
    if not nodes:
        return GlusterSettings()
    r = sr.reader
    allowed = ("volume", "brick_disk", "brick_dir", "network", "ping_timeout", "owner_uid", "owner_gid", "pool", "mount")
    opts, _where = sr.opts("gluster", allowed)
    if len(nodes) < 2:
        raise r.fail(sr.node_keys[nodes[0]], f"a replicated Gluster volume needs at least 2 nodes with role gluster (found 1: {nodes[0]})")
    d = GlusterSettings()
    brick_disk = r.optional(opts, "brick_disk", lambda n: r.name(n, "brick_disk"), d.brick_disk)
    for node in nodes:
        sr.need_disk(opts, "brick_disk", node, brick_disk, "gluster")
    network = sr.network(opts, nodes, "gluster")
    sr.clients_reach(network, tuple(n.name for n in sr.lab.by_role("hypervisor")), "gluster")
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
    )
