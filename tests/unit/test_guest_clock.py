"""Setting a restored guest's clock through its QEMU guest agent, against a stand-in agent."""

from __future__ import annotations

import base64
import json

import libvirt
import pytest

from kvmlab.errors import HarnessError
from kvmlab.providers import libvirt as libvirt_provider


class FakeDomain:
    def __init__(self) -> None:
        self.set_time: list[dict] = []

    def setTime(self, when: dict, flags: int) -> None:
        self.set_time.append(when)


class FakeAgent:
    """Answers guest-exec and guest-exec-status as qemu-ga does; `date` ends after POLLS status calls."""

    def __init__(self, exitcode: int = 0, polls: int = 2, disabled: bool = False) -> None:
        self.exitcode, self.polls, self.disabled, self.commands = exitcode, polls, disabled, []

    def __call__(self, dom: object, text: str, timeout: int, flags: int) -> str:
        command = json.loads(text)
        self.commands.append(command)
        if command["execute"] == "guest-exec":
            if self.disabled:
                raise libvirt.libvirtError(
                    "internal error: unable to execute QEMU agent command 'guest-exec': Command guest-exec has been disabled"
                )
            return json.dumps({"return": {"pid": 77}})
        self.polls -= 1
        if self.polls > 0:
            return json.dumps({"return": {"exited": False}})
        err = base64.b64encode(b"date: cannot set date: Operation not permitted\n").decode()
        return json.dumps({"return": {"exited": True, "exitcode": self.exitcode, "err-data": err}})


@pytest.fixture
def provider(provider, monkeypatch):
    """The test driver's provider (a live connection), its domains replaced by one stand-in."""
    dom = FakeDomain()
    monkeypatch.setattr(provider, "_domain", lambda name: dom)
    provider.dom = dom
    return provider


def test_the_clock_is_set_by_date_run_through_the_agent(provider, monkeypatch):
    agent = FakeAgent(polls=3)
    monkeypatch.setattr(libvirt_provider.libvirt_qemu, "qemuAgentCommand", agent)
    provider.set_guest_time("kvmlab-tiny-0a1b2c-n1", 1796666211.25)
    first = agent.commands[0]
    assert first == {
        "execute": "guest-exec",
        "arguments": {"path": "/bin/date", "arg": ["-u", "-s", "@1796666211.250000"], "capture-output": True},
    }
    assert [c["execute"] for c in agent.commands[1:]] == ["guest-exec-status"] * 3
    assert provider.dom.set_time == []  # not guest-set-time: it waits for the RTC's next second


def test_a_date_that_fails_says_what_it_printed(provider, monkeypatch):
    monkeypatch.setattr(libvirt_provider.libvirt_qemu, "qemuAgentCommand", FakeAgent(exitcode=1))
    with pytest.raises(HarnessError, match=r"`date` exited 1: date: cannot set date: Operation not permitted$"):
        provider.set_guest_time("kvmlab-tiny-0a1b2c-n1", 1796666211.25)


def test_an_agent_without_guest_exec_sets_the_clock_its_own_way(provider, monkeypatch):
    monkeypatch.setattr(libvirt_provider.libvirt_qemu, "qemuAgentCommand", FakeAgent(disabled=True))
    provider.set_guest_time("kvmlab-tiny-0a1b2c-n1", 1796666211.25)
    assert provider.dom.set_time == [{"seconds": 1796666211, "nseconds": 250000000}]
