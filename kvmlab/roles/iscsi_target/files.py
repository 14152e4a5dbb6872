"""Files of the iscsi-target role (and what hypervisors need to use it).

The target node gets `prepare-backends.sh` (XFS, LVM), `targetcli.batch` (one
targetcli run) and a drop-in that orders the boot-time restore after the
backends. Each hypervisor with an ACL gets its `initiatorname.iscsi` and the XML
of its `iscsi` pool.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from kvmlab.model import Lab, Node, Placement
from kvmlab.roles.iscsi_target.settings import IscsiAcl, IscsiLun, IscsiTargetSettings
from kvmlab.templating import render_template

ROLE = "iscsi-target"
PORT = 3260
IQN_PREFIX = "iqn.2026-11.dev.kvmlab"
DISKS_DIR = "/var/lib/iscsi-disks"  # a fileio disk's XFS is mounted at DISKS_DIR/<disk>


def initiator_iqn(lab: Lab, node: str) -> str:
    """The initiator name of NODE: unique per lab and node, the same on every render."""
    return f"{IQN_PREFIX}:{lab.name}-{node}"


def disk_device(disk: str) -> str:
    return f"/dev/disk/by-id/virtio-{disk}"


def vg_name(disk: str) -> str:
    return f"vg_{disk}"


@dataclass(frozen=True)
class Backstore:
    """One LUN as LIO sees it: its TPG index, targetcli plugin and the file or device behind it."""

    index: int
    name: str
    backend: str  # fileio | block | lvm (as in the lab file)
    plugin: str  # fileio | block (an LV is a block backstore)
    path: str
    size_mib: int | None


def backstores(settings: IscsiTargetSettings) -> list[Backstore]:
    return [_backstore(i, lun) for i, lun in enumerate(settings.luns)]


def _backstore(index: int, lun: IscsiLun) -> Backstore:
    if lun.backend == "fileio":
        return Backstore(index, lun.name, lun.backend, "fileio", f"{DISKS_DIR}/{lun.disk}/{lun.name}.img", lun.size_mib)
    if lun.backend == "lvm":
        return Backstore(index, lun.name, lun.backend, "block", f"/dev/{vg_name(lun.disk)}/{lun.name}", lun.size_mib)
    return Backstore(index, lun.name, lun.backend, "block", disk_device(lun.disk), None)


def acl_nodes(lab: Lab) -> tuple[str, ...]:
    return tuple(acl.initiator for acl in lab.iscsi_target.acls)


def acl_of(lab: Lab, node: str) -> IscsiAcl:
    return next(acl for acl in lab.iscsi_target.acls if acl.initiator == node)


SECRET_NAMESPACE = uuid.UUID("0b6f3f7e-2d55-4d0c-9a43-5f8f0e1c7d21")  # any fixed UUID: per-run secret UUIDs below


def chap_secret_uuid(lab: Lab, pl: Placement, node: str) -> str:
    """The UUID of NODE's libvirt secret holding its CHAP password: stable in a run, new in every other."""
    return str(uuid.uuid5(SECRET_NAMESPACE, f"{lab.name}/{pl.run_id}/iscsi-chap/{node}"))


def chap_secret_usage(lab: Lab, node: str) -> str:
    return f"kvmlab-{lab.name}-{node}-chap"


def chap_auth_lines(acl: IscsiAcl) -> list[str]:
    """targetcli's `set auth` arguments for the ACL's CHAP (none without it)."""
    lines = [f"userid={acl.chap.user} password={acl.chap.password}"] if acl.chap else []
    if acl.mutual_chap:
        lines.append(f"mutual_userid={acl.mutual_chap.user} mutual_password={acl.mutual_chap.password}")
    return lines


def chap_node_settings(acl: IscsiAcl) -> dict[str, str]:
    """open-iscsi node settings for the ACL's CHAP: what the initiator answers, and (mutual) what it asks of the target."""
    if not acl.chap:
        return {}
    out = {
        "node.session.auth.authmethod": "CHAP",
        "node.session.auth.username": acl.chap.user,
        "node.session.auth.password": acl.chap.password,
    }
    if acl.mutual_chap:
        out["node.session.auth.username_in"] = acl.mutual_chap.user
        out["node.session.auth.password_in"] = acl.mutual_chap.password
    return out


def portal(lab: Lab, pl: Placement) -> str:
    """The target's address on the (first) portal network."""
    return pl.address(lab, lab.by_role(ROLE)[0].name, lab.iscsi_target.network)


def portal_networks(settings: IscsiTargetSettings) -> tuple[str, ...]:
    return settings.networks or (settings.network,)


