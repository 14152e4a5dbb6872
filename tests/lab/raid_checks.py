"""Checks of the local-raid role, shared by the raid and storage labs (book 5.1)."""

from __future__ import annotations

import uuid


def mdadm_fields(host) -> dict[str, str]:
    out = host.check_output("mdadm --detail /dev/md/kvmlab")
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" : ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def check_array_has_four_active_members_and_a_spare(lab, node: str) -> None:
    host = lab.node(node).host
    fields = mdadm_fields(host)
    assert fields["Raid Level"] == "raid10"
    assert (fields["Raid Devices"], fields["Active Devices"], fields["Spare Devices"], fields["Failed Devices"]) == ("4", "4", "1", "0")
    assert fields["State"] in ("clean", "active")
    members = host.check_output("mdadm --detail /dev/md/kvmlab | awk '/active sync|spare/ {print $NF}'").split()
    expected = {
        host.check_output(f"readlink -f /dev/disk/by-id/virtio-{d}") for d in (*lab.lab.local_raid.members, lab.lab.local_raid.spare)
    }
    assert set(members) == expected


def check_pool_on_the_array_is_usable(lab, node: str) -> None:
    host = lab.node(node).host
    s = lab.lab.local_raid
    mount = host.mount_point(s.mount)
    assert mount.exists and mount.filesystem == "xfs"
    assert mount.device.endswith(f"{s.vg}-images")
    info = host.check_output(f"virsh pool-info {s.pool}")
    assert "State:          running" in info and "Autostart:      yes" in info
    name = f"probe-{uuid.uuid4().hex[:8]}.qcow2"
    host.run_expect([0], f"virsh vol-create-as {s.pool} {name} 32M --format qcow2")
    try:
        assert '"format": "qcow2"' in host.check_output(f"qemu-img info --output=json {s.mount}/{name}")
    finally:
        host.run_expect([0], f"virsh vol-delete --pool {s.pool} {name}")
