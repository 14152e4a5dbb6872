"""The command line of variants, `kvmlab matrix` and `--baseline`, with the bring-up and checks of each lab
replaced by canned results (no VMs): which labs run, in which order, what is printed and written, the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvmlab import cli, results
from kvmlab.errors import HarnessError, Interrupted
from kvmlab.loader import load_lab

LAB = """\
name: g
nodes:
  gluster1: {roles: [gluster], disks: {brick: 1G}}
  gluster2: {roles: [gluster], disks: {brick: 1G}}
  gluster3: {roles: [gluster], disks: {brick: 1G}}
variants:
  arbiter: {roles: {gluster: {arbiter: 1}}}
  big: {nodes: {gluster1: {memory: 1G}}}
"""


@pytest.fixture
def lab_path(tmp_path: Path) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(LAB)
    return path


class FakeRuns:
    """Stands in for cli._verify_lab: records each call, answers with a run entry whose checks pass unless told."""

    def __init__(self, failing: dict[str, str] | None = None, seconds: float = 1.0) -> None:
        self.calls: list[tuple[str, str | None, bool]] = []
        self.failing = failing or {}
        self.seconds = seconds

    def __call__(self, lab: Any, args: Any, junit: str | None, tear_down: bool) -> dict[str, Any]:
        self.calls.append((lab.name, junit, tear_down))
        result = self.failing.get(lab.name, "pass")
        return {
            "lab": lab.name,
            "variant": lab.variant or None,
            "machine": {"cores": 2, "accelerator": "tcg", "host": "test"},
            "bring_up": {"how": "built", "seconds": 300.0, "restored": False},
            "bring_up_failures": [],
            "error": "",
            "checks": [{"name": "gluster::volume-type", "result": result, "seconds": self.seconds, "message": ""}],
        }


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    runs = FakeRuns()
    monkeypatch.setattr(cli, "_verify_lab", runs)
    return runs


# -- arguments --------------------------------------------------------------------------------------


def test_verify_takes_variants_and_a_baseline():
    args = cli.parser().parse_args(["verify", "g.yaml", "--variant", "arbiter", "--variant", "base", "--baseline", "old/"])
    assert (args.fn, args.variant, args.baseline, args.check) == (cli.cmd_verify, ["arbiter", "base"], "old/", [])
    assert cli.parser().parse_args(["verify", "g.yaml"]).variant is None


def test_matrix_arguments_and_defaults():
    args = cli.parser().parse_args(["matrix", "g.yaml"])
    assert (args.fn, args.variant, args.junit_dir, args.baseline, args.check, args.rebuild, args.cold_boot) == (
        cli.cmd_matrix,
        None,
        None,
        None,
        [],
        False,
        False,
    )
    args = cli.parser().parse_args(["matrix", "g.yaml", "--variant", "big", "--junit-dir", "out", "--baseline", "b.json", "--rebuild"])
    assert (args.variant, args.junit_dir, args.baseline, args.rebuild) == (["big"], "out", "b.json", True)


def test_up_takes_one_variant():
    assert cli.parser().parse_args(["up", "g.yaml", "--variant", "big"]).variant == "big"
    assert cli.parser().parse_args(["up", "g.yaml"]).variant is None


def test_junit_file_per_lab_only_with_several(lab_path):
    lab = load_lab(lab_path, "arbiter")
    assert cli._junit_file(None, lab, several=True) is None
    assert cli._junit_file("out/r.xml", lab, several=False) == "out/r.xml"
    assert cli._junit_file("out/r.xml", lab, several=True) == "out/r-g-arbiter.xml"


# -- which labs run ---------------------------------------------------------------------------------


def test_verify_without_variants_runs_the_file_s_own_lab_and_keeps_it(lab_path, fake):
    assert cli.main(["verify", str(lab_path), "--junit", "r.xml"]) == 0
    assert fake.calls == [("g", "r.xml", False)]


def test_verify_a_variant_runs_only_it(lab_path, fake):
    assert cli.main(["verify", str(lab_path), "--variant", "big"]) == 0
    assert fake.calls == [("g-big", None, False)]


def test_verify_all_and_base_run_one_after_another_and_tear_down(lab_path, fake):
    assert cli.main(["verify", str(lab_path), "--variant", "base", "--variant", "all", "--junit", "out/r.xml"]) == 0
    assert fake.calls == [
        ("g", "out/r-g.xml", True),
        ("g-arbiter", "out/r-g-arbiter.xml", True),
        ("g-big", "out/r-g-big.xml", True),
    ]


def test_verify_fails_when_a_variant_fails(lab_path, monkeypatch):
    monkeypatch.setattr(cli, "_verify_lab", FakeRuns(failing={"g-big": "FAIL"}))
    assert cli.main(["verify", str(lab_path), "--variant", "all"]) == 1


def test_an_unknown_variant_fails_before_any_lab_comes_up(lab_path, fake, capsys):
    assert cli.main(["verify", str(lab_path), "--variant", "arbitre"]) == 1
    assert fake.calls == []
    err = capsys.readouterr().err
    assert err.strip().endswith("g.yaml:6:1: unknown variant 'arbitre' (known: arbiter, big, base, all); did you mean 'arbiter'?"), err


def test_a_wrong_check_fails_before_any_lab_comes_up(lab_path, fake, capsys):
    assert cli.main(["verify", str(lab_path), "--variant", "all", "--check", "glustr"]) == 1
    assert fake.calls == []
    assert "no check 'glustr' applies to lab g-arbiter" in capsys.readouterr().err


def test_a_missing_baseline_fails_before_any_lab_comes_up(lab_path, fake, tmp_path, capsys):
    assert cli.main(["verify", str(lab_path), "--baseline", str(tmp_path / "nope.json")]) == 1
    assert fake.calls == []
    assert "cannot read results file" in capsys.readouterr().err


def test_up_refuses_all_when_it_is_several_labs(lab_path, capsys):
    assert cli.main(["up", str(lab_path), "--variant", "all"]) == 1
    assert "g.yaml:6:1: 'all' is 2 labs here: name one variant" in capsys.readouterr().err


# -- the matrix -------------------------------------------------------------------------------------


def test_matrix_runs_base_and_every_variant_and_writes_junit_and_results(lab_path, fake, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["matrix", str(lab_path), "--junit-dir", str(out)]) == 0
    assert fake.calls == [(name, str(out / f"{name}.xml"), True) for name in ("g", "g-arbiter", "g-big")]
    printed = capsys.readouterr().out
    assert "check                 base         arbiter      big\n" in printed
    assert "gluster::volume-type  pass 1.0     pass 1.0     pass 1.0\n" in printed
    assert "3 lab(s) of the matrix: every check passed" in printed
    (written,) = out.glob("results-*.json")
    assert [run["lab"] for run in json.loads(written.read_text())["runs"]] == ["g", "g-arbiter", "g-big"]


def test_matrix_of_some_variants_and_its_default_folder(lab_path, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_ARTIFACTS", str(tmp_path / "artifacts"))
    assert cli.main(["matrix", str(lab_path), "--variant", "big"]) == 0
    ((name, junit, tear_down),) = fake.calls
    assert (name, tear_down) == ("g-big", False)
    assert Path(junit).parent.name.startswith("matrix-g-") and Path(junit).parent.parent == tmp_path / "artifacts"


def test_matrix_fails_when_a_check_fails(lab_path, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_verify_lab", FakeRuns(failing={"g-arbiter": "FAIL"}))
    assert cli.main(["matrix", str(lab_path), "--junit-dir", str(tmp_path)]) == 1
    assert "1 with failures (arbiter)" in capsys.readouterr().out


def test_matrix_against_a_baseline_fails_on_a_regression(lab_path, monkeypatch, tmp_path, capsys):
    before = tmp_path / "before"
    monkeypatch.setattr(cli, "_verify_lab", FakeRuns())
    assert cli.main(["matrix", str(lab_path), "--junit-dir", str(before)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(cli, "_verify_lab", FakeRuns(failing={"g-big": "FAIL"}, seconds=3.5))
    assert cli.main(["matrix", str(lab_path), "--junit-dir", str(tmp_path / "after"), "--baseline", str(before)]) == 1
    printed = capsys.readouterr().out
    assert "(3 lab(s) compared): 4 change(s), 1 regression(s)" in printed
    assert "REGRESSION  g-big      gluster::volume-type  passed before, FAIL now\n" in printed
    assert "slower      g          gluster::volume-type  1.0 s before, 3.5 s now (3.5x)" in printed


def test_verify_against_its_own_baseline_has_no_changes(lab_path, fake, tmp_path, capsys):
    baseline = results.write(tmp_path / "b" / results.file_name(), [fake(load_lab(lab_path), None, None, False)])
    fake.calls.clear()
    assert cli.main(["verify", str(lab_path), "--baseline", str(baseline)]) == 0
    assert f"against the baseline {baseline} (1 lab(s) compared): no changes" in capsys.readouterr().out


# -- a lab that does not come up --------------------------------------------------------------------


class FakeSession:
    """What _verify_lab uses of a LabSession, with a bring-up that fails for the labs in FAILS."""

    def __init__(self, lab: Any) -> None:
        self.lab, self.run_id, self.accel = lab, f"run-{lab.name}", "tcg"
        self.restored, self.phase_s, self.step_failures = False, {"image": 0.5, "nodes": 200.0}, []
        self.downs = 0

    def down(self) -> None:
        self.downs += 1


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[FakeSession]:
    made: list[FakeSession] = []

    def new_session(lab: Any, keep_going: bool, cold_boot: bool, hosts: str | None = None) -> FakeSession:
        made.append(FakeSession(lab))
        return made[-1]

    monkeypatch.setenv("KVMLAB_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(cli, "_runs_of", lambda _name: [])
    monkeypatch.setattr(cli, "_new_session", new_session)
    monkeypatch.setattr(cli, "_print_up", lambda _session: None)
    monkeypatch.setattr(cli, "_verify", lambda session, _names, _junit, started: results.of_run(session, [], started))
    return made


def test_a_lab_that_fails_to_come_up_is_recorded_and_the_matrix_goes_on(lab_path, sessions, monkeypatch, tmp_path, capsys):
    def bring_up(session: FakeSession, _rebuild: bool) -> FakeSession:
        if session.lab.variant == "arbiter":
            raise HarnessError("node gluster1 did not answer SSH")
        return session

    monkeypatch.setattr(cli, "_bring_up", bring_up)
    out = tmp_path / "out"
    assert cli.main(["matrix", str(lab_path), "--junit-dir", str(out)]) == 1
    assert [(s.lab.name, s.downs) for s in sessions] == [("g", 1), ("g-arbiter", 1), ("g-big", 1)]
    (written,) = out.glob("results-*.json")
    runs = json.loads(written.read_text())["runs"]
    assert [(r["lab"], r["bring_up"]["how"], r["error"]) for r in runs] == [
        ("g", "built", ""),
        ("g-arbiter", "failed", "node gluster1 did not answer SSH"),
        ("g-big", "built", ""),
    ]
    assert "bring-up" in (out / "g-arbiter.xml").read_text()
    (own,) = (tmp_path / "artifacts" / "run-g-arbiter").glob("results-*.json")  # beside the run's other artifacts
    assert json.loads(own.read_text())["runs"] == [runs[1]]
    assert "kvmlab: node gluster1 did not answer SSH" in capsys.readouterr().err


def test_an_interrupt_stops_the_matrix(lab_path, sessions, monkeypatch, tmp_path):
    def bring_up(session: FakeSession, _rebuild: bool) -> FakeSession:
        raise Interrupted("SIGTERM")

    monkeypatch.setattr(cli, "_bring_up", bring_up)
    assert cli.main(["matrix", str(lab_path), "--junit-dir", str(tmp_path / "out")]) == 1
    assert [(s.lab.name, s.downs) for s in sessions] == [("g", 1)]


def test_a_single_lab_is_left_up(lab_path, sessions, monkeypatch):
    monkeypatch.setattr(cli, "_bring_up", lambda session, _rebuild: session)
    assert cli.main(["verify", str(lab_path), "--variant", "big"]) == 0
    assert [(s.lab.name, s.downs) for s in sessions] == [("g-big", 0)]


# -- releases -----------------------------------------------------------------------------------------


def test_release_on_the_command_line_makes_a_lab_of_its_own(lab_path, fake):
    assert cli.main(["verify", str(lab_path), "--release", "trixie"]) == 0
    assert cli.main(["matrix", str(lab_path), "--variant", "big", "--release", "trixie"]) == 0
    assert cli.main(["verify", str(lab_path), "--release", "bookworm"]) == 0  # its file's own release: the same lab
    assert [name for name, _, _ in fake.calls] == ["g-trixie", "g-big-trixie", "g"]
    assert cli._on_release(load_lab(lab_path), "trixie").release == "trixie"


def test_an_unknown_release_and_a_name_too_long_for_it_are_refused(lab_path, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["up", str(lab_path), "--release", "sid"])
    assert "argument --release: invalid choice: 'sid'" in capsys.readouterr().err
    long = tmp_path / "l.yaml"
    long.write_text(LAB.replace("name: g", "name: " + "a" * 28).split("variants:")[0])
    with pytest.raises(HarnessError, match=r"on trixie would be named 'a{28}-trixie', longer than a lab name may be"):
        cli._on_release(load_lab(long), "trixie")
