"""Tunnel devices on a host (kvmlab.tunnels): the commands sent, and what is read back."""

from __future__ import annotations

import json

import pytest

from kvmlab import tunnels
from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.remote import Result
from kvmlab.spread import Tunnel

HOST = LibvirtHost("qemu+ssh://root@host-a/system", hostname="host-a")
TUNNEL = Tunnel("storage", 0xD50500, "kvlbridge", "192.0.2.1", ("192.0.2.2",))


class Recorder:
    def __init__(self, *answers: Result) -> None:
        self.commands: list[str] = []
        self.answers = list(answers)

    def __call__(self, host: LibvirtHost, command: str) -> Result:
        assert host is HOST
        self.commands.append(command)
        return self.answers.pop(0) if self.answers else Result(0, "", "")


def test_make_runs_the_tunnels_commands_stopping_at_the_first_failure():
    run = Recorder()
    tunnels.make(HOST, TUNNEL, run)
    (command,) = run.commands
    assert command.startswith("set -e; ")
    assert "ip link add kvxd50500 type vxlan id 13960448 local 192.0.2.1 dstport 4789" in command
    assert command.endswith("ip link set kvxd50500 up")


def test_a_refused_command_names_the_host_and_what_it_said():
    run = Recorder(Result(2, "", "RTNETLINK answers: File exists"))
    with pytest.raises(HarnessError, match=r"make tunnel kvxd50500 of network storage on root@host-a.*File exists"):
        tunnels.make(HOST, TUNNEL, run)


def test_cut_and_mend_set_the_device_down_and_up():
    run = Recorder()
    tunnels.cut(HOST, TUNNEL, run)
    tunnels.mend(HOST, TUNNEL, run)
    assert run.commands == ["ip link set kvxd50500 down", "ip link set kvxd50500 up"]


def test_only_kvmlabs_devices_are_listed_and_those_without_a_bridge_are_leftovers():
    links = [
        {"ifname": "kvxd50500", "master": "kvlbridge", "flags": ["BROADCAST", "UP"]},
        {"ifname": "kvxd50600", "flags": ["BROADCAST"]},
        {"ifname": "vxlan100", "flags": ["UP"]},  # somebody else's
    ]
    run = Recorder(Result(0, json.dumps(links), ""), Result(0, json.dumps(links), ""))
    assert tunnels.devices(HOST, run) == [
        tunnels.TunnelDevice("kvxd50500", 0xD50500, "kvlbridge", True),
        tunnels.TunnelDevice("kvxd50600", 0xD50600, "", False),
    ]
    assert [d.name for d in tunnels.leftovers(HOST, run)] == ["kvxd50600"]


def test_nothing_to_remove_sends_nothing():
    run = Recorder()
    tunnels.remove(HOST, [], run)
    tunnels.remove(HOST, [0xD50500], run)
    assert run.commands == ["ip link del kvxd50500 2>/dev/null || true"]


def test_the_underlay_address_is_the_source_of_the_hosts_route_to_its_peer():
    here = LibvirtHost("qemu:///system")
    # A route lookup on this machine: no packet leaves it.
    assert tunnels.underlay_address(here, "127.0.0.1") == "127.0.0.1"
    # (No name is looked up: that would ask a DNS server.)
    with pytest.raises(HarnessError, match=r"cannot resolve host-b or has no IPv4 route to it"):
        tunnels.underlay_address(HOST, "host-b", Recorder(Result(1, "", "")))


def test_this_machines_device_list_parses():
    assert all(d.name.startswith("kvx") for d in tunnels.devices(LibvirtHost("qemu:///system")))
