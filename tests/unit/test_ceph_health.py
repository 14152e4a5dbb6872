"""How the ceph role judges health: trixie's (Ceph 18's) manager modules that cannot load because of PyO3
are muted, and only when every module failure is that one; a muted check no longer counts."""

from __future__ import annotations

import json

from kvmlab.remote import Result
from kvmlab.roles.ceph import steps

PYO3 = "PyO3 modules do not yet support subinterpreters, see https://github.com/PyO3/pyo3/issues/576"


def status(checks: dict, state: str = "HEALTH_WARN") -> str:
    return json.dumps({"health": {"status": state, "checks": checks}, "mgrmap": {"available": True}})


def module_check(messages: list[str]) -> dict:
    summary = {"message": f"{len(messages)} mgr modules have failed dependencies"}
    return {"MGR_MODULE_DEPENDENCY": {"severity": "HEALTH_WARN", "summary": summary, "detail": [{"message": m} for m in messages]}}


class Mon:
    def __init__(self, checks: dict, state: str = "HEALTH_WARN") -> None:
        self.checks, self.state, self.commands = checks, state, []

    def run(self, command: str, timeout: float = 0) -> Result:
        self.commands.append(command)
        if "health mute" in command:
            return Result(0, "", "")
        if '"prefix": "health"' in command:
            return Result(0, json.dumps({"status": self.state, "checks": self.checks}), "")
        return Result(0, status(self.checks, self.state), "")


def test_modules_failing_only_for_pyo3_are_muted_and_the_cluster_is_healthy():
    mon = Mon(module_check([f"Module 'balancer' has failed dependency: {PYO3}", f"Module 'status' has failed dependency: {PYO3}"]))
    assert steps.unexpected_health(mon) == []
    assert any("health mute MGR_MODULE_DEPENDENCY --sticky" in c for c in mon.commands)


def test_a_module_failing_for_another_reason_is_not_muted():
    mon = Mon(
        module_check([f"Module 'balancer' has failed dependency: {PYO3}", "Module 'nfs' has failed dependency: No module named 'rados'"])
    )
    assert steps.unexpected_health(mon) == ["MGR_MODULE_DEPENDENCY: 2 mgr modules have failed dependencies"]
    assert not any("health mute" in c for c in mon.commands)


def test_a_muted_check_does_not_count_but_other_warnings_do():
    checks = module_check([PYO3])
    checks["MGR_MODULE_DEPENDENCY"]["muted"] = True
    checks["OSD_DOWN"] = {"severity": "HEALTH_WARN", "summary": {"message": "1 osds down"}}
    mon = Mon(checks)
    assert steps.unexpected_health(mon) == ["OSD_DOWN: 1 osds down"]
    assert not any("health mute" in c for c in mon.commands)
