"""Checks of the local-raid role (book 5.1): the RAID10 array with its spare, and the pool on LVM and XFS over it.

Every node with the role is checked; expectations (member and spare disks, volume
group, mount, pool) come from the lab's model. A check raises AssertionError
naming the node and what it saw.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from kvmlab.roles import Check
from kvmlab.roles.hypervisor.checks import assert_pool_running

ROLE = "local-raid"

ARRAY = "/dev/md/kvmlab"  # as templates/roles/local-raid/setup.sh.j2 creates it


def mdadm_fields(node: Any) -> dict[str, str]:
    """The 'Key : value' fields of `mdadm --detail` for the role's array on NODE (a node handle)."""
    out = node.run_expect(f"mdadm --detail {ARRAY}", f"mdadm --detail {ARRAY}")
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" : ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def array_has_its_members_active_and_a_spare(lab: Any) -> None:
    """The array is RAID10, clean, with every member disk of the lab file active and one spare.

    After a failover run the old spare may be a member and a member the spare: the
    disks in the array are compared with members + spare together.
    """
    s = lab.lab.local_raid
    for node in lab.by_role(ROLE):
        fields = mdadm_fields(node)
        level = fields.get("Raid Level")
        assert level == "raid10", f"{node.name}: {ARRAY} is {level}, not raid10"
        counts = {k: fields.get(k) for k in ("Raid Devices", "Active Devices", "Spare Devices", "Failed Devices")}
        want = {"Raid Devices": str(len(s.members)), "Active Devices": str(len(s.members)), "Spare Devices": "1", "Failed Devices": "0"}
        assert counts == want, f"{node.name}: {ARRAY} has {counts}, not {want}"
        state = fields.get("State")
        assert state in ("clean", "active"), f"{node.name}: {ARRAY} is {state}, not clean"
        in_array = set(node.run_expect(f"mdadm --detail {ARRAY} | awk '/active sync|spare/ {{print $NF}}'").split())
        disks = {d: node.run_expect(f"readlink -f /dev/disk/by-id/virtio-{d}") for d in (*s.members, s.spare)}
        assert in_array == set(disks.values()), (
            f"{node.name}: {ARRAY} holds {', '.join(sorted(in_array))}, "
            f"not the lab's disks {', '.join(f'{d}={dev}' for d, dev in disks.items())}"
        )


def pool_on_the_array_is_usable(lab: Any) -> None:
    """The logical volume is XFS at mount; the pool on it runs, is autostarted, and takes a qcow2 volume."""
    s = lab.lab.local_raid
    for node in lab.by_role(ROLE):
        mount = node.host.mount_point(s.mount)
        assert mount.exists, f"{node.name}: nothing is mounted at {s.mount}"
        assert mount.filesystem == "xfs", f"{node.name}: {s.mount} is {mount.filesystem}, not xfs"
        assert mount.device.endswith(f"{s.vg}-images"), f"{node.name}: {s.mount} is mounted from {mount.device}, not LV {s.vg}/images"
        assert_pool_running(node, s.pool)
        name = f"probe-{uuid.uuid4().hex[:8]}.qcow2"
        node.run_expect(f"virsh vol-create-as {s.pool} {name} 32M --format qcow2", f"create a volume in pool {s.pool}")
        try:
            info = json.loads(node.run_expect(f"qemu-img info --output=json {s.mount}/{name}"))
            assert info.get("format") == "qcow2", f"{node.name}: {s.mount}/{name}, created in pool {s.pool}, is {info.get('format')}"
        finally:
            node.run_expect(f"virsh vol-delete --pool {s.pool} {name}", f"delete {name} from pool {s.pool}")


CHECKS = (
    Check(ROLE, "array-members-and-spare", array_has_its_members_active_and_a_spare),
    Check(ROLE, "pool-on-array", pool_on_the_array_is_usable),
)
