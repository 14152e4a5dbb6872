"""The lab model: frozen dataclasses built by the loader and read by everything else."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Network:
    name: str
    prefix: int = 24


@dataclass(frozen=True)
class Disk:
    name: str
    size_mib: int


VIDEO_MODELS = ("vga", "qxl", "virtio", "none")


@dataclass(frozen=True)
class Vnc:
    listen: str = "127.0.0.1"
    password: str = ""  # RFB's VNC authentication uses at most 8 characters


@dataclass(frozen=True)
class Spice:
    listen: str = "127.0.0.1"
    tls: bool = False  # every channel on the TLS port, with the host's kvmlab CA (scripts/spice-tls.sh)


@dataclass(frozen=True)
class Display:
    """A node's screen (OUTLINE 6.1-6.4): its video model and the graphics consoles that show it."""

    video: str
    vnc: Vnc | None = None
    spice: Spice | None = None

    @property
    def needs_drm(self) -> bool:
        """A video device the guest drives: such a node boots the image's kernel that has DRM drivers."""
        return self.video != "none"


@dataclass(frozen=True)
class Node:
    name: str
    roles: tuple[str, ...]
    memory_mib: int
    vcpus: int
    disks: tuple[Disk, ...]
    networks: tuple[str, ...]
    display: Display | None = None
    host: str = ""  # the hosts file's host it must run on (kvmlab.spread); "": wherever there is room


# The Debian releases a lab can run on (its `release:`); each has its own image, cached by its recipe hash.
RELEASES = ("bookworm", "trixie")
DEFAULT_RELEASE = "bookworm"


@dataclass(frozen=True)
class Lab:
    name: str
    path: str
    networks: tuple[Network, ...]
    nodes: tuple[Node, ...]
    # Each role's settings, by the key of its `roles:` entry (e.g. "nfs-server"); every
    # role kvmlab has is here, with its defaults when the lab file does not set it.
    settings: Mapping[str, Any] = field(default_factory=dict)
    templates: str = ""  # the lab's own templates folder, layered over kvmlab's
    release: str = DEFAULT_RELEASE  # the Debian release of its nodes' image
    failover: tuple[str, ...] = ()  # failover scenarios kvmlab verify runs after the roles' checks (kvmlab.failover)
    variant: str = ""  # the variant of its file this lab is (kvmlab.variants), named <lab>-<variant>; "" for the file's own lab

    def __getattr__(self, attr: str) -> Any:
        """A role's settings as an attribute: `lab.iscsi_target` is `lab.settings["iscsi-target"]`."""
        settings = self.__dict__.get("settings", {})
        key = attr.replace("_", "-")
        if key in settings:
            return settings[key]
        raise AttributeError(f"{type(self).__name__} has no attribute or role settings '{attr}'")

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def network(self, name: str) -> Network:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def by_role(self, role: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if role in n.roles)

    @property
    def memory_mib(self) -> int:
        return sum(n.memory_mib for n in self.nodes)

    @property
    def disk_mib(self) -> int:
        return sum(d.size_mib for n in self.nodes for d in n.disks)


FIRST_NODE_OFFSET = 10  # the lab's Nth node (from 0) gets address subnet + 10 + N on each of its networks


@dataclass(frozen=True)
class Placement:
    """Where a lab lands on the host for one run: run id and one subnet per network."""

    run_id: str
    subnets: dict[str, ipaddress.IPv4Network]

    def host_address(self, network: str) -> str:
        return str(self.subnets[network].network_address + 1)

    def address(self, lab: Lab, node: str, network: str) -> str:
        index = [n.name for n in lab.nodes].index(node)
        return str(self.subnets[network].network_address + FIRST_NODE_OFFSET + index)

    def mac(self, lab: Lab, node: str, network: str) -> str:
        # Derived from the address, which is unique on the host while its subnet is leased.
        octets = ipaddress.IPv4Address(self.address(lab, node, network)).packed
        return "52:54:" + ":".join(f"{b:02x}" for b in octets)


# Keys under `roles:` in a lab file, and the roles each one configures.
