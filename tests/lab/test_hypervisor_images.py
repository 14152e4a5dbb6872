"""A hypervisor's pools and disk images on labs/smoke.yaml (OUTLINE 5.2, 5.8)."""

from __future__ import annotations

import pytest

from tests.lab import hypervisor_checks as checks

pytestmark = pytest.mark.lab("smoke")


def test_default_dir_pool_is_active_and_autostarted(lab):
    checks.check_default_pool_is_active_and_autostarted(lab.node("hv1").host)


def test_thin_raw_is_sparse_and_preallocated_is_not(lab):
    checks.check_thin_raw_is_sparse_and_preallocated_is_not(lab.node("hv1").host)


def test_iso_library_is_root_only_and_lists_copied_isos(lab):
    checks.check_iso_library_is_root_only_and_lists_copied_isos(lab.node("hv1").host)


def test_pool_removal_leaves_files_in_place(lab):
    checks.check_pool_removal_leaves_files_in_place(lab.node("hv1").host)


@pytest.mark.parametrize("pool", ["default", "nfsvms"])
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_volume_lifecycle(lab, pool, fmt):
    checks.check_volume_lifecycle(lab.node("hv1").host, pool, fmt)
