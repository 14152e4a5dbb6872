"""Exercises without VMs: every shipped exercise loads; bad exercise files fail at their line; grading,
scores, hints and the grader proof's verdicts; role steps left out of a bring-up."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab.errors import HarnessError, LabFileError
from kvmlab.exercise import all_exercises, builtin_labs_dir, find_exercise, load_exercise
from kvmlab.grading import Grade, ObjectiveResult, facts, grade, render, report
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.remote import Result
from kvmlab.training import PROOF_START, GraderProof, TraineeState, lab_name, next_hint, prove_grader, start_key

LAB = builtin_labs_dir() / "smoke.yaml"

GOOD = """\
title: A small exercise
section: "5.3"
minutes: 10
lab: {lab}
start:
  leave: [nfs-server]
stages:
  - title: One
    objectives:
      - id: exported
        title: exported
        weight: 3
        check: nfs-server::exports-published
        hints: [first hint, "second hint on {{{{ net.storage }}}}"]
      - id: file
        title: a file
        node: nfs1
        run: test -f /srv/done
        hints: [make it]
solution:
  - {{stage: 1, node: nfs1, run: touch /srv/done}}
wrong:
  - title: no file
    steps: [{{node: nfs1, run: "true"}}]
    fails: [file]
"""


def write(tmp_path: Path, text: str, name: str = "ex1", task: bool = True) -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "exercise.yaml").write_text(text)
    if task:
        (folder / "task.md").write_text("# Task\n\nOn {{ net.storage }}.\n")
    return folder


def test_every_shipped_exercise_loads_with_a_wrong_solution_and_a_step_per_stage():
    exercises = all_exercises()
    assert len(exercises) >= 12
    sections = [e.section for e in exercises]
    assert sections == sorted(sections, key=lambda s: [int(x) for x in s.replace("/", ".").split(".")])
    for e in exercises:
        assert e.wrong, f"{e.id} has no wrong solution for the grader test"
        assert {s.stage for s in e.solution} == set(range(1, len(e.stages) + 1)), e.id
        assert e.task_text().strip(), e.id
        for bad in e.wrong:
            assert set(bad.fails) < {o.id for o in e.objectives}, f"{e.id}: '{bad.title}' fails every objective: it proves nothing"


def test_a_good_exercise_reads_into_its_parts(tmp_path):
    ex = load_exercise(write(tmp_path, GOOD.format(lab=LAB)))
    assert (ex.id, ex.section, ex.minutes, ex.lab_file) == ("ex1", "5.3", 10, LAB)
    assert ex.leave == frozenset({("nfs-server", None)})
    assert [o.id for o in ex.objectives] == ["exported", "file"]
    assert ex.objective("2").id == "file" and ex.objective("exported").weight == 3
    with pytest.raises(HarnessError, match=r"no objective 'three'"):
        ex.objective("three")
    assert find_exercise(str(tmp_path / "ex1")).id == "ex1"
    assert find_exercise("ex1", (str(tmp_path),)).folder == (tmp_path / "ex1").resolve()


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("check: nfs-server::exports-published", "check: nfs-server::exported"), 13, "unknown role check 'nfs-server::exported'"),
        (("node: nfs1\n        run: test", "node: nfs9\n        run: test"), 17, "node 'nfs9' is not a node of the lab (nfs1, hv1)"),
        (("- id: file", "- id: exported"), 15, "objective id 'exported' is used twice"),
        (("fails: [file]", "fails: [fil]"), 25, "unknown objective 'fil' in fails"),
        (("leave: [nfs-server]", "leave: [gluster]"), 6, "start.leave names role 'gluster', which no node of the lab has"),
        (("leave: [nfs-server]", "leave: ['nfs-server:boot']"), 6, "'boot' is not a phase of role steps"),
        (("{stage: 1,", "{stage: 2,"), 21, "stage 2 is out of range: use 1 to 1"),
        (("lab: ", "lab: nolab #"), 4, "lab 'nolab' is neither a file"),
        (('section: "5.3"', "section: five"), 2, "section 'five' is not a book section"),
        (("        hints: [make it]\n", ""), 15, "objective 'file' has no hints"),
        (("minutes: 10", "minutes: 10\ncolour: red"), 4, "colour"),
    ],
)
def test_a_bad_exercise_fails_at_its_line(tmp_path, change, line, message):
    text = GOOD.format(lab=LAB).replace(*change)
    assert text != GOOD.format(lab=LAB)
    with pytest.raises(LabFileError) as err:
        load_exercise(write(tmp_path, text))
    assert err.value.line == line, str(err.value)
    assert message in str(err.value)


def test_an_exercise_without_a_task_text_says_where_it_belongs(tmp_path):
    with pytest.raises(LabFileError, match=r"no task\.md beside exercise\.yaml"):
        load_exercise(write(tmp_path, GOOD.format(lab=LAB), task=False))


def test_an_exercise_id_must_fit_a_lab_name(tmp_path):
    with pytest.raises(LabFileError, match="not a valid id"):
        load_exercise(write(tmp_path, GOOD.format(lab=LAB), name="Exercise_One"))


class FakeNode:
    def __init__(self, files: set[str]) -> None:
        self.files = files
        self.remote = self
        self.calls: list[str] = []

    def run(self, command: str, timeout: float = 600.0) -> Result:
        self.calls.append(command)
        if command.startswith("rm -f "):
            self.files.discard(command.split()[-1])
            return Result(0, "", "")
        if command.startswith("test -f "):
            ok = command.split()[-1] in self.files
            return Result(0 if ok else 1, "", "" if ok else f"{command.split()[-1]}: no such file")
        if command.startswith("touch "):
            self.files.add(command.split()[-1])
            return Result(0, "", "")
        return Result(0, "", "")


def fake_session(files: set[str]):
    lab = load_lab(LAB)
    import ipaddress

    placement = Placement("abc123", {"mgmt": ipaddress.ip_network("10.9.0.0/24"), "storage": ipaddress.ip_network("10.9.1.0/24")})
    node = FakeNode(files)
    return SimpleNamespace(lab=lab, placement=placement, node=lambda _name: node, log=lambda _l: None)


def test_grading_a_command_objective_scores_by_weight_and_says_what_it_saw(tmp_path):
    text = GOOD.format(lab=LAB).replace("check: nfs-server::exports-published", "node: nfs1\n        run: test -f /srv/exported")
    ex = load_exercise(write(tmp_path, text))
    session = fake_session({"/srv/exported"})
    graded = grade(session, ex)
    assert [r.passed for r in graded.results] == [True, False]
    assert graded.score == 75 and not graded.passed and graded.stage() == 1 and graded.failed_ids == ("file",)
    shown = report(ex, graded, lambda o: o.hints[0], facts(session))
    assert "[FAIL] 2. a file" in shown and "seen: /srv/done: no such file" in shown and "hint: make it" in shown
    assert "score: 75% (3 of 4 points; 1 of 2 objectives)" in shown
    session.node("nfs1").files.add("/srv/done")
    assert grade(session, ex).score == 100


def test_facts_fill_in_commands_and_unknown_names_say_where(tmp_path):
    values = facts(fake_session(set()))
    assert render("{{ net.storage }} {{ addr.hv1.mgmt }} {{ host.mgmt }}", values, "here") == "10.9.1.0/24 10.9.0.11 10.9.0.1"
    with pytest.raises(HarnessError, match=r"exercise.yaml:7: 'dict object' has no attribute 'storag'"):
        render("{{ net.storag }}", values, "exercise.yaml:7")


def test_hints_come_one_after_another_and_stop_at_the_last(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_STATE", str(tmp_path / "state"))
    ex = load_exercise(write(tmp_path, GOOD.format(lab=LAB)))
    state = TraineeState("ex1", str(ex.folder), "ann", "ex1-ann", "r1", 0.0, [])
    objective = ex.objective("exported")
    assert [next_hint(state, objective)[0] for _ in range(3)] == [1, 2, 2]
    assert TraineeState.load(state.path).hints == {"exported": 2}


def test_trainee_copies_have_their_own_lab_names(tmp_path):
    ex = load_exercise(write(tmp_path, GOOD.format(lab=LAB)))
    assert (lab_name(ex, ""), lab_name(ex, "bob")) == ("ex1", "ex1-bob")
    with pytest.raises(HarnessError, match="trainee name 'Bob Smith' is not valid"):
        lab_name(ex, "Bob Smith")
    other = load_exercise(write(tmp_path, GOOD.format(lab=LAB).replace("touch /srv/done", "touch /srv/other"), name="ex2"))
    assert start_key(ex) == start_key(other)  # the solution is not part of the start state
    started = load_exercise(
        write(tmp_path, GOOD.format(lab=LAB).replace("leave: [nfs-server]", "run: [{node: nfs1, run: 'true'}]"), name="ex3")
    )
    assert start_key(started) != start_key(ex)


def _grade(passed: dict[str, bool]) -> Grade:
    obj = lambda oid: SimpleNamespace(id=oid, weight=1, title=oid)  # noqa: E731
    return Grade(tuple(ObjectiveResult(obj(k), 1, v, 0.1, "" if v else "nope") for k, v in passed.items()), 0.2)


def test_the_grader_proof_names_what_went_wrong():
    good = GraderProof(
        "ex", _grade({"a": False, "b": False}), _grade({"a": True, "b": True}), (("w", _grade({"a": True, "b": False}), ("b",)),), {}
    )
    assert good.problems() == []
    noop = GraderProof("ex", _grade({"a": True, "b": False}), _grade({"a": True, "b": True}), (), {})
    assert noop.problems() == ["ex: on the start state these objectives already pass: a"]
    unsolved = GraderProof("ex", _grade({"a": False}), _grade({"a": False}), (), {})
    assert unsolved.problems() == ["ex: after the reference solution these objectives fail: a (seen: nope)"]
    missed = GraderProof(
        "ex", _grade({"a": False, "b": False}), _grade({"a": True, "b": True}), (("w", _grade({"a": True, "b": True}), ("b",)),), {}
    )
    assert missed.problems() == ["ex: wrong solution 'w' should fail exactly b, but failed nothing"]


def test_role_steps_left_out_of_a_bring_up(provider):
    lab = load_lab(builtin_labs_dir() / "iscsi.yaml")
    hv = lab.node("hv1")
    whole = LabSession(lab, provider)
    assert [role for role, _ in whole._units(hv, "clients")] == ["hypervisor", "iscsi-target"]
    assert [role for role, _ in whole._units(lab.node("iscsi1"), "setup")] == ["iscsi-target"]
    left = LabSession(lab, provider, leave=frozenset({("iscsi-target", None)}))
    assert [role for role, _ in left._units(hv, "clients")] == ["hypervisor"]  # its step on the hypervisor goes too
    assert left._units(lab.node("iscsi1"), "setup") == []
    one_phase = LabSession(lab, provider, leave=frozenset({("hypervisor", "clients")}))
    assert [role for role, _ in one_phase._units(hv, "clients")] == ["iscsi-target"]
    assert [role for role, _ in one_phase._units(hv, "setup")] == ["hypervisor"]


class CheckpointedFake:
    """A one-node lab whose state is a set of files, with checkpoints; it records what a proof does."""

    def __init__(self) -> None:
        self.node_ = FakeNode({"/srv/left-over"})
        self.saved: dict[str, set[str]] = {"pristine": {"/srv/left-over"}}
        self.calls = self.node_.calls  # the node's commands and the lab's checkpoints, in order
        session = fake_session(set())
        self.lab, self.placement, self.log = session.lab, session.placement, session.log

    def node(self, _name: str) -> FakeNode:
        return self.node_

    def snapshot(self, name: str) -> float:
        self.calls.append(f"snapshot {name}")
        self.saved[name] = set(self.node_.files)
        return 0.0

    def revert(self, name: str) -> float:
        self.calls.append(f"revert {name}")
        self.node_.files = set(self.saved[name])
        return 0.0


PROVEN = """\
title: Two files
section: "5.3"
minutes: 5
lab: {lab}
start:
  run: [{{node: nfs1, run: rm -f /srv/left-over}}]
