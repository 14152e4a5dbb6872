"""One self-contained HTML page for a run of a lab: its picture, a timeline of the bring-up (each
node's boot and each role step as bars), each check with its result and time, and for a failure the
evidence already collected (console tails, journals, role state).

No scripts and no external files: the page opens from a CI artifact store or a mail attachment.
Everything shown passes through redact(), as artifacts do.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmlab import graph
from kvmlab.errors import HarnessError
from kvmlab.model import Lab
from kvmlab.redact import redact
from kvmlab.results import BUILT, RESTORED, bring_up

EVIDENCE_LINES = 80  # of each console log or state file: the end is where a failure shows
BAR_PX_WIDTH = 760
NOTHING_BOOTED = "Nothing was booted: the lab was restored from its saved state, or never started."
LANE_PX = 22


@dataclass(frozen=True)
class Bar:
    lane: str  # the node
    label: str
    start_s: float  # seconds since the bring-up began
    end_s: float
    kind: str  # "boot", "step" or "failed"


@dataclass(frozen=True)
class Row:
    """A check, or a bring-up step that failed."""

    name: str
    outcome: str  # pass, FAIL, ERROR
    seconds: float
    message: str = ""


@dataclass(frozen=True)
class Evidence:
    title: str
    text: str


@dataclass(frozen=True)
class LabPart:
    """A lab the run used: its picture and its bring-up."""

    lab: Lab
    bars: list[Bar]


@dataclass
class Report:
    title: str
    summary: str
    labs: list[LabPart] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    rows_title: str = "Checks"
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def bars_of(session: Any) -> list[Bar]:
    """The bring-up of SESSION (a LabSession) as bars: each node's boot, then each of its role steps."""
    graph_ = getattr(session, "step_graph", None)
    if graph_ is None:
        return []  # restored from a saved lab: nothing was booted or configured
    bars = []
    for name, st in session.status.items():
        if st.started is not None and st.ready_s is not None:
            start = st.started - graph_.started
            bars.append(Bar(name, "boot", start, start + st.ready_s, "boot"))
    for step in graph_.timeline:
        bars.append(Bar(step.node, f"{step.role} {step.phase}", step.start_s, step.end_s, "step" if step.ok else "failed"))
    return sorted(bars, key=lambda b: (b.lane, b.start_s))


def of_session(session: Any, command: str, results: list[Any] | None = None, evidence_dir: Path | None = None) -> Report:
    """The report of COMMAND (`up`, `verify`) on SESSION: its bring-up, failed steps, check RESULTS
    (kvmlab.verify.CheckResult) and the evidence collected into EVIDENCE_DIR."""
    rows = [Row(f"bring-up {f.node} {f.role} {f.phase}", "FAIL", 0.0, f.error) for f in session.step_failures]
    rows += [Row(r.check.id, r.outcome, r.seconds, r.message) for r in results or []]
    bad = sum(r.outcome != "pass" for r in rows)
    came, seconds = bring_up(session)
    how = {RESTORED: "restored from its saved state", BUILT: f"built in {seconds or 0:.1f} s"}.get(came, "already up")
    checked = f"{len(rows) - bad} of {len(rows)} passed" if rows else "no checks ran"
    return Report(
        title=f"kvmlab {command} {session.lab.name} (run {session.run_id})",
        summary=f"lab {session.lab.name} {how}; {checked}" + (f"; {bad} failed" if bad else ""),
        labs=[LabPart(session.lab, bars_of(session))],
        rows=rows,
        evidence=evidence_in(evidence_dir) if evidence_dir is not None else [],
    )


def evidence_in(directory: Path) -> list[Evidence]:
    """The ends of the console logs and node state files collected into DIRECTORY (LabSession.collect_artifacts)."""
    found = []
    for path in sorted(directory.glob("console-*.log")) + sorted(directory.glob("state-*.txt")):
        try:
            lines = path.read_text(errors="replace").splitlines()[-EVIDENCE_LINES:]
        except OSError:
            continue
        found.append(Evidence(f"{path.name} (last {len(lines)} lines)", "\n".join(line.rstrip("\r") for line in lines)))
    return found


