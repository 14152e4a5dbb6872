"""Files of the hypervisor role: the ISO library pool and one netfs pool per lab entry."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement
from kvmlab.templating import render_template

ISO_LIBRARY = ("iso_library", "/var/lib/libvirt/isos")  # book 5.8: a root-only directory of install media


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if "hypervisor" not in node.roles:
        return {}
    name, path = ISO_LIBRARY
    out = {f"pool-{name}.xml": render_template("libvirt/pool.xml.j2", {"type": "dir", "name": name, "target": path, "mode": "0700"})}
    for pool in lab.hypervisor.netfs_pools:
        out[f"pool-{pool.name}.xml"] = render_template(
            "libvirt/pool.xml.j2",
            {"type": "netfs", "name": pool.name, "target": pool.target, "host": f"{pool.server}-{pool.network}", "source_dir": pool.path},
        )
    return out