stages:
  - title: One
    objectives:
      - {{id: a, title: file a, node: nfs1, run: test -f /srv/a, hints: [make a]}}
      - {{id: b, title: file b, node: nfs1, run: test -f /srv/b, hints: [make b]}}
solution:
  - {{stage: 1, node: nfs1, run: touch /srv/a}}
  - {{stage: 1, node: nfs1, run: touch /srv/b}}
wrong:
  - {{title: only a, steps: [{{node: nfs1, run: touch /srv/a}}], fails: [b]}}
  - {{title: only b, steps: [{{node: nfs1, run: touch /srv/b}}], fails: [a]}}
"""


def test_a_grader_proof_starts_each_wrong_solution_from_a_checkpoint_of_the_start_state(tmp_path):
    ex = load_exercise(write(tmp_path, PROVEN.format(lab=LAB)))
    lab = CheckpointedFake()
    proof = prove_grader(lab, ex, "pristine", lambda _l: None)
    assert proof.problems() == []
    assert lab.calls.count("rm -f /srv/left-over") == 1  # the start commands ran once
    assert [c for c in lab.calls if c.split()[0] in ("snapshot", "revert")] == [
        "revert pristine",
        f"snapshot {PROOF_START}",
        f"revert {PROOF_START}",
        f"revert {PROOF_START}",
    ]
    assert "/srv/left-over" not in lab.saved[PROOF_START] and "/srv/a" not in lab.saved[PROOF_START]
