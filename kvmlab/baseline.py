"""What changed between two runs of the same labs: this run's results (kvmlab/results.py) against an earlier one's.

Labs are matched by name (a variant's lab is `<lab>-<variant>`), checks by id. Pure functions over the
results files' runs, so that a baseline from any machine or kvmlab version can be read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kvmlab.texttable import table

PASS = "pass"
# Slower only when both hold: twice the time (a real change, not a busy host) and at least a second more
# (a 0.2 s check taking 0.5 s is noise).
SLOWER_FACTOR = 2.0
SLOWER_MIN_S = 1.0

REGRESSION = "REGRESSION"  # passed before, fails now: the only change that fails the command
FIXED = "fixed"
CHANGED = "changed"  # failed before and fails now, differently (FAIL -> ERROR)
NEW = "new"
GONE = "gone"
SLOWER = "slower"
VALUE = "value"  # a setting a check read back has another value
UNMATCHED = "no baseline"  # the lab is not in the baseline
MACHINE = "machine"  # the baseline ran on another kind of machine: its times compare poorly


@dataclass(frozen=True)
class Change:
    lab: str
    check: str  # "" when the change is about the lab as a whole
    kind: str
    detail: str


def compare(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> list[Change]:
    """What changed from the runs BEFORE to the runs AFTER; a lab of BEFORE that AFTER did not run is left out
    (a verify of one variant is compared with a matrix of all)."""
    earlier = {run["lab"]: run for run in before}
    changes: list[Change] = []
    for run in after:
        old = earlier.get(run["lab"])
        if old is None:
            changes.append(Change(run["lab"], "", UNMATCHED, "the baseline has no run of this lab"))
        else:
            changes += _compare_run(old, run)
    return changes


def _compare_run(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    lab = new["lab"]
    out = []
    was, now = _machine(old), _machine(new)
    if was != now:
        out.append(Change(lab, "", MACHINE, f"the baseline ran on {was}, this run on {now}: times compare poorly"))
    out += _compare_lab_state(lab, old, new)
    if new.get("error") or old.get("error"):
        return out  # no checks ran on one side: each check would only repeat that the lab did not come up
    before = {c["name"]: c for c in old.get("checks", [])}
    after = {c["name"]: c for c in new.get("checks", [])}
    for name, check in after.items():
        if name in before:
            out += _compare_check(lab, before[name], check)
        else:
            out.append(Change(lab, name, NEW, f"new check: {check['result']}"))
    out += [Change(lab, name, GONE, f"not run this time (was {c['result']})") for name, c in before.items() if name not in after]
    return out


def _machine(run: dict[str, Any]) -> str:
    machine = run.get("machine") or {}
    return f"{machine.get('cores', '?')} cores, {str(machine.get('accelerator') or '?').upper()}"


def _compare_lab_state(lab: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """The lab coming up and being checked, and its role steps: a lab that no longer does regresses like a check."""
    out = []
    if new.get("error") and not old.get("error"):
        out.append(Change(lab, "", REGRESSION, f"was checked before, fails now: {_first_line(new['error'])}"))
    elif old.get("error") and not new.get("error"):
        out.append(Change(lab, "", FIXED, "failed before, is checked now"))
    failed_before, failed_now = len(old.get("bring_up_failures") or []), len(new.get("bring_up_failures") or [])
    if failed_now and not failed_before:
        first = _first_line(new["bring_up_failures"][0])
        out.append(Change(lab, "", REGRESSION, f"{failed_now} role step(s) of the bring-up fail now: {first}"))
    elif failed_before and not failed_now:
        out.append(Change(lab, "", FIXED, f"the {failed_before} role step(s) that failed in the bring-up work now"))
    return out


def _compare_check(lab: str, old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    name, was, now = new["name"], old["result"], new["result"]
    out = []
    if was == PASS and now != PASS:
        out.append(Change(lab, name, REGRESSION, _saying(f"passed before, {now} now", new)))
    elif was != PASS and now == PASS:
        out.append(Change(lab, name, FIXED, f"{was} before, passes now"))
    elif was != now:
        out.append(Change(lab, name, CHANGED, _saying(f"{was} before, {now} now", new)))
    seconds_was, seconds_now = float(old.get("seconds") or 0), float(new.get("seconds") or 0)
    if seconds_now > SLOWER_FACTOR * seconds_was and seconds_now - seconds_was >= SLOWER_MIN_S:
        ratio = f"{seconds_now / seconds_was:.1f}x" if seconds_was else "from nothing"
        out.append(Change(lab, name, SLOWER, f"{seconds_was:.1f} s before, {seconds_now:.1f} s now ({ratio})"))
    out += [Change(lab, name, VALUE, text) for text in value_changes(old.get("values"), new.get("values"))]
    return out


def value_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """Each read-back value that differs, as 'key: before -> now'; nothing when either run did not read values."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return []
    missing = object()
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        was, now = old.get(key, missing), new.get(key, missing)
        if was != now:
            shown = ["(not read)" if v is missing else _shown(v) for v in (was, now)]
            out.append(f"{key}: {shown[0]} -> {shown[1]}")
    return out


def _saying(what: str, check: dict[str, Any]) -> str:
    """WHAT, and the first line of the check's message when it has one."""
    said = _first_line(check.get("message") or "")
    return f"{what}: {said}" if said else what


def _shown(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(text: str, limit: int = 120) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def regressed(changes: Sequence[Change]) -> bool:
    return any(c.kind == REGRESSION for c in changes)


def report(changes: Sequence[Change], baseline: str, compared: int) -> str:
    """What to print: the changes as a table, regressions first; COMPARED is how many of this run's labs the baseline had."""
    head = f"against the baseline {baseline} ({compared} lab(s) compared)"
    if not changes:
        return f"{head}: no changes"
    order = [REGRESSION, FIXED, CHANGED, NEW, GONE, VALUE, SLOWER, MACHINE, UNMATCHED]
    ranked = sorted(changes, key=lambda c: order.index(c.kind) if c.kind in order else len(order))
    rows = [(c.kind, c.lab, c.check or "-", c.detail) for c in ranked]
    bad = sum(c.kind == REGRESSION for c in changes)
    verdict = f"{bad} regression(s)" if bad else "no regressions"
    return f"{head}: {len(changes)} change(s), {verdict}\n" + table(("change", "lab", "check", "what"), rows)
