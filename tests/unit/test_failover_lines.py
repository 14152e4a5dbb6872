"""Failover scenarios as lines of a lab file (`failover:`): what the loader accepts and refuses, and how
kvmlab verify runs them: after every other check, one at a time, in the file's order."""

from __future__ import annotations

import threading
import time

import pytest

from kvmlab import failover
from kvmlab.errors import LabFileError
from kvmlab.loader import parse_lab, parse_lab_file
from kvmlab.roles import Check
from kvmlab.verify import PASS, checks_for, run_checks

SMOKE = """\
networks: {mgmt: {}, storage: {}}
nodes:
  nfs1: {roles: [nfs-server]}
  hv1: {roles: [hypervisor]}
roles:
  nfs-server:
    exports: [{path: /srv/nfs/vms, clients: storage, options: [rw, sync, no_root_squash, no_subtree_check]}]
  hypervisor:
    netfs_pools: [{name: nfsvms, server: nfs1, network: storage, path: /srv/nfs/vms}]
"""


def error_of(text: str) -> tuple[int, int, str]:
    with pytest.raises(LabFileError) as err:
        parse_lab_file(text, "lab.yaml", "lab")
    return err.value.line, err.value.col, err.value.message


def test_a_lab_names_its_scenarios_and_a_variant_adds_one():
    text = SMOKE + "failover: [nfs-server-restart]\nvariants:\n  none: {failover: []}\n"
    file = parse_lab_file(text, "lab.yaml", "lab")
    assert file.base.failover == ("nfs-server-restart",) and file.lab("none").failover == ()
    assert parse_lab(SMOKE, "lab.yaml", "lab").failover == ()


def test_an_unknown_scenario_is_refused_with_the_closest_name():
    line, col, message = error_of(SMOKE + "failover: [nfs-server-restrat]\n")
    assert (line, col) == (10, 12)
    assert message.startswith("unknown failover scenario 'nfs-server-restrat' in failover") and "'nfs-server-restart'" in message


def test_a_scenario_whose_roles_the_lab_lacks_is_refused_at_its_line():
    line, col, message = error_of(SMOKE + "failover:\n  - nfs-server-restart\n  - ceph-osd-node-down\n")
    assert (line, col, message) == (
        12,
        5,
        "failover scenario 'ceph-osd-node-down' (one OSD node powered off) needs a node with role ceph-osd",
    )


def test_a_scenario_that_needs_more_than_roles_says_what():
    no_pool = SMOKE.replace(
        "    netfs_pools: [{name: nfsvms, server: nfs1, network: storage, path: /srv/nfs/vms}]\n", "    netfs_pools: []\n"
    )
    _, _, message = error_of(no_pool + "failover: [nfs-server-restart]\n")
    assert message == (
        "failover scenario 'nfs-server-restart' (the NFS server off and on under a hard mount) needs a hypervisor netfs pool on the NFS server"
    )
    raid = "nodes:\n  hv1: {roles: [local-raid], disks: {a: 1G, b: 1G, c: 1G, d: 1G}}\nroles:\n  local-raid: {members: [a, b, c, d]}\n"
    _, _, message = error_of(raid + "failover: [raid-member-lost]\n")
    assert message.endswith("needs a spare to rebuild onto (local-raid 'spares:')")


def test_the_scenarios_are_checks_of_their_own_last_and_in_the_file_s_order():
    lab = parse_lab(SMOKE + "failover: [nfs-server-restart]\n", "lab.yaml", "lab")
    ids = [c.id for c in checks_for(lab)]
    assert ids[-1] == "failover::nfs-server-restart" and sum(i.startswith("failover::") for i in ids) == 1
    assert [c.id for c in checks_for(lab, ["failover"])] == ["failover::nfs-server-restart"]
    assert not [c for c in checks_for(parse_lab(SMOKE, "lab.yaml", "lab")) if c.role == failover.ROLE]


def test_failover_checks_run_after_every_other_check_and_alone():
    running: set[str] = set()
    seen: list[tuple[str, frozenset[str]]] = []
    lock = threading.Lock()

    def check(name: str) -> Check:
        role = "failover" if name.startswith("f") else name

        def run(_lab):
            with lock:
                running.add(name)
                seen.append((name, frozenset(running)))
            time.sleep(0.05)
            with lock:
                running.discard(name)

        return Check(role, name, run)

    checks = [check("f1"), check("a"), check("f2"), check("b"), check("c")]
    results = run_checks(object(), checks)
    assert [r.check.name for r in results] == ["f1", "a", "f2", "b", "c"] and all(r.outcome == PASS for r in results)
    order = [name for name, _ in seen]
    assert order[-2:] == ["f1", "f2"], order
    assert all(others == {name} for name, others in seen if name.startswith("f")), seen
