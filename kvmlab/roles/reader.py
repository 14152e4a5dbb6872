"""What a role's settings parser gets: its `roles:` entry, the lab so far, and checks shared by roles."""

from __future__ import annotations

import difflib

from yaml.nodes import Node

from kvmlab.model import Lab
from kvmlab.yamlread import Fields, Reader


class SettingsReader:
    """Reads one role's entry under `roles:`; errors point at the setting, or at the node it concerns."""

    def __init__(self, reader: Reader, lab: Lab, node_keys: dict[str, Node], fields: Fields, root: Node):
        self.reader, self.lab, self.node_keys, self.fields, self.root = reader, lab, node_keys, fields, root

    def entry(self, key: str) -> tuple[Node, Node] | None:
        """The (key, value) nodes of `roles: KEY:` in the file, if it is there."""
        return self.fields.get(key)

    def opts(self, key: str, allowed: tuple[str, ...]) -> tuple[Fields, Node]:
        if key not in self.fields:
            return {}, self.root
        value = self.fields[key][1]
        return self.reader.mapping(value, f"role settings '{key}'", allowed), value

    def where(self, opts: Fields, key: str, node: str) -> Node:
        """Point an error at the setting if the file has it, else at the node it concerns."""
        return opts[key][1] if key in opts else self.node_keys[node]

    def need_disk(self, opts: Fields, key: str, node: str, disk: str, role: str) -> None:
        have = tuple(d.name for d in self.lab.node(node).disks)
        if disk in have:
            return
        close = difflib.get_close_matches(disk, list(have), n=1)
        fix = f"did you mean '{disk}' (rename disk '{close[0]}')?" if close else f"add e.g. 'disks: {{{disk}: 4G}}'"
        raise self.reader.fail(
            self.where(opts, key, node),
            f"node '{node}' (role {role}) needs a disk named '{disk}' (its disks: {', '.join(have) or 'none'}); {fix}",
        )

    def network(self, opts: Fields, nodes: tuple[str, ...], role: str) -> str:
        common = [n for n in self.lab.node(nodes[0]).networks if all(n in self.lab.node(x).networks for x in nodes)]
        if "network" in opts:
            net = self.reader.scalar_text(opts["network"][1], "network")
            if net not in common:
                raise self.reader.fail(
                    opts["network"][1], f"network '{net}' is not shared by every {role} node (shared: {', '.join(common) or 'none'})"
                )
            return net
        if not common:
            raise self.reader.fail(self.node_keys[nodes[0]], f"the {role} nodes share no network")
        return common[0]

    def clients_reach(self, network: str, clients: tuple[str, ...], role: str) -> None:
        """Hypervisors that use a storage must sit on its network."""
        for client in clients:
            if network not in self.lab.node(client).networks:
                raise self.reader.fail(
                    self.node_keys[client],
                    f"hypervisor '{client}' uses the {role} storage but is not on its network '{network}': add it to the node's networks",
                )
