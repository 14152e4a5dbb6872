#!/usr/bin/env python3
"""Benchmark the exercises as a trainee meets them: start, check, solve, check, reset, finish, start again.

    python bench/exercises.py [EXERCISE ...]     # default: every exercise kvmlab ships

For each exercise, with a trainee copy of its own (`--as bench`): the first start (built, or
restored if this host saved it before), a check of the start state, the reference solution,
a check of the solved state, a reset to the start, finish; then a second start (restored
from the saved start state) and finish. Prints one table, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time

from lab_up import interruptible, print_table

from kvmlab.exercise import all_exercises, find_exercise
from kvmlab.providers import connect
from kvmlab.training import check, finish, reset, solve, start

TRAINEE = "bench"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def one(exercise_id: str) -> dict[str, str]:
    exercise = find_exercise(exercise_id)
    provider = connect()
    t = time.monotonic()
    session, state = start(exercise, TRAINEE, provider, say)
    first = f"{time.monotonic() - t:.1f} s ({'restored' if session.restored else 'built'})"
    try:
        at_start = check(session, state)
        solve_s = solve(session, exercise)
        solved = check(session, state)
        t = time.monotonic()
        reset(session, exercise)
        reset_s = time.monotonic() - t
    finally:
        finish(session, state)
    t = time.monotonic()
    session, state = start(exercise, TRAINEE, provider, say)
    again = f"{time.monotonic() - t:.1f} s ({'restored' if session.restored else 'built'})"
    finish(session, state)
    return {
        "first start": first,
        "start again": again,
        "check": f"{at_start.seconds:.1f} s ({at_start.score}%) / {solved.seconds:.1f} s ({solved.score}%)",
        "solve": f"{solve_s:.1f} s",
        "reset": f"{reset_s:.1f} s",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exercises", nargs="*", help="exercise ids (default: all)")
    ids = parser.parse_args().exercises or [e.id for e in all_exercises()]
    rows = []
    for exercise_id in ids:
        figures = one(exercise_id)
        rows.append((exercise_id, "  ".join(f"{k} {v}" for k, v in figures.items())))
    print_table("exercises (first start, start again, check at start / solved, solve, reset)", rows)
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
