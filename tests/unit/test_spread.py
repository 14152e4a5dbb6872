"""A lab over several hosts: node placement, per-host gateways, VXLAN tunnels (kvmlab.spread)."""

from __future__ import annotations

import ipaddress

import pytest

from kvmlab.errors import HarnessError
from kvmlab.loader import load_lab
from kvmlab.spread import (
    Spread,
    place_nodes,
    tunnel_cut_command,
    tunnel_device,
    tunnel_down_commands,
    tunnel_up_commands,
    vni_of,
)

SMOKE = "labs/smoke.yaml"
SUBNETS = {"mgmt": ipaddress.ip_network("10.213.4.0/24"), "storage": ipaddress.ip_network("10.213.5.0/24")}


@pytest.fixture
def smoke():
    return load_lab(SMOKE)


def test_pinned_nodes_go_where_they_say_and_the_rest_where_memory_is(smoke):
    names = [n.name for n in smoke.nodes]
    spread = place_nodes(smoke, {names[0]: "a"}, {"a": 8192, "b": 8192})
    assert spread.node_host[names[0]] == "a"
    assert set(spread.node_host) == set(names)
    # Whatever is not pinned fills the emptier host first.
    assert any(spread.node_host[n] == "b" for n in names[1:])


def test_a_node_pinned_to_an_unknown_host_names_the_hosts(smoke):
    node = smoke.nodes[0].name
    with pytest.raises(HarnessError, match=rf"node '{node}' asks for host 'c'.*: a, b"):
        place_nodes(smoke, {node: "c"}, {"a": 4096, "b": 4096})


def test_a_lab_too_big_for_its_hosts_says_which_host_lacks_what(smoke):
    with pytest.raises(HarnessError, match=r"does not fit on its hosts: a lacks \d+ MiB"):
        place_nodes(smoke, {}, {"a": 100})


def test_a_network_on_one_host_has_no_tunnel(smoke):
    spread = Spread(("a", "b"), {n.name: "a" for n in smoke.nodes})
    assert not any(spread.spans(smoke, net.name) for net in smoke.networks)
    assert spread.tunnels(smoke, "a", SUBNETS, {}, {"a": "192.0.2.1", "b": "192.0.2.2"}) == []


def test_a_spanning_network_gets_a_gateway_per_host_and_a_tunnel_to_each_peer(smoke):
    first, *rest = [n.name for n in smoke.nodes]
    spread = Spread(("a", "b"), {first: "a", **{n: "b" for n in rest}})
    shared = [net.name for net in smoke.networks if spread.spans(smoke, net.name)]
    assert shared, "the smoke lab's nodes share a network"
    net = shared[0]
    subnet = ipaddress.ip_network("10.213.4.0/24")
    assert spread.gateway(smoke, net, "a", subnet) == "10.213.4.1"
    assert spread.gateway(smoke, net, "b", subnet) == "10.213.4.2"
    subnets = {name: ipaddress.ip_network(f"10.213.{4 + i}.0/24") for i, name in enumerate(n.name for n in smoke.networks)}
    bridges = {name: f"kvbr-{name}" for name in subnets}
    (tunnel, *_) = spread.tunnels(smoke, "a", subnets, bridges, {"a": "192.0.2.1", "b": "192.0.2.2"})
    assert (tunnel.local, tunnel.peers, tunnel.mtu) == ("192.0.2.1", ("192.0.2.2",), 1450)
    assert tunnel.vni == vni_of(subnets[tunnel.network])


def test_distinct_subnets_get_distinct_tunnel_ids():
    ids = {vni_of(ipaddress.ip_network(f"10.213.{i}.0/24")) for i in range(256)}
    ids |= {vni_of(ipaddress.ip_network(f"10.214.0.{i * 64}/26")) for i in range(4)}
    assert len(ids) == 260
    with pytest.raises(ValueError, match="ID 0"):
        vni_of(ipaddress.ip_network("10.0.0.0/24"))


