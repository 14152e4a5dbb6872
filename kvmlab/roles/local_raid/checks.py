"""Checks of the local-raid role (book 5.1): the MD array of the lab's settings with its spares, and the pool on LVM and XFS over it.

Every node with the role is checked; expectations (level, member and spare disks, chunk,
volume group, mount, pool) come from the lab's model, and are compared with what the
running array reports (`mdadm --detail`). A check raises AssertionError naming the node
and what it saw.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from kvmlab.roles import Check
from kvmlab.roles.hypervisor.checks import assert_pool_running
from kvmlab.roles.local_raid.settings import LocalRaidSettings, chunk_text

ROLE = "local-raid"

ARRAY = "/dev/md/kvmlab"  # as templates/roles/local-raid/create.sh.j2 creates it
COUNTS = ("Raid Devices", "Active Devices", "Spare Devices", "Failed Devices")


def mdadm_fields(node: Any) -> dict[str, str]:
    """The 'Key : value' fields of `mdadm --detail` for the role's array on NODE (a node handle)."""
    out = node.run_expect(f"mdadm --detail {ARRAY}", f"mdadm --detail {ARRAY}")
    return parse_detail(out)


def parse_detail(out: str) -> dict[str, str]:
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(" : ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def expected_fields(s: LocalRaidSettings) -> dict[str, str]:
    """The fields of `mdadm --detail` the lab's settings decide, as mdadm shows them."""
    want = {"Raid Level": f"raid{s.level}"}
    want |= dict(zip(COUNTS, (str(len(s.members)), str(len(s.members)), str(len(s.spares)), "0"), strict=True))
    if s.chunk_kib:
        want["Chunk Size"] = chunk_text(s.chunk_kib)
    return want


def array_has_its_members_active_and_a_spare(lab: Any) -> dict[str, str]:
    """The array has the lab's level, is clean, with every member disk active, the lab's spares, and its chunk size.

    After a failover run an old spare may be a member and a member a spare: the disks
    in the array are compared with members + spares together. Returns what mdadm
    reported, per node ('hv1:Raid Level' -> 'raid5').
    """
    s = lab.lab.local_raid
    want = expected_fields(s)
    values: dict[str, str] = {}
    for node in lab.by_role(ROLE):
        fields = mdadm_fields(node)
        seen = {k: fields.get(k) for k in want}
        assert seen == want, f"{node.name}: {ARRAY} has {_differences(seen, want)} ({s.describe()} in the lab file)"
        state = fields.get("State")
        assert state in ("clean", "active"), f"{node.name}: {ARRAY} is {state}, not clean"
        in_array = set(node.run_expect(f"mdadm --detail {ARRAY} | awk '/active sync|spare/ {{print $NF}}'").split())
        disks = {d: node.run_expect(f"readlink -f /dev/disk/by-id/virtio-{d}") for d in (*s.members, *s.spares)}
        assert in_array == set(disks.values()), (
            f"{node.name}: {ARRAY} holds {', '.join(sorted(in_array))}, "
            f"not the lab's disks {', '.join(f'{d}={dev}' for d, dev in disks.items())}"
        )
        values |= {f"{node.name}:{k}": str(v) for k, v in seen.items()}
    return values  # for a baseline: the array as mdadm runs it


def _differences(seen: dict[str, str | None], want: dict[str, str]) -> str:
    """'Raid Level raid10, not raid5; Chunk Size 512K, not 128K': only the fields that differ."""
    return "; ".join(f"{k} {seen[k] if seen[k] is not None else '(none)'}, not {v}" for k, v in want.items() if seen[k] != v)


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
