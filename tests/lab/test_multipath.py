"""labs/multipath.yaml: one LUN over two storage networks, dm-multipath on the hypervisor (OUTLINE 5.5).

What the lab must show is a role check of kvmlab/roles/iscsi_target/checks.py: a
portal on each storage network, a session through each, every LUN with an active
path per portal in `multipath -ll`, and the mpath pool listing the maps. Only the
iscsi-target checks run here (the hypervisor's own run on the smoke and iscsi labs).
The failover itself (a link cut during writes) is in test_failover.py.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("multipath")


@pytest.mark.role_checks("iscsi-target")
def test_role_checks(lab, role_check):
    role_check.run(lab)