def test_tunnel_commands_make_a_mesh_member_of_the_bridge_and_remove_it(smoke):
    first, *rest = [n.name for n in smoke.nodes]
    spread = Spread(("a", "b", "c"), {first: "a", rest[0]: "b", **{n: "c" for n in rest[1:]}})
    subnets = {n.name: ipaddress.ip_network(f"10.213.{4 + i}.0/24") for i, n in enumerate(smoke.networks)}
    underlay = {"a": "192.0.2.1", "b": "192.0.2.2", "c": "192.0.2.3"}
    (tunnel, *_) = spread.tunnels(smoke, "a", subnets, {n: "br" + n for n in subnets}, underlay)
    up = tunnel_up_commands(tunnel)
    dev = tunnel_device(tunnel.vni)
    assert f"ip link add {dev} type vxlan id {tunnel.vni} local 192.0.2.1 dstport 4789" in up
    assert [c for c in up if "fdb" in c] == [f"bridge fdb append 00:00:00:00:00:00 dev {dev} dst {p}" for p in tunnel.peers]
    assert up[-2:] == [f"ip link set {dev} master br{tunnel.network}", f"ip link set {dev} up"]
    assert tunnel_down_commands([tunnel.vni]) == [f"ip link del {dev} 2>/dev/null || true"]
    assert tunnel_cut_command(tunnel, up=False) == f"ip link set {dev} down"


def test_a_node_names_its_host_in_the_lab_file(tmp_path):
    lab_file = tmp_path / "two.yaml"
    lab_file.write_text("networks: {mgmt: {}}\nnodes:\n  n1: {host: a}\n  n2: {}\n")
    lab = load_lab(lab_file)
    assert [(n.name, n.host) for n in lab.nodes] == [("n1", "a"), ("n2", "")]


def test_a_host_that_is_no_name_fails_at_its_line(tmp_path):
    lab_file = tmp_path / "bad.yaml"
    lab_file.write_text("networks: {mgmt: {}}\nnodes:\n  n1:\n    host: 'a b'\n")
    with pytest.raises(Exception, match=r"bad.yaml:4.*host of node 'n1' 'a b' is not a valid name"):
        load_lab(lab_file)


def test_a_spread_runs_record_goes_with_its_last_host(tmp_path, monkeypatch):
    from kvmlab import runs

    monkeypatch.setenv("KVMLAB_LEASES", str(tmp_path / "leases"))
    a, b = "qemu+ssh://root@a/system", "qemu+ssh://root@b/system"
    run = runs.register("r0a1b2", "smoke", "smoke.yaml", {"mgmt": 24}, uri=a, node_uris={"nfs1": a, "hv1": b})
    assert run.uris == [a, b]
    assert runs.release_on("r0a1b2", a) is False
    assert runs.all_runs()["r0a1b2"].uris == [b]
    assert runs.release_on("r0a1b2", b) is True
    assert "r0a1b2" not in runs.all_runs()


def test_a_lab_naming_its_hosts_is_spread_over_the_hosts_file(tmp_path, monkeypatch):
    from kvmlab import hosts_file

    hosts = tmp_path / "hosts.yaml"
    hosts.write_text('hosts:\n  a: {uri: "qemu+ssh://root@a/system"}\n  b: {uri: "qemu+ssh://root@b/system"}\n')
    monkeypatch.setattr(hosts_file, "measure", lambda entry: hosts_file.Room(entry, 8192, 50000))
    lab_file = tmp_path / "two.yaml"
    lab_file.write_text("networks: {mgmt: {}}\nnodes:\n  n1: {host: a}\n  n2: {host: b}\n  n3: {}\n")
    said: list[str] = []
    spread, uris = hosts_file.spread_over(load_lab(lab_file), str(hosts), said.append)
    assert (spread.node_host["n1"], spread.node_host["n2"]) == ("a", "b")
    assert uris == {"a": "qemu+ssh://root@a/system", "b": "qemu+ssh://root@b/system"}
    assert "spread over a (n1" in said[0]
    lab_file.write_text("networks: {mgmt: {}}\nnodes:\n  n1: {host: c}\n")
    with pytest.raises(Exception, match=r"two.yaml:3:14: node 'n1' names host 'c', which .*hosts.yaml does not have \(its hosts: a, b\)"):
        hosts_file.spread_over(load_lab(lab_file), str(hosts), said.append)
    lab_file.write_text("networks: {mgmt: {}}\nnodes:\n  n1: {}\n")
    assert hosts_file.spread_over(load_lab(lab_file), str(hosts), said.append) is None
