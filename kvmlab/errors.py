"""Error types. Harness faults are HarnessError; test failures stay plain asserts."""

from __future__ import annotations

from kvmlab.redact import redact


class HarnessError(Exception):
    """Something broke in the harness or the host, not in what a test checks."""


class LabFileError(HarnessError):
    """A lab file is wrong; the message points at the user's line."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        self.path, self.line, self.col, self.message = path, line, col, message
        super().__init__(f"{path}:{line}:{col}: {message}")


class PreflightError(HarnessError):
    """The host cannot run the lab; the message says how to fix it."""


class LabTimeout(HarnessError):
    """A wait ran past its deadline."""


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


class Interrupted(HarnessError):
    """The run was stopped by a signal; the lab has been torn down."""
