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
from kvmlab_fixtures.labs import PRISTINE, _say

# Proven by `make test-slow`, not in `make test`, for CI's time: the two migration exercises
# need the nested-guest migration lab, built for them alone, and Ceph's proof is the longest
# (250 s on top of the Ceph lab; with it, a fresh-machine CI ran 60.7 minutes). The others ride
# on labs the suites build anyway (seconds per proof in that CI run: Gluster 138, NFS 114,
# iSCSI 113, console 80, virt-tools 79, multipath 64, RAID 64, default pool 52, volumes 52).
SLOW = {"ch5-ceph", "ch7-live-migration", "ch7-offline-migrate"}


def _param(exercise: Exercise):
    leave = sorted(f"{role}:{phase or ''}".rstrip(":") for role, phase in exercise.leave)
    marks = [pytest.mark.lab(str(exercise.lab_file), leave=leave), *([pytest.mark.slow] if exercise.id in SLOW else [])]
    return pytest.param(exercise, id=exercise.id, marks=marks)


@pytest.mark.parametrize("exercise", [_param(e) for e in all_exercises()])
def test_grader(lab, exercise: Exercise) -> None:
    if PRISTINE not in lab.checkpoints.names():
        lab.snapshot(PRISTINE)
    try:
        proof = prove_grader(lab, exercise, PRISTINE, _say)
    finally:
        lab.revert(PRISTINE)  # the lab's other tests expect it as it came up
    times = ", ".join(f"{k} {v:.1f} s" for k, v in proof.seconds.items())
    _say(f"exercise {exercise.id}: {times}; start {proof.start_grade.score}%, solved {proof.solved_grade.score}%, {len(proof.wrong)} wrong")
    out = artifacts_dir() / "exercise-times.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps({"exercise": exercise.id, **{k: round(v, 1) for k, v in proof.seconds.items()}}) + "\n")
    problems = proof.problems()
    assert not problems, "\n".join(problems)
