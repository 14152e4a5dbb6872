"""Files of the ceph-mon, ceph-osd and ceph-admin roles, and what hypervisors need to use the cluster."""

from __future__ import annotations

import uuid

from kvmlab.model import Lab, Node, Placement
from kvmlab.roles.ceph.conf import by_section
from kvmlab.templating import render_template

CEPH_ROLES = ("ceph-mon", "ceph-osd", "ceph-admin")
# Fixed namespace for the per-run UUIDs below (any constant UUID would do).
NAMESPACE = uuid.UUID("6c1f0a52-3c0e-4a8e-9f57-0d1e2b7c4a10")
CONNECT_TIMEOUT_S = 300  # the ceph CLI's own deadline for reaching the monitor under TCG


def has_ceph(lab: Lab) -> bool:
    return bool(lab.by_role("ceph-mon"))


def monitor(lab: Lab) -> Node:
    return lab.by_role("ceph-mon")[0]  # the loader allows exactly one


def fsid(lab: Lab, pl: Placement) -> str:
    """The cluster id: stable for one run of one lab, different for every other."""
    return str(uuid.uuid5(NAMESPACE, f"{lab.name}/{pl.run_id}/fsid"))


def secret_uuid(lab: Lab, pl: Placement) -> str:
    """The UUID of the hypervisors' libvirt secret holding the client key."""
    return str(uuid.uuid5(NAMESPACE, f"{lab.name}/{pl.run_id}/libvirt-secret"))


def mon_address(lab: Lab, pl: Placement) -> str:
    return pl.address(lab, monitor(lab).name, lab.ceph.network)


def pool_size(lab: Lab) -> int:
    return min(3, len(lab.by_role("ceph-osd")))


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if not has_ceph(lab):
        return {}
    is_ceph = any(r in node.roles for r in CEPH_ROLES)
    is_hypervisor = "hypervisor" in node.roles
    if not (is_ceph or is_hypervisor):
        return {}
    mon = monitor(lab).name
    size = pool_size(lab)
    common = {"lab": lab.name, "run_id": pl.run_id, "fsid": fsid(lab, pl), "mon": mon, "mon_address": mon_address(lab, pl)}
    out = {
        "ceph.conf": render_template(
            "roles/ceph/ceph.conf.j2",
            {
                **common,
                "public_network": str(pl.subnets[lab.ceph.network]),
                "pool_size": size,
                "min_size": 2 if size >= 3 else 1,
                "own": by_section(lab.ceph.conf),
            },
            subject=node.name,
        )
    }
    if "ceph-mon" in node.roles:
        out["mon-bootstrap.sh"] = render_template("roles/ceph/mon-bootstrap.sh.j2", common, subject=node.name)
        out["mgr-start.sh"] = render_template("roles/ceph/mgr-start.sh.j2", {**common, "connect_timeout": CONNECT_TIMEOUT_S})
    if "ceph-osd" in node.roles:
        device = f"/dev/disk/by-id/virtio-{lab.ceph.osd_disk}"
        out["osd-create.sh"] = render_template("roles/ceph/osd-create.sh.j2", {"device": device, "connect_timeout": CONNECT_TIMEOUT_S})
        out["osd-block-owner.conf"] = render_template("roles/ceph/osd-block-owner.conf.j2", {})
    if is_hypervisor:
        s = lab.ceph
        out["secret-ceph.xml"] = render_template(
            "libvirt/secret.xml.j2", {"uuid": secret_uuid(lab, pl), "usage_type": "ceph", "usage_name": f"client.{s.client} secret"}
        )
        out[f"pool-{s.libvirt_pool}.xml"] = render_template(
            "roles/ceph/pool-rbd.xml.j2",
            {"name": s.libvirt_pool, "pool": s.pool, "host": mon_address(lab, pl), "client": s.client, "secret_uuid": secret_uuid(lab, pl)},
        )
    return out
