"""Files of the hypervisor role: one netfs pool XML per lab entry."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement
from kvmlab.templating import render_template


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if "hypervisor" not in node.roles:
        return {}
    return {
        f"pool-{pool.name}.xml": render_template(
            "libvirt/pool.xml.j2",
            {"type": "netfs", "name": pool.name, "target": pool.target, "host": f"{pool.server}-{pool.network}", "source_dir": pool.path},
        )
        for pool in lab.hypervisor.netfs_pools
    }
