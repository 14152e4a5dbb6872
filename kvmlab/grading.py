"""Grade an exercise on its running lab: each objective passes or fails, a score, results as JSON and JUnit.

An objective is a role check (kvmlab.verify runs it) or a command on a node that exits 0 when the
objective is met; a failed one says what it saw and gives its first hint, never the answer.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from kvmlab.errors import HarnessError
from kvmlab.exercise import Command, Exercise, Objective
from kvmlab.roles import all_checks
from kvmlab.verify import PASS, run_check

SEEN_LINES = 8  # of a failed command's output: enough to see what is wrong, short enough to read


@dataclass(frozen=True)
class ObjectiveResult:
    objective: Objective
    stage: int
    passed: bool
    seconds: float
    seen: str  # what the check saw, for a failed objective


@dataclass(frozen=True)
class Grade:
    results: tuple[ObjectiveResult, ...]
    seconds: float

    @property
    def score(self) -> int:
        """Percent of the objectives' weight passed, rounded down: 100 only when every objective passes."""
        total = sum(r.objective.weight for r in self.results)
        got = sum(r.objective.weight for r in self.results if r.passed)
        return got * 100 // total if total else 0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed_ids(self) -> tuple[str, ...]:
        return tuple(r.objective.id for r in self.results if not r.passed)

    def stage(self) -> int:
        """The stage the trainee is at: the first with an objective not yet met (past the last when done)."""
        failing = [r.stage for r in self.results if not r.passed]
        return min(failing) if failing else max((r.stage for r in self.results), default=0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "passed": self.passed,
            "seconds": round(self.seconds, 1),
            "objectives": [
                {
                    "id": r.objective.id,
                    "stage": r.stage,
                    "passed": r.passed,
                    "weight": r.objective.weight,
                    "seconds": round(r.seconds, 1),
                    "seen": r.seen,
                }
                for r in self.results
            ],
        }


def facts(session: Any) -> dict[str, Any]:
    """What commands, hints and the task text may name: the trainee's own lab's subnets and addresses."""
    lab, placement = session.lab, session.placement
    return {
        "lab": lab.name,
        "net": {name: str(subnet) for name, subnet in placement.subnets.items()},
        "host": {name: placement.host_address(name) for name in placement.subnets},
        "addr": {n.name: {net: placement.address(lab, n.name, net) for net in n.networks} for n in lab.nodes},
        "saved": {},  # outputs of earlier commands that said `save: NAME`
    }


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


def render(text: str, values: dict[str, Any], where: str) -> str:
    """TEXT with the lab's facts filled in; an unknown name is an error that says where it is written."""
    try:
        return _ENV.from_string(text).render(**values)
    except jinja2.TemplateError as exc:
        known = ", ".join(sorted(values))
        raise HarnessError(f"{where}: {exc} (known: {known}; e.g. {{{{ net.storage }}}}, {{{{ addr.hv1.mgmt }}}})") from None


def run_command(session: Any, command: Command, values: dict[str, Any], timeout: float = 600.0):
    """Run COMMAND (rendered) on its node; the Result (rc, output)."""
    text = render(command.run, values, command.where)
    return session.node(command.node).remote.run(text, timeout=timeout)


def apply(session: Any, commands: tuple[Command, ...] | list[Command], what: str, log: Callable[[str], None]) -> float:
    """Run COMMANDS one after another; the first that fails raises HarnessError with its output."""
    values = facts(session)
    start = time.monotonic()
    for command in commands:
        t = time.monotonic()
        result = run_command(session, command, values)
        if result.rc != 0:
            output = "(not shown: it was to be saved)" if command.save else _tail(result.output, 20)
            raise HarnessError(f"{what}: the command at {command.where} failed on {command.node} (exit {result.rc}):\n{output}")
        if command.save:
            values["saved"][command.save] = result.stdout.strip()
        log(f"{what}: {command.node}: {command.where} done in {time.monotonic() - t:.1f} s")
    return time.monotonic() - start


