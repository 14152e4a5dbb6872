"""nfs-server: export directories to a network or subnet, as the lab file says."""

from __future__ import annotations

import shlex

from kvmlab.model import Node
from kvmlab.roles import RoleContext


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    paths = " ".join(shlex.quote(e.path) for e in ctx.lab.nfs_server.exports)
    if paths:
        remote.check(f"mkdir -p {paths}", "create export directories")
    remote.put("/etc/exports", ctx.file(node, "exports"))
    remote.check("systemctl --no-reload enable --now nfs-server.service", "start the NFS server")
    remote.check("exportfs -ra", "publish exports")
