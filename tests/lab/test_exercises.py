"""The grader of every exercise kvmlab ships, proven on real labs (kvmlab exercise test does the same).

For each exercise: on its start state every objective fails; after the reference solution every
one passes; each wrong solution fails exactly the objectives it names. Exercises on one lab share
its bring-up and start from its `pristine` checkpoint, as the destructive suites do.
"""

from __future__ import annotations

import json

import pytest

from kvmlab.exercise import Exercise, all_exercises
from kvmlab.settings import artifacts_dir
from kvmlab.training import prove_grader
from kvmlab_fixtures.artifacts import collect_failure_artifacts
from kvmlab_fixtures.labs import PRISTINE, _say


def _param(exercise: Exercise):
    leave = sorted(f"{role}:{phase or ''}".rstrip(":") for role, phase in exercise.leave)
    marks = [pytest.mark.lab(str(exercise.lab_file), leave=leave)]
    return pytest.param(exercise, id=exercise.id, marks=marks)


@pytest.mark.parametrize("exercise", [_param(e) for e in all_exercises()])
def test_grader(request, lab, exercise: Exercise) -> None:
    if PRISTINE not in lab.checkpoints.names():
        lab.snapshot(PRISTINE)
    try:
        proof = prove_grader(lab, exercise, PRISTINE, _say)
        problems = proof.problems()
        if problems:
            collect_failure_artifacts(request.node)
    except BaseException:
        collect_failure_artifacts(request.node)  # the lab as the failing step left it, before the revert
        raise
    finally:
        lab.revert(PRISTINE)  # the lab's other tests expect it as it came up
    times = ", ".join(f"{k} {v:.1f} s" for k, v in proof.seconds.items())
    _say(f"exercise {exercise.id}: {times}; start {proof.start_grade.score}%, solved {proof.solved_grade.score}%, {len(proof.wrong)} wrong")
    out = artifacts_dir() / "exercise-times.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps({"exercise": exercise.id, **{k: round(v, 1) for k, v in proof.seconds.items()}}) + "\n")
    assert not problems, "\n".join(problems)
