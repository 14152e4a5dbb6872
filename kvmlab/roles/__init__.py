"""Roles: ordered setup steps run over SSH, in phases across the lab.

PHASES run in order. Every node runs its roles' step for a phase (roles in the
order the node lists them), then waits until every node has finished that
phase. `setup` starts on each node as soon as that node is ready:

- setup:   what a node does alone (format a brick, start a daemon, export a dir)
- join:    what needs another node's setup (peer probe, OSDs joining the monitor)
- finish:  what needs the joined cluster (pools, client keys, volume options)
- clients: what consumes the storage (a hypervisor's pools, mounts, secrets)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvmlab.model import Lab, Node, Placement
from kvmlab.remote import Remote

PHASES = ("setup", "join", "finish", "clients")


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

    def address(self, node: str, network: str) -> str:
        return self.placement.address(self.lab, node, network)


Step = Callable[[RoleContext, Node], None]


@dataclass(frozen=True)
class Role:
    name: str
    steps: dict[str, Step] = field(default_factory=dict)  # phase -> step
    # Commands whose output goes into the artifacts when something fails.
    state_commands: tuple[str, ...] = ()


def registry() -> dict[str, Role]:
    from kvmlab.roles import ceph, gluster, hypervisor, iscsi_target, local_raid, nfs_server

    roles = (nfs_server.ROLE, hypervisor.ROLE, iscsi_target.ROLE, gluster.ROLE, local_raid.ROLE, *ceph.ROLES)
    return {r.name: r for r in roles}
