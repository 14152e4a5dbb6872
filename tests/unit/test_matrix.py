"""The results file of a verify (kvmlab/results.py), the matrix table (kvmlab/matrix.py), and the hook by which
a check hands over the values it read back."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kvmlab import matrix, results
from kvmlab.errors import HarnessError
from kvmlab.lab import StepFailure
from kvmlab.loader import load_lab
from kvmlab.roles import Check
from kvmlab.verify import FAIL, PASS, CheckResult, run_check, run_checks, write_junit

ROOT = Path(__file__).resolve().parents[2]
CEPH_KEY = "AQ" + "B" * 36 + "=="  # the shape of a cephx secret
STARTED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def session(restored: bool = False, phase_s: dict[str, float] | None = None, failures: list[Any] | None = None) -> SimpleNamespace:
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    return SimpleNamespace(
        lab=lab,
        run_id="abc123",
        accel="tcg",
        restored=restored,
        phase_s={"image": 0.5, "nodes": 120.0} if phase_s is None else phase_s,
        step_failures=failures or [],
    )


def result(name: str, outcome: str = PASS, seconds: float = 1.0, message: str = "", values: dict[str, Any] | None = None) -> CheckResult:
    role, check = name.split("::")
    return CheckResult(Check(role, check, lambda _lab: None), outcome, seconds, message, values)


# -- the results file -------------------------------------------------------------------------------


def test_a_run_entry_says_what_ran_where_and_how_it_went():
    entry = results.of_run(
        session(), [result("nfs-server::exports", seconds=1.234), result("hypervisor::pool", FAIL, 2.0, "gone")], STARTED
    )
    assert entry["machine"].keys() == {"cores", "accelerator", "host"} and entry["machine"]["accelerator"] == "tcg"
    del entry["machine"]
    assert entry == {
        "lab": "smoke",
        "variant": None,
        "lab_file": entry["lab_file"],
        "release": "bookworm",
        "run": "abc123",
        "started": "2026-03-01T12:00:00+00:00",
        "bring_up": {"how": "built", "seconds": 120.5, "restored": False},
        "bring_up_failures": [],
        "error": "",
        "checks": [
            {"name": "nfs-server::exports", "result": "pass", "seconds": 1.23, "message": ""},
            {"name": "hypervisor::pool", "result": "FAIL", "seconds": 2.0, "message": "gone"},
        ],
    }
    assert entry["lab_file"].endswith("labs/smoke.yaml")


def test_a_variant_lab_is_named_with_its_variant(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("nodes: {a: {}}\nvariants: {big: {nodes: {a: {memory: 1G}}}}\n")
    s = session()
    s.lab = load_lab(path, "big")
    entry = results.of_run(s, [], STARTED)
    assert (entry["lab"], entry["variant"]) == ("lab-big", "big")


@pytest.mark.parametrize(
    ("restored", "phase_s", "expected"),
    [
        (True, {"image": 0.2, "restore": 14.0}, {"how": "restored", "seconds": 14.2, "restored": True}),
        (False, {"image": 0.2, "nodes": 300.0}, {"how": "built", "seconds": 300.2, "restored": False}),
        (False, {}, {"how": "already up", "seconds": None, "restored": False}),
    ],
)
def test_how_the_lab_came_up(restored, phase_s, expected):
    assert results.of_run(session(restored, phase_s), [], STARTED)["bring_up"] == expected


def test_a_lab_that_did_not_come_up():
    failures = [StepFailure("hv1", "hypervisor", "clients", "pool nfsvms would not start")]
    entry = results.of_run(session(failures=failures), [], STARTED, error="node hv1 did not answer SSH")
    assert entry["bring_up"] == {"how": "failed", "seconds": None, "restored": False}
    assert entry["error"] == "node hv1 did not answer SSH"
    assert entry["bring_up_failures"] == [str(failures[0])]
    assert not results.passed(entry)


def test_a_lab_that_came_up_but_could_not_be_checked():
    entry = results.of_run(session(), [], STARTED, error="checkpoint 'built' failed: disk full", came_up=True)
    assert (entry["bring_up"]["how"], entry["error"]) == ("built", "checkpoint 'built' failed: disk full")
    assert not results.passed(entry)


def test_read_back_values_are_recorded_with_secrets_masked():
    values = {"size": 3, "auth": {"client.lab key": CEPH_KEY, "chap_password": "s3cret"}, "pools": ("a", "b"), "when": STARTED}
    (entry,) = results.of_run(session(), [result("ceph::conf", values=values, message=f"key {CEPH_KEY}")], STARTED)["checks"]
    assert entry["values"] == {
        "size": 3,
        "auth": {"client.lab key": "<ceph key redacted>", "chap_password": "(redacted)"},
        "pools": ["a", "b"],
        "when": "2026-03-01 12:00:00+00:00",
    }
    assert entry["message"] == "key <ceph key redacted>"


def test_passed_needs_every_check_and_every_step():
    assert results.passed(results.of_run(session(), [result("a::x")], STARTED))
    assert not results.passed(results.of_run(session(), [result("a::x", "ERROR")], STARTED))
    failed_step = [StepFailure("hv1", "hypervisor", "clients", "no")]
    assert not results.passed(results.of_run(session(failures=failed_step), [result("a::x")], STARTED))


def test_write_and_read_back(tmp_path):
    entry = results.of_run(session(), [result("a::x")], STARTED)
    path = results.write(tmp_path / "out" / results.file_name(STARTED), [entry])
    assert path.name == "results-20260301T120000Z.json"
    document = json.loads(path.read_text())
    assert document["format"] == results.FORMAT and document["runs"] == [entry]
    assert results.read(path) == (path, [entry])


def test_a_folder_means_its_newest_results_file(tmp_path):
    old = results.write(tmp_path / results.file_name(STARTED), [{"lab": "old"}])
    new = results.write(tmp_path / results.file_name(STARTED.replace(hour=13)), [{"lab": "new"}])
    (tmp_path / "report-verify.html").write_text("<html></html>")
    assert old.name < new.name
    assert results.read(tmp_path) == (new, [{"lab": "new"}])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read results file"),
        ("{not json", "is not a results file of kvmlab: not JSON"),
        ('{"runs": []}', "is not a results file of kvmlab (format kvmlab-results/1)"),
        ('{"format": "kvmlab-results/1", "runs": {}}', "is not a results file of kvmlab"),
        ('{"format": "kvmlab-results/1", "runs": [{"checks": []}]}', "is not a results file of kvmlab"),
        ('{"format": "kvmlab-results/1", "runs": [{"lab": "a", "checks": [{"name": "x"}]}]}', "is not a results file of kvmlab"),
    ],
)
def test_a_wrong_baseline_file_is_a_harness_error(tmp_path, content, message):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(HarnessError, match=re.escape(message)):
        results.read(path)


def test_an_empty_folder_has_no_results(tmp_path):
    with pytest.raises(HarnessError, match=r"no results file \(results-\*\.json\) in"):
        results.read(tmp_path)


# -- a check's read-back values ---------------------------------------------------------------------


def test_a_check_may_return_what_it_read_back():
    reads = Check("ceph", "conf", lambda _lab: {"osd_pool_default_size": "3"})
    plain = Check("ceph", "health", lambda _lab: None)
    odd = Check("ceph", "odd", lambda _lab: "not a mapping")
    assert [r.values for r in run_checks(SimpleNamespace(), [reads, plain, odd])] == [{"osd_pool_default_size": "3"}, None, None]


def test_a_failing_check_has_no_values():
    def fails(_lab: object) -> dict[str, str]:
        raise AssertionError("size is 2, want 3")

    r = run_check(SimpleNamespace(), Check("ceph", "conf", fails), lambda _line: None)
    assert (r.outcome, r.message, r.values) == (FAIL, "size is 2, want 3", None)


def test_junit_of_a_lab_that_did_not_come_up(tmp_path):
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    write_junit(tmp_path / "j.xml", lab, [], error="node hv1 did not answer SSH\nconsole tail")
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    case = suite.find("testcase")
    assert (case.get("classname"), case.get("name"), case.find("error").get("message")) == (
        "bring-up",
        "lab",
        "node hv1 did not answer SSH",
    )


# -- the matrix table -------------------------------------------------------------------------------


def matrix_run(variant: str | None, how: str, seconds: float | None, checks: list[tuple[str, str, float]], **extra: Any) -> dict[str, Any]:
    return {
        "lab": "g" + (f"-{variant}" if variant else ""),
        "variant": variant,
        "bring_up": {"how": how, "seconds": seconds, "restored": how == "restored"},
        "bring_up_failures": [],
        "error": "",
        "checks": [{"name": n, "result": r, "seconds": s, "message": ""} for n, r, s in checks],
        **extra,
    }


def test_matrix_table_has_a_column_per_variant_and_a_row_per_check():
    runs = [
        matrix_run(None, "restored", 38.2, [("gluster::peers", "pass", 1.2), ("gluster::type", "pass", 2.1)]),
        matrix_run("arbiter", "built", 402.7, [("gluster::peers", "pass", 1.3), ("gluster::type", "FAIL", 12.0)]),
        matrix_run("two-hv", "already up", None, [("gluster::peers", "ERROR", 0.4), ("hypervisor::pool", "pass", 3.0)]),
    ]
    assert matrix.table(runs) == (
        "check             base           arbiter      two-hv\n"
        "----------------  -------------  -----------  ----------\n"
        "gluster::peers    pass 1.2       pass 1.3     ERROR 0.4\n"
        "gluster::type     pass 2.1       FAIL 12.0    —\n"
        "hypervisor::pool  —              —            pass 3.0\n"
        "bring-up          restored 38 s  built 403 s  already up\n"
        "checks, total     3.3 s          13.3 s       3.4 s"
    )
    assert matrix.summary(runs) == "3 lab(s) of the matrix: 2 with failures (arbiter, two-hv)"


def test_matrix_table_shows_failed_bring_ups_and_role_steps():
    runs = [
        matrix_run(None, "built", 300.0, [("a::x", "pass", 1.0)], bring_up_failures=["hv1 hypervisor clients: no pool"]),
        matrix_run("v", "failed", None, [], error="no SSH"),
    ]
    assert matrix.table(runs).splitlines()[2:] == [
        "a::x               pass 1.0     —",
        "failed role steps  1            0",
        "bring-up           built 300 s  FAILED",
        "checks, total      1.0 s        0.0 s",
    ]
    assert matrix.summary([runs[0]]) == "1 lab(s) of the matrix: 1 with failures (base)"
    assert matrix.summary([matrix_run(None, "built", 1.0, [])]) == "1 lab(s) of the matrix: every check passed"
