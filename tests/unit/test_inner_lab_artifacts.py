"""A failing test's artifacts include the labs it built itself (kept by keep_evidence_of), each in a folder
of its own beside the `lab` fixture's, and one that cannot be read does not hide the others."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab.errors import HarnessError
from kvmlab_fixtures import artifacts


class FakeSession:
    def __init__(self, name: str, run_id: str, broken: bool = False) -> None:
        self.lab, self.run_id, self.broken = SimpleNamespace(name=name), run_id, broken
        self.nodes = [SimpleNamespace(name=f"{name}-n1")]
        self.collected: list[tuple[Path, list[str]]] = []

    def collect_artifacts(self, dest: Path, journal_nodes: list[str]) -> None:
        if self.broken:
            raise HarnessError("its host is gone")
        self.collected.append((dest, journal_nodes))


def test_inner_labs_are_collected_beside_the_fixtures_lab(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "artifacts_dir", lambda: tmp_path)
    item = SimpleNamespace(nodeid="tests/lab/test_x.py::test_y", stash=pytest.Stash())
    outer, inner, gone = FakeSession("two-hosts", "aaa111"), FakeSession("rspread", "bbb222"), FakeSession("other", "ccc333", broken=True)
    artifacts.keep_evidence_of(item, gone)
    artifacts.keep_evidence_of(item, inner)

    dest = artifacts._collect(item, outer)

    assert dest == tmp_path / "aaa111" / "tests_lab_test_x.py_test_y"
    assert outer.collected == [(dest, ["two-hosts-n1"])]
    assert inner.collected == [(dest / "lab-rspread-bbb222", ["rspread-n1"])], "the inner lab after one that failed"


def test_without_inner_labs_only_the_fixtures_lab_is_collected(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "artifacts_dir", lambda: tmp_path)
    item = SimpleNamespace(nodeid="t.py::test_z", stash=pytest.Stash())
    outer = FakeSession("smoke", "ddd444")
    assert artifacts._collect(item, outer) == tmp_path / "ddd444" / "t.py_test_z"
    assert len(outer.collected) == 1
