"""labs/smoke.yaml: an NFS server and a hypervisor with a netfs pool on its export (OUTLINE 5.2, 5.3, 5.8).

Everything this lab must show is a role check (kvmlab/roles/*/checks.py): the same
checks `kvmlab verify` runs on any lab.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("smoke")


def test_role_checks(lab, role_check):
    role_check.run(lab)
