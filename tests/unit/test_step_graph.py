"""The role-step dependency graph: what waits for what, and that nothing waits for unrelated slow nodes."""

from __future__ import annotations

import threading
import time

from kvmlab.roles import PHASES, waits_for
from kvmlab.step_graph import StepGraph, Unit, dependencies, format_timeline


def unit(node: str, role: str, phase: str, run=lambda: None) -> Unit:
    return Unit(node, role, phase, waits_for(role), run)


def ids(units: list[Unit]) -> set[str]:
    return {u.id for u in units}


def storage_units() -> list[Unit]:
    return [
        unit("mon", "ceph-mon", "setup"),
        unit("mon", "ceph-mon", "finish"),
        unit("osd1", "ceph-osd", "setup"),
        unit("osd1", "ceph-osd", "join"),
        unit("osd2", "ceph-osd", "setup"),
        unit("osd2", "ceph-osd", "join"),
        unit("adm", "ceph-admin", "finish"),
        unit("g1", "gluster", "setup"),
        unit("g1", "gluster", "join"),
        unit("nfs", "nfs-server", "setup"),
        unit("hv", "hypervisor", "setup"),
        unit("hv", "hypervisor", "join"),
        unit("hv", "hypervisor", "clients"),
        unit("hv", "gluster", "clients"),
        unit("hv", "ceph-mon", "clients"),
    ]


def test_an_osd_joins_once_the_monitor_and_its_own_node_are_set_up_not_the_other_osds() -> None:
    deps = {u.id: ids(d) for u, d in dependencies(storage_units(), PHASES).items()}
    assert deps["osd1: ceph-osd join"] == {"osd1: ceph-osd setup", "mon: ceph-mon setup"}


def test_a_hypervisors_pool_on_a_storage_waits_for_that_storage_only() -> None:
    deps = {u.id: ids(d) for u, d in dependencies(storage_units(), PHASES).items()}
    assert deps["hv: gluster clients"] == {"g1: gluster setup", "g1: gluster join", "hv: hypervisor setup", "hv: hypervisor join"}
    assert "mon: ceph-mon finish" in deps["hv: ceph-mon clients"] and "adm: ceph-admin finish" in deps["hv: ceph-mon clients"]
    assert not any(d.startswith(("mon", "osd", "adm")) for d in deps["hv: gluster clients"])
    assert deps["hv: hypervisor clients"] == {"hv: hypervisor setup", "hv: hypervisor join", "nfs: nfs-server setup"}


def test_the_ceph_pools_wait_for_every_osd() -> None:
    deps = {u.id: ids(d) for u, d in dependencies(storage_units(), PHASES).items()}
    assert {"osd1: ceph-osd join", "osd2: ceph-osd join", "mon: ceph-mon setup"} <= deps["adm: ceph-admin finish"]


def run_all(graph: StepGraph, nodes: list[str], stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()

    def run_unit(u: Unit) -> bool:
        u.run()
        return True

    threads = [threading.Thread(target=graph.run_node, args=(n, stop.is_set, run_unit)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
        assert not t.is_alive(), "the graph did not finish"


def test_a_pool_is_made_while_an_unrelated_cluster_is_still_joining() -> None:
    ceph_may_finish = threading.Event()
    order: list[str] = []

    def slow_osd() -> None:  # under a lab-wide barrier, nothing of phase clients could start before this ends
        assert ceph_may_finish.wait(10)
        order.append("osd joined")

    def nfs_pool() -> None:
        order.append("nfs pool")
        ceph_may_finish.set()

    units = [
        unit("nfs", "nfs-server", "setup"),
        unit("mon", "ceph-mon", "setup"),
        unit("osd1", "ceph-osd", "setup"),
        unit("osd1", "ceph-osd", "join", slow_osd),
        unit("hv", "hypervisor", "setup"),
        unit("hv", "ceph-mon", "clients"),
        unit("hv", "hypervisor", "clients", nfs_pool),
    ]
    graph = StepGraph(units, PHASES)
    run_all(graph, ["nfs", "mon", "osd1", "hv"])
    assert order == ["nfs pool", "osd joined"]
    ceph_pool = next(s for s in graph.timeline if s.node == "hv" and s.role == "ceph-mon")
    osd_join = next(s for s in graph.timeline if s.role == "ceph-osd" and s.phase == "join")
    assert ceph_pool.start_s >= osd_join.end_s  # the Ceph pool itself still waited for the OSD
    assert [s.phase for s in graph.critical_path()][-1] == "clients"


def test_a_failed_node_releases_those_waiting_for_it() -> None:
    ran: list[str] = []
    units = [unit("mon", "ceph-mon", "setup"), unit("osd1", "ceph-osd", "join", lambda: ran.append("join"))]
    graph = StepGraph(units, PHASES)
    graph.finish_node("mon")  # mon failed to boot: its units count as finished
    run_all(graph, ["osd1"])
    assert ran == ["join"]


def test_stop_ends_a_wait() -> None:
    graph = StepGraph([unit("mon", "ceph-mon", "setup"), unit("osd1", "ceph-osd", "join")], PHASES)
    stop = threading.Event()
    stop.set()
    start = time.monotonic()
    assert graph.run_node("osd1", stop.is_set, lambda u: True) is False
    assert time.monotonic() - start < 2


def test_timeline_is_printable() -> None:
    graph = StepGraph([unit("nfs", "nfs-server", "setup")], PHASES)
    run_all(graph, ["nfs"])
    text = format_timeline(graph.timeline)
    assert text.startswith("nfs: nfs-server setup") and "#" in text
    assert graph.phase_end_s().keys() == {"setup"}
