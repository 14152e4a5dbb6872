"""labs/storage.yaml: every storage role of the book's chapter 5 in one lab (OUTLINE 5.1-5.8).

The checks are the role suites' own, run again against the full topology, so
the small labs (smoke, iscsi, gluster, ceph, raid) and this one prove the same
things. Each test keeps its suite's name behind a prefix: test_<suite>__<check>.
"""

from __future__ import annotations

import pytest

from tests.lab import test_ceph, test_gluster, test_hypervisor_images, test_iscsi, test_raid, test_smoke

pytestmark = pytest.mark.lab("storage")

for _suite in (test_smoke, test_hypervisor_images, test_raid, test_iscsi, test_gluster, test_ceph):
    _prefix = _suite.__name__.rsplit(".", 1)[1].removeprefix("test_")
    for _name, _test in list(vars(_suite).items()):
        if _name.startswith("test_") and callable(_test):
            globals()[f"test_{_prefix}__{_name.removeprefix('test_')}"] = _test
