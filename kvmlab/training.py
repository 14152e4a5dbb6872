"""A trainee's exercise from start to finish: its own lab, its state on disk, resets, grades and results.

Each trainee's copy is a lab of its own, named EXERCISE or EXERCISE-TRAINEE, with its own networks
and subnets, so several trainees work side by side in isolation. The first start of a copy builds it
(role steps the trainee is to do left out, then the exercise's start commands), checkpoints it as
`start` and saves it as a verified lab: every later start of that copy restores it in seconds.
Stage resets go back to `start` and apply the reference solution of the stages before, once; the
result is kept as checkpoint `stage-N` for the next reset.

Each copy's state (which exercise, when it started, hints taken, grades) is a JSON file under
KVMLAB_STATE/exercises/, so every `kvmlab exercise` command (and `status`) sees every copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmlab import golden, runs, settings
from kvmlab.errors import HarnessError
from kvmlab.exercise import Exercise, Objective, find_exercise
from kvmlab.grading import Grade, apply, grade, write_results
from kvmlab.lab import LabSession
from kvmlab.providers.base import Provider

START = "start"
TRAINEE_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
Log = Callable[[str], None]


def lab_name(exercise: Exercise, trainee: str) -> str:
    if trainee and not TRAINEE_RE.match(trainee):
        raise HarnessError(f"trainee name '{trainee}' is not valid: use 1-12 lowercase letters and digits, starting with a letter")
    return f"{exercise.id}-{trainee}" if trainee else exercise.id


def start_key(exercise: Exercise) -> str:
    """What the start state was made of besides the lab file: the start commands."""
    text = "\0".join(f"{c.node}\0{c.run}" for c in exercise.start)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def state_root() -> Path:
    return settings.state_dir() / "exercises"


@dataclass
class TraineeState:
    exercise: str
    folder: str  # the exercise's folder, so that later commands find the same one
    trainee: str
    lab: str
    run_id: str
    started: float
    leave: list[list[str]]
    hints: dict[str, int] = field(default_factory=dict)  # objective id -> hints shown
    grades: list[dict[str, Any]] = field(default_factory=list)  # each `check`: when, score, failed objectives
    finished: float | None = None
    results: str = ""

    @property
    def path(self) -> Path:
        return state_root() / f"{self.lab}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> TraineeState:
        return cls(**json.loads(path.read_text()))

    def exercise_def(self) -> Exercise:
        return find_exercise(self.folder)

    def leave_set(self) -> frozenset[tuple[str, str | None]]:
        return frozenset((role, phase or None) for role, phase in self.leave)

    def used_s(self) -> float:
        return (self.finished or time.time()) - self.started

    def last_score(self) -> int | None:
        return self.grades[-1]["score"] if self.grades else None


def all_states() -> list[TraineeState]:
    states = []
    for path in sorted(state_root().glob("*.json")):
        try:
            states.append(TraineeState.load(path))
        except (OSError, ValueError, TypeError):
            continue  # a file that is not ours, or a half-written one of a killed command
    return sorted(states, key=lambda s: s.started)


def state_of(exercise: Exercise, trainee: str) -> TraineeState:
    name = lab_name(exercise, trainee)
    path = state_root() / f"{name}.json"
    if not path.is_file():
        who = f" --as {trainee}" if trainee else ""
        whose = f" for {trainee}" if trainee else ""
        raise HarnessError(f"exercise {exercise.id}{whose} is not started: `kvmlab exercise start {exercise.id}{who}`")
    return TraineeState.load(path)


def running_run(name: str) -> runs.Run | None:
    found = [r for r in runs.all_runs().values() if r.lab == name and r.owner_alive()]
    return max(found, key=lambda r: r.started) if found else None


def start(exercise: Exercise, trainee: str, provider: Provider, log: Log) -> tuple[LabSession, TraineeState]:
    """The trainee's copy of the start state, up and kept; restored from its saved state when there is one."""
    name = lab_name(exercise, trainee)
    if running_run(name) is not None:
        raise HarnessError(
            f"exercise {exercise.id} is already running as lab {name}: go on with it, `kvmlab exercise reset {exercise.id}` to start over, "
            f"or `kvmlab exercise finish {exercise.id}` to end it" + (f" (add --as {trainee})" if trainee else "")
        )
    lab = dataclasses.replace(exercise.lab(), name=name)
    session = LabSession(lab, provider, progress=log, leave=exercise.leave, state_key=start_key(exercise))
    session.failure_dir = settings.artifacts_dir() / session.run_id / "exercise-start"
    session.up()
    try:
        if not session.restored:
            apply(session, exercise.start, f"{exercise.id} start", session.log)
        session.snapshot(START)
        if not session.restored and session.image is not None:
            golden.save(session, START, session.image, sum(session.phase_s.values()))
    except BaseException:
        session.down()
        raise
    session.mark_kept()
    state = TraineeState(
        exercise=exercise.id,
        folder=str(exercise.folder),
        trainee=trainee,
        lab=name,
        run_id=session.run_id,
        started=time.time(),
        leave=sorted([role, phase or ""] for role, phase in exercise.leave),
    )
    state.save()
    return session, state


def attach(state: TraineeState, provider: Provider, log: Log) -> LabSession:
    run = running_run(state.lab) or runs.all_runs().get(state.run_id)
    if run is None or run.lab != state.lab or not (run.owner_alive() or run.kept):
        raise HarnessError(f"the lab of exercise {state.exercise} ({state.lab}) is not up any more: `kvmlab exercise start` it again")
    lab = dataclasses.replace(state.exercise_def().lab(), name=state.lab)
    session = LabSession.attach(lab, provider, run, progress=log)
    session.leave = state.leave_set()
    return session


