"""Run the role checks of a lab against its running nodes, and report them (table, JUnit XML)."""

from __future__ import annotations

import os
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmlab import texttable
from kvmlab.errors import HarnessError
from kvmlab.model import Lab
from kvmlab.roles import Check, all_checks
from kvmlab.yamlread import suggest

PASS, FAIL, ERROR = "pass", "FAIL", "ERROR"


@dataclass(frozen=True)
class CheckResult:
    check: Check
    outcome: str  # PASS, FAIL (the lab is not as its file says) or ERROR (the check could not run)
    seconds: float
    message: str = ""
    values: Mapping[str, Any] | None = None  # what the check read back, if it returned it (see roles.Check)


def checks_for(lab: Lab, names: Iterable[str] = ()) -> list[Check]:
    """The checks of every role present in LAB that mean something for it; NAMES (role or role::check) narrows them."""
    from kvmlab import display_checks, failover

    present = {role for node in lab.nodes for role in node.roles}
    if any(node.display for node in lab.nodes):
        present.add(display_checks.ROLE)
    if lab.failover:
        present.add(failover.ROLE)
    # The lab file's failover scenarios come last, in its order (run_checks runs them after the rest).
    scenarios = sorted((c for c in failover.CHECKS if c.applies(lab)), key=lambda c: lab.failover.index(c.name))
    chosen = [c for c in (*all_checks(), *display_checks.CHECKS) if c.role in present and c.applies(lab)] + scenarios
    wanted = tuple(names)
    if not wanted:
        return chosen
    known = [c.id for c in chosen]
    picked: list[Check] = []
    for name in wanted:
        match = [c for c in chosen if c.id == name or c.role == name]
        if not match:
            raise HarnessError(f"no check '{name}' applies to lab {lab.name} ({lab.path}){suggest(name, [*sorted(present), *known])}")
        picked += [c for c in match if c not in picked]
    return picked


# Checks of different roles touch different nodes (or different pools on a hypervisor), so they
# run side by side; a role's own checks run one after another, in their order. Under TCG a check
# keeps one guest (one host core) busy: a few lanes use the host's cores instead of one.
CHECK_LANES = max(2, min(4, os.cpu_count() or 1))


def run_checks(session: object, checks: Iterable[Check], log: Callable[[str], None] = lambda _line: None) -> list[CheckResult]:
    """Run CHECKS, a lane per role (at most CHECK_LANES at once); results in CHECKS' order. Failover scenarios
    break storage on purpose: they run after every other check, one at a time."""
    from kvmlab.failover import ROLE as FAILOVER

    ordered = list(checks)
    lanes: dict[str, list[Check]] = {}
    for check in ordered:
        if check.role != FAILOVER:
            lanes.setdefault(check.role, []).append(check)
    done: dict[int, CheckResult] = {}

    def run_lane(lane: list[Check]) -> None:
        for check in lane:
            done[id(check)] = run_check(session, check, log)

    pool = ThreadPoolExecutor(max_workers=min(CHECK_LANES, len(lanes) or 1), thread_name_prefix="check")
    try:
        for future in [pool.submit(run_lane, lane) for lane in lanes.values()]:
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: lanes not started are dropped
    run_lane([c for c in ordered if c.role == FAILOVER])
    return [done[id(check)] for check in ordered]


def run_check(session: object, check: Check, log: Callable[[str], None]) -> CheckResult:
    start = time.monotonic()
    log(f"check {check.id} ...")
    values = None
    try:
        returned = check.run(session)
        values = dict(returned) if isinstance(returned, Mapping) else None
        outcome, message = PASS, ""
    except AssertionError as exc:
        outcome, message = FAIL, str(exc) or _where(exc)
    except HarnessError as exc:
        outcome, message = ERROR, str(exc)
    except Exception as exc:  # a bug in a check must not hide the other checks' results
        outcome, message = ERROR, f"{type(exc).__name__}: {exc}\n{_where(exc)}"
    seconds = time.monotonic() - start
    log(f"check {check.id}: {outcome} in {seconds:.1f} s" + (f": {message.splitlines()[0]}" if message else ""))
    return CheckResult(check, outcome, seconds, message, values)


def _where(exc: BaseException) -> str:
    """A bare `assert` has no message: the line of the check that failed says what was expected."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"assertion failed at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else type(exc).__name__


def table(results: list[CheckResult]) -> str:
    rows = [(r.check.role, r.check.name, r.outcome, f"{r.seconds:.1f}", _first_line(r.message)) for r in results]
    return texttable.table(("role", "check", "result", "s", "what was seen"), rows)


def _first_line(text: str, limit: int = 160) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def summary(results: list[CheckResult], wall_s: float | None = None) -> str:
    """Counts and times; WALL_S (the run's own time) is less than the checks' sum when lanes overlap."""
    counts = {k: sum(r.outcome == k for r in results) for k in (PASS, FAIL, ERROR)}
    total = sum(r.seconds for r in results)
    took = f"in {wall_s:.1f} s ({total:.1f} s of checks side by side)" if wall_s is not None else f"in {total:.1f} s"
    return f"{len(results)} checks: {counts[PASS]} passed, {counts[FAIL]} failed, {counts[ERROR]} errors {took}"


def write_junit(path: Path, lab: Lab, results: list[CheckResult], setup_failures: Iterable[Any] = (), error: str = "") -> None:
    """JUnit XML (one testcase per check, classname = role) for CI systems; built with ElementTree, which escapes.

    SETUP_FAILURES are the session's StepFailures: each a testcase 'NODE ROLE PHASE' of class bring-up.
    ERROR: why the lab did not come up at all, as a testcase 'lab' of class bring-up (a CI job then sees it fail).
    """
    failures = list(setup_failures)
    suite = ET.Element(
        "testsuite",
        name=f"kvmlab-verify-{lab.name}",
        tests=str(len(results) + len(failures) + bool(error)),
        failures=str(sum(r.outcome == FAIL for r in results)),
        errors=str(sum(r.outcome == ERROR for r in results) + len(failures) + bool(error)),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    if error:
        ET.SubElement(ET.SubElement(suite, "testcase", classname="bring-up", name="lab"), "error", message=_first_line(error)).text = error
    for failure in failures:  # a role step that failed during the bring-up
        case = ET.SubElement(suite, "testcase", classname="bring-up", name=f"{failure.node} {failure.role} {failure.phase}")
        ET.SubElement(case, "error", message=_first_line(str(failure))).text = str(failure)
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=r.check.role, name=r.check.name, time=f"{r.seconds:.3f}")
        if r.outcome != PASS:
            tag = "failure" if r.outcome == FAIL else "error"
            ET.SubElement(case, tag, message=_first_line(r.message)).text = r.message
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="unicode", xml_declaration=True)
