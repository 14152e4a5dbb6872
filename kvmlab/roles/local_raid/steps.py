"""local-raid: RAID10 with a spare, LVM and XFS, and a libvirt dir pool on it (book 5.1)."""

from __future__ import annotations

from kvmlab.model import Node
from kvmlab.roles import RoleContext
from kvmlab.roles.pools import define_pool


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    remote.check("sh -s", "create the RAID10 array, LVM and XFS", stdin=ctx.file(node, "raid-setup.sh"))


def clients(ctx: RoleContext, node: Node) -> None:
    pool = ctx.lab.local_raid.pool
    define_pool(ctx.remote(node.name), pool, ctx.file(node, f"pool-{pool}.xml"))
