"""labs/raid.yaml: software RAID10 with a spare, LVM, XFS and a libvirt pool on a hypervisor (OUTLINE 5.1).

Everything this lab must show is a role check (kvmlab/roles/local_raid/checks.py and
the hypervisor's): the same checks `kvmlab verify` runs on any lab.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("raid")


# The hypervisor's own checks run on the smoke and storage labs; this lab proves its storage role.
@pytest.mark.role_checks("local-raid")
def test_role_checks(lab, role_check):
    role_check.run(lab)
