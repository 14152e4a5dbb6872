"""iscsi-target role (not implemented yet: see labs/storage.yaml)."""

from __future__ import annotations

from kvmlab.model import Node
from kvmlab.roles import Role, RoleContext


def attach_hypervisor(ctx: RoleContext, node: Node) -> None:
    """What a hypervisor needs to use this storage; nothing when the lab has none."""


ROLE = Role(name="iscsi-target")
