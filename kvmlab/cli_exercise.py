"""`kvmlab exercise ...`: graded hands-on exercises (kvmlab.training) from the command line."""

from __future__ import annotations

import argparse
import html
import sys
import time
from collections.abc import Callable

import markdown

from kvmlab import providers
from kvmlab.errors import HarnessError
from kvmlab.exercise import Exercise, Objective, all_exercises, find_exercise
from kvmlab.grading import facts, render, report
from kvmlab.lab import LabSession
from kvmlab.providers.base import Provider
from kvmlab.training import (
    START,
    TraineeState,
    all_states,
    attach,
    check,
    finish,
    first_hint,
    next_hint,
    reset,
    solve,
    start,
    state_of,
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    from kvmlab.cli import _table as table

    return table(headers, rows)


def _exercise(args: argparse.Namespace) -> Exercise:
    return find_exercise(args.exercise, tuple(args.dir))


def _session(args: argparse.Namespace) -> tuple[Exercise, TraineeState, LabSession]:
    exercise = _exercise(args)
    state = state_of(exercise, args.trainee)
    return exercise, state, attach(state, providers.connect(), _say)


def task_text(exercise: Exercise, session: LabSession) -> str:
    return render(exercise.task_text(), facts(session), str(exercise.folder / "task.md"))


def cmd_list(args: argparse.Namespace) -> int:
    rows = [(e.id, e.section, e.title, str(e.minutes), str(len(e.objectives))) for e in all_exercises(tuple(args.dir))]
    if not rows:
        print("no exercises found")
        return 0
    print(_table(("exercise", "book", "title", "min", "objectives"), rows))
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from kvmlab.cli import _teardown_on_signal

    exercise = _exercise(args)
    begin = time.monotonic()
    with _teardown_on_signal():
        session, state = start(exercise, args.trainee, providers.connect(), _say)
    seconds = time.monotonic() - begin
    text = task_text(exercise, session)
    page = session.run_dir / "task.html"
    page.write_text(_html(exercise, text))
    how = "restored from its saved start state" if session.restored else "built (the next start of this copy restores it)"
    print(text.rstrip())
    who = f" --as {args.trainee}" if args.trainee else ""
    print(
        f"\nexercise {exercise.id} is ready in {seconds:.1f} s, {how}: lab {state.lab}, {exercise.minutes} minutes.\n"
        f"  nodes: {', '.join(n.name for n in session.lab.nodes)}   ssh: kvmlab ssh {state.lab} NODE\n"
        f"  grade: kvmlab exercise check {exercise.id}{who}   hint: kvmlab exercise hint {exercise.id} N{who}\n"
        f"  task as HTML: {page}"
    )
    return 0


def trainee_session(lab_name: str, provider: Provider) -> tuple[LabSession, str] | None:
    """The session of a trainee's running exercise lab LAB_NAME and its task page (for `kvmlab web`);
    None when LAB_NAME is no exercise's lab."""
    from kvmlab import training

    for state in training.all_states():
        if state.lab == lab_name and state.finished is None:
            session = training.attach(state, provider, log=lambda _line: None)
            exercise = state.exercise_def()
            return session, _html(exercise, task_text(exercise, session))
    return None


def _html(exercise: Exercise, text: str) -> str:
    body = markdown.markdown(text, extensions=["fenced_code", "tables"])
    title = html.escape(f"{exercise.section} {exercise.title}")
    return f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{title}</title></head>\n<body>\n{body}\n</body></html>\n"


def cmd_show(args: argparse.Namespace) -> int:
    exercise, _state, session = _session(args)
    print(task_text(exercise, session).rstrip())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    exercise, state, session = _session(args)
    graded = check(session, state)
    print(report(exercise, graded, _hints(exercise, session, lambda o: first_hint(state, o)), facts(session)))
    if not graded.passed:
        print(f"\n(the next hint for objective N: kvmlab exercise hint {exercise.id} N{' --as ' + state.trainee if state.trainee else ''})")
    return 0 if graded.passed else 1


def _hints(exercise: Exercise, session: LabSession, pick: Callable[[Objective], str]) -> Callable[[Objective], str]:
    """Hints name the trainee's own subnets and addresses: rendered like the task text."""
    values = facts(session)
    return lambda o: render(pick(o), values, f"{exercise.folder / 'exercise.yaml'}: a hint of objective {o.id}")


def cmd_hint(args: argparse.Namespace) -> int:
    exercise, state, session = _session(args)
    objective = exercise.objective(args.objective)
    number, text = next_hint(state, objective)
    print(f"hint {number} of {len(objective.hints)} for '{objective.title}':\n{_hints(exercise, session, lambda _o: text)(objective)}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    exercise, _state, session = _session(args)
    seconds = reset(session, exercise, args.stage)
    where = "its start" if args.stage == 1 else f"the start of stage {args.stage} ({exercise.stages[args.stage - 1].title})"
    print(f"exercise {exercise.id}: lab {session.lab.name} is back at {where} in {seconds:.1f} s")
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    exercise, _state, session = _session(args)
    seconds = solve(session, exercise, args.stage)
    print(f"exercise {exercise.id}: reference solution{'' if args.stage is None else f' of stage {args.stage}'} applied in {seconds:.1f} s")
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    exercise, state, session = _session(args)
    hint_of, values = _hints(exercise, session, lambda o: first_hint(state, o)), facts(session)
    graded, folder = finish(session, state)
    print(report(exercise, graded, hint_of, values))
    print(f"\nexercise {exercise.id} finished after {state.used_s() / 60:.0f} min; lab {state.lab} torn down; results: {folder}")
    return 0 if graded.passed else 1


def cmd_status(args: argparse.Namespace) -> int:
    from kvmlab.training import running_run

    states = all_states()
    if not states:
        print("no exercises started")
        return 0
    rows = []
    for s in states:
        try:
            exercise = s.exercise_def()
            stages, minutes = len(exercise.stages), exercise.minutes
        except HarnessError:
            stages, minutes = 0, 0
        running = running_run(s.lab) is not None
        where = "finished" if s.finished else ("running" if running else "lab gone")
        last = s.grades[-1] if s.grades else None
        stage = "-" if last is None else ("done" if not last["failed"] else _stage_of(s, last["failed"], stages))
        score = "-" if last is None else f"{last['score']}%"
        rows.append((s.exercise, s.trainee or "-", s.lab, where, stage, score, f"{s.used_s() / 60:.0f}/{minutes} min", str(len(s.grades))))
    print(_table(("exercise", "trainee", "lab", "state", "stage", "score", "time used", "checks"), rows))
    return 0


def _stage_of(state: TraineeState, failed: list[str], stages: int) -> str:
    try:
        exercise = state.exercise_def()
        return f"{min(exercise.stage_of(f) for f in failed)}/{stages}"
    except (HarnessError, KeyError):
        return "?"


def cmd_test(args: argparse.Namespace) -> int:
    """The three-way grader test of an exercise on a lab of its own (what CI runs for every exercise)."""
    from kvmlab.cli import _teardown_on_signal
    from kvmlab.training import prove_grader

    exercise = _exercise(args)
    lab = exercise.lab()
    session = LabSession(lab, providers.connect(), progress=_say, leave=exercise.leave)
    session.use_saved = not exercise.leave
    with _teardown_on_signal(), session:
        session.up()
        session.snapshot(START)
        proof = prove_grader(session, exercise, START, _say)
    print(", ".join(f"{k} {v:.1f} s" for k, v in proof.seconds.items()))
    problems = proof.problems()
    for line in problems:
        print(f"FAIL {line}")
    if not problems:
        print(f"exercise {exercise.id}: grader proven (start 0%, solution 100%, {len(proof.wrong)} wrong solution(s) caught)")
    return 1 if problems else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("exercise", help="graded hands-on exercises: list, start, check, hint, reset, solve, finish, status")
    cmds = ex.add_subparsers(dest="exercise_command", required=True)

    def command(name: str, fn, help_text: str, *, trainee: bool = True, exercise: bool = True) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text)
        if exercise:
            p.add_argument("exercise", help="exercise id (see `kvmlab exercise list`) or the path of an exercise folder")
        if trainee:
            p.add_argument("--as", dest="trainee", default="", metavar="NAME", help="the trainee's own copy (lab EXERCISE-NAME)")
        p.add_argument("--dir", action="append", default=[], metavar="DIR", help="another folder of exercises (also: KVMLAB_EXERCISES)")
        p.set_defaults(fn=fn)
        return p

    command("list", cmd_list, "the exercises: id, book section, title, minutes", trainee=False, exercise=False)
    command("start", cmd_start, "bring up the exercise's start state (restored in seconds once built) and print the task")
    command("show", cmd_show, "print the task text again, with the lab's addresses")
    command("check", cmd_check, "grade each objective; exits 0 only when every one passes")
    h = command("hint", cmd_hint, "the next hint for one objective")
    h.add_argument("objective", help="objective number (as `check` shows it) or id")
    r = command("reset", cmd_reset, "put the lab back to the start, or to the start of a stage")
    r.add_argument("--stage", type=int, default=1, help="the stage to go back to (default 1: the start)")
    s = command("solve", cmd_solve, "apply the reference solution (for trainers and CI)")
    s.add_argument("--stage", type=int, default=None, help="only this stage's steps")
    command("finish", cmd_finish, "grade once more, keep the results (JSON + JUnit), tear the lab down")
    command("status", cmd_status, "every trainee's exercise: state, stage, score, time used", trainee=False, exercise=False)
    command("test", cmd_test, "prove the grader: start fails all, solution passes all, each wrong one is caught", trainee=False)
