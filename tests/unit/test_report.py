"""The HTML report of a run: picture, bring-up timeline, checks, and a failure's evidence, in one file."""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

from kvmlab import report
from kvmlab.lab import NodeStatus, StepFailure
from kvmlab.loader import load_lab
from kvmlab.step_graph import StepTime

ROOT = Path(__file__).resolve().parents[2]
CEPH_KEY = "AQ" + "B" * 36 + "=="  # the shape of a cephx secret


class _Tags(HTMLParser):
    """Every tag opened, and the external resources a page would load."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.external += [v for k, v in attrs if k in ("src", "href") and v and not v.startswith("#")]


def _session(tmp_path: Path, failed_step: bool = False) -> SimpleNamespace:
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    graph = SimpleNamespace(
        started=100.0,
        timeline=[
            StepTime("nfs1", "nfs-server", "setup", 20.0, 31.5, True),
            StepTime("hv1", "hypervisor", "setup", 18.0, 40.0, True),
            StepTime("hv1", "hypervisor", "clients", 40.0, 56.0, not failed_step),
        ],
    )
    status = {"nfs1": NodeStatus("ready", started=101.0, ready_s=19.0), "hv1": NodeStatus("ready", started=100.5, ready_s=17.5)}
    failures = [StepFailure("hv1", "hypervisor", "clients", "pool nfsvms would not start")] if failed_step else []
    return SimpleNamespace(
        lab=lab, run_id="abc123", restored=False, phase_s={"nodes": 56.0}, step_graph=graph, status=status, step_failures=failures
    )


def _result(role: str, name: str, outcome: str, seconds: float, message: str = "") -> SimpleNamespace:
    return SimpleNamespace(check=SimpleNamespace(id=f"{role}::{name}"), outcome=outcome, seconds=seconds, message=message)


def test_a_failed_run_shows_the_failing_check_its_message_and_the_console_tail(tmp_path):
    evidence = tmp_path / "verify"
    evidence.mkdir()
    console = [f"boot line {i}" for i in range(200)] + ["nfsd: last server has exited, flushing export cache"]
    (evidence / "console-nfs1.log").write_text("\r\n".join(console) + "\r\n")
    (evidence / "state-nfs1.txt").write_text(f"$ exportfs -v  (exit 0)\n/srv/nfs/vms 10.0.0.0/24\nkey = {CEPH_KEY}\n")
    results = [
        _result("nfs-server", "exports-published", "pass", 0.4),
        _result("hypervisor", "netfs-pools-active", "FAIL", 1.5, "hv1: pool nfsvms is not active\nmore detail"),
    ]

    page = report.render(report.of_session(_session(tmp_path), "verify", results, evidence))

    assert "kvmlab verify smoke (run abc123)" in page
    assert "lab smoke built in 56.0 s; 1 of 2 passed; 1 failed" in page
    failures = page.split('<h2 id="failures">Failures</h2>', 1)[1]
    assert "FAIL hypervisor::netfs-pools-active" in failures
    assert "hv1: pool nfsvms is not active\nmore detail" in failures
    assert "nfsd: last server has exited, flushing export cache" in page
    assert "boot line 199" in page and "boot line 100" not in page, "the end of the console, not all of it"
    assert CEPH_KEY not in page and "&lt;ceph key redacted&gt;" in page


def test_the_page_is_self_contained_with_the_picture_and_a_bar_per_boot_and_step(tmp_path):
    page = report.render(report.of_session(_session(tmp_path), "up"))
    tags = _Tags()
    tags.feed(page)
    assert tags.external == [] and "script" not in tags.tags
    assert page.count("<svg") == 2, "the lab's picture and the timeline"
    timeline = page[page.index('<svg xmlns="http://www.w3.org/2000/svg" class="timeline"') :]
    timeline = timeline[: timeline.index("</svg>") + len("</svg>")]
    rects = ET.fromstring(timeline).findall("{http://www.w3.org/2000/svg}rect")
    tips = sorted(r.findtext("{http://www.w3.org/2000/svg}title") for r in rects)
    assert tips == [
        "hv1: boot 0.5-18.0 s (17.5 s)",
        "hv1: hypervisor clients 40.0-56.0 s (16.0 s)",
        "hv1: hypervisor setup 18.0-40.0 s (22.0 s)",
        "nfs1: boot 1.0-20.0 s (19.0 s)",
        "nfs1: nfs-server setup 20.0-31.5 s (11.5 s)",
    ]
    assert "No checks ran." in page and "Failures" not in page


def test_a_failed_bring_up_step_is_a_failure_and_a_red_bar(tmp_path):
    page = report.render(report.of_session(_session(tmp_path, failed_step=True), "up"))
    assert "FAIL bring-up hv1 hypervisor clients" in page and "pool nfsvms would not start" in page
    assert '<rect class="failed"' in page


def test_a_restored_lab_has_no_timeline(tmp_path):
    session = _session(tmp_path)
    session.restored, session.step_graph = True, None
    page = report.render(report.of_session(session, "up"))
    assert "lab smoke restored from its saved state; no checks ran" in page
    assert report.NOTHING_BOOTED in page


def test_without_dot_the_report_is_still_written_and_says_why_there_is_no_picture(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = report.write(report.of_session(_session(tmp_path), "up"), tmp_path / "out" / "report.html")
    page = html.unescape(path.read_text())
    assert "No picture of the lab: Graphviz's `dot` is not installed" in page
    assert "nfs1: boot" in page


def test_every_run_page_has_its_junit_file_beside_it(tmp_path, monkeypatch, capsys):
    from kvmlab import cli

    monkeypatch.setenv("KVMLAB_ARTIFACTS", str(tmp_path))
    session = _session(tmp_path, failed_step=True)
    cli._write_report(session, "up", error="node hv1 did not answer SSH")
    folder = tmp_path / "abc123"
    assert (folder / "report-up.html").is_file()
    suite = ET.parse(folder / "junit-up.xml").getroot()
    names = sorted(c.get("name") for c in suite.iter("testcase"))
    assert names == ["hv1 hypervisor clients", "lab"] and suite.get("errors") == "2"
    assert f"JUnit XML: {folder / 'junit-up.xml'}" in capsys.readouterr().err
