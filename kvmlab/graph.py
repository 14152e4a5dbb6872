"""A picture of a lab, from its file alone: nodes with their roles, networks, and the storage paths
that matter (which export each netfs pool mounts, which LUNs each initiator may see, the bricks of
the Gluster volume, each OSD and the pool on it, the secret an rbd pool uses, a local RAID).

Laid out by Graphviz's `dot` through the `graphviz` binding; nothing here talks to libvirt.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import graphviz

from kvmlab.errors import HarnessError
from kvmlab.model import Lab, Node

FORMATS = ("svg", "png", "pdf", "dot")
# One colour per kind of storage path, so that a path can be followed across the picture.
COLOURS = {
    "nfs": "#1f77b4",
    "iscsi": "#d62728",
    "gluster": "#2ca02c",
    "ceph": "#9467bd",
    "raid": "#8c564b",
    "migration": "#7f7f7f",
}


def lab_graph(lab: Lab) -> graphviz.Digraph:
    dot = graphviz.Digraph(lab.name, graph_attr={"label": f"lab {lab.name} ({Path(lab.path).name})", "labelloc": "t", "rankdir": "LR"})
    dot.attr("node", fontname="Helvetica", fontsize="10")
    dot.attr("edge", fontname="Helvetica", fontsize="9")
    for net in lab.networks:
        label = f"network {net.name}\n/{net.prefix}, subnet leased at `up`"
        dot.node(_net_id(net.name), label, shape="ellipse", style="filled", fillcolor="#eeeeee")
    for node in lab.nodes:
        dot.node(_node_id(node.name), _node_label(lab, node), shape="box", style="rounded")
        for net in node.networks:
            dot.edge(_node_id(node.name), _net_id(net), arrowhead="none", color="#bbbbbb")
    _nfs(dot, lab)
    _iscsi(dot, lab)
    _gluster(dot, lab)
    _ceph(dot, lab)
    _migration(dot, lab)
    return dot


def write(lab: Lab, out: Path) -> Path:
    """Render LAB's picture to OUT; the format is OUT's suffix (svg, png, pdf or dot)."""
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise HarnessError(f"{out}: cannot tell the picture's format from '{out.suffix}': name the file .svg, .png, .pdf or .dot")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dot":
        out.write_text(lab_graph(lab).source)
    else:
        out.write_bytes(_pipe(lab, fmt))
    return out


def svg(lab: Lab) -> str:
    """LAB's picture as SVG markup, ready to be put inside an HTML page."""
    text = _pipe(lab, "svg").decode()
    return text[text.index("<svg") :]  # without the XML prolog and doctype


def _pipe(lab: Lab, fmt: str) -> bytes:
    try:
        return lab_graph(lab).pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound as exc:
        raise HarnessError("Graphviz's `dot` is not installed: `apt-get install graphviz` (or run scripts/host-setup.sh)") from exc
    except graphviz.CalledProcessError as exc:
        raise HarnessError(f"Graphviz's `dot` failed on lab {lab.name}: {(exc.stderr or b'').decode(errors='replace').strip()}") from exc


def _store(dot: graphviz.Digraph, kind: str, name: str, label: str) -> None:
    """A storage that several nodes make or use (a Gluster volume, a Ceph pool), in KIND's colour."""
    dot.node(name, label, shape="cylinder", color=COLOURS[kind])


def _path(dot: graphviz.Digraph, kind: str, tail: str, head: str, label: str, **attrs: str) -> None:
    """A storage path from TAIL to HEAD, in KIND's colour."""
    dot.edge(tail, head, label=label, color=COLOURS[kind], fontcolor=COLOURS[kind], **attrs)


def _node_id(name: str) -> str:
    return f"node_{name}"


def _net_id(name: str) -> str:
    return f"net_{name}"