def grade(session: Any, exercise: Exercise, log: Callable[[str], None] = lambda _l: None) -> Grade:
    values = facts(session)
    checks = {c.id: c for c in all_checks()}
    start = time.monotonic()
    results = []
    for number, stage in enumerate(exercise.stages, 1):
        for objective in stage.objectives:
            t = time.monotonic()
            if objective.check:
                outcome = run_check(session, checks[objective.check], log)
                passed, seen = outcome.outcome == PASS, outcome.message
            else:
                assert objective.command is not None
                result = run_command(session, objective.command, values, timeout=120.0)
                passed, seen = result.rc == 0, "" if result.rc == 0 else _tail(result.output, SEEN_LINES) or f"exit status {result.rc}"
                first = f": {seen.splitlines()[0]}" if seen else ""
                took = time.monotonic() - t
                log(f"objective {objective.id} on {objective.command.node}: {'pass' if passed else 'FAIL'} in {took:.1f} s{first}")
            results.append(ObjectiveResult(objective, number, passed, time.monotonic() - t, seen))
    return Grade(tuple(results), time.monotonic() - start)


def _tail(text: str, lines: int) -> str:
    kept = text.strip().splitlines()
    return "\n".join(kept[-lines:])


def report(exercise: Exercise, graded: Grade, hint_of: Callable[[Objective], str], values: dict[str, Any] | None = None) -> str:
    """The trainee's view: each objective by stage, what a failed one saw, its hint; the score.

    VALUES (facts of the lab) fill in objective titles that name addresses."""
    out = []
    title = (lambda o: render(o.title, values, f"{exercise.id}: title of objective {o.id}")) if values else (lambda o: o.title)
    numbers = {o.id: i for i, o in enumerate(exercise.objectives, 1)}
    for number, stage in enumerate(exercise.stages, 1):
        out.append(f"stage {number}: {stage.title}")
        for r in (r for r in graded.results if r.stage == number):
            mark = "pass" if r.passed else "FAIL"
            out.append(f"  [{mark}] {numbers[r.objective.id]}. {title(r.objective)}  ({r.objective.weight} pt, {r.seconds:.1f} s)")
            if not r.passed:
                for line in (r.seen or "nothing").splitlines()[:SEEN_LINES]:
                    out.append(f"         seen: {line}")
                out.append(f"         hint: {hint_of(r.objective)}")
    total = sum(o.weight for o in exercise.objectives)
    got = sum(r.objective.weight for r in graded.results if r.passed)
    met = sum(r.passed for r in graded.results)
    out.append(f"\nscore: {graded.score}% ({got} of {total} points; {met} of {len(graded.results)} objectives) in {graded.seconds:.1f} s")
    return "\n".join(out)


def write_results(folder: Path, exercise: Exercise, trainee: str, graded: Grade, extra: dict[str, Any]) -> None:
    """results.json and junit.xml (one testcase per objective, classname = exercise id)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {"exercise": exercise.id, "title": exercise.title, "section": exercise.section, "trainee": trainee, **extra, **graded.as_dict()}
    (folder / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    suite = ET.Element(
        "testsuite",
        name=f"kvmlab-exercise-{exercise.id}" + (f"-{trainee}" if trainee else ""),
        tests=str(len(graded.results)),
        failures=str(sum(not r.passed for r in graded.results)),
        errors="0",
        time=f"{graded.seconds:.3f}",
    )
    for r in graded.results:
        case = ET.SubElement(suite, "testcase", classname=exercise.id, name=f"{r.stage}. {r.objective.id}", time=f"{r.seconds:.3f}")
        if not r.passed:
            ET.SubElement(case, "failure", message=r.objective.title).text = r.seen
    ET.ElementTree(suite).write(folder / "junit.xml", encoding="unicode", xml_declaration=True)
