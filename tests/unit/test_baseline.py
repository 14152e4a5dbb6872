"""Comparing a run's results with a baseline (kvmlab/baseline.py): pure functions over results files' runs."""

from __future__ import annotations

from typing import Any

from kvmlab.baseline import (
    CHANGED,
    FIXED,
    GONE,
    MACHINE,
    NEW,
    REGRESSION,
    SLOWER,
    UNMATCHED,
    VALUE,
    Change,
    compare,
    regressed,
    report,
    value_changes,
)


def run(lab: str = "store", checks: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "lab": lab,
        "variant": None,
        "machine": {"cores": 2, "accelerator": "tcg", "host": "ci"},
        "bring_up": {"how": "built", "seconds": 300.0, "restored": False},
        "bring_up_failures": [],
        "error": "",
        "checks": checks if checks is not None else [],
        **extra,
    }


def check(name: str, result: str = "pass", seconds: float = 1.0, message: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "result": result, "seconds": seconds, "message": message, **extra}


def kinds(changes: list[Change]) -> list[tuple[str, str, str]]:
    return [(c.kind, c.lab, c.check) for c in changes]


def test_the_same_results_are_no_change():
    same = [run(checks=[check("a::x"), check("a::y", "FAIL", message="no")])]
    assert compare(same, same) == []


def test_a_check_that_passed_and_fails_now_is_a_regression():
    changes = compare([run(checks=[check("a::x")])], [run(checks=[check("a::x", "FAIL", message="pool down\nmore")])])
    assert changes == [Change("store", "a::x", REGRESSION, "passed before, FAIL now: pool down")]
    assert regressed(changes)


def test_an_error_counts_as_failing():
    changes = compare([run(checks=[check("a::x")])], [run(checks=[check("a::x", "ERROR", message="ssh timed out")])])
    assert kinds(changes) == [(REGRESSION, "store", "a::x")]


def test_a_check_that_failed_and_passes_now_is_fixed():
    changes = compare([run(checks=[check("a::x", "FAIL")])], [run(checks=[check("a::x")])])
    assert changes == [Change("store", "a::x", FIXED, "FAIL before, passes now")]
    assert not regressed(changes)


def test_failing_differently_is_a_change_but_no_regression():
    changes = compare([run(checks=[check("a::x", "FAIL")])], [run(checks=[check("a::x", "ERROR", message="boom")])])
    assert changes == [Change("store", "a::x", CHANGED, "FAIL before, ERROR now: boom")]
    assert not regressed(changes)


def test_new_and_gone_checks():
    changes = compare([run(checks=[check("a::old")])], [run(checks=[check("a::new", "FAIL")])])
    assert changes == [
        Change("store", "a::new", NEW, "new check: FAIL"),
        Change("store", "a::old", GONE, "not run this time (was pass)"),
    ]
    assert not regressed(changes)


def test_slower_needs_twice_the_time_and_a_second_more():
    def slower(before: float, after: float) -> bool:
        return any(
            c.kind == SLOWER for c in compare([run(checks=[check("a::x", seconds=before)])], [run(checks=[check("a::x", seconds=after)])])
        )

    assert slower(2.0, 4.5)
    assert not slower(2.0, 4.0)  # exactly twice is not more than twice
    assert not slower(0.2, 0.9)  # 4.5x, but under a second more: noise
    assert not slower(10.0, 19.0)  # 9 s more, but not twice
    assert slower(0.0, 1.5)
    (change,) = compare([run(checks=[check("a::x", seconds=3.0)])], [run(checks=[check("a::x", seconds=9.5)])])
    assert change == Change("store", "a::x", SLOWER, "3.0 s before, 9.5 s now (3.2x)")


def test_read_back_values_that_changed():
    before = [run(checks=[check("ceph::conf", values={"osd_pool_default_size": 3, "mon_warn": "on", "gone": 1})])]
    after = [run(checks=[check("ceph::conf", values={"osd_pool_default_size": 2, "mon_warn": "on", "new": [1, 2]})])]
    assert [c.detail for c in compare(before, after) if c.kind == VALUE] == [
        "osd_pool_default_size: 3 -> 2",
        "gone: 1 -> (not read)",
        "new: (not read) -> [1, 2]",
    ]