def _node_label(lab: Lab, node: Node) -> str:
    lines = [node.name, ", ".join(node.roles) or "(no roles)", f"{node.memory_mib} MiB, {node.vcpus} vCPU"]
    if node.disks:
        lines.append("disks: " + ", ".join(f"{d.name} {d.size_mib} MiB" for d in node.disks))
    if "nfs-server" in node.roles:
        lines += [f"export {e.path} to {e.clients} ({','.join(e.options)})" for e in lab.nfs_server.exports]
    if "local-raid" in node.roles:
        raid = lab.local_raid
        spares = f" + spare {' '.join(raid.spares)}" if raid.spares else ""
        lines.append(f"md RAID{raid.level} of {' '.join(raid.members)}{spares} -> VG {raid.vg} -> pool {raid.pool} at {raid.mount}")
    return "\n".join(lines)


def _nfs(dot: graphviz.Digraph, lab: Lab) -> None:
    for hv in lab.by_role("hypervisor"):
        for pool in lab.hypervisor.netfs_pools:
            label = f"netfs pool {pool.name}:\n{pool.server}:{pool.path}\nmounted at {pool.target} over {pool.network}"
            _path(dot, "nfs", _node_id(hv.name), _node_id(pool.server), label)


def _iscsi(dot: graphviz.Digraph, lab: Lab) -> None:
    targets = lab.by_role("iscsi-target")
    if not targets:
        return
    s = lab.iscsi_target
    backends = {lun.name: f"{lun.name} ({lun.backend} on disk {lun.disk})" for lun in s.luns}
    portals = " and ".join(s.networks) or s.network
    for acl in s.acls:
        luns = "\n".join(backends.get(name, name) for name in acl.luns)
        label = f"iscsi pool {s.pool}: {s.iqn}\nportal on {portals}\nLUNs allowed:\n{luns}"
        _path(dot, "iscsi", _node_id(acl.initiator), _node_id(targets[0].name), label)


def _gluster(dot: graphviz.Digraph, lab: Lab) -> None:
    nodes = lab.by_role("gluster")
    if not nodes:
        return
    s = lab.gluster
    volume = f"gluster_{s.volume}"
    _store(dot, "gluster", volume, f"Gluster volume {s.volume}\nreplica {len(nodes)}")
    for node in nodes:
        label = f"brick {node.name}:{s.brick_dir}\non disk {s.brick_disk}"
        _path(dot, "gluster", _node_id(node.name), volume, label)
    for hv in lab.by_role("hypervisor"):
        label = f"pool {s.pool}: FUSE mount at {s.mount}\nover {s.network or nodes[0].networks[0]}"
        _path(dot, "gluster", _node_id(hv.name), volume, label)


def _ceph(dot: graphviz.Digraph, lab: Lab) -> None:
    mons = lab.by_role("ceph-mon")
    if not mons:
        return
    s = lab.ceph
    pool = f"ceph_{s.pool}"
    _store(dot, "ceph", pool, f"Ceph pool {s.pool}\n{s.pg_num} PGs, application rbd")
    _path(dot, "ceph", _node_id(mons[0].name), pool, "monitor + manager", style="dashed")
    for osd in lab.by_role("ceph-osd"):
        size = next((f" ({d.size_mib} MiB)" for d in osd.disks if d.name == s.osd_disk), "")
        _path(dot, "ceph", _node_id(osd.name), pool, f"bluestore OSD on disk {s.osd_disk}{size}")
    for admin in lab.by_role("ceph-admin"):
        _path(dot, "ceph", _node_id(admin.name), _node_id(mons[0].name), "admin keyring", style="dotted")
    for hv in lab.by_role("hypervisor"):
        label = f"rbd pool {s.libvirt_pool}: {s.pool}\nlibvirt secret: key of client.{s.client}"
        _path(dot, "ceph", _node_id(hv.name), pool, label)


def _migration(dot: graphviz.Digraph, lab: Lab) -> None:
    migration, hvs = lab.hypervisor.migration, lab.by_role("hypervisor")
    if migration is None or len(hvs) < 2:
        return
    for a, b in itertools.pairwise(hvs):
        _path(dot, "migration", _node_id(a.name), _node_id(b.name), f"migration (locks: {migration.lock})", dir="both", style="dashed")
