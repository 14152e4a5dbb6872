"""Error types. Harness faults are HarnessError; test failures stay plain asserts."""

from __future__ import annotations

import re

from kvmlab.redact import redact

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
LONG_QUOTED = re.compile(r"(?<!\w)'([^']{81,})'(?!\w)")  # a value quoted whole by a role's message
LONG_WORD = re.compile(r"\S{121,}")
MAX_MESSAGE = 800


class HarnessError(Exception):
    """Something broke in the harness or the host, not in what a test checks."""


class LabFileError(HarnessError):
    """A lab file is wrong; the message points at the user's line."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        # A safety net under the quoting of each message: no value of the file is echoed at length.
        message = CONTROL.sub(lambda m: repr(m.group())[1:-1], message)  # one line, whatever the file held
        message = LONG_QUOTED.sub(lambda m: f"'{m.group(1)[:40]}…{m.group(1)[-8:]} ({len(m.group(1))} characters)'", message)
        message = LONG_WORD.sub(lambda m: f"{m.group()[:80]}… ({len(m.group())} characters)", message)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 30] + f"… ({len(message)} characters)"
        self.path, self.line, self.col, self.message = path, line, col, message
        super().__init__(f"{path}:{line}:{col}: {message}")


class PreflightError(HarnessError):
    """The host cannot run the lab; the message says how to fix it."""


class LabTimeout(HarnessError):
    """A wait ran past its deadline."""


class CommandHung(HarnessError):
    """A command on a node gave no result in its time; the message says what still ran there."""


class RoleError(HarnessError):
    """A role step failed on a node."""

    def __init__(self, node: str, step: str, command: str, rc: int, output: str) -> None:
        self.node, self.step, self.command, self.rc, self.output = node, step, command, rc, output
        tail = "\n".join(output.strip().splitlines()[-25:])
        super().__init__(
            redact(
                f"role step '{step}' failed on node '{node}' (exit {rc})\n"
                f"  command: {command}\n  output:\n" + "\n".join("    " + ln for ln in tail.splitlines())
            )
        )


class SettingRefused(HarnessError):
    """The service refused a setting of the lab file when a role step applied it: the lab file is wrong,
    in the service's own judgement. Points at the setting's file:line:col and quotes the refusal."""

    def __init__(self, where: str, what: str, refusal: str, node: str, command: str) -> None:
        self.where, self.what, self.refusal, self.node, self.command = where, what, refusal, node, command
        at = f"{where}: " if where else ""
        super().__init__(redact(f"{at}{what}: {refusal}\n  on node {node}: {command}"))


class Interrupted(HarnessError):
    """The run was stopped by a signal; the lab has been torn down."""


class PoolFull(HarnessError):
    """The filesystem under kvmlab's pool has no room for a volume."""

    def __init__(self, directory: str, need_mib: int, free_mib: int) -> None:
        self.directory, self.need_mib, self.free_mib = directory, need_mib, free_mib
        super().__init__(
            f"pool filesystem {directory} is full (needs {need_mib} MiB, has {free_mib} MiB free): free space or set KVMLAB_POOL_DIR"
        )


class LibvirtGone(HarnessError):
    """libvirtd stopped answering and did not come back within the reconnect deadline."""

    def __init__(self, uri: str, seconds: float, last: str) -> None:
        self.uri = uri
        super().__init__(
            f"libvirtd at {uri} stopped answering (no connection for {seconds:.0f} s; last: {last}):"
            " start it with `virtlogd -d; libvirtd -d`, then run `kvmlab gc`"
        )


class NodeStopped(HarnessError):
    """A node can no longer answer: its QEMU ended, QEMU paused it on an I/O error, or its network is gone.

    Raised at once, so that a step or a wait does not sit out its deadline talking to nothing."""

    def __init__(self, node: str, cause: str, fix: str, where: str = "", verb: str = "stopped") -> None:
        self.node, self.cause, self.fix, self.where, self.verb = node, cause, fix, where, verb
        at = f" {where}" if where else ""
        super().__init__(f"node {node} {verb} ({cause}){at}: {fix}")

    def at(self, where: str) -> NodeStopped:
        """The same stop, said of WHERE it interrupted (a step, a command)."""
        return NodeStopped(self.node, self.cause, self.fix, where, self.verb)
