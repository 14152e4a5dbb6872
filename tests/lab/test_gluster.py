"""labs/gluster.yaml: a replica-3 Gluster volume and a hypervisor's dir pool on its FUSE mount (OUTLINE 5.6).

Everything this lab must show is a role check (kvmlab/roles/gluster/checks.py and
the hypervisor's): the same checks `kvmlab verify` runs on any lab.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("gluster")


# The hypervisor's own checks run on the smoke and storage labs; this lab proves its storage role.
@pytest.mark.role_checks("gluster")
def test_role_checks(lab, role_check):
    role_check.run(lab)
