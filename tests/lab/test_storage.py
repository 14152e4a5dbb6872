"""labs/storage.yaml: every storage role of the book's chapter 5 in one lab (OUTLINE 5.1-5.8).

The checks are the roles' own (kvmlab/roles/*/checks.py), run against the full
topology, so the small labs (smoke, iscsi, gluster, ceph, raid) and this one
prove the same things.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("storage")


def test_role_checks(lab, role_check):
    role_check.run(lab)
