"""A lab network's VXLAN tunnels on the hosts it spans: made, listed, cut, and removed (as root, over
run_on_host: this machine's shell or the host's SSH connection). What the tunnels are is kvmlab.spread's.

A tunnel device belongs to its lab network's bridge. When the network goes (down, gc, a host reboot),
libvirt removes the bridge and the device stays behind without a master: that is how gc finds the
tunnels of dead runs on a host without any record of them.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.remote import Result, run_on_host
from kvmlab.spread import TUNNEL_PREFIX, Tunnel, tunnel_cut_command, tunnel_device, tunnel_down_commands, tunnel_up_commands

Runner = Callable[[LibvirtHost, str], Result]
TUNNEL_NAME_RE = re.compile(rf"^{TUNNEL_PREFIX}([0-9a-f]{{6}})$")


@dataclass(frozen=True)
class TunnelDevice:
    name: str
    vni: int
    master: str  # the bridge it is a port of; "" when its network is gone
    up: bool


def _run(host: LibvirtHost, command: str) -> Result:
    return run_on_host(host, command, timeout=60)


def _check(host: LibvirtHost, command: str, what: str, runner: Runner) -> Result:
    res = runner(host, command)
    if res.rc != 0:
        raise HarnessError(f"{what} on {host.describe()}: {res.output.strip() or f'exit code {res.rc}'}")
    return res


def underlay_address(host: LibvirtHost, peer: str, runner: Runner = _run) -> str:
    """HOST's own address on its route to PEER (a name or address as HOST resolves it): the local end of
    a tunnel to PEER, whatever interface or address plan the host has."""
    script = (
        f"peer=$(getent ahostsv4 {shlex.quote(peer)} | awk 'NR==1 {{print $1}}'); "
        """[ -n "$peer" ] && ip -4 -o route get "$peer" | sed -n 's/.* src \\([0-9.]*\\).*/\\1/p'"""
    )
    res = runner(host, script)
    address = res.stdout.strip() if res.rc == 0 else ""
    if not address:
        raise HarnessError(
            f"{host.describe()} cannot resolve {peer} or has no IPv4 route to it: the hosts of one lab must reach each other"
        )
    return address


def make(host: LibvirtHost, tunnel: Tunnel, runner: Runner = _run) -> None:
    """TUNNEL on HOST, a port of its network's bridge (replacing a device of the same ID)."""
    _check(host, "set -e; " + "; ".join(tunnel_up_commands(tunnel)), f"make tunnel {tunnel.device} of network {tunnel.network}", runner)


def remove(host: LibvirtHost, vnis: Sequence[int], runner: Runner = _run) -> None:
    if vnis:
        _check(host, "; ".join(tunnel_down_commands(vnis)), "remove tunnels", runner)


def cut(host: LibvirtHost, tunnel: Tunnel, runner: Runner = _run) -> None:
    """The link between hosts cut for this network: its tunnel device down on HOST (frames to and from
    the other hosts stop; the nodes on HOST still reach each other)."""
    _check(host, tunnel_cut_command(tunnel, up=False), f"cut tunnel {tunnel.device}", runner)


def mend(host: LibvirtHost, tunnel: Tunnel, runner: Runner = _run) -> None:
    _check(host, tunnel_cut_command(tunnel, up=True), f"mend tunnel {tunnel.device}", runner)


def set_links(host: LibvirtHost, vnis: Sequence[int], up: bool, runner: Runner = _run) -> None:
    """Every tunnel of VNIS on HOST down (the links between HOST and the other hosts cut) or up again."""
    if vnis:
        state = "up" if up else "down"
        _check(host, "; ".join(f"ip link set {tunnel_device(vni)} {state}" for vni in vnis), f"set tunnels {state}", runner)


def devices(host: LibvirtHost, runner: Runner = _run) -> list[TunnelDevice]:
    """kvmlab's tunnel devices on HOST (other VXLAN devices are not kvmlab's and are left out)."""
    res = _check(host, "ip -j link show type vxlan", "list VXLAN devices", runner)
    out = []
    for link in json.loads(res.stdout or "[]"):
        match = TUNNEL_NAME_RE.match(link.get("ifname", ""))
        if match:
            out.append(TunnelDevice(link["ifname"], int(match.group(1), 16), link.get("master", ""), "UP" in link.get("flags", [])))
    return out


def leftovers(host: LibvirtHost, runner: Runner = _run) -> list[TunnelDevice]:
    """Tunnels whose lab network is gone (no bridge): what gc removes."""
    return [d for d in devices(host, runner) if not d.master]
