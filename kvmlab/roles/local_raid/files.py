"""Files of the local-raid role: the mdadm command that creates the array, LVM and XFS on it, and the libvirt dir pool."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement
from kvmlab.templating import render_template


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if "local-raid" not in node.roles:
        return {}
    s = lab.local_raid
    return {
        "raid-create.sh": render_template("roles/local-raid/create.sh.j2", {"s": s}),
        "raid-setup.sh": render_template("roles/local-raid/setup.sh.j2", {"s": s}),
        f"pool-{s.pool}.xml": render_template("libvirt/pool.xml.j2", {"type": "dir", "name": s.pool, "target": s.mount}),
    }
