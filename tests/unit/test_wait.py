"""Waits end: deadlines on a fake clock, fast failure, evidence in the message."""

from __future__ import annotations

import pytest

from kvmlab.errors import HarnessError, LabTimeout
from kvmlab.wait import TCG_FACTOR, TIMEOUTS_S, Deadline, timeout_for, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _raises(message: str):
    def check() -> None:
        raise HarnessError(message)

    return check


def test_returns_the_first_truthy_value():
    clock = FakeClock()
    values = iter([None, 0, "", "up"])
    assert wait_until(lambda: next(values), 10, "thing", clock=clock) == "up"
    assert clock.sleeps == [1.0, 1.0, 1.0]


def test_timeout_names_what_how_long_last_value_and_evidence():
    clock = FakeClock()
    with pytest.raises(LabTimeout) as info:
        wait_until(_raises("still booting"), 5, "node a to answer SSH", clock=clock, interval=2, context=lambda: "console tail")
    text = str(info.value)
    assert text.startswith("timed out after 5 s waiting for node a to answer SSH (deadline 5 s)")
    assert "last seen: still booting" in text
    assert text.endswith("\nconsole tail")
    assert clock.now - 1000.0 == pytest.approx(5.0)  # the last sleep is cut to the deadline


def test_never_sleeps_past_the_deadline_by_more_than_one_interval():
    clock = FakeClock()
    with pytest.raises(LabTimeout):
        wait_until(lambda: False, 3.5, "x", clock=clock, interval=1)
    assert clock.now - 1000.0 <= 4.5


def test_fails_fast_when_the_awaited_thing_died():
    clock = FakeClock()
    calls = []
    with pytest.raises(LabTimeout, match="gave up waiting for node b: domain kvmlab-x-b is crashed"):
        wait_until(lambda: calls.append(1), 600, "node b", clock=clock, failed=lambda: "domain kvmlab-x-b is crashed" if calls else None)
    assert len(calls) == 1
    assert clock.now - 1000.0 == pytest.approx(1.0)


def test_a_flaky_probe_is_retried_and_reported():
    clock = FakeClock()
    attempts = iter([HarnessError("connection refused"), HarnessError("connection refused"), True])

    def probe():
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert wait_until(probe, 10, "ssh", clock=clock) is True
    with pytest.raises(LabTimeout, match="last seen: connection refused"):
        wait_until(_raises("connection refused"), 2, "ssh", clock=clock)


def test_broken_evidence_does_not_hide_the_timeout():
    def broken() -> str:
        raise OSError("console log missing")

    with pytest.raises(LabTimeout, match=r"could not collect evidence: console log missing"):
        wait_until(lambda: False, 1, "x", clock=FakeClock(), context=broken)


def test_tcg_scales_deadlines():
    assert timeout_for("boot", "kvm") == TIMEOUTS_S["boot"]
    assert timeout_for("boot", "tcg") == TIMEOUTS_S["boot"] * TCG_FACTOR


def test_deadline_counts_on_its_clock():
    clock = FakeClock()
    d = Deadline(10, clock)
    clock.now += 4
    assert (d.elapsed, d.remaining, d.expired) == (4, 6, False)
    clock.now += 6
    assert d.expired
