"""The matrix of a lab file's variants: each check's outcome and time under each variant, side by side.

Pure formatting of the runs of a results file (kvmlab/results.py): what `kvmlab matrix` prints at its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kvmlab import results
from kvmlab.texttable import table as text_table
from kvmlab.variants import BASE

NOT_RUN = "—"  # the check does not apply to that variant's lab (or the lab did not come up)


def column(run: dict[str, Any]) -> str:
    return run.get("variant") or BASE


def table(runs: Sequence[dict[str, Any]]) -> str:
    """A row per check (in the order they first ran), a column per variant; then each lab's bring-up and check time."""
    checks = [{c["name"]: c for c in run.get("checks", [])} for run in runs]
    names = list(dict.fromkeys(name for by_name in checks for name in by_name))
    rows = [(name, *(_cell(by_name.get(name)) for by_name in checks)) for name in names]
    if any(run.get("bring_up_failures") for run in runs):
        rows.append(("failed role steps", *(str(len(run.get("bring_up_failures") or [])) for run in runs)))
    rows.append(("bring-up", *(_bring_up(run) for run in runs)))
    rows.append(("checks, total", *(f"{sum(c['seconds'] for c in run.get('checks', [])):.1f} s" for run in runs)))
    return text_table(("check", *(column(run) for run in runs)), rows)


def _cell(check: dict[str, Any] | None) -> str:
    return NOT_RUN if check is None else f"{check['result']} {check['seconds']:.1f}"


def _bring_up(run: dict[str, Any]) -> str:
    came = run.get("bring_up") or {}
    how, seconds = came.get("how", "?"), came.get("seconds")
    if how == results.FAILED:
        return "FAILED"
    return how if seconds is None else f"{how} {seconds:.0f} s"


def summary(runs: Sequence[dict[str, Any]]) -> str:
    bad = [column(run) for run in runs if not results.passed(run)]
    verdict = f"{len(bad)} with failures ({', '.join(bad)})" if bad else "every check passed"
    return f"{len(runs)} lab(s) of the matrix: {verdict}"
