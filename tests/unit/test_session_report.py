"""The pytest session's page: each test's result and time, the labs it brought up, a failure's evidence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvmlab import report
from kvmlab_fixtures.report import SessionReport

from .test_report import _session


def _rep(nodeid: str, when: str, outcome: str, duration: float, longrepr: str = "", sections=()) -> pytest.TestReport:
    return pytest.TestReport(nodeid, ("f.py", 1, nodeid), {}, outcome, longrepr or None, when, list(sections), duration)


def test_a_failed_lab_test_shows_its_traceback_end_artifacts_and_console(tmp_path):
    artifacts = tmp_path / "abc123" / "tests_lab_test_x.py_test_b"
    artifacts.mkdir(parents=True)
    (artifacts / "console-hv1.log").write_text("kernel: nfs: server nfs1 not responding, still trying\n")
    page = SessionReport()
    page.lab_up(_session(tmp_path))
    for when in ("setup", "call", "teardown"):
        page.test_report(_rep("tests/lab/test_x.py::test_a", when, "passed", 1.5))
    page.test_report(_rep("tests/lab/test_x.py::test_b", "setup", "passed", 0.5))
    trace = "\n".join(f"frame {i}" for i in range(100)) + "\nE   AssertionError: hv1 cannot reach nfs1"
    page.test_report(_rep("tests/lab/test_x.py::test_b", "call", "failed", 12.0, trace, [("kvmlab artifacts", str(artifacts))]))
    page.test_report(_rep("tests/lab/test_x.py::test_c", "setup", "skipped", 0.0, ("f.py", 1, "Skipped: no")))

    html = report.render(page.build())

    assert "3 tests: 1 passed, 1 failed, 0 errors, 1 skipped" in html and "1 lab bring-ups" in html
    assert "<td>tests/lab/test_x.py::test_a</td><td>pass</td><td>4.5</td>" in html, "setup, call and teardown times add up"
    failures = html.split('<h2 id="failures">Failures</h2>', 1)[1]
    assert "FAIL tests/lab/test_x.py::test_b" in failures and "AssertionError: hv1 cannot reach nfs1" in failures
    assert "frame 99" in failures and "frame 10\n" not in failures, "the end of the traceback"
    assert f"artifacts: {artifacts}" in failures
    assert "server nfs1 not responding, still trying" in html
    assert "Lab smoke" in html and "nfs1: boot" in html


def test_a_lab_that_failed_to_come_up_brings_its_evidence(tmp_path):
    session = _session(tmp_path, failed_step=True)
    session.failure_dir = tmp_path / "lab-up-smoke"
    session.failure_dir.mkdir()
    (session.failure_dir / "state-hv1.txt").write_text("$ virsh pool-list --all\n nfsvms inactive no\n")
    page = SessionReport()
    page.lab_up(session, failed=True)
    html = report.render(page.build())
    assert "bring-up of lab smoke: state-hv1.txt" in html and "nfsvms inactive" in html
    assert '<rect class="failed"' in html


def test_a_session_without_labs_writes_no_page(tmp_path, monkeypatch):
    from kvmlab_fixtures import report as plugin

    monkeypatch.setenv("KVMLAB_ARTIFACTS", str(tmp_path))
    lines: list[str] = []
    config = SimpleNamespace(_kvmlab_report=SessionReport())
    plugin.pytest_terminal_summary(SimpleNamespace(write_line=lines.append), config)
    assert lines == [] and list(tmp_path.iterdir()) == []
    config._kvmlab_report.lab_up(_session(tmp_path))
    plugin.pytest_terminal_summary(SimpleNamespace(write_line=lines.append), config)
    (page,) = tmp_path.glob("report-pytest-*.html")
    assert lines == [f"kvmlab report: {page} (JUnit XML: {page.with_suffix('.xml').name})"]
    assert page.with_suffix(".xml").is_file()


def test_the_junit_file_beside_the_page_has_each_test_with_its_outcome(tmp_path):
    import xml.etree.ElementTree as ET

    page = SessionReport()
    page.test_report(_rep("tests/lab/test_x.py::test_a", "call", "passed", 2.0))
    page.test_report(_rep("tests/lab/test_x.py::test_b", "call", "failed", 1.0, "E   AssertionError: nfs1 is down"))
    page.test_report(_rep("tests/lab/test_x.py::test_c", "setup", "failed", 1.0, "E   HarnessError: no lab"))
    page.test_report(_rep("tests/lab/test_x.py::test_d", "setup", "skipped", 0.0, ("f.py", 1, "Skipped: no")))
    page.write_junit(tmp_path / "r.xml")
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["test_a"].get("classname") == "tests/lab/test_x.py" and len(cases["test_a"]) == 0
    assert cases["test_b"].find("failure").get("message") == "E   AssertionError: nfs1 is down"
    assert cases["test_c"].find("error") is not None and cases["test_d"].find("skipped") is not None
