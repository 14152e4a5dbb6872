"""labs/tiny.yaml through the pytest fixture: the smallest lab a test can ask for, and the two ways
its nodes start (a clone of a saved generic node, or a cold boot) proven equivalent."""

from __future__ import annotations

import pytest

from kvmlab.lab import LabSession
from kvmlab.providers import connect
from kvmlab.verify import PASS, checks_for, run_checks

pytestmark = pytest.mark.lab("tiny")


def test_node_has_its_name_and_serves_its_export(lab):
    host = lab.node("n1").host
    assert host.check_output("hostname") == "n1"
    assert "/srv/share" in host.check_output("exportfs -v")


def test_cold_boot_and_clone_build_labs_that_pass_the_same_checks(lab):
    assert lab.node("n1").cloned, "the lab fixture's node was booted, not cloned: this test compares nothing"
    checks = checks_for(lab.lab)
    assert checks, "tiny has no role checks to compare"
    cloned = {(r.check.role, r.check.name): r.outcome for r in run_checks(lab, checks)}
    provider = connect()
    try:
        with LabSession(lab.lab, provider, progress=lambda _line: None, use_saved=False, cold_boot=True) as cold:
            cold.up()
            assert not cold.node("n1").cloned
            booted = {(r.check.role, r.check.name): r.outcome for r in run_checks(cold, checks)}
            assert booted == cloned == dict.fromkeys(cloned, PASS)
            assert cold.node("n1").run_expect("hostname").strip() == "n1"
    finally:
        provider.close()
