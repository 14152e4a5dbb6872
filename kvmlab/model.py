"""The lab model: frozen dataclasses built by the loader and read by everything else."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Network:
    name: str
    prefix: int = 24


@dataclass(frozen=True)
class Disk:
    name: str
    size_mib: int


@dataclass(frozen=True)
class NfsExport:
    path: str
    clients: str  # a network name or a CIDR
    options: tuple[str, ...] = ("rw", "sync", "no_root_squash")


@dataclass(frozen=True)
class NetfsPool:
    name: str
    server: str  # node name
    path: str  # exported directory on the server
    network: str  # network over which the pool mounts the export
    target: str  # mount point on the hypervisor


@dataclass(frozen=True)
class NfsServerSettings:
    exports: tuple[NfsExport, ...] = ()


@dataclass(frozen=True)
class HypervisorSettings:
    netfs_pools: tuple[NetfsPool, ...] = ()


@dataclass(frozen=True)
class Node:
    name: str
    roles: tuple[str, ...]
    memory_mib: int
    vcpus: int
    disks: tuple[Disk, ...]
    networks: tuple[str, ...]


@dataclass(frozen=True)
class Lab:
    name: str
    path: str
    networks: tuple[Network, ...]
    nodes: tuple[Node, ...]
    nfs_server: NfsServerSettings = field(default_factory=NfsServerSettings)
    hypervisor: HypervisorSettings = field(default_factory=HypervisorSettings)

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


@dataclass(frozen=True)
class Placement:
    """Where a lab lands on the host for one run: run id and one subnet per network."""

    run_id: str
    subnets: dict[str, ipaddress.IPv4Network]

    def host_address(self, network: str) -> str:
        return str(self.subnets[network].network_address + 1)

    def address(self, lab: Lab, node: str, network: str) -> str:
        index = [n.name for n in lab.nodes].index(node)
        return str(self.subnets[network].network_address + 10 + index)

    def mac(self, lab: Lab, node: str, network: str) -> str:
        # Derived from the address, which is unique on the host while its subnet is leased.
        octets = ipaddress.IPv4Address(self.address(lab, node, network)).packed
        return "52:54:" + ":".join(f"{b:02x}" for b in octets)


KNOWN_ROLES = ("nfs-server", "hypervisor")
NFS_OPTIONS = (
    "rw",
    "ro",
    "sync",
    "async",
    "root_squash",
    "no_root_squash",
    "all_squash",
    "no_all_squash",
    "secure",
    "insecure",
    "subtree_check",
    "no_subtree_check",
    "wdelay",
    "no_wdelay",
    "crossmnt",
    "nohide",
)
