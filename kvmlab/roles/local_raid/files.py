"""Files of the local-raid role: the libvirt dir pool on the array's filesystem."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement
from kvmlab.templating import render_template


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if "local-raid" not in node.roles:
        return {}
    s = lab.local_raid
    return {
        "raid-setup.sh": render_template("roles/local-raid/setup.sh.j2", {"s": s}),
        f"pool-{s.pool}.xml": render_template("libvirt/pool.xml.j2", {"type": "dir", "name": s.pool, "target": s.mount}),
    }
