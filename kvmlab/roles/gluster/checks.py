"""Checks of the gluster role (book 5.6): the trusted pool, the bricks, the replicated volume, and the hypervisors' pool on it.

Nodes are found by role: replica N is the number of gluster nodes (2 or 3). Expectations
come from the lab's model and the role's files.py helpers. A check raises
AssertionError naming the node and what it saw.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

from kvmlab.roles import Check
from kvmlab.roles.gluster.files import brick_path, fstab_line, peer_name, volume_options
from kvmlab.roles.hypervisor.checks import assert_pool_running, has_hypervisor

ROLE = "gluster"

CONNECTED = "State: Peer in Cluster (Connected)"


def _brick_names(lab: Any) -> list[str]:
    """host:path of every brick, in the order the volume was created with: the gluster nodes' order."""
    s = lab.lab.gluster
    return [f"{peer_name(g.name, s)}:{brick_path(s)}" for g in lab.by_role(ROLE)]


def _xml(node: Any, command: str, what: str) -> ET.Element:
    out = node.run_expect(command, what)
    try:
        return ET.fromstring(out)
    except ET.ParseError as exc:
        raise AssertionError(f"{node.name}: `{command}` did not print XML ({exc}): {out[:600]}") from exc


def peers_are_connected_by_their_gluster_names(lab: Any) -> None:
    """Each gluster node sees every other one in the cluster, connected, known by its name on the gluster network."""
    s = lab.lab.gluster
    nodes = lab.by_role(ROLE)
    for node in nodes:
        out = node.run_expect("gluster peer status", "gluster peer status")
        others = len(nodes) - 1
        assert f"Number of Peers: {others}" in out, f"{node.name}: gluster peer status does not show {others} peers:\n{out}"
        connected = out.count(CONNECTED)
        assert connected == others, f"{node.name}: {connected} of {others} peers are in the cluster and connected:\n{out}"
        # Each peer is known by its name on the gluster network, not by the address it probed from.
        seen = {line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Hostname:")}
        want = {peer_name(n.name, s) for n in nodes if n is not node}
        assert seen == want, f"{node.name}: peers are known as {', '.join(sorted(seen)) or 'nothing'}, not {', '.join(sorted(want))}"


def bricks_are_directories_on_their_own_xfs_disk(lab: Any) -> None:
    """brick_dir is the brick disk, XFS, mounted from /etc/fstab; the brick is a directory inside it."""
    s = lab.lab.gluster
    disk = f"/dev/disk/by-id/virtio-{s.brick_disk}"
    for node in lab.by_role(ROLE):
        host = node.host
        mount = host.mount_point(s.brick_dir)
        assert mount.exists, f"{node.name}: nothing is mounted at {s.brick_dir}"
        assert mount.filesystem == "xfs", f"{node.name}: brick disk at {s.brick_dir} is {mount.filesystem}, not xfs"
        mounted = node.run_expect(f"readlink -f {mount.device}")
        want = node.run_expect(f"readlink -f {disk}")
        assert mounted == want, f"{node.name}: {s.brick_dir} is mounted from {mount.device} ({mounted}), not brick disk {disk} ({want})"
        assert host.file(brick_path(s)).is_directory, f"{node.name}: brick {brick_path(s)} is not a directory"
        entry = f"{disk} {s.brick_dir} xfs"
        fstab = host.file("/etc/fstab").content_string
        assert entry in fstab, f"{node.name}: /etc/fstab has no '{entry}' line:\n{fstab}"


def volume_is_a_started_replica_across_every_node(lab: Any) -> None:
    """The volume is started, of type Replicate, replica N with one brick on each gluster node, in order."""
    s = lab.lab.gluster
    node = lab.by_role(ROLE)[0]
    want = _brick_names(lab)
    info = _xml(node, f"gluster volume info {s.volume} --xml", f"gluster volume info {s.volume}")
    vol = info.find("volInfo/volumes/volume")
    assert vol is not None, f"{node.name}: gluster volume info shows no volume {s.volume}: {ET.tostring(info, encoding='unicode')[:600]}"
    seen = {k: vol.findtext(k) for k in ("name", "statusStr", "typeStr", "replicaCount")}
    expected = {"name": s.volume, "statusStr": "Started", "typeStr": "Replicate", "replicaCount": str(len(want))}
    assert seen == expected, f"{node.name}: volume {s.volume} is {seen}, not {expected}"
    bricks = [b.findtext("name") for b in vol.iter("brick")]
    assert bricks == want, f"{node.name}: volume {s.volume} has bricks {bricks}, not {want}"


def every_brick_is_online(lab: Any) -> None:
    """gluster volume status (asked on the last node) shows every node's brick online."""
    s = lab.lab.gluster
    node = lab.by_role(ROLE)[-1]
    status = _xml(node, f"gluster volume status {s.volume} --xml", f"gluster volume status {s.volume}")
    online = {
        f"{n.findtext('hostname')}:{n.findtext('path')}": n.findtext("status") == "1"
        for n in status.iter("node")
        if (n.findtext("path") or "").startswith("/")
    }
    want = _brick_names(lab)
    missing = [b for b in want if b not in online]
    assert not missing, f"{node.name}: status of {s.volume} lacks bricks {', '.join(missing)} (it lists: {', '.join(online) or 'none'})"
    offline = [b for b in want if not online[b]]
    assert not offline, f"{node.name}: bricks of {s.volume} offline: {', '.join(offline)}"
    extra = [b for b in online if b not in want]
    assert not extra, f"{node.name}: volume {s.volume} has bricks the lab does not: {', '.join(extra)}"


def volume_options_read_back_as_set(lab: Any) -> None:
    """Every option the role sets on the volume reads back with its value (asked on the second node)."""
    s = lab.lab.gluster
    node = lab.by_role(ROLE)[1]
    wrong = []
    for option, want in volume_options(lab.lab, lab.placement):
        out = node.run_expect(f"gluster volume get {s.volume} {option}", f"gluster volume get {option}")
        values = [fields[1] for fields in (line.split() for line in out.splitlines()) if len(fields) > 1 and fields[0] == option]
        if values != [want]:
            seen = " / ".join(values) or "(not listed)"
            wrong.append(f"{option} is {seen}, not {want}")
    assert not wrong, f"{node.name}: options of volume {s.volume}: " + "; ".join(wrong)


def brick_roots_belong_to_the_volume_owner(lab: Any) -> None:
    """Each brick directory belongs to storage.owner-uid/gid, as the volume sets them."""
    s = lab.lab.gluster
    for node in lab.by_role(ROLE):
        brick = node.host.file(brick_path(s))
        seen = (brick.uid, brick.gid)
        want = (s.owner_uid, s.owner_gid)
        assert seen == want, f"{node.name}: brick {brick_path(s)} belongs to uid:gid {seen[0]}:{seen[1]}, not {want[0]}:{want[1]}"


def hypervisor_pool_is_on_the_fuse_mount(lab: Any) -> None:
    """Each hypervisor's pool is running and autostarted on the volume's FUSE mount, from /etc/fstab with backup volfile servers."""
    s = lab.lab.gluster
    first = peer_name(lab.by_role(ROLE)[0].name, s)
    want_fstab = fstab_line(lab.lab).split()
    for hv in lab.by_role("hypervisor"):
        assert_pool_running(hv, s.pool)
        xml = hv.run_expect(f"virsh pool-dumpxml {s.pool}")
        assert f"<path>{s.mount}</path>" in xml, f"{hv.name}: pool {s.pool} does not have target {s.mount}:\n{xml}"
        mount = hv.host.mount_point(s.mount)
        assert mount.exists, f"{hv.name}: nothing is mounted at {s.mount}"
        assert mount.filesystem == "fuse.glusterfs", f"{hv.name}: {s.mount} is {mount.filesystem}, not fuse.glusterfs"
        source = f"{first}:/{s.volume}"
        assert mount.device == source, f"{hv.name}: {s.mount} is mounted from {mount.device}, not {source}"
        fstab = [line.split() for line in hv.host.file("/etc/fstab").content_string.splitlines() if f" {s.mount} " in line]
        assert len(fstab) == 1, f"{hv.name}: /etc/fstab has {len(fstab)} lines for {s.mount}, not 1: {fstab}"
        assert fstab[0] == want_fstab, f"{hv.name}: /etc/fstab mounts {s.mount} with '{' '.join(fstab[0])}', not '{' '.join(want_fstab)}'"


def data_written_through_the_pool_is_on_every_brick(lab: Any) -> None:
    """A volume and a file written (fsync'd) through each hypervisor's pool are identical on every brick, and gone once deleted."""
    s = lab.lab.gluster
    nodes = lab.by_role(ROLE)
    for hv in lab.by_role("hypervisor"):
        vol, blob = f"probe-{uuid.uuid4().hex[:8]}.qcow2", f"probe-{uuid.uuid4().hex[:8]}.bin"
        hv.run_expect(f"virsh vol-create-as {s.pool} {vol} 16M --format qcow2", f"create a volume in pool {s.pool}")
        try:
            # Count the data as written only once fsync has returned (see DESIGN: Gluster does not fsync by default).
            hv.run_expect(f"dd if=/dev/urandom of={s.mount}/{blob} bs=1M count=4 conv=fsync status=none", f"write {blob}")
            for name in (vol, blob):
                want = hv.run_expect(f"sha256sum {s.mount}/{name}").split()[0]
                for node in nodes:
                    res = node.run(f"sha256sum {brick_path(s)}/{name}")
                    assert res.rc == 0, f"{node.name}: {brick_path(s)}/{name}, written by {hv.name}, cannot be read: {res.output}"
                    got = res.stdout.split()[0]
                    assert got == want, f"{node.name}: brick copy of {name} has sha256 {got}, {hv.name} wrote {want}"
            info = hv.run_expect(f"qemu-img info --output=json {s.mount}/{vol}")
            assert '"format": "qcow2"' in info, f"{hv.name}: {s.mount}/{vol} is not qcow2: {info}"
        finally:
            hv.run(f"virsh vol-delete --pool {s.pool} {vol}; rm -f {s.mount}/{blob}")
        for node in nodes:
            for name in (vol, blob):
                assert not node.host.file(f"{brick_path(s)}/{name}").exists, (
                    f"{node.name}: {brick_path(s)}/{name} is still on the brick after {hv.name} deleted it"
                )


CHECKS = (
    Check(ROLE, "peers-connected", peers_are_connected_by_their_gluster_names),
    Check(ROLE, "bricks-on-xfs", bricks_are_directories_on_their_own_xfs_disk),
    Check(ROLE, "volume-started-replica", volume_is_a_started_replica_across_every_node),
    Check(ROLE, "bricks-online", every_brick_is_online),
    Check(ROLE, "volume-options", volume_options_read_back_as_set),
    Check(ROLE, "brick-owner", brick_roots_belong_to_the_volume_owner),
    Check(ROLE, "hypervisor-pool-on-fuse-mount", hypervisor_pool_is_on_the_fuse_mount, applies=has_hypervisor),
    Check(ROLE, "pool-data-on-every-brick", data_written_through_the_pool_is_on_every_brick, applies=has_hypervisor),
)
