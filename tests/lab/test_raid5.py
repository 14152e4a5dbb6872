"""labs/raid5.yaml: the local-raid role's mdadm settings at work: RAID5 of three disks, a spare, 128K chunks.

The role checks read the array back from `mdadm --detail` (level, active members,
spares, chunk size); the same checks prove labs/raid.yaml's RAID10.
"""

from __future__ import annotations

import pytest

from kvmlab.roles.local_raid import checks

pytestmark = pytest.mark.lab("raid5")


@pytest.mark.role_checks("local-raid")
def test_role_checks(lab, role_check):
    role_check.run(lab)


def test_the_array_reads_back_as_the_lab_file_says(lab):
    assert checks.array_has_its_members_active_and_a_spare(lab) == {
        "hv1:Raid Level": "raid5",
        "hv1:Raid Devices": "3",
        "hv1:Active Devices": "3",
        "hv1:Spare Devices": "1",
        "hv1:Failed Devices": "0",
        "hv1:Chunk Size": "128K",
    }
