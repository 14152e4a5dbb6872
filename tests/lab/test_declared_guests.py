"""Inner guests declared in a lab file (book 7.3): labs/guest-disks.yaml comes up with its two guests running
on hv1, and every hypervisor check passes, the disk options read back from the domain XML and from QEMU's
command line among them.

Slow (~2 min under TCG; the same options are proven in CI by tests/lab/test_guest_disks.py through the
InnerGuest API on the migration lab): `make test-slow`.
"""

from __future__ import annotations

import pytest

from kvmlab.verify import PASS, checks_for, run_checks

pytestmark = [pytest.mark.lab("guest-disks"), pytest.mark.slow]


def test_declared_guests_run_with_the_disk_options_of_the_lab_file(lab):
    results = run_checks(lab, checks_for(lab.lab))
    failed = {r.check.id: r.message for r in results if r.outcome != PASS}
    assert not failed, failed
    (disks,) = [r.values for r in results if r.check.id == "hypervisor::guest-disk-options"]
    assert disks == {
        "db": "scsi-hd cache.direct=False aio=threads discard=unmap detect-zeroes=on",
        "logs": "ide-hd cache.direct=True aio=native discard=ignore detect-zeroes=off",
    }
