"""Files of the gluster role (and what hypervisors need to use it)."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    return {}
