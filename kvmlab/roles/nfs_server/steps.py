"""nfs-server: export directories to a network or subnet, as the lab file says."""

from __future__ import annotations

import shlex

from kvmlab.model import Node
from kvmlab.roles import RoleContext

NFS_CONF_DROP_IN = "/etc/nfs.conf.d/kvmlab.conf"  # nfs-utils reads nfs.conf.d/*.conf after nfs.conf


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    paths = " ".join(shlex.quote(e.path) for e in ctx.lab.nfs_server.exports)
    if paths:
        remote.check(f"mkdir -p {paths}", "create export directories")
    remote.put("/etc/exports", ctx.file(node, "exports"))
    if ctx.lab.nfs_server.nfs_conf:
        remote.put(NFS_CONF_DROP_IN, ctx.file(node, "nfs.conf"))
    # restart, not start: a server already running would not read nfs.conf again
    remote.check("systemctl --no-reload enable nfs-server.service && systemctl restart nfs-server.service", "start the NFS server")
    remote.check("exportfs -ra", "publish exports")
