"""Files of the gluster role (book 5.6), and the hypervisors' mount and pool for its volume.

Gluster nodes get `gluster-brick.sh` (XFS brick disk, mounted at brick_dir); the first
one also gets `gluster-volume.sh` (create the volume with the lab's type, set the role's
own options; the join step then sets the lab's `options:` one by one and starts it).
Hypervisors of a lab with gluster nodes get `gluster-mount.sh` (FUSE mount in
/etc/fstab) and the XML of a `dir` pool on that mount.
"""

from __future__ import annotations

import ipaddress

from kvmlab.model import Lab, Node, Placement
from kvmlab.roles.gluster.settings import GlusterSettings
from kvmlab.templating import render_template

SCRIPTS = "/etc/kvmlab"  # where the role puts these scripts on the node


def peer_name(node: str, settings: GlusterSettings) -> str:
    """The node's name on the gluster network: peers, bricks and clients all use it."""
    return f"{node}-{settings.network}"


def brick_path(settings: GlusterSettings) -> str:
    """The brick: a directory inside the brick disk's mount point (gluster refuses the mount point itself)."""
    return f"{settings.brick_dir}/brick"


def auth_allow(subnet: ipaddress.IPv4Network) -> str:
    """SUBNET as gluster's auth.allow wildcards, e.g. 10.213.1.0/24 -> 10.213.1.*.

    auth.allow matches octet wildcards; a prefix that does not end on an octet
    boundary becomes the comma list of the octet-aligned blocks it contains.
    """
    octets = -(-subnet.prefixlen // 8)  # fixed leading octets
    blocks = subnet.subnets(new_prefix=octets * 8) if subnet.prefixlen % 8 else [subnet]
    return ",".join(".".join(str(b.network_address).split(".")[:octets] + ["*"] * (4 - octets)) for b in blocks)


def brick_sets(lab: Lab) -> list[tuple[Node, ...]]:
    """The gluster nodes by replica or disperse set: Gluster makes each run of set_size bricks, in create order, one set."""
    nodes = lab.by_role("gluster")
    size = lab.gluster.set_size or len(nodes)  # settings not from a lab file: one set of every node
    return [tuple(nodes[i : i + size]) for i in range(0, len(nodes), size)]


def volume_options(lab: Lab, pl: Placement) -> tuple[tuple[str, str], ...]:
    """The options the role sets on the volume from its own settings, in order, as gluster reads them back."""
    s = lab.gluster
    return (
        ("auth.allow", auth_allow(pl.subnets[s.network])),
        ("storage.owner-uid", str(s.owner_uid)),
        ("storage.owner-gid", str(s.owner_gid)),
        ("network.ping-timeout", str(s.ping_timeout)),
    )


def fstab_line(lab: Lab) -> str:
    """The hypervisor's /etc/fstab entry: the first node serves the volfile, the others back it up."""
    s = lab.gluster
    first, *others = (peer_name(n.name, s) for n in lab.by_role("gluster"))
    context = {"first": first, "backups": others, "volume": s.volume, "mount": s.mount}
    return render_template("roles/gluster/fstab.j2", context).rstrip("\n")  # one line, spliced into mount.sh


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    nodes = lab.by_role("gluster")
    if not nodes:
        return {}
    s = lab.gluster
    out: dict[str, str] = {}
    if "gluster" in node.roles:
        device = f"/dev/disk/by-id/virtio-{s.brick_disk}"
        out["gluster-brick.sh"] = render_template(
            "roles/gluster/brick.sh.j2", {"node": node.name, "device": device, "mount": s.brick_dir, "brick": brick_path(s)}
        )
        if node.name == nodes[0].name:
            bricks = [f"{peer_name(n.name, s)}:{brick_path(s)}" for n in nodes]
            context = {
                "volume": s.volume,
                "type": s.create_words(),
                "bricks": bricks,
                "options": volume_options(lab, pl),
                "lab_options": s.options,
            }
            out["gluster-volume.sh"] = render_template("roles/gluster/volume.sh.j2", context)
    if "hypervisor" in node.roles:
        out["gluster-mount.sh"] = render_template(
            "roles/gluster/mount.sh.j2", {"node": node.name, "volume": s.volume, "mount": s.mount, "fstab": fstab_line(lab)}
        )
        out[f"pool-{s.pool}.xml"] = render_template(
            "roles/gluster/pool.xml.j2", {"name": s.pool, "target": s.mount, "owner": s.owner_uid, "group": s.owner_gid}
        )
    return out