def test_values_are_compared_only_when_both_runs_read_them():
    assert value_changes(None, {"a": 1}) == []
    assert value_changes({"a": 1}, None) == []
    assert value_changes({"a": {"x": 1}}, {"a": {"x": 1}}) == []
    assert value_changes({"a": "x" * 100}, {"a": "y"}) == [f"a: {'x' * 57}... -> y"]


def test_labs_are_matched_by_name_and_a_lab_the_baseline_lacks_is_said():
    before = [run("store", [check("a::x")]), run("store-arbiter", [check("a::x")])]
    after = [run("store-arbiter", [check("a::x", "FAIL")]), run("store-disperse", [check("a::x")])]
    assert kinds(compare(before, after)) == [(REGRESSION, "store-arbiter", "a::x"), (UNMATCHED, "store-disperse", "")]


def test_labs_of_the_baseline_not_run_now_are_left_out():
    before = [run("store", [check("a::x")]), run("store-arbiter", [check("a::x")])]
    assert compare(before, [run("store-arbiter", [check("a::x")])]) == []


def test_a_lab_that_no_longer_comes_up_regresses_without_a_change_per_check():
    before = [run(checks=[check("a::x"), check("a::y")])]
    after = [run(checks=[], error="node hv1 did not answer SSH in 300 s\n(console tail)", bring_up={"how": "failed", "seconds": None})]
    assert compare(before, after) == [
        Change("store", "", REGRESSION, "was checked before, fails now: node hv1 did not answer SSH in 300 s")
    ]
    assert kinds(compare(after, before)) == [(FIXED, "store", "")]


def test_failed_role_steps_of_the_bring_up():
    before = [run(checks=[check("a::x")])]
    after = [run(checks=[check("a::x")], bring_up_failures=["gluster join on gluster2: peer probe failed", "another"])]
    assert compare(before, after) == [
        Change("store", "", REGRESSION, "2 role step(s) of the bring-up fail now: gluster join on gluster2: peer probe failed")
    ]
    assert kinds(compare(after, before)) == [(FIXED, "store", "")]


def test_another_kind_of_machine_is_noted():
    kvm = run(checks=[check("a::x", seconds=1.0)], machine={"cores": 8, "accelerator": "kvm", "host": "big"})
    (change,) = compare([kvm], [run(checks=[check("a::x", seconds=1.2)])])
    assert change == Change("store", "", MACHINE, "the baseline ran on 8 cores, KVM, this run on 2 cores, TCG: times compare poorly")
    same_kind = run(checks=[check("a::x", seconds=1.0)], machine={"cores": 2, "accelerator": "tcg", "host": "other"})
    assert compare([same_kind], [run(checks=[check("a::x", seconds=1.0)])]) == []  # another host of the same kind


def test_report_puts_regressions_first():
    changes = [
        Change("store", "a::x", SLOWER, "1.0 s before, 3.0 s now (3.0x)"),
        Change("store-arbiter", "a::y", REGRESSION, "passed before, FAIL now: gone"),
        Change("store", "a::z", FIXED, "FAIL before, passes now"),
    ]
    assert report(changes, "results/before/results-1.json", 2) == (
        "against the baseline results/before/results-1.json (2 lab(s) compared): 3 change(s), 1 regression(s)\n"
        "change      lab            check  what\n"
        "----------  -------------  -----  ------------------------------\n"
        "REGRESSION  store-arbiter  a::y   passed before, FAIL now: gone\n"
        "fixed       store          a::z   FAIL before, passes now\n"
        "slower      store          a::x   1.0 s before, 3.0 s now (3.0x)"
    )


def test_report_of_no_changes():
    assert report([], "b.json", 1) == "against the baseline b.json (1 lab(s) compared): no changes"
