"""LabManager's end of a session: labs not kept go down; kept ones stay up, and are named at the end."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab.errors import CommandHung, LabTimeout, RoleError
from kvmlab_fixtures import labs as labs_mod
from kvmlab_fixtures.labs import LabManager


class FakeConfig:
    def getoption(self, name: str):
        return {"--lab-keep": True, "--lab-reuse": False, "--lab-hosts": None}[name]


def fake_session(name: str, run_id: str, keep: bool, downed: list[str]) -> SimpleNamespace:
    return SimpleNamespace(lab=SimpleNamespace(name=name), run_id=run_id, keep=keep, down=lambda: downed.append(name))


def test_kept_labs_stay_up_and_are_named_when_the_session_ends(monkeypatch):
    monkeypatch.delenv("KVMLAB_HOSTS", raising=False)
    said: list[str] = []
    monkeypatch.setattr(labs_mod, "_say", said.append)
    downed: list[str] = []
    manager = LabManager(FakeConfig())  # type: ignore[arg-type]
    manager.sessions = {
        "smoke.yaml": fake_session("smoke", "0a1b2c", True, downed),
        "tiny.yaml": fake_session("tiny", "3d4e5f", False, downed),
        "ceph.yaml": fake_session("ceph", "6a7b8c", True, downed),
    }
    manager.release("smoke.yaml")  # its last test has run: kept, so it stays up
    manager.close()
    assert downed == ["tiny"]
    assert said == [
        "kvmlab: labs left up: smoke (run 0a1b2c), ceph (run 6a7b8c); `kvmlab down LAB` takes one down, `kvmlab status` lists them"
    ]


def test_a_session_that_keeps_nothing_says_nothing(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(labs_mod, "_say", said.append)
    downed: list[str] = []
    manager = LabManager(FakeConfig())  # type: ignore[arg-type]
    manager.sessions = {"tiny.yaml": fake_session("tiny", "3d4e5f", False, downed)}
    manager.close()
    assert downed == ["tiny"] and said == []


TINY = str(Path(__file__).resolve().parents[2] / "labs" / "tiny.yaml")


def manager_bringing_up(monkeypatch, outcomes: list) -> tuple[LabManager, list[str]]:
    """A manager whose bring-ups give OUTCOMES in turn: an exception raised, or a session returned."""
    said: list[str] = []
    monkeypatch.setattr(labs_mod, "_say", said.append)
    manager = LabManager(FakeConfig())  # type: ignore[arg-type]
    manager.keep = False

    def bring_up(lab, leave):
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(manager, "_bring_up", bring_up)
    return manager, said


def test_a_lab_that_hung_while_coming_up_is_brought_up_once_more_and_named_at_the_end(monkeypatch):
    up = fake_session("tiny", "0a1b2c", False, [])
    hung = CommandHung("n1: `exportfs -ra` gave no result within 600 s; the node does not take a new SSH connection either")
    manager, said = manager_bringing_up(monkeypatch, [hung, up])
    assert manager.get(TINY) is up
    assert said == [
        "kvmlab: lab tiny hung while coming up (n1: `exportfs -ra` gave no result within 600 s; the node does not take a new SSH connection either); bringing it up once more"
    ]
    manager.close()
    assert (
        said[-1]
        == "kvmlab: lab came up on its second try: tiny (the first try: n1: `exportfs -ra` gave no result within 600 s; the node does not take a new SSH connection either)"
    )


def test_a_lab_that_hangs_twice_fails_its_tests_with_the_second_error(monkeypatch):
    first, second = LabTimeout("timed out waiting for n1"), LabTimeout("timed out waiting for n1 again")
    manager, _ = manager_bringing_up(monkeypatch, [first, second])
    with pytest.raises(LabTimeout, match="again"):
        manager.get(TINY)
    with pytest.raises(pytest.fail.Exception, match="failed to come up earlier in this session: timed out waiting for n1 again"):
        manager.get(TINY)


def test_a_failed_role_step_is_not_tried_again(monkeypatch):
    failed = RoleError("n1", "publish exports", "exportfs -ra", 1, "exportfs: bad option")
    manager, said = manager_bringing_up(monkeypatch, [failed, fake_session("tiny", "0a1b2c", False, [])])
    with pytest.raises(RoleError):
        manager.get(TINY)
    assert said == []
