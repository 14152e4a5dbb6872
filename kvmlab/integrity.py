"""The integrity workload, host side: install the guest tool, run its writer during a fault, verify after.

    work = Workload(lab.node("hv1"), "/var/lib/libvirt/images/GlusterFS/integrity.dat")
    work.start()
    work.wait_acked(50)                  # written before the fault
    with node.powered_off():
        work.wait_progress(20)           # I/O continues during the fault
    work.stop()
    work.verify().assert_intact()        # every acknowledged record is there, whole

The tool itself is kvmlab/guest/integrity_tool.py (python3, standard library).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmlab.errors import HarnessError
from kvmlab.remote import Remote
from kvmlab.wait import wait_until

TOOL = "/usr/local/lib/kvmlab/integrity_tool.py"
STATE_ROOT = "/var/lib/kvmlab-integrity"


def tool_source() -> str:
    return (Path(__file__).resolve().parent / "guest" / "integrity_tool.py").read_text()


class IntegrityError(AssertionError):
    """Acknowledged data is gone or damaged, or replicas differ. A test failure, with its evidence."""


@dataclass(frozen=True)
class WriterState:
    acked: int  # highest record whose fsync returned; -1 before the first
    errors: int  # I/O errors the writer saw (and retried)
    last_error: str
    max_gap_s: float  # longest wait between two acknowledgements: how long the fault stalled I/O
    done: bool
    reason: str

    @classmethod
    def parse(cls, text: str) -> WriterState:
        d = json.loads(text)
        return cls(int(d["acked"]), int(d["errors"]), str(d["last_error"]), float(d["max_gap_s"]), bool(d["done"]), str(d["reason"]))


@dataclass(frozen=True)
class Report:
    """What `integrity_tool verify` found on one copy of the data."""

    where: str  # node:path
    acked: int
    ok: int
    scanned: int
    counts: dict[str, int]  # missing / torn / corrupt
    bad: tuple[dict[str, Any], ...]  # the first bad records, with their evidence
    unacked_present: int
    unacked_missing: int
    writer: dict[str, Any] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        return self.ok == self.acked + 1 and not any(self.counts.values())

    def problems(self) -> list[str]:
        out = [f"{n} record(s) {kind}" for kind, n in self.counts.items() if n]
        if self.ok != self.acked + 1 and not out:
            out.append(f"{self.ok} of {self.acked + 1} acknowledged records intact")
        return out

    def summary(self) -> str:
        head = (
            f"{self.where}: {self.ok}/{self.acked + 1} acknowledged records intact"
            f" ({self.unacked_present} unacknowledged present, {self.unacked_missing} absent)"
        )
        if self.writer:
            head += f"; writer: {self.writer.get('errors', 0)} I/O errors retried, longest stall {self.writer.get('max_gap_s', 0)} s"
        if self.intact:
            return head
        lines = [head + ": " + ", ".join(self.problems())]
        for rec in self.bad:
            kind = rec.get("kind", "?")
            lines.append(f"  record {rec['index']} ({'acknowledged' if rec['acked'] else 'not acknowledged'}) {kind}: {rec['detail']}")
        return "\n".join(lines)

    def assert_intact(self) -> Report:
        if not self.intact:
            raise IntegrityError(self.summary())
        return self


def parse_report(text: str, where: str) -> Report:
    """A Report from the tool's JSON line; anything else is a harness error that quotes it."""
    try:
        d = json.loads(text.strip().splitlines()[-1])
        bad = tuple({**rec, "kind": kind} for kind in ("missing", "torn", "corrupt") for rec in d[kind])
        return Report(
            where=where,
            acked=int(d["acked"]),
            ok=int(d["ok"]),
            scanned=int(d["scanned"]),
            counts={k: int(v) for k, v in d["counts"].items()},
            bad=tuple(sorted(bad, key=lambda r: r["index"])),
            unacked_present=int(d["unacked_present"]),
            unacked_missing=int(d["unacked_missing"]),
            writer=dict(d.get("writer") or {}),
        )
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise HarnessError(f"{where}: integrity tool gave no report ({exc}):\n{text[-2000:]}") from exc


def compare_replicas(sums: dict[str, str]) -> None:
    """SUMS maps a replica (node:path) to its checksum; all must agree, else the divergence is the evidence."""
    if len(set(sums.values())) > 1:
        groups: dict[str, list[str]] = {}
        for where, digest in sums.items():
            groups.setdefault(digest, []).append(where)
        lines = [f"  {digest[:16]}…  {', '.join(sorted(places))}" for digest, places in sorted(groups.items())]
        raise IntegrityError("replicas differ:\n" + "\n".join(lines))


def remote_of(target: Any) -> Remote:
    """A node handle or a Remote -> its Remote."""
    return target if isinstance(target, Remote) else target.remote


def install(remote: Remote) -> None:
    remote.put(TOOL, tool_source(), 0o755)


