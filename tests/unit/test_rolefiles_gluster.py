"""The gluster role's files for labs/gluster.yaml and labs/storage.yaml, with a fixed placement (no VMs)."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlab import render
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.roles.gluster import files as gluster

ROOT = Path(__file__).resolve().parents[2]
PLACEMENT = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})


def _files(lab_name: str) -> dict[str, dict[str, str]]:
    lab = load_lab(ROOT / "labs" / f"{lab_name}.yaml")
    return {n.name: gluster.files(lab, PLACEMENT, n) for n in lab.nodes}


def test_only_gluster_nodes_and_hypervisors_get_files():
    files = _files("gluster")
    assert sorted(files["gluster1"]) == ["gluster-brick.sh", "gluster-volume.sh"]
    assert sorted(files["gluster2"]) == sorted(files["gluster3"]) == ["gluster-brick.sh"]
    assert sorted(files["hv1"]) == ["gluster-mount.sh", "pool-gluster.xml"]
    assert all(not f for f in _files("smoke").values())  # no gluster nodes: nothing, not even for hv1


def test_brick_is_a_directory_in_an_xfs_mount_of_the_extra_disk():
    script = _files("gluster")["gluster2"]["gluster-brick.sh"]
    assert "dev=/dev/disk/by-id/virtio-brick\n" in script
    assert 'blkid -p "$dev" >/dev/null 2>&1 || mkfs.xfs -q -i size=512 "$dev"' in script
    assert 'echo "$dev /gluster/bricks/1 xfs defaults 0 0" >> /etc/fstab' in script
    assert "mountpoint -q /gluster/bricks/1 || mount /gluster/bricks/1\n" in script
    assert script.rstrip().endswith("mkdir -p /gluster/bricks/1/brick")


def test_volume_is_a_replica_of_every_node_with_the_options_of_the_lab():
    script = _files("gluster")["gluster1"]["gluster-volume.sh"]
    create = (
        "gluster --mode=script volume create kvmgluster replica 3 transport tcp \\\n"
        "    gluster1-storage:/gluster/bricks/1/brick \\\n"
        "    gluster2-storage:/gluster/bricks/1/brick \\\n"
        "    gluster3-storage:/gluster/bricks/1/brick\nfi\n"
    )
    assert create in script
    assert "force" not in script  # bricks are subdirectories of their own mounts: no override needed
    options = "auth.allow '10.213.5.*' storage.owner-uid '64055' storage.owner-gid '64055' network.ping-timeout '5'"
    assert f"gluster --mode=script volume set kvmgluster {options}\n" in script
    assert "volume start" not in script  # the join step starts it, after the lab's own options


def test_arbiter_lab_creates_replica_3_arbiter_1_and_lists_its_own_options():
    script = _files("gluster-arbiter")["gluster1"]["gluster-volume.sh"]
    assert "gluster --mode=script volume create kvmgluster replica 3 arbiter 1 transport tcp \\\n" in script
    assert script.count(":/gluster/bricks/1/brick") == 3 and "force" not in script
    # The role's own options stay one `volume set`; the lab's are set by the join step, one by one, and listed here.
    assert "network.ping-timeout '5'\n" in script
    assert re.search(r"\n#   performance.quick-read off   \(\S*labs/gluster-arbiter.yaml:20:7\)\n", script)
    assert "volume set kvmgluster performance" not in script


@pytest.mark.parametrize("lab_name", ["gluster", "gluster-arbiter"])
def test_script_files_are_valid_shell(tmp_path, lab_name):
    for node, files in _files(lab_name).items():
        for name, text in files.items():
            if name.endswith(".sh"):
                (tmp_path / name).write_text(text)
                proc = subprocess.run(["sh", "-n", str(tmp_path / name)], capture_output=True, text=True)
                assert proc.returncode == 0, f"{node}/{name}: {proc.stderr}"


def test_hypervisor_mounts_with_fuse_and_backup_volfile_servers():
    script = _files("gluster")["hv1"]["gluster-mount.sh"]
    fstab = (
        "gluster1-storage:/kvmgluster /var/lib/libvirt/images/GlusterFS glusterfs "
        "defaults,_netdev,backup-volfile-servers=gluster2-storage:gluster3-storage 0 0"
    )
    assert f"echo '{fstab}' >> /etc/fstab" in script
    assert "mountpoint -q /var/lib/libvirt/images/GlusterFS || mount /var/lib/libvirt/images/GlusterFS" in script


def test_storage_lab_gives_both_hypervisors_the_pool():
    files = _files("storage")
    assert "pool-gluster.xml" in files["hv1"] and "pool-gluster.xml" in files["hv2"]
    assert "gluster-volume.sh" in files["gluster1"] and "gluster-volume.sh" not in files["gluster3"]


def test_pool_xml_is_a_dir_pool_on_the_mount_owned_by_the_volume_owner(tmp_path):
    tool = shutil.which("virt-xml-validate")
    if not tool:
        pytest.fail("virt-xml-validate is missing: apt-get install libvirt-clients libxml2-utils (or `make deps`)")
    xml = _files("gluster")["hv1"]["pool-gluster.xml"]
    assert "<pool type='dir'>" in xml and "<name>gluster</name>" in xml
    assert "<path>/var/lib/libvirt/images/GlusterFS</path>" in xml
    assert "<owner>64055</owner>" in xml and "<group>64055</group>" in xml
    (tmp_path / "pool.xml").write_text(xml)
    proc = subprocess.run([tool, str(tmp_path / "pool.xml"), "storagepool"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "cidr,allow",
    [
        ("10.213.5.0/24", "10.213.5.*"),
        ("10.213.0.0/16", "10.213.*.*"),
        ("10.213.4.0/23", "10.213.4.*,10.213.5.*"),
        ("10.213.5.16/30", "10.213.5.16,10.213.5.17,10.213.5.18,10.213.5.19"),
    ],
)
def test_auth_allow_covers_exactly_the_subnet(cidr, allow):
    assert gluster.auth_allow(ipaddress.IPv4Network(cidr)) == allow


def test_whole_lab_renders_with_the_role_files():
    lab = load_lab(ROOT / "labs" / "gluster.yaml")
    assert lab.gluster.network == "storage" and lab.gluster.ping_timeout == 5
    files = render.render_lab(
        render.RenderInput(
            lab=lab,
            placement=PLACEMENT,
            backing=render.Backing("/var/lib/kvmlab/pool", "0123456789abcdef"),
            accel="tcg",
            ssh_public_key="ssh-ed25519 AAAA test",
            host_keys={
                n.name: ("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----", "ssh-ed25519 AAAA") for n in lab.nodes
            },
            owner=render.Owner(pid=1, user="t", host="h", boot_id="b", created="2026-01-01T00:00:00+00:00"),
            console_dir="/var/lib/kvmlab/console",
        )
    )
    assert "roles/gluster1/gluster-volume.sh" in files and "roles/hv1/pool-gluster.xml" in files
