"""`kvmlab matrix labs/matrix.yaml` as an engineer runs it: the file's own lab and its variant built and
checked one after another, then the same matrix again, restored, compared with the first as a baseline.

Two 6-node labs, ~9 minutes under TCG: part of `make test`, in one lane beside the other labs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab("matrix")
LAB_FILE = str(Path(__file__).resolve().parents[2] / "labs" / "matrix.yaml")


def matrix(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "kvmlab.cli", "matrix", LAB_FILE, *args], capture_output=True, text=True, timeout=3000)
    sys.stderr.write(result.stderr[-3000:])
    return result


def runs_of(folder: Path) -> dict[str, dict]:
    files = sorted(folder.glob("results-*.json"))
    assert files, f"no results file in {folder}"
    return {run["variant"] or "base": run for run in json.loads(files[-1].read_text())["runs"]}


def test_matrix_runs_each_configuration_and_a_baseline_finds_nothing_changed(tmp_path):
    first = matrix("--junit-dir", str(tmp_path / "first"))
    assert first.returncode == 0, first.stdout[-4000:]
    runs = runs_of(tmp_path / "first")
    assert sorted(runs) == ["arbiter-v3-chap", "base"]
    for name, run in runs.items():
        failed = [c["name"] for c in run["checks"] if c["result"] != "pass"]
        assert run["checks"] and not failed, f"{name}: {failed}"
    checks = {name: {c["name"]: c for c in run["checks"]} for name, run in runs.items()}
    # The variant differs where the lab file says it does, as read back from the running services.
    assert "iscsi-target::chap-wrong-password-refused" in checks["arbiter-v3-chap"]
    assert "iscsi-target::chap-wrong-password-refused" not in checks["base"]
    assert "vers=3" in checks["arbiter-v3-chap"]["hypervisor::netfs-mount-options"]["values"]["hv1:nfsvms"].split(",")
    assert "vers=4.2" in checks["base"]["hypervisor::netfs-mount-options"]["values"]["hv1:nfsvms"].split(",")
    assert checks["arbiter-v3-chap"]["gluster::volume-options"]["values"]["performance.quick-read"] == "off"
    for name in ("base", "arbiter-v3-chap"):
        assert (tmp_path / "first" / f"matrix{'' if name == 'base' else '-' + name}.xml").exists()
    assert "arbiter-v3-chap" in first.stdout and "gluster::volume-type" in first.stdout  # the table: variants x checks

    again = matrix("--junit-dir", str(tmp_path / "again"), "--baseline", str(tmp_path / "first"))
    assert again.returncode == 0, again.stdout[-4000:]
    for name, run in runs_of(tmp_path / "again").items():
        assert run["bring_up"]["how"] == "restored", f"{name}: {run['bring_up']}"
    assert "2 lab(s) compared" in again.stdout, again.stdout[-3000:]
    assert ": no changes" in again.stdout or "no regressions" in again.stdout, again.stdout[-3000:]
