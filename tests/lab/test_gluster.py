"""labs/gluster.yaml: a replica-3 Gluster volume and a hypervisor's dir pool on its FUSE mount (OUTLINE 5.6)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from kvmlab.roles.gluster.files import auth_allow, brick_path, peer_name
from kvmlab.roles.hypervisor.checks import info_field

pytestmark = pytest.mark.lab("gluster")


def _gluster(lab):
    return lab.lab.gluster, [n.name for n in lab.lab.by_role("gluster")]


def test_every_node_sees_every_other_peer_connected(lab):
    s, nodes = _gluster(lab)
    for name in nodes:
        out = lab.node(name).host.check_output("gluster peer status")
        assert f"Number of Peers: {len(nodes) - 1}" in out, f"{name}:\n{out}"
        assert out.count("State: Peer in Cluster (Connected)") == len(nodes) - 1, f"{name}:\n{out}"
        # Each peer is known by its name on the gluster network, not by the address it probed from.
        hostnames = {line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Hostname:")}
        assert hostnames == {peer_name(n, s) for n in nodes if n != name}, f"{name}:\n{out}"


def test_bricks_are_directories_on_their_own_xfs_disk(lab):
    s, nodes = _gluster(lab)
    for name in nodes:
        host = lab.node(name).host
        mount = host.mount_point(s.brick_dir)
        assert mount.exists and mount.filesystem == "xfs", name
        assert host.check_output(f"readlink -f {mount.device}") == host.check_output(f"readlink -f /dev/disk/by-id/virtio-{s.brick_disk}")
        assert host.file(brick_path(s)).is_directory, name
        assert f"/dev/disk/by-id/virtio-{s.brick_disk} {s.brick_dir} xfs" in host.file("/etc/fstab").content_string, name


def test_volume_is_a_started_replica_across_every_node(lab):
    s, nodes = _gluster(lab)
    info = ET.fromstring(lab.node(nodes[0]).host.check_output(f"gluster volume info {s.volume} --xml"))
    vol = info.find("volInfo/volumes/volume")
    assert vol is not None
    assert vol.findtext("name") == s.volume
    assert vol.findtext("statusStr") == "Started"
    assert vol.findtext("typeStr") == "Replicate"
    assert vol.findtext("replicaCount") == str(len(nodes))
    bricks = [b.findtext("name") for b in vol.iter("brick")]
    assert bricks == [f"{peer_name(n, s)}:{brick_path(s)}" for n in nodes]


def test_every_brick_is_online(lab):
    s, nodes = _gluster(lab)
    status = ET.fromstring(lab.node(nodes[-1]).host.check_output(f"gluster volume status {s.volume} --xml"))
    online = {
        f"{n.findtext('hostname')}:{n.findtext('path')}": n.findtext("status") == "1"
        for n in status.iter("node")
        if (n.findtext("path") or "").startswith("/")
    }
    assert online == {f"{peer_name(n, s)}:{brick_path(s)}": True for n in nodes}


@pytest.mark.parametrize("option", ["auth.allow", "storage.owner-uid", "storage.owner-gid", "network.ping-timeout"])
def test_volume_options_read_back_as_set(lab, option):
    s, nodes = _gluster(lab)
    expected = {
        "auth.allow": auth_allow(lab.placement.subnets[s.network]),
        "storage.owner-uid": str(s.owner_uid),
        "storage.owner-gid": str(s.owner_gid),
        "network.ping-timeout": str(s.ping_timeout),
    }[option]
    out = lab.node(nodes[1]).host.check_output(f"gluster volume get {s.volume} {option}")
    values = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith(option)}
    assert values == {option: expected}


def test_brick_roots_belong_to_the_owner_set_on_the_volume(lab):
    s, nodes = _gluster(lab)
    for name in nodes:
        brick = lab.node(name).host.file(brick_path(s))
        assert (brick.uid, brick.gid) == (s.owner_uid, s.owner_gid), name


def test_hypervisor_pool_is_active_autostarted_on_the_fuse_mount(lab):
    s, nodes = _gluster(lab)
    for hv in lab.lab.by_role("hypervisor"):
        host = lab.node(hv.name).host
        info = host.check_output(f"virsh pool-info {s.pool}")
        assert info_field(info, "State") == "running"
        assert info_field(info, "Autostart") == "yes"
        assert f"<path>{s.mount}</path>" in host.check_output(f"virsh pool-dumpxml {s.pool}")
        mount = host.mount_point(s.mount)
        assert mount.exists and mount.filesystem == "fuse.glusterfs"
        assert mount.device == f"{peer_name(nodes[0], s)}:/{s.volume}"
        fstab = [line.split() for line in host.file("/etc/fstab").content_string.splitlines() if f" {s.mount} " in line]
        assert len(fstab) == 1 and fstab[0][2] == "glusterfs"
        options = fstab[0][3].split(",")
        assert "_netdev" in options
        assert "backup-volfile-servers=" + ":".join(peer_name(n, s) for n in nodes[1:]) in options


def test_data_written_through_the_pool_is_on_every_brick(lab):
    s, nodes = _gluster(lab)
    hv = lab.node(lab.lab.by_role("hypervisor")[0].name).host
    vol, blob = f"probe-{uuid.uuid4().hex[:8]}.qcow2", f"probe-{uuid.uuid4().hex[:8]}.bin"
    hv.run_expect([0], f"virsh vol-create-as {s.pool} {vol} 16M --format qcow2")
    try:
        # Count the data as written only once fsync has returned (see DESIGN: Gluster does not fsync by default).
        hv.run_expect([0], f"dd if=/dev/urandom of={s.mount}/{blob} bs=1M count=4 conv=fsync status=none")
        for name in (vol, blob):
            want = hv.check_output(f"sha256sum {s.mount}/{name}").split()[0]
            for node in nodes:
                got = lab.node(node).host.check_output(f"sha256sum {brick_path(s)}/{name}").split()[0]
                assert got == want, f"{name} on {node}'s brick"
        assert '"format": "qcow2"' in hv.check_output(f"qemu-img info --output=json {s.mount}/{vol}")
    finally:
        hv.run(f"virsh vol-delete --pool {s.pool} {vol}; rm -f {s.mount}/{blob}")
    for node in nodes:
        assert not lab.node(node).host.file(f"{brick_path(s)}/{vol}").exists, node
