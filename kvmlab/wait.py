"""Waits that always end: a deadline, a poll, and an error that says what was seen."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kvmlab.errors import HarnessError, LabTimeout, LibvirtGone, NodeStopped

T = TypeVar("T")

# Seconds under KVM; TCG emulates every instruction and is several times slower.
TIMEOUTS_S = {
    "boot": 90.0,  # domain start -> SSH answers and cloud-init has finished
    "ssh-command": 120.0,
    "service": 60.0,  # a systemd unit reaching active
    "role": 300.0,  # one role's whole setup on one node
}
TCG_FACTOR = 4.0


def timeout_for(name: str, accel: str) -> float:
    """A named deadline for ACCEL; KVMLAB_TIMEOUT_SCALE stretches (or shrinks) them all."""
    scale = float(os.environ.get("KVMLAB_TIMEOUT_SCALE", "1"))
    return TIMEOUTS_S[name] * (TCG_FACTOR if accel != "kvm" else 1.0) * scale


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Deadline:
    seconds: float
    clock: Clock

    def __post_init__(self) -> None:
        self.start = self.clock.monotonic()

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.start

    @property
    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed)

    @property
    def expired(self) -> bool:
        return self.elapsed >= self.seconds


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 1.0,
    clock: Clock | None = None,
    failed: Callable[[], str | None] | None = None,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll CHECK until it returns a truthy value; return that value.

    FAILED is asked before each poll and ends the wait at once when what we wait
    for can no longer happen (a VM that died). CONTEXT adds evidence, e.g. the
    tail of a console, to the timeout message. A HarnessError raised by CHECK is
    kept as the last value seen and retried, so flaky probes do not end the wait;
    NodeStopped and LibvirtGone are not: what they say does not get better by waiting.
    """
    clock = clock or SystemClock()
    deadline = Deadline(timeout, clock)
    last: object = "nothing yet"
    while True:
        if failed is not None and (reason := failed()):
            raise LabTimeout(_message(f"gave up waiting for {what}: {reason}", deadline, last, context))
        try:
            value = check()
        except (NodeStopped, LibvirtGone):
            raise
        except HarnessError as exc:
            value, last = None, exc  # type: ignore[assignment]
        else:
            if value:
                return value
            last = value
        if deadline.expired:
            raise LabTimeout(_message(f"timed out after {deadline.elapsed:.0f} s waiting for {what}", deadline, last, context))
        clock.sleep(min(interval, max(deadline.remaining, 0.01)))


def _message(head: str, deadline: Deadline, last: object, context: Callable[[], str] | None) -> str:
    text = f"{head} (deadline {deadline.seconds:.0f} s); last seen: {last!s:.300}"
    if context is not None:
        try:
            extra = context()
        except Exception as exc:  # evidence is best effort: never hide the timeout itself
            extra = f"(could not collect evidence: {exc})"
        if extra:
            text += "\n" + extra
    return text
