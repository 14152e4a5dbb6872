"""The local-raid role's array in mdadm's terms: settings and their errors at the lab file's line, the rendered
`mdadm --create`, what the array check expects of `mdadm --detail`, and mdadm's refusal naming the settings
(no VMs: mdadm's answers are canned)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab.errors import LabFileError, RoleError, SettingRefused
from kvmlab.loader import load_lab, parse_lab
from kvmlab.model import Placement
from kvmlab.remote import Result
from kvmlab.roles.local_raid import checks, files, steps

ROOT = Path(__file__).parents[2]
PLACEMENT = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")})
DISKS = "{r1: 512M, r2: 512M, r3: 512M, r4: 512M, r5: 512M, r6: 512M}"


def _lab(settings: str, disks: str = DISKS):
    """hv1 with six extra disks; SETTINGS are the lines under `local-raid:`, starting at line 7."""
    text = f"nodes:\n  hv1:\n    roles: [hypervisor, local-raid]\n    disks: {disks}\nroles:\n  local-raid:\n{settings}"
    return parse_lab(text, "labs/t.yaml", default_name="t")


def _script(settings: str) -> str:
    lab = _lab(settings)
    return files.files(lab, PLACEMENT, lab.node("hv1"))["raid-create.sh"]


# -- settings -----------------------------------------------------------------------------------


def test_the_book_lab_is_raid10_of_four_with_one_spare():
    s = load_lab(ROOT / "labs" / "raid.yaml").local_raid
    assert (s.level, s.members, s.spares, s.spare, s.chunk_kib) == (10, ("r1", "r2", "r3", "r4"), ("r5",), "r5", 0)
    assert s.where.endswith("raid.yaml:9:3")  # `local-raid:`, named when mdadm refuses the array


def test_the_raid5_example_lab():
    s = load_lab(ROOT / "labs" / "raid5.yaml").local_raid
    assert (s.level, s.members, s.spares, s.chunk_kib) == (5, ("r1", "r2", "r3"), ("r4",), 128)
    assert s.describe() == "RAID5 of r1, r2, r3 with spare r4, chunk 128K"


@pytest.mark.parametrize(
    "settings,level,spares,chunk_kib",
    [
        ("    level: 1\n    members: [r1, r2]\n", 1, (), 0),
        ("    level: raid6\n    members: [r1, r2, r3, r4]\n    spares: [r5, r6]\n", 6, ("r5", "r6"), 0),
        ("    members: [r1, r2]\n    spares: []\n    chunk: 1M\n", 10, (), 1024),
        ("    level: '5'\n    members: [r1, r2, r3]\n    spare: r4\n    chunk: 64KiB\n", 5, ("r4",), 64),
        ("    level: 5\n    members: [r1, r2, r3]\n    chunk: 4k\n", 5, (), 4),
    ],
)
def test_levels_spares_and_chunks_parse(settings, level, spares, chunk_kib):
    s = _lab(settings).local_raid
    assert (s.level, s.spares, s.chunk_kib) == (level, spares, chunk_kib)


@pytest.mark.parametrize(
    "settings,line,col,message",
    [
        (
            "    level: 4\n    members: [r1, r2, r3]\n",
            7,
            12,
            "RAID level '4' is not one kvmlab builds: write level: 1, 5, 6, 10 (mdadm's --level)",
        ),
        (
            "    level: raid0\n    members: [r1, r2, r3]\n",
            7,
            12,
            "RAID level 'raid0' is not one kvmlab builds: write level: 1, 5, 6, 10 (mdadm's --level)",
        ),
        ("    level: 1\n    members: [r1]\n", 8, 14, "RAID1 needs at least 2 member disks (got 1: r1); add 1 more"),
        (
            "    level: 5\n    members: [r1, r2]\n",
            8,
            14,
            "RAID5 needs at least 3 member disks (got 2: r1, r2); add 1 more, or use level 1 or 10",
        ),
        (
            "    level: 6\n    members: [r1, r2, r3]\n",
            8,
            14,
            "RAID6 needs at least 4 member disks (got 3: r1, r2, r3); add 1 more, or use level 1 or 5 or 10",
        ),
        ("    members: [r1]\n", 7, 14, "RAID10 needs at least 2 member disks (got 1: r1); add 1 more"),
        ("    members: []\n", 7, 14, "RAID10 needs at least 2 member disks (got none); add 2 more"),
        (
            "    members: [r1, r2, r1]\n",
            7,
            23,
            "disk 'r1' is listed twice in members: each member is a disk of its own",
        ),
        (
            "    members: [r1, r2]\n    spares: [r3, r3]\n",
            8,
            18,
            "disk 'r3' is listed twice in spares: each spare is a disk of its own",
        ),
        (
            "    members: [r1, r2]\n    spares: [r3, r2]\n",
            8,
            18,
            "disk 'r2' is both a member and a spare: a disk is one or the other",
        ),
        ("    members: [r1, r2]\n    spare: r1\n", 8, 12, "disk 'r1' is both a member and a spare: a disk is one or the other"),
        (
            "    members: [r1, r2]\n    spare: r3\n    spares: [r4]\n",
            9,
            5,
            "'spare' and 'spares' cannot go together: keep one, e.g. 'spares: [r5, r6]' for every spare disk",
        ),
        (
            "    members: [r1, r2]\n    chunk: 100K\n",
            8,
            12,
            "chunk '100K' is not a power of two of at least 4K: write e.g. 64K, 512K or 1M",
        ),
        (
            "    members: [r1, r2]\n    chunk: 2K\n",
            8,
            12,
            "chunk '2K' is not a power of two of at least 4K: write e.g. 64K, 512K or 1M",
        ),
        (
            "    members: [r1, r2]\n    chunk: big\n",
            8,
            12,
            "chunk 'big' is not a power of two of at least 4K: write e.g. 64K, 512K or 1M",
        ),
        (
            "    members: [r1, r2]\n    chunk: 128\n",
            8,
            12,
            "chunk '128' has no unit: write 128K for KiB (e.g. 64K, 512K or 1M)",
        ),
        (
            "    level: 1\n    members: [r1, r2]\n    chunk: 64K\n",
            9,
            12,
            "chunk is not a setting of RAID1: mdadm mirrors whole disks, without chunks; remove 'chunk' or use level 5, 6 or 10",
        ),
        (
            "    members: [r1, r2, r3, r9]\n",
            7,
            14,
            "node 'hv1' (role local-raid) needs a disk named 'r9' (its disks: r1, r2, r3, r4, r5, r6); add e.g. 'disks: {r9: 4G}'",
        ),
        (
            "    members: [r1, r2]\n    spares: [data]\n",
            8,
            13,
            "node 'hv1' (role local-raid) needs a disk named 'data' (its disks: r1, r2, r3, r4, r5, r6); add e.g. 'disks: {data: 4G}'",
        ),
        ("    level: 5\n", 7, 5, "role settings 'local-raid' is missing required key 'members'"),
        (
            "    members: [r1, r2]\n    disks: [r3]\n",
            8,
            5,
            "unknown key 'disks' in role settings 'local-raid' (known: level, members, spares, spare, chunk, vg, mount, pool)",
        ),
    ],
)
def test_a_wrong_array_is_refused_at_its_line(settings, line, col, message):
    with pytest.raises(LabFileError) as info:
        _lab(settings)
    assert (info.value.path, info.value.line, info.value.col) == ("labs/t.yaml", line, col)
    assert info.value.message == message


SMALL = "{r1: 256M, r2: 256M, r3: 256M, r4: 150M}"


@pytest.mark.parametrize(
    "settings,line,message",
    [
        ("    level: 1\n    members: [r1, r2, r3]\n", 8, "RAID1 of 3 disks of 256 MiB on node 'hv1' holds about 256 MiB"),
        ("    members: [r1, r2]\n", 7, "RAID10 of 2 disks of 256 MiB on node 'hv1' holds about 256 MiB"),
        ("    level: 6\n    members: [r1, r2, r3, r4]\n", 8, "RAID6 of 4 disks of 150 MiB on node 'hv1' holds about 300 MiB"),
    ],
)
def test_an_array_too_small_for_xfs_is_refused_at_its_members(settings, line, message):
    with pytest.raises(LabFileError) as info:
        _lab(settings, SMALL)
    assert (info.value.line, info.value.col) == (line, 14)
    need = "160M" if "RAID6" in message else "320M"
    fix = f"too little for XFS (300 MiB, and md and LVM keep a few): make the member disks at least {need}"
    assert info.value.message == f"{message}, {fix}"


def test_three_small_disks_hold_raid5():
    assert _lab("    level: 5\n    members: [r1, r2, r3]\n", SMALL).local_raid.level == 5


# -- the rendered mdadm --create --------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings,command",
    [
        (
            "    members: [r1, r2, r3, r4]\n    spare: r5\n",
            "mdadm --create /dev/md/kvmlab --run --assume-clean --metadata=1.2 --level=10 --raid-devices=4 "
            "/dev/disk/by-id/virtio-r1 /dev/disk/by-id/virtio-r2 /dev/disk/by-id/virtio-r3 /dev/disk/by-id/virtio-r4 "
            "--spare-devices=1 /dev/disk/by-id/virtio-r5",
        ),
        (
            "    level: 1\n    members: [r1, r2]\n",
            "mdadm --create /dev/md/kvmlab --run --assume-clean --metadata=1.2 --level=1 --raid-devices=2 "
            "/dev/disk/by-id/virtio-r1 /dev/disk/by-id/virtio-r2",
        ),
        (
            "    level: 5\n    members: [r1, r2, r3]\n    spares: [r4]\n    chunk: 128K\n",
            "mdadm --create /dev/md/kvmlab --run --assume-clean --metadata=1.2 --level=5 --raid-devices=3 --chunk=128 "
            "/dev/disk/by-id/virtio-r1 /dev/disk/by-id/virtio-r2 /dev/disk/by-id/virtio-r3 "
            "--spare-devices=1 /dev/disk/by-id/virtio-r4",
        ),
        (
            "    level: 6\n    members: [r1, r2, r3, r4]\n    spares: [r5, r6]\n    chunk: 1M\n",
            "mdadm --create /dev/md/kvmlab --run --assume-clean --metadata=1.2 --level=6 --raid-devices=4 --chunk=1024 "
            "/dev/disk/by-id/virtio-r1 /dev/disk/by-id/virtio-r2 /dev/disk/by-id/virtio-r3 /dev/disk/by-id/virtio-r4 "
            "--spare-devices=2 /dev/disk/by-id/virtio-r5 /dev/disk/by-id/virtio-r6",
        ),
    ],
)
def test_mdadm_create_is_rendered_in_mdadms_terms(settings, command):
    script = _script(settings)
    assert steps.mdadm_command(script) == command
    assert script.startswith("#!/bin/sh\n") and "set -eu\n" in script
    commands = [ln.split()[:2] for ln in script.splitlines() if ln.startswith("mdadm")]
    assert commands == [["mdadm", "--create"]]  # the create alone: a refusal is mdadm's answer to the settings


def test_lvm_and_xfs_follow_in_their_own_script():
    lab = _lab("    members: [r1, r2, r3, r4]\n    spare: r5\n")
    setup = files.files(lab, PLACEMENT, lab.node("hv1"))["raid-setup.sh"]
    assert "mdadm --create" not in setup
    assert "mdadm --detail --scan > /etc/mdadm/mdadm.conf\npvcreate -q /dev/md/kvmlab\n" in setup


# -- mdadm's refusal names the settings ----------------------------------------------------------------


class FakeRemote:
    def __init__(self, result: Result):
        self.result, self.calls = result, []

    def run(self, command: str, timeout: float = 600.0, stdin: str | None = None) -> Result:
        self.calls.append((command, stdin))
        return self.result


def test_mdadm_refusing_the_array_names_the_settings_line_and_quotes_mdadm():
    s = _lab("    level: 5\n    members: [r1, r2, r3]\n    spares: [r4]\n    chunk: 1M\n").local_raid
    script = _script("    level: 5\n    members: [r1, r2, r3]\n    spares: [r4]\n    chunk: 1M\n")
    refusal = "mdadm: chunk size must be less than the device size\nmdadm: /dev/disk/by-id/virtio-r1 is too small\n"
    remote = FakeRemote(Result(1, "", refusal))
    with pytest.raises(SettingRefused) as info:
        steps.create_array(remote, "hv1", s, script)  # type: ignore[arg-type]
    first, second = str(info.value).splitlines()
    assert first == (
        "labs/t.yaml:6:3: mdadm refused the array of role settings 'local-raid' (RAID5 of r1, r2, r3 with spare r4, chunk 1M): "
        "mdadm: chunk size must be less than the device size mdadm: /dev/disk/by-id/virtio-r1 is too small"
    )
    assert second == f"  on node hv1: {steps.mdadm_command(script)}"
    assert remote.calls == [("sh -s", script)]


def test_a_failure_without_mdadms_word_is_a_role_error():
    s = _lab("    members: [r1, r2]\n").local_raid
    with pytest.raises(RoleError, match="sh: 1: mdadm: not found"):
        steps.create_array(FakeRemote(Result(127, "", "sh: 1: mdadm: not found")), "hv1", s, _script("    members: [r1, r2]\n"))  # type: ignore[arg-type]
    steps.create_array(FakeRemote(Result(0, "mdadm: array /dev/md/kvmlab started.", "")), "hv1", s, "")  # type: ignore[arg-type]


# -- what the array check expects of mdadm --detail ------------------------------------------------------

DETAIL_RAID5 = """/dev/md/kvmlab:
           Version : 1.2
     Creation Time : Mon Jun  2 10:00:00 2025
        Raid Level : raid5
        Array Size : 518144 (506.00 MiB 530.58 MB)
      Raid Devices : 3
     Total Devices : 4
             State : clean
    Active Devices : 3
   Working Devices : 4
    Failed Devices : 0
     Spare Devices : 1
            Layout : left-symmetric
        Chunk Size : 128K

    Number   Major   Minor   RaidDevice State
       0     254       16        0      active sync   /dev/vdb
       1     254       32        1      active sync   /dev/vdc
       2     254       48        2      active sync   /dev/vdd

       3     254       64        -      spare   /dev/vde
