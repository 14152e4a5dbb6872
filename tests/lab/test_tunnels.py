"""One lab network over two hosts (kvmlab.spread, kvmlab.tunnels), on host1 and host2 of labs/two-hosts.yaml.

Each host gets the network as kvmlab renders it for a spread lab (its own bridge address, the tunnel's
MTU) and a VXLAN tunnel to the other, made through the host's libvirt URI and SSH as for a remote host.
Traffic goes only between the two hosts (lab nodes) and their bridges.
"""

from __future__ import annotations

import ipaddress

import pytest

from kvmlab import tunnels
from kvmlab.lab import LabSession
from kvmlab.libvirt_host import LibvirtHost, host_of
from kvmlab.loader import parse_lab
from kvmlab.model import Placement
from kvmlab.render import bridge_name, network_name, render_network
from kvmlab.spread import VXLAN_OVERHEAD, place_nodes
from tests.lab.helpers import node_libvirt_uri

# Alone: with the other modules of the two-hosts lab, which run alone (nested KVM in TCG hosts), so
# that one build of the lab serves them all.
pytestmark = [pytest.mark.lab("two-hosts"), pytest.mark.alone, pytest.mark.slow]  # slow: see test_remote_host.py

HOSTS = ("host1", "host2")
# Lives only inside the two hosts: no network of this machine is bridged to it.
SPAN = ipaddress.ip_network("10.213.250.0/24")
SPREAD_LAB = parse_lab("networks: {span: {}}\nnodes:\n  a: {host: host1}\n  b: {host: host2}\n", "spread.yaml", "spread")
PLACEMENT = Placement("tun0a1", {"span": SPAN})


def site(lab: LabSession, node: str) -> LibvirtHost:
    return host_of(node_libvirt_uri(lab, node))


@pytest.fixture
def spread_network(lab: LabSession):
    """The network `span` on both hosts, joined by its tunnel; removed after."""
    spread = place_nodes(SPREAD_LAB, {"a": "host1", "b": "host2"}, {h: 10**6 for h in HOSTS})
    bridges = {"span": bridge_name(SPREAD_LAB.name, PLACEMENT.run_id, "span")}
    other = {"host1": "host2", "host2": "host1"}
    underlay = {h: tunnels.underlay_address(site(lab, h), lab.node(other[h]).address()) for h in HOSTS}
    made = {}
    try:
        for h in HOSTS:
            xml = render_network(SPREAD_LAB, PLACEMENT, "span", spread.gateway(SPREAD_LAB, "span", h, SPAN), mtu=1500 - VXLAN_OVERHEAD)
            lab.node(h).remote.put("/tmp/span.xml", xml)
            lab.node(h).run_expect("virsh -q net-create /tmp/span.xml")
            (made[h],) = spread.tunnels(SPREAD_LAB, h, PLACEMENT.subnets, bridges, underlay)
            tunnels.make(site(lab, h), made[h])
        yield made
    finally:
        for h in HOSTS:
            lab.node(h).run(f"virsh -q net-destroy {network_name(SPREAD_LAB.name, PLACEMENT.run_id, 'span')}")
            tunnels.remove(site(lab, h), [t.vni for t in made.values()])


def ping(lab: LabSession, node: str, address: str, size: int = 56) -> int:
    return lab.node(node).run(f"ping -n -q -c 2 -W 3 -M do -s {size} {address}").rc


def test_the_hosts_bridges_reach_each_other_through_the_tunnel_up_to_its_mtu(lab, spread_network):
    tunnel = spread_network["host1"]
    assert ping(lab, "host1", "10.213.250.2") == 0, "host2's bridge does not answer across the tunnel"
    assert ping(lab, "host2", "10.213.250.1") == 0
    # The largest ping that fits the network's MTU crosses unfragmented (DF set); one byte more does not leave.
    biggest = tunnel.mtu - 28
    assert ping(lab, "host1", "10.213.250.2", biggest) == 0, f"a {tunnel.mtu}-byte packet did not cross"
    assert ping(lab, "host1", "10.213.250.2", biggest + 1) != 0
    mtu = lab.node("host2").run_expect(f"cat /sys/class/net/{tunnel.device}/mtu").strip()
    assert mtu == str(tunnel.mtu)


def test_a_cut_tunnel_parts_the_hosts_until_it_is_mended(lab, spread_network):
    host2 = site(lab, "host2")
    tunnels.cut(host2, spread_network["host2"])
    assert ping(lab, "host1", "10.213.250.2") != 0, "host2 still answers with its tunnel cut"
    assert [d.up for d in tunnels.devices(host2)] == [False]
    tunnels.mend(host2, spread_network["host2"])
    assert ping(lab, "host1", "10.213.250.2") == 0, "host2 does not answer once the tunnel is mended"


def test_a_tunnel_whose_network_is_gone_is_a_leftover_and_is_removed(lab, spread_network):
    host2 = site(lab, "host2")
    lab.node("host2").run_expect(f"virsh -q net-destroy {network_name(SPREAD_LAB.name, PLACEMENT.run_id, 'span')}")
    (left,) = tunnels.leftovers(host2)
    assert left.vni == spread_network["host2"].vni
    tunnels.remove(host2, [left.vni])
    assert tunnels.devices(host2) == []