def portals(lab: Lab, pl: Placement) -> list[str]:
    """The target's address on each portal network: two when hypervisors reach the LUNs over two paths."""
    return [pl.address(lab, lab.by_role(ROLE)[0].name, net) for net in portal_networks(lab.iscsi_target)]


def multipath(settings: IscsiTargetSettings) -> bool:
    return len(portal_networks(settings)) > 1


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    settings = lab.iscsi_target
    if not settings.luns:
        return {}
    out: dict[str, str] = {}
    if ROLE in node.roles:
        out.update(_target_files(lab, pl))
    if "hypervisor" in node.roles and node.name in acl_nodes(lab):
        iqn = initiator_iqn(lab, node.name)
        out["initiatorname.iscsi"] = render_template("roles/iscsi-target/initiatorname.iscsi.j2", {"iqn": iqn}, subject=node.name)
        if multipath(settings):
            out.update(_multipath_files(lab, pl, node))
            return out
        acl = acl_of(lab, node.name)
        out[f"pool-{settings.pool}.xml"] = render_template(
            "roles/iscsi-target/pool.xml.j2",
            {
                "name": settings.pool,
                "host": portal(lab, pl),
                "port": PORT,
                "target_iqn": settings.iqn,
                "initiator_iqn": iqn,
                "chap_user": acl.chap.user if acl.chap else "",
                "secret_usage": chap_secret_usage(lab, node.name),
            },
            subject=node.name,
        )
        if acl.chap:
            out["secret-iscsi-chap.xml"] = render_template(
                "libvirt/secret.xml.j2",
                {"uuid": chap_secret_uuid(lab, pl, node.name), "usage_type": "iscsi", "usage_name": chap_secret_usage(lab, node.name)},
            )
    return out


def _target_files(lab: Lab, pl: Placement) -> dict[str, str]:
    settings = lab.iscsi_target
    stores = backstores(settings)
    disks = list(dict.fromkeys(lun.disk for lun in settings.luns))
    by_disk = {d: [s for s, lun in zip(stores, settings.luns, strict=True) if lun.disk == d] for d in disks}
    backend = {lun.disk: lun.backend for lun in settings.luns}
    filesystems = [
        {"disk": d, "device": disk_device(d), "mount": f"{DISKS_DIR}/{d}", "luns": by_disk[d]} for d in disks if backend[d] == "fileio"
    ]
    vgs = [{"disk": d, "device": disk_device(d), "name": vg_name(d), "luns": by_disk[d]} for d in disks if backend[d] == "lvm"]
    index = {lun.name: i for i, lun in enumerate(settings.luns)}
    acls = [
        {"iqn": initiator_iqn(lab, a.initiator), "luns": [index[name] for name in a.luns], "chap": a.chap, "mutual": a.mutual_chap}
        for a in settings.acls
    ]
    return {
        "prepare-backends.sh": render_template(
            "roles/iscsi-target/prepare-backends.sh.j2",
            {"disks": [{"device": disk_device(d)} for d in disks], "filesystems": filesystems, "vgs": vgs},
        ),
        "targetctl-kvmlab.conf": render_template(
            "roles/iscsi-target/targetctl-kvmlab.conf.j2",
            {"mounts": [fs["mount"] for fs in filesystems], "vgs": [vg["name"] for vg in vgs]},
        ),
        "targetcli.batch": render_template(
            "roles/iscsi-target/targetcli.batch.j2",
            {
                "iqn": settings.iqn,
                "luns": stores,
                "portals": portals(lab, pl),
                "port": PORT,
                "acls": acls,
                "chap": any(a["chap"] for a in acls),
            },
        ),
    }


# iSCSI timers for multipath: a dead path is noticed within seconds (NOP-Out every 2 s)
# and its I/O handed to dm-multipath after 5 s instead of open-iscsi's 120 s.
ISCSI_NODE_SETTINGS = {
    "node.startup": "automatic",
    "node.session.timeo.replacement_timeout": "5",
    "node.conn[0].timeo.noop_out_interval": "2",
    "node.conn[0].timeo.noop_out_timeout": "2",
}


def _multipath_files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    settings = lab.iscsi_target
    return {
        "multipath.conf": render_template("roles/iscsi-target/multipath.conf.j2", {}, subject=node.name),
        "iscsi-login.sh": render_template(
            "roles/iscsi-target/iscsi-login.sh.j2",
            {
                "iqn": settings.iqn,
                "portals": portals(lab, pl),
                "port": PORT,
                "settings": {**ISCSI_NODE_SETTINGS, **chap_node_settings(acl_of(lab, node.name))},
            },
            subject=node.name,
        ),
        f"pool-{settings.pool}.xml": render_template("roles/iscsi-target/pool-mpath.xml.j2", {"name": settings.pool}, subject=node.name),
    }