"""


class FakeNode:
    def __init__(self, detail: str):
        self.name, self.detail = "hv1", detail

    def run_expect(self, command: str, what: str = "") -> str:
        if command == f"mdadm --detail {checks.ARRAY}":
            return self.detail
        if "awk" in command:
            return "\n".join(line.split()[-1] for line in self.detail.splitlines() if "active sync" in line or "spare" in line)
        disk = command.rsplit("virtio-", 1)[1]
        return {"r1": "/dev/vdb", "r2": "/dev/vdc", "r3": "/dev/vdd", "r4": "/dev/vde"}[disk]


def _session(settings: str, detail: str) -> SimpleNamespace:
    return SimpleNamespace(lab=_lab(settings), by_role=lambda role: [FakeNode(detail)])


RAID5 = "    level: 5\n    members: [r1, r2, r3]\n    spares: [r4]\n    chunk: 128K\n"


def test_the_array_check_reads_level_counts_and_chunk_back():
    values = checks.array_has_its_members_active_and_a_spare(_session(RAID5, DETAIL_RAID5))
    assert values == {
        "hv1:Raid Level": "raid5",
        "hv1:Raid Devices": "3",
        "hv1:Active Devices": "3",
        "hv1:Spare Devices": "1",
        "hv1:Failed Devices": "0",
        "hv1:Chunk Size": "128K",
    }


@pytest.mark.parametrize(
    "settings,detail,said",
    [
        (RAID5.replace("128K", "64K"), DETAIL_RAID5, "hv1: /dev/md/kvmlab has Chunk Size 128K, not 64K (RAID5 of r1, r2, r3"),
        (RAID5.replace("level: 5", "level: 10"), DETAIL_RAID5, "hv1: /dev/md/kvmlab has Raid Level raid5, not raid10 ("),
        (RAID5.replace("    spares: [r4]\n", ""), DETAIL_RAID5, "hv1: /dev/md/kvmlab has Spare Devices 1, not 0 ("),
        (RAID5, DETAIL_RAID5.replace("        Chunk Size : 128K\n", ""), "hv1: /dev/md/kvmlab has Chunk Size (none), not 128K ("),
        (RAID5, DETAIL_RAID5.replace("State : clean", "State : clean, degraded"), "hv1: /dev/md/kvmlab is clean, degraded, not clean"),
    ],
)
def test_the_array_check_says_what_differs(settings, detail, said):
    with pytest.raises(AssertionError) as info:
        checks.array_has_its_members_active_and_a_spare(_session(settings, detail))
    assert str(info.value).startswith(said)
