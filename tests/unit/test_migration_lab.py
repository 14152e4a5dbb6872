"""The migration lab's pure parts: settings, role files, inner guests' XML, ping downtime (no VMs)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from kvmlab.errors import LabFileError
from kvmlab.inner_guest import Graphics, InnerGuest, domain_xml, downtime, parse_state, ping_gaps
from kvmlab.loader import load_lab, parse_lab
from kvmlab.model import Placement
from kvmlab.render import preview_placement
from kvmlab.roles.hypervisor import files as hypervisor

BASE = """
networks: {mgmt: {}, storage: {}, guests: {}}
nodes:
  nfs1: {roles: [nfs-server]}
  hv1: {roles: [hypervisor]}
  hv2: {roles: [hypervisor]}
roles:
  nfs-server:
    exports:
      - {path: /srv/nfs/vms, clients: storage}
      - {path: /srv/nfs/lockd, clients: storage}
  hypervisor:
    netfs_pools: [{name: migrate, server: nfs1, network: storage, path: /srv/nfs/vms}]
"""


def lab_with(extra: str):
    return parse_lab(BASE + extra, "x.yaml", default_name="mig")


def test_migration_lab_file_loads_with_its_settings():
    lab = load_lab("labs/migration.yaml")
    hv = lab.hypervisor
    assert hv.guest_bridge == "guests" and hv.inner_guests
    assert hv.netfs_pools[0].mount_options == ("vers=3", "local_lock=all")
    assert hv.migration is not None
    assert (hv.migration.peers_ssh, hv.migration.lock, hv.migration.port_min, hv.migration.port_max) == (True, "lockd", 49152, 49215)
    assert hv.migration.lockspace is not None and hv.migration.lockspace.path == "/srv/nfs/lockd"


def test_migration_defaults():
    lab = lab_with("    migration: {}\n")
    assert lab.hypervisor.migration is not None
    assert lab.hypervisor.migration.lock == "lockd" and lab.hypervisor.migration.lockspace is None
    assert lab_with("").hypervisor.migration is None and not lab_with("").hypervisor.inner_guests


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    migration: {lock: sanlock}\n", "unknown lock manager 'sanlock'"),
        ("    migration: {lockspace: {server: nfs1, path: /srv/other}}\n", "is not exported"),
        ("    migration: {lockspace: {server: hv1, path: /srv/nfs/lockd}}\n", "not a node with role nfs-server"),
        ("    migration: {lock: none, lockspace: {server: nfs1, path: /srv/nfs/lockd}}\n", "needs lock: lockd"),
        ("    migration: {ports: [50000, 49152]}\n", "must not be above"),
        ("    migration: {peers_ssh: maybe}\n", "must be true or false"),
        ("    guest_bridge: storge\n", "did you mean 'storage'"),
        ("    inner_guests: 1\n", "must be true or false"),
    ],
)
def test_bad_migration_settings_say_what_is_wrong(extra, message):
    with pytest.raises(LabFileError) as info:
        lab_with(extra)
    assert message in str(info.value)


def test_bad_mount_option_is_refused():
    text = BASE.replace("path: /srv/nfs/vms}]", "path: /srv/nfs/vms, mount_options: ['rw;reboot']}]")
    with pytest.raises(LabFileError, match="mount option 'rw;reboot' is not valid"):
        parse_lab(text, "x.yaml", default_name="mig")


def _files(node: str) -> dict[str, str]:
    lab = load_lab("labs/migration.yaml")
    return hypervisor.files(lab, preview_placement(lab), lab.node(node))


def test_role_files_of_the_migration_lab():
    lab = load_lab("labs/migration.yaml")
    pl: Placement = preview_placement(lab)
    hv1, hv2 = _files("hv1"), _files("hv2")
    assert "local stratum" in hv1["chrony.conf"] and "server hv1 iburst" in hv2["chrony.conf"]
    assert "Host hv2 hv2-*" in hv1["ssh-config"] and "Host hv1 hv1-*" in hv2["ssh-config"]
    assert 'lock_manager = "lockd"' in hv1["qemu-migration.conf"] and "migration_port_max = 49215" in hv1["qemu-migration.conf"]
    assert 'file_lockspace_dir = "/var/lib/libvirt/lockd/files"' in hv1["qemu-lockd.conf"]
    assert f"MACAddress={pl.mac(lab, 'hv2', 'guests')}" in hv2["bridge-port.network"]
    assert f"Address={pl.address(lab, 'hv2', 'guests')}/24" in hv2["bridge.network"]
    pool = ET.fromstring(hv1["pool-migrate.xml"])
    options = [o.get("name") for o in pool.iter("{http://libvirt.org/schemas/storagepool/fs/1.0}option")]
    assert options == ["vers=3", "local_lock=all"]


def test_lockspace_fstab_line_mounts_the_nfs_export_over_the_storage_network():
    lab = load_lab("labs/migration.yaml")
    assert hypervisor.lockspace_fstab_line(lab) == "nfs1-storage:/srv/nfs/lockd /var/lib/libvirt/lockd/files nfs defaults,_netdev 0 0"


def test_inner_build_script_is_valid_shell_with_its_modules():
    script = hypervisor.inner_build_script()
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    for module in hypervisor.INNER_MODULES:
        assert module in script
    assert "exec /bin/init" in script and "ttyS0::respawn:/bin/getty" in script and "counter_alive" in script


def test_labs_without_migration_settings_get_no_migration_files():
    lab = load_lab("labs/smoke.yaml")
    files = hypervisor.files(lab, preview_placement(lab), lab.node("hv1"))
    assert set(files) == {"pool-iso_library.xml", "pool-nfsvms.xml"}
    assert "mount_opts" not in files["pool-nfsvms.xml"]


def test_inner_guest_address_mac_and_xml():
    g = InnerGuest("g1", 2, "10.213.4.0/24", disk="/p/g1.qcow2", cache="writeback")
    assert (g.address, g.prefix, g.mac) == ("10.213.4.102", 24, "52:56:0a:d5:04:66")
    root = ET.fromstring(domain_xml(g))
    assert root.get("type") == "qemu" and root.find("features/tcg/tb-cache") is not None
    assert root.find("features/acpi") is not None  # PCI hot-plug needs ACPI
    assert "kvmlab.ip=10.213.4.102/24 kvmlab.name=g1" in root.findtext("os/cmdline")
    assert root.find("devices/disk/driver").get("cache") == "writeback"
    assert root.find("devices/graphics") is None and root.find("devices/video") is None


def test_inner_guest_kvm_and_graphics():
    vnc = Graphics("vnc", 5911, "10.0.0.5", "s3cret")
    root = ET.fromstring(domain_xml(InnerGuest("g2", 0, "10.0.0.0/24", domain_type="kvm", graphics=(vnc,))))
    assert root.get("type") == "kvm" and root.find("features/tcg") is None and root.find("cpu").get("mode") == "host-model"
    graphics = root.find("devices/graphics")
    assert (graphics.get("port"), graphics.get("listen"), graphics.get("passwd")) == ("5911", "10.0.0.5", "s3cret")
    assert root.find("devices/disk") is None
    assert root.find("devices/video/model").get("type") == "vga", "VNC alone shows a VGA card"


def test_inner_guest_chooses_its_video_model():
    spice = Graphics("spice", 5912, "10.0.0.5")
    model = lambda guest: ET.fromstring(domain_xml(guest)).find("devices/video/model").get("type")  # noqa: E731
    assert model(InnerGuest("g", 0, "10.0.0.0/24", graphics=(spice,))) == "qxl"
    assert model(InnerGuest("g", 0, "10.0.0.0/24", graphics=(spice,), video="virtio")) == "virtio"
    assert model(InnerGuest("g", 0, "10.0.0.0/24", video="none")) == "none"
    with pytest.raises(ValueError, match="video model"):
        domain_xml(InnerGuest("g", 0, "10.0.0.0/24", video="cirrus"))


def test_inner_guest_refuses_bad_type_and_full_subnet():
    with pytest.raises(ValueError, match="domain type"):
        domain_xml(InnerGuest("g", 0, "10.0.0.0/24", domain_type="xen"))
    with pytest.raises(ValueError, match="does not fit"):
        _ = InnerGuest("g", 30, "10.0.0.0/27").address


def test_state_and_ping_downtime():
    state = parse_state("name g1\ncounter 42\ndisks vda vdb \n\n")
    assert state == {"name": "g1", "counter": "42", "disks": "vda vdb"}
    lines = [
        "PING 10.0.0.1 (10.0.0.1) 56(84) bytes of data.",
        "[100.0] 64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.3 ms",
        "[100.2] 64 bytes from 10.0.0.1: icmp_seq=2 ttl=64 time=0.3 ms",
        "[101.9] 64 bytes from 10.0.0.1: icmp_seq=10 ttl=64 time=0.3 ms",
        "[102.1] 64 bytes from 10.0.0.1: icmp_seq=11 ttl=64 time=0.3 ms",
        "5 packets transmitted, 4 received",
    ]
    assert [round(g, 1) for g in ping_gaps(lines)] == [0.2, 1.7, 0.2]
    assert downtime(lines, 0.2) == pytest.approx(1.5)
    assert downtime(lines[:2], 0.2) == 0.0
