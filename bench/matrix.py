#!/usr/bin/env python3
"""Benchmark a matrix of storage configurations: each variant built cold, then restored from its saved state.

    python bench/matrix.py [LAB_FILE]      # default: labs/matrix.yaml

Runs `kvmlab matrix LAB_FILE --rebuild` (every lab built, then saved when its checks pass), then
`kvmlab matrix LAB_FILE --baseline FIRST` (every lab restored, compared with the first run), and
prints per variant: bring-up cold, checks cold, restore, checks restored; and the wall time of each
matrix. The figures are those the two results files recorded. Prints the machine it ran on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab_up import interruptible, print_table

ROOT = Path(__file__).resolve().parents[1]


def matrix(lab_file: str, out: Path, *extra: str) -> tuple[float, list[dict]]:
    """Run one matrix; its wall time and the runs of its results file."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kvmlab.cli", "matrix", lab_file, "--junit-dir", str(out), *extra])
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"kvmlab matrix {lab_file} {' '.join(extra)} exited {done.returncode}: see its output above")
    newest = sorted(out.glob("results-*.json"))[-1]
    return seconds, json.loads(newest.read_text())["runs"]


def checks_seconds(run: dict) -> float:
    return sum(c["seconds"] for c in run["checks"])


def main() -> None:
    lab_file = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "labs" / "matrix.yaml")
    with tempfile.TemporaryDirectory(prefix="kvmlab-bench-matrix-") as tmp:
        cold_s, cold = matrix(lab_file, Path(tmp) / "cold", "--rebuild")
        saved_s, saved = matrix(lab_file, Path(tmp) / "saved", "--baseline", str(Path(tmp) / "cold"))
    restored = {run["lab"]: run for run in saved}
    rows = []
    for run in cold:
        again = restored[run["lab"]]
        rows.append(
            (
                run["variant"] or "base",
                f"{run['bring_up']['how']} {run['bring_up']['seconds']:.0f} s, checks {checks_seconds(run):.0f} s; "
                f"then {again['bring_up']['how']} {again['bring_up']['seconds']:.1f} s, checks {checks_seconds(again):.0f} s; "
                f"{len(run['checks'])} checks",
            )
        )
    rows += [("matrix, cold", f"{cold_s:.0f} s wall"), ("matrix, saved", f"{saved_s:.0f} s wall")]
    print_table(f"kvmlab matrix {lab_file} (checks: the sum of each check's time; they run side by side)", rows)


if __name__ == "__main__":
    interruptible()
    main()
