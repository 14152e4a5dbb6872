"""Roles: ordered setup steps run over SSH.

Every role has two phases. `setup` runs on each of its nodes as soon as that node
is ready; `connect` runs once every node's setup is done, for steps that need
another node (mounting a server's export, joining a cluster).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvmlab.model import Lab, Node, Placement
from kvmlab.remote import Remote


@dataclass
class RoleContext:
    lab: Lab
    placement: Placement
    files: dict[str, str]  # rendered files, by relative path
    remotes: dict[str, Remote]
    progress: Callable[[str], None]

    def remote(self, node: str) -> Remote:
        return self.remotes[node]

    def file(self, node: Node, name: str) -> str:
        return self.files[f"roles/{node.name}/{name}"]


Step = Callable[[RoleContext, Node], None]


@dataclass(frozen=True)
class Role:
    name: str
    setup: Step
    connect: Step | None = None
    # Commands whose output goes into the artifacts when something fails.
    state_commands: tuple[str, ...] = ()


def registry() -> dict[str, Role]:
    from kvmlab.roles import hypervisor, nfs_server

    return {r.name: r for r in (nfs_server.ROLE, hypervisor.ROLE)}
