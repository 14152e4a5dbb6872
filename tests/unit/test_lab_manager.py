"""LabManager's end of a session: labs not kept go down; kept ones stay up, and are named at the end."""

from __future__ import annotations

from types import SimpleNamespace

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