def write(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
    return path


def render(report: Report) -> str:
    e = html.escape
    failed = [r for r in report.rows if r.outcome != "pass"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report.title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
        f'<p class="summary {"bad" if failed else "good"}">{e(report.summary)}</p>',
        f"<p>written {e(report.created)}</p>",
    ]
    for part in report.labs:
        parts += [
            f"<h2>Lab {e(part.lab.name)} <small>({e(part.lab.path)})</small></h2>",
            _picture(part.lab),
            "<h3>Bring-up</h3>",
            timeline_svg(part.bars) if part.bars else f"<p>{NOTHING_BOOTED}</p>",
        ]
    parts += [f"<h2>{e(report.rows_title)}</h2>", _rows_table(report.rows, report.rows_title)]
    if failed:
        parts.append('<h2 id="failures">Failures</h2>')
        for row in failed:
            parts.append(f'<div class="failure"><h3>{e(row.outcome)} {e(row.name)}</h3><pre>{e(redact(row.message))}</pre></div>')
    if report.evidence:
        parts.append("<h2>Evidence</h2>")
        for ev in report.evidence:
            parts.append(f"<details><summary>{e(ev.title)}</summary><pre>{e(redact(ev.text))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def timeline_svg(bars: list[Bar]) -> str:
    """Bars per node on one time axis, drawn as inline SVG (no script)."""
    lanes = list(dict.fromkeys(b.lane for b in bars))
    end = max(b.end_s for b in bars) or 1.0
    scale = BAR_PX_WIDTH / end
    left, top = 140, 20
    height = top + LANE_PX * len(lanes) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{left + BAR_PX_WIDTH + 20}" height="{height}">']
    for i, lane in enumerate(lanes):
        y = top + i * LANE_PX
        out.append(f'<text x="4" y="{y + 15}">{html.escape(lane)}</text>')
    for b in bars:
        y = top + lanes.index(b.lane) * LANE_PX
        x, w = left + b.start_s * scale, max(1.0, (b.end_s - b.start_s) * scale)
        tip = f"{b.lane}: {b.label} {b.start_s:.1f}-{b.end_s:.1f} s ({b.end_s - b.start_s:.1f} s)"
        rect = f'<rect class="{b.kind}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{LANE_PX - 6}">'
        out.append(f"{rect}<title>{html.escape(tip)}</title></rect>")
    axis_y = top + LANE_PX * len(lanes) + 14
    step = _tick(end)
    tick = 0.0
    while tick <= end:
        out.append(f'<text x="{left + tick * scale:.1f}" y="{axis_y}" class="tick">{tick:.0f} s</text>')
        tick += step
    out.append("</svg>")
    return "\n".join(out)


def _tick(end: float) -> float:
    for step in (1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if end / step <= 10:
            return float(step)
    return 1200.0


def _rows_table(rows: list[Row], what: str) -> str:
    if not rows:
        return f"<p>No {what.lower()} ran.</p>"
    e = html.escape
    body = "".join(
        f'<tr class="{"pass" if r.outcome == "pass" else "fail"}"><td>{e(r.name)}</td><td>{e(r.outcome)}</td>'
        f"<td>{r.seconds:.1f}</td><td>{e(redact(r.message.strip().splitlines()[0] if r.message.strip() else ''))}</td></tr>"
        for r in rows
    )
    return f"<table><tr><th>{html.escape(what.lower()[:-1])}</th><th>result</th><th>s</th><th>what was seen</th></tr>{body}</table>"


def _picture(lab: Lab) -> str:
    try:
        return graph.svg(lab)
    except HarnessError as exc:  # the page is written after failures too: a missing `dot` must not hide them
        return f"<p>No picture of the lab: {html.escape(str(exc))}</p>"


STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
.summary.good { color: #1a7f37; font-weight: bold; } .summary.bad { color: #c62828; font-weight: bold; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; font-size: 13px; }
tr.fail td { background: #fdecea; }
pre { background: #f6f8fa; padding: 6px; overflow-x: auto; font-size: 12px; }
.failure h3 { color: #c62828; }
svg.timeline text { font-size: 11px; } svg.timeline .tick { fill: #666; }
rect.boot { fill: #bbbbbb; } rect.step { fill: #4c78a8; } rect.failed { fill: #c62828; }
"""
