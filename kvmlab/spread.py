"""One lab over several libvirt hosts: which host runs which node, and how a lab network spans hosts.

Pure: nothing here talks to a host. A lab network whose nodes run on two or more hosts is a bridge on
each of those hosts, the bridges joined by a VXLAN tunnel (a full mesh of unicast peers, no multicast:
lab hosts need not share a multicast domain). Facts this rests on:

- The tunnel's ID (VNI) is the low 24 bits of the network's leased subnet. A subnet is leased on every
  host the network spans, so two networks on one host never share an ID, and no second lease exists.
- Each host's bridge gets an address of its own (.1, .2, ... in host order): a node keeps its static
  address wherever it runs, and two bridges that both answered for .1 would fight over it in ARP.
- VXLAN over IPv4 adds 50 bytes, so the network's MTU is the underlay's minus 50; libvirt passes it to
  each tap and to virtio-net guests (host_mtu), so NFS, iSCSI, Gluster and Ceph never fragment.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kvmlab.errors import HarnessError
from kvmlab.model import FIRST_NODE_OFFSET, Lab

VXLAN_PORT = 4789  # IANA's port for VXLAN
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
UNDERLAY_MTU = 1500
TUNNEL_PREFIX = "kvx"  # tunnel devices are kvx<VNI in hex>: kvmlab's own, found again by gc


@dataclass(frozen=True)
class Tunnel:
    """One lab network's VXLAN as one host sees it."""

    network: str
    vni: int
    bridge: str  # the lab network's bridge on this host
    local: str  # this host's underlay address
    peers: tuple[str, ...]  # the other hosts' underlay addresses
    mtu: int = UNDERLAY_MTU - VXLAN_OVERHEAD

    @property
    def device(self) -> str:
        return tunnel_device(self.vni)


@dataclass(frozen=True)
class Spread:
    """Which host runs each node, in a fixed host order (the order gateway addresses follow)."""

    hosts: tuple[str, ...]
    node_host: Mapping[str, str]

    def nodes_on(self, host: str) -> list[str]:
        return [node for node, where in self.node_host.items() if where == host]

    def network_hosts(self, lab: Lab, network: str) -> list[str]:
        """The hosts that need NETWORK's bridge: those running a node on it, in host order."""
        used = {self.node_host[n.name] for n in lab.nodes if network in n.networks}
        return [h for h in self.hosts if h in used]

    def spans(self, lab: Lab, network: str) -> bool:
        return len(self.network_hosts(lab, network)) > 1

    def gateway(self, lab: Lab, network: str, host: str, subnet: ipaddress.IPv4Network) -> str:
        """HOST's own address on NETWORK's bridge: .1 for the first host the network spans, .2 next..."""
        hosts = self.network_hosts(lab, network)
        if host not in hosts:
            raise ValueError(f"network {network!r} has no node on host {host!r}")
        index = hosts.index(host)
        if 1 + index >= FIRST_NODE_OFFSET:
            raise HarnessError(
                f"network {network!r} spans {len(hosts)} hosts; at most {FIRST_NODE_OFFSET - 1} fit below the nodes' addresses"
            )
        return str(subnet.network_address + 1 + index)

    def tunnels(
        self, lab: Lab, host: str, subnets: Mapping[str, ipaddress.IPv4Network], bridges: Mapping[str, str], underlay: Mapping[str, str]
    ) -> list[Tunnel]:
        """HOST's tunnels: one per lab network that spans HOST and another host."""
        out = []
        for net in lab.networks:
            hosts = self.network_hosts(lab, net.name)
            if host not in hosts or len(hosts) < 2:
                continue
            out.append(
                Tunnel(
                    network=net.name,
                    vni=vni_of(subnets[net.name]),
                    bridge=bridges[net.name],
                    local=underlay[host],
                    peers=tuple(underlay[h] for h in hosts if h != host),
                )
            )
        return out


def vni_of(subnet: ipaddress.IPv4Network) -> int:
    """The tunnel ID of a leased subnet: its network address's low 24 bits (subnets never overlap, so
    distinct subnets of one /8 pool get distinct IDs)."""
    vni = int(subnet.network_address) & 0xFFFFFF
    if vni == 0:
        raise ValueError(f"subnet {subnet} gives VXLAN ID 0, which is reserved; lease subnets off an /8's start")
    return vni


def tunnel_device(vni: int) -> str:
    return f"{TUNNEL_PREFIX}{vni:06x}"


def place_nodes(lab: Lab, pinned: Mapping[str, str], free_mib: Mapping[str, int]) -> Spread:
    """Every node on a host: PINNED ones (`host:` in the lab file) where they say, the others on the host
    with the most memory left, biggest node first. FREE_MIB: each host's available memory, in host order."""
    hosts = tuple(free_mib)
    unknown = {node: host for node, host in pinned.items() if host not in free_mib}
    if unknown:
        node, host = next(iter(unknown.items()))
        raise HarnessError(f"node {node!r} asks for host {host!r}, which is not one of the hosts given: {', '.join(hosts) or 'none'}")
    left = dict(free_mib)
    where: dict[str, str] = {}
    for node in lab.nodes:
        if node.name in pinned:
            where[node.name] = pinned[node.name]
            left[pinned[node.name]] -= node.memory_mib
    for node in sorted((n for n in lab.nodes if n.name not in pinned), key=lambda n: -n.memory_mib):
        best = max(hosts, key=lambda h: left[h])
        where[node.name] = best
        left[best] -= node.memory_mib
    short = {h: -room for h, room in left.items() if room < 0}
    if short:
        detail = "; ".join(f"{h} lacks {mib} MiB (runs {', '.join(n for n, w in where.items() if w == h)})" for h, mib in short.items())
        raise HarnessError(f"lab {lab.name} does not fit on its hosts: {detail}")
    return Spread(hosts, {n.name: where[n.name] for n in lab.nodes})


def tunnel_up_commands(tunnel: Tunnel) -> list[str]:
    """Shell commands that make TUNNEL on its host (as root), idempotently: a rerun replaces it."""
    dev = tunnel.device
    commands = [
        f"ip link del {dev} 2>/dev/null || true",
        f"ip link add {dev} type vxlan id {tunnel.vni} local {tunnel.local} dstport {VXLAN_PORT}",
    ]
    # Head-end replication: broadcast and unknown frames go to every peer; learning fills in the rest.
    commands += [f"bridge fdb append 00:00:00:00:00:00 dev {dev} dst {shlex.quote(peer)}" for peer in tunnel.peers]
    commands += [
        f"ip link set {dev} mtu {tunnel.mtu}",
        f"ip link set {dev} master {shlex.quote(tunnel.bridge)}",
        f"ip link set {dev} up",
    ]
    return commands


def tunnel_down_commands(vnis: Sequence[int]) -> list[str]:
    return [f"ip link del {tunnel_device(vni)} 2>/dev/null || true" for vni in vnis]


def tunnel_cut_command(tunnel: Tunnel, up: bool) -> str:
    """The fault "cut the link between hosts": the tunnel device down (or up again) on one host."""
    return f"ip link set {tunnel.device} {'up' if up else 'down'}"