class Workload:
    """One writer of the integrity tool on one node, writing PATH (a file or a block device)."""

    def __init__(
        self,
        node: Any,
        path: str,
        *,
        record_size: int = 4096,
        records: int = 16384,
        interval: float = 0.02,
        direct: bool | None = None,
        name: str | None = None,
    ) -> None:
        self.node, self.path = node, path
        self.record_size, self.records, self.interval = record_size, records, interval
        self.direct = path.startswith("/dev/") if direct is None else direct
        self.state = f"{STATE_ROOT}/{name or uuid.uuid4().hex[:8]}"
        self.started = False

    @property
    def remote(self) -> Remote:
        return remote_of(self.node)

    @property
    def where(self) -> str:
        return f"{self.remote.target.node}:{self.path}"

    def start(self) -> Workload:
        install(self.remote)
        q = shlex.quote
        command = (
            f"python3 {TOOL} write {q(self.path)} --state {q(self.state)} --record-size {self.record_size}"
            f" --records {self.records} --interval {self.interval}"
        )
        # setsid + nohup: the writer outlives this SSH command and any later reconnection.
        self.remote.check(
            # Only the writer goes to the background, with none of this command's descriptors:
            # the SSH channel then closes at once.
            f"rm -rf {q(self.state)} && mkdir -p {q(self.state)} && "
            f"{{ setsid nohup {command} >{q(self.state)}/writer.log 2>&1 </dev/null & }} && echo started",
            f"start the integrity writer on {self.path}",
        )
        self.started = True
        wait_until(lambda: self._read_state(), 60, f"the integrity writer on {self.where} to start", context=self._log_tail)
        return self

    def _read_state(self) -> WriterState | None:
        res = self.remote.run(f"cat {shlex.quote(self.state)}/ack.json 2>/dev/null", timeout=30)
        if res.rc != 0 or not res.stdout.strip():
            return None
        try:
            return WriterState.parse(res.stdout)
        except (ValueError, KeyError):
            return None  # caught between two writes of the file (cannot happen with os.replace, but cheap)

    def state_now(self) -> WriterState:
        state = self._read_state()
        if state is None:
            raise HarnessError(f"integrity writer on {self.where} has no state in {self.state}\n{self._log_tail()}")
        return state

    def _log_tail(self) -> str:
        try:
            res = self.remote.run(f"tail -n 20 {shlex.quote(self.state)}/writer.log; cat {shlex.quote(self.state)}/ack.json", timeout=30)
            return f"writer log and state on {self.where}:\n{res.output}"
        except HarnessError as exc:
            return f"(writer log unavailable: {exc})"

    def _writer_died(self, count: int) -> str | None:
        state = self._read_state()
        if state is not None and state.done and state.acked + 1 < count:
            return f"the writer exited ({state.reason}) at record {state.acked}"
        return None

    def wait_acked(self, count: int, timeout: float = 300.0) -> WriterState:
        """Until at least COUNT records (0..COUNT-1) are acknowledged."""
        return wait_until(
            lambda: (s := self._read_state()) is not None and s.acked + 1 >= count and s,
            timeout,
            f"{count} acknowledged records from the integrity writer on {self.where}",
            interval=1.0,
            failed=lambda: self._writer_died(count),
            context=self._log_tail,
        )

    def wait_progress(self, more: int, timeout: float = 300.0) -> WriterState:
        """Until MORE records beyond the ones acknowledged now are acknowledged: I/O goes on."""
        return self.wait_acked(self.state_now().acked + 1 + more, timeout)

    def stop(self, timeout: float = 120.0) -> WriterState:
        """SIGTERM; the writer finishes (and acknowledges) its record in flight and exits."""
        q = shlex.quote(self.state)
        self.remote.run(f'kill -TERM $(python3 -c \'import json;print(json.load(open("{self.state}/ack.json"))["pid"])\') 2>/dev/null')
        state = wait_until(
            lambda: (s := self._read_state()) is not None and s.done and s,
            timeout,
            f"the integrity writer on {self.where} to stop",
            context=lambda: self._log_tail() + "\n" + self.remote.run(f"ps -o pid,stat,wchan:30,args -C python3; ls -l {q}").output,
        )
        self.started = False
        return state

    def verify(self, node: Any = None, path: str | None = None, *, acked: int | None = None, direct: bool | None = None) -> Report:
        """Verify the data (by default where it was written; or a replica at PATH on NODE, against the writer's acks)."""
        state = self.state_now()
        remote = remote_of(node) if node is not None else self.remote
        path = path or self.path
        direct = self.direct if direct is None else direct
        acked = state.acked if acked is None else acked
        q = shlex.quote
        local = remote.target.node == self.remote.target.node and path == self.path
        if local:
            args = f"--state {q(self.state)}"
        else:
            install(remote)
            run_id = json.loads(self.remote.check(f"cat {q(self.state)}/ack.json", "read the writer's run id").stdout)["run"]
            args = f"--run {run_id} --record-size {self.record_size}"
        if acked != state.acked or not local:
            args += f" --acked {acked}"
        res = remote.run(f"python3 {TOOL} verify {q(path)} {args}{' --direct' if direct else ''}", timeout=600)
        where = f"{remote.target.node}:{path}"
        if res.rc != 0:
            raise HarnessError(f"{where}: integrity verify failed (exit {res.rc}):\n{res.output[-2000:]}")
        return parse_report(res.stdout, where)

    def cleanup(self) -> None:
        """Stop a writer still running (a test that failed half-way) and remove its state."""
        if self.started:
            with contextlib.suppress(HarnessError):
                self.stop(timeout=60)
        self.remote.run(f"rm -rf {shlex.quote(self.state)}", timeout=60)
