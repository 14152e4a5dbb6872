"""Role steps as a dependency graph instead of lab-wide phase barriers.

A step is (node, role, phase). It may run once

- every step of an earlier phase on its own node has finished (a node's own order), and
- every step of an earlier phase of the roles it waits for has finished, on every node
  (by default the roles of its own package: an OSD joins once the monitor is set up).

So a hypervisor's NFS pool is made as soon as the NFS server is set up, while the Ceph
cluster is still joining; nothing waits for the slowest node of the lab. A node runs its
own steps one at a time, picking the first whose dependencies are met (a step waiting for
Ceph does not hold back one waiting for Gluster). Phases only order steps now: a DAG,
since every dependency is on a strictly earlier phase.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PhaseOrder = tuple[str, ...]


@dataclass(frozen=True)
class Unit:
    """One role step on one node. WAITS_FOR: roles whose earlier-phase steps it needs, on any node."""

    node: str
    role: str
    phase: str
    waits_for: frozenset[str]
    run: Callable[[], None] = field(compare=False, repr=False)

    @property
    def id(self) -> str:
        return f"{self.node}: {self.role} {self.phase}"


@dataclass(frozen=True)
class StepTime:
    """When a step ran, in seconds after the bring-up began (the timeline of a bring-up)."""

    node: str
    role: str
    phase: str
    start_s: float
    end_s: float
    ok: bool


def dependencies(units: list[Unit], phases: PhaseOrder) -> dict[Unit, list[Unit]]:
    """Each unit's prerequisites among UNITS."""
    rank = {p: i for i, p in enumerate(phases)}
    deps: dict[Unit, list[Unit]] = {}
    for unit in units:
        deps[unit] = [
            other for other in units if rank[other.phase] < rank[unit.phase] and (other.node == unit.node or other.role in unit.waits_for)
        ]
    return deps


class StepGraph:
    """Runs each node's units as their dependencies finish; one thread per node calls `run_node`."""

    def __init__(self, units: Iterable[Unit], phases: PhaseOrder, started: float | None = None) -> None:
        self.units = list(units)
        self.phases = phases
        self._deps = dependencies(self.units, phases)
        self._finished: set[Unit] = set()
        self._cond = threading.Condition()
        self.started = time.monotonic() if started is None else started
        self.timeline: list[StepTime] = []

    def run_node(self, node: str, should_stop: Callable[[], bool], run_unit: Callable[[Unit], bool]) -> bool:
        """Run NODE's units in dependency order. RUN_UNIT returns False for a unit that failed but lets
        the bring-up go on (it still counts as finished for those waiting on it). Returns False when
        SHOULD_STOP() ended the wait early."""
        pending = [u for u in self.units if u.node == node]
        while pending:
            unit = self._next_ready(pending, should_stop)
            if unit is None:
                return False
            pending.remove(unit)
            start = time.monotonic()
            ok = False
            try:
                ok = run_unit(unit)
            finally:
                end = time.monotonic()
                with self._cond:
                    self.timeline.append(StepTime(unit.node, unit.role, unit.phase, start - self.started, end - self.started, ok))
                    self._finished.add(unit)
                    self._cond.notify_all()
        return True

    def finish_node(self, node: str) -> None:
        """Count NODE's remaining units as finished (it failed): nobody waits for them forever."""
        with self._cond:
            self._finished.update(u for u in self.units if u.node == node)
            self._cond.notify_all()

    def _next_ready(self, pending: list[Unit], should_stop: Callable[[], bool]) -> Unit | None:
        with self._cond:
            while True:
                for unit in pending:
                    if all(d in self._finished for d in self._deps[unit]):
                        return unit
                if should_stop():
                    return None
                self._cond.wait(0.5)

    def phase_end_s(self) -> dict[str, float]:
        """Each phase: seconds after the start when its last step ended (phases with steps only)."""
        ends: dict[str, float] = {}
        for step in self.timeline:
            ends[step.phase] = max(ends.get(step.phase, 0.0), step.end_s)
        return {p: ends[p] for p in self.phases if p in ends}

    def critical_path(self) -> list[StepTime]:
        """The chain of steps that ended last: from the last step back through the dependency that ended last."""
        by_unit = {(s.node, s.role, s.phase): s for s in self.timeline}
        timed = {u: by_unit[(u.node, u.role, u.phase)] for u in self.units if (u.node, u.role, u.phase) in by_unit}
        if not timed:
            return []
        unit = max(timed, key=lambda u: timed[u].end_s)
        chain = [timed[unit]]
        while True:
            before = [d for d in self._deps[unit] if d in timed]
            if not before:
                break
            unit = max(before, key=lambda u: timed[u].end_s)
            chain.append(timed[unit])
        return list(reversed(chain))


def format_timeline(timeline: list[StepTime], width: int = 50) -> str:
    """One line per step, in start order, with a bar on a shared time axis."""
    if not timeline:
        return "(no role steps)"
    end = max(s.end_s for s in timeline) or 1.0
    label_width = max(len(f"{s.node}: {s.role} {s.phase}") for s in timeline)
    lines = []
    for s in sorted(timeline, key=lambda s: (s.start_s, s.node)):
        a = int(s.start_s / end * width)
        b = max(a + 1, int(s.end_s / end * width))
        bar = " " * a + ("#" if s.ok else "x") * (b - a)
        label = f"{s.node}: {s.role} {s.phase}"
        lines.append(f"{label:<{label_width}}  {s.start_s:6.1f} {s.end_s:6.1f}  |{bar:<{width}}|")
    return "\n".join(lines)
