"""Inner guests are suspended while their hypervisor node's memory is saved, and resumed after.

QEMU refuses to load a TCG vCPU that was saved while it ran a nested guest ("vCPU set in guest-mode
inconsistent with migrated kernel nested state"): the saved file cannot be restored, ever. An inner
guest that is suspended keeps the hypervisor's vCPUs out of guest mode, so every save of a node
whose inner guests were suspended first can be loaded again.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from kvmlab.errors import HarnessError

if TYPE_CHECKING:
    from kvmlab.remote import Remote

HYPERVISOR_ROLE = "hypervisor"
# Prints each inner guest it suspended, one per line: only those are resumed later.
SUSPEND_RUNNING = (
    "command -v virsh >/dev/null || exit 0; "
    'for d in $(virsh -q list --state-running --name 2>/dev/null); do virsh -q suspend "$d" >/dev/null && echo "$d"; done'
)
COMMAND_S = 120.0  # a handful of virsh calls in a TCG guest


class HypervisorNode(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def remote(self) -> Remote: ...


def suspend_inner_guests(nodes: Sequence[HypervisorNode], log: Callable[[str], None]) -> dict[str, list[str]]:
    """Suspend the running inner guests of every running hypervisor node: node -> guests suspended."""
    suspended: dict[str, list[str]] = {}
    for node in nodes:
        if HYPERVISOR_ROLE not in node.roles or node.state != "running":
            continue
        try:
            res = node.remote.run(SUSPEND_RUNNING, timeout=COMMAND_S)
        except HarnessError as exc:  # the save goes on: most saves of a busy vCPU still load
            log(f"{node.name}: could not suspend its inner guests before the save: {exc}")
            continue
        guests = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        if guests:
            suspended[node.name] = guests
            log(f"{node.name}: inner guests {', '.join(guests)} suspended for the save")
    return suspended


def resume_inner_guests(nodes: Sequence[HypervisorNode], suspended: dict[str, list[str]]) -> None:
    """Resume what suspend_inner_guests suspended (after the save, or after a restore of that save)."""
    for node in nodes:
        guests = suspended.get(node.name, [])
        if guests:
            quoted = " ".join(shlex.quote(g) for g in guests)
            command = f'for d in {quoted}; do virsh -q resume "$d" >/dev/null; done'
            node.remote.check(command, "resume its inner guests", timeout=COMMAND_S)
