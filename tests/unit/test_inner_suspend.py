"""Inner guests suspended around a hypervisor node's save, with fake nodes (no VMs)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kvmlab.checkpoints import Book, Checkpoint
from kvmlab.errors import HarnessError
from kvmlab.inner_suspend import resume_inner_guests, suspend_inner_guests
from kvmlab.remote import Result


@dataclass
class _Remote:
    stdout: str = ""
    fails: bool = False
    commands: list[str] = field(default_factory=list)

    def run(self, command: str, timeout: float = 0) -> Result:
        if self.fails:
            raise HarnessError("ssh: node does not answer")
        self.commands.append(command)
        return Result(0, self.stdout, "")

    def check(self, command: str, step: str, timeout: float = 0) -> Result:
        return self.run(command, timeout)


@dataclass
class _Node:
    name: str
    roles: tuple[str, ...]
    remote: _Remote
    state: str = "running"


def test_only_running_hypervisors_are_asked_and_only_what_they_suspended_is_recorded():
    hv1 = _Node("hv1", ("hypervisor",), _Remote("vm1\nvm2\n"))
    hv2 = _Node("hv2", ("hypervisor",), _Remote(""))  # no inner guest running
    paused = _Node("hv3", ("hypervisor",), _Remote("vm9\n"), state="paused")  # cannot answer: not asked
    nfs = _Node("nfs1", ("nfs-server",), _Remote("x\n"))
    said: list[str] = []
    assert suspend_inner_guests([hv1, hv2, paused, nfs], said.append) == {"hv1": ["vm1", "vm2"]}
    assert len(hv1.remote.commands) == 1 and "virsh -q suspend" in hv1.remote.commands[0]
    assert paused.remote.commands == [] and nfs.remote.commands == []
    assert said == ["hv1: inner guests vm1, vm2 suspended for the save"]


def test_a_hypervisor_that_does_not_answer_is_named_and_the_save_goes_on():
    hv1 = _Node("hv1", ("hypervisor",), _Remote(fails=True))
    said: list[str] = []
    assert suspend_inner_guests([hv1], said.append) == {}
    assert said and said[0].startswith("hv1: could not suspend its inner guests") and "does not answer" in said[0]


def test_resume_runs_again_exactly_the_guests_suspended():
    hv1, hv2 = _Node("hv1", ("hypervisor",), _Remote()), _Node("hv2", ("hypervisor",), _Remote())
    resume_inner_guests([hv1, hv2], {"hv1": ["vm1", "odd name"]})
    assert hv1.remote.commands == ["for d in vm1 'odd name'; do virsh -q resume \"$d\" >/dev/null; done"]
    assert hv2.remote.commands == []


def test_a_checkpoint_keeps_what_was_suspended_in_its_saved_memory(tmp_path):
    book = Book(counter=1)
    book.checkpoints["a"] = Checkpoint("a", "2026-12-06T00:00:00+00:00", {"hv1": {"root": "r.qcow2"}}, suspended={"hv1": ["vm1"]})
    book.save(tmp_path / "book.json")
    assert Book.load(tmp_path / "book.json").checkpoints["a"].suspended == {"hv1": ["vm1"]}


def test_a_book_written_before_suspended_guests_were_recorded_still_loads(tmp_path):
    older = {"counter": 1, "tops": {}, "checkpoints": {"old": {"name": "old", "created": "", "layers": {}}}}
    (tmp_path / "book.json").write_text(json.dumps(older))
    assert Book.load(tmp_path / "book.json").checkpoints["old"].suspended == {}
