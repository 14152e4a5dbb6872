"""Files of the nfs-server role."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement
from kvmlab.templating import render_template


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if "nfs-server" not in node.roles:
        return {}
    exports = [
        {
            "path": e.path,
            "clients": str(pl.subnets[e.clients]) if e.clients in pl.subnets else e.clients,
            "options": ",".join(e.options),
        }
        for e in lab.nfs_server.exports
    ]
    out = {"exports": render_template("roles/nfs-server/exports.j2", {"exports": exports})}
    if lab.nfs_server.nfs_conf:
        sections: dict[str, list[tuple[str, str]]] = {}
        for opt in lab.nfs_server.nfs_conf:
            sections.setdefault(opt.section, []).append((opt.key, opt.value))
        out["nfs.conf"] = render_template("roles/nfs-server/nfs.conf.j2", {"sections": sections})
    return out