def check(session: LabSession, state: TraineeState) -> Grade:
    graded = grade(session, state.exercise_def(), session.log)
    state.grades.append({"at": datetime.now(UTC).isoformat(timespec="seconds"), "score": graded.score, "failed": list(graded.failed_ids)})
    state.save()
    return graded


def first_hint(state: TraineeState, objective: Objective) -> str:
    """The hint a failed objective shows: the last one the trainee asked for, or the first."""
    shown = state.hints.get(objective.id, 0)
    return objective.hints[max(0, min(shown, len(objective.hints)) - 1)]


def next_hint(state: TraineeState, objective: Objective) -> tuple[int, str]:
    """The next hint of OBJECTIVE (the last one again once all were shown); its number."""
    shown = min(state.hints.get(objective.id, 0) + 1, len(objective.hints))
    state.hints[objective.id] = shown
    state.save()
    return shown, objective.hints[shown - 1]


def stage_checkpoint(stage: int) -> str:
    return START if stage <= 1 else f"stage-{stage}"


def reset(session: LabSession, exercise: Exercise, stage: int = 1) -> float:
    """Back to the start (STAGE 1) or to the start of STAGE: the reference solution of the stages before it applied."""
    if not 1 <= stage <= len(exercise.stages):
        raise HarnessError(f"exercise {exercise.id} has stages 1 to {len(exercise.stages)}, not {stage}")
    begin = time.monotonic()
    name = stage_checkpoint(stage)
    if name in session.checkpoints.names():
        session.revert(name)
        return time.monotonic() - begin
    session.revert(START)
    steps = [s.command for s in exercise.solution if s.stage < stage]
    apply(session, steps, f"{exercise.id} solution of stages 1-{stage - 1}", session.log)
    session.snapshot(name)
    return time.monotonic() - begin


def solve(session: LabSession, exercise: Exercise, stage: int | None = None) -> float:
    """Apply the reference solution: every stage, or only STAGE's steps."""
    steps = [s.command for s in exercise.solution if stage is None or s.stage == stage]
    return apply(session, steps, f"{exercise.id} solution", session.log)


def finish(session: LabSession, state: TraineeState) -> tuple[Grade, Path]:
    """The final grade, kept as JSON and JUnit under artifacts/exercises/; the lab is torn down."""
    exercise = state.exercise_def()
    graded = grade(session, exercise, session.log)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = (settings.artifacts_dir() / "exercises" / f"{state.lab}-{stamp}").resolve()
    state.finished = time.time()
    extra = {
        "lab": state.lab,
        "started": _iso(state.started),
        "finished": _iso(state.finished),
        "used_s": round(state.used_s()),
        "hints": state.hints,
    }
    write_results(folder, exercise, state.trainee, graded, {**extra, "checks": state.grades})
    state.results = str(folder)
    state.save()
    session.down()
    return graded, folder


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class GraderProof:
    """The three-way grader test of one exercise, with its times."""

    exercise: str
    start_grade: Grade
    solved_grade: Grade
    wrong: tuple[tuple[str, Grade, tuple[str, ...]], ...]  # title, grade, the objectives it must fail
    seconds: dict[str, float]  # reset, start, check (the start state), solve, check solved

    def problems(self) -> list[str]:
        out = []
        if any(r.passed for r in self.start_grade.results):
            passed = [r.objective.id for r in self.start_grade.results if r.passed]
            out.append(f"{self.exercise}: on the start state these objectives already pass: {', '.join(passed)}")
        if not self.solved_grade.passed:
            out.append(f"{self.exercise}: after the reference solution these objectives fail: " + _failures(self.solved_grade))
        for title, graded, fails in self.wrong:
            if set(graded.failed_ids) != set(fails):
                out.append(
                    f"{self.exercise}: wrong solution '{title}' should fail exactly {', '.join(fails)}, "
                    f"but failed {', '.join(graded.failed_ids) or 'nothing'}" + (f": {_failures(graded)}" if graded.failed_ids else "")
                )
        return out


def _failures(graded: Grade) -> str:
    return "; ".join(f"{r.objective.id} (seen: {(r.seen or 'nothing').splitlines()[0]})" for r in graded.results if not r.passed)


PROOF_START = "grader-proof-start"  # the start state, as a grader proof checkpoints it


def prove_grader(session: LabSession, exercise: Exercise, base: str, log: Log) -> GraderProof:
    """From checkpoint BASE (the lab as the exercise's bring-up leaves it): the start state fails every
    objective; the reference solution passes every one; each wrong solution fails exactly its objectives.

    With start commands and wrong solutions, the start state is checkpointed once (PROOF_START) and
    each wrong solution begins from it: a revert instead of a revert plus the start commands again."""
    times: dict[str, float] = {}
    t = time.monotonic()
    session.revert(base)
    times["reset"] = time.monotonic() - t
    times["start"] = times["reset"] + apply(session, exercise.start, f"{exercise.id} start", log)
    start = base
    if exercise.start and exercise.wrong:
        session.snapshot(PROOF_START)
        start = PROOF_START
    at_start = grade(session, exercise, log)
    times["check"] = at_start.seconds
    times["solve"] = solve(session, exercise)
    solved = grade(session, exercise, log)
    times["check solved"] = solved.seconds
    wrong = []
    for bad in exercise.wrong:
        session.revert(start)
        if start == base:
            apply(session, exercise.start, f"{exercise.id} start", log)
        apply(session, bad.steps, f"{exercise.id} wrong solution '{bad.title}'", log)
        wrong.append((bad.title, grade(session, exercise, log), bad.fails))
    return GraderProof(exercise.id, at_start, solved, tuple(wrong), times)
