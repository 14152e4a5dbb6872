"""labs/smoke.yaml: an NFS server and a hypervisor with a netfs pool on its export (OUTLINE 5.2, 5.3)."""

from __future__ import annotations

import uuid

import pytest

from tests.lab.hypervisor_checks import info_field

pytestmark = pytest.mark.lab("smoke")

EXPORT = "/srv/nfs/vms"
POOL = "nfsvms"


def test_export_is_visible_to_the_storage_network(lab):
    hv = lab.node("hv1").host
    storage_subnet = str(lab.placement.subnets["storage"])
    out = hv.check_output("showmount -e nfs1-storage")
    exports = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert exports == {EXPORT: storage_subnet}


def test_netfs_pool_is_active_autostarted_and_mounted(lab):
    hv = lab.node("hv1").host
    info = hv.check_output(f"virsh pool-info {POOL}")
    assert info_field(info, "State") == "running"
    assert info_field(info, "Autostart") == "yes"
    mount = hv.mount_point(f"/var/lib/libvirt/images/{POOL}")
    assert mount.exists
    assert mount.filesystem in ("nfs", "nfs4")
    assert mount.device == f"nfs1-storage:{EXPORT}"


def test_volume_created_in_the_pool_lands_on_the_export(lab):
    hv, nfs = lab.node("hv1").host, lab.node("nfs1").host
    name = f"probe-{uuid.uuid4().hex[:8]}.qcow2"
    hv.run_expect([0], f"virsh vol-create-as {POOL} {name} 64M --format qcow2")
    try:
        on_server = nfs.file(f"{EXPORT}/{name}")
        assert on_server.exists
        # no_root_squash: root on the hypervisor stays root on the server.
        assert on_server.uid == 0
        info = nfs.check_output(f"qemu-img info --output=json {EXPORT}/{name}")
        assert '"format": "qcow2"' in info
        assert '"virtual-size": 67108864' in info
    finally:
        hv.run(f"virsh vol-delete --pool {POOL} {name}")
    assert not nfs.file(f"{EXPORT}/{name}").exists


def test_client_outside_the_export_subnet_is_refused(lab):
    hv = lab.node("hv1").host
    hv.run_expect([0], "mkdir -p /mnt/outside")
    # Through the management network the client's address is outside the exported subnet.
    result = hv.run("timeout 120 mount -t nfs -o soft,timeo=30,retrans=1 nfs1-mgmt:/srv/nfs/vms /mnt/outside")
    if result.rc == 0:
        hv.run("umount /mnt/outside")
    assert result.rc != 0
    assert "access denied" in (result.stderr + result.stdout).lower()
