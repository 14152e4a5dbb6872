"""labs/ceph.yaml: a hand-bootstrapped Ceph 16 cluster and a hypervisor's rbd pool on it (OUTLINE 5.7).

Everything this lab must show is a role check (kvmlab/roles/ceph/checks.py and the
hypervisor's): the same checks `kvmlab verify` runs on any lab.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("ceph")


# The hypervisor's own checks run on the smoke lab; this lab proves its storage role.
@pytest.mark.role_checks("ceph-mon", "ceph-osd", "ceph-admin")
def test_role_checks(lab, role_check):
    role_check.run(lab)
