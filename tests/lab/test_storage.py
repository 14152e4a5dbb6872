"""labs/storage.yaml: every storage role of the book's chapter 5 in one lab (OUTLINE 5.1-5.8).

The checks are the roles' own (kvmlab/roles/*/checks.py), run against the full
topology: `kvmlab verify` runs the same ones on the small labs (smoke, gluster,
ceph, raid), which is why they need no suite of their own here. One bring-up of
this lab also serves the failover suites (test_failover.py).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("storage")


def test_role_checks(lab, role_check):
    role_check.run(lab)
