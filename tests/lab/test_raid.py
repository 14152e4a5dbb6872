"""labs/raid.yaml: software RAID10 with a spare, LVM, XFS and a libvirt pool on a hypervisor (OUTLINE 5.1)."""

from __future__ import annotations

import pytest

from tests.lab.raid_checks import check_array_has_four_active_members_and_a_spare, check_pool_on_the_array_is_usable

pytestmark = pytest.mark.lab("raid")


def test_array_has_four_active_members_and_a_spare(lab):
    check_array_has_four_active_members_and_a_spare(lab, "hv1")


def test_pool_on_the_array_is_usable(lab):
    check_pool_on_the_array_is_usable(lab, "hv1")
