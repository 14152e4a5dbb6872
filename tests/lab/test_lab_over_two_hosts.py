"""Labs over two libvirt hosts, host1 and host2 of labs/two-hosts.yaml, reached through each host's
qemu+libssh URI from a hosts file, as a user reaches servers of theirs.

labs/smoke.yaml with nfs1 on host1 and hv1 on host2: its storage network crosses the hosts in a VXLAN
tunnel, and hv1's netfs pool mounts nfs1's export across it. The lab's checks pass; a cut between the
hosts stalls the pool and it recovers once mended; a checkpoint saves each node on its own host and a
revert brings both back; `down` leaves nothing on either host. Then, with `kvmlab` as other clients
(their own registries): a killed spread `up` is collected by gc on both hosts, and two clients spread
labs over the same hosts at once.

In `make test-slow` only: each test needs the base image on both hosts.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kvmlab import providers, tunnels
from kvmlab.hosts_file import spread_over
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.verify import PASS, checks_for, run_checks
from kvmlab_fixtures.artifacts import keep_evidence_of
from tests.lab.helpers import ROOT, client_of, default_sigint, node_libvirt_uri, own_client_state

# In `make test` since the hosts are sent the root disk compressed: the first test's upload to both hosts
# at once took 6-12 minutes uncompressed. Alone: nested KVM in TCG hosts (see test_remote_host.py).
pytestmark = [pytest.mark.lab("two-hosts"), pytest.mark.alone, pytest.mark.slow]  # slow: see test_remote_host.py
NAME = "rspread"
HOSTS = ("host1", "host2")


def leftovers(lab: LabSession, host: str, name: str = NAME) -> str:
    """Lab NAME's domains, networks and volumes on HOST, and every tunnel of a lab network there (one
    spread lab at a time runs on the hosts)."""
    return (
        lab.node(host)
        .run_expect(
            f"virsh list --all --name | grep -- '-{name}-' ; virsh net-list --all --name | grep -- '-{name}-' ;"
            f" virsh vol-list kvmlab 2>/dev/null | grep -- '-{name}-' ; ip -o link show type vxlan | grep kvx ; true"
        )
        .strip()
    )


@pytest.fixture
def spread_lab(lab: LabSession, tmp_path: Path, monkeypatch, request):
    """The smoke lab as rspread, nfs1 pinned to host1 and hv1 to host2; torn down after."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": {h: {"uri": node_libvirt_uri(lab, h)} for h in HOSTS}}))
    for h in HOSTS:
        lab.node(h).run_expect("true")  # its SSH session opened with this run's files, before they move below
    for var, value in own_client_state(tmp_path).items():
        monkeypatch.setenv(var, value)  # a client of its own, as on another machine
    text = yaml.safe_load((ROOT / "labs" / "smoke.yaml").read_text())
    text["nodes"]["nfs1"]["host"], text["nodes"]["hv1"]["host"] = "host1", "host2"
    lab_file = tmp_path / f"{NAME}.yaml"
    lab_file.write_text(yaml.safe_dump(text))
    model = load_lab(lab_file)
    where, uris = spread_over(model, str(hosts), print)
    conns = {name: providers.connect(uri) for name, uri in uris.items()}
    session = LabSession(model, conns["host1"], spread=where, host_providers=conns)
    keep_evidence_of(request.node, session)  # its consoles are on the hosts, gone once it is down
    try:
        yield session
    finally:
        session.down()
        for conn in conns.values():
            conn.close()


# slow (`make test-slow`): its hv1 runs under host2's nested KVM, which TCG's emulated SVM gives it, and
# in one of two fresh-clone CI runs here hv1 rebooted by itself during its checks (two boots in host2's
# kernel log, no error in the harness). The other tests of this module run their nodes under TCG inside.
@pytest.mark.slow
def test_a_lab_spread_over_two_hosts_passes_its_checks_survives_a_cut_and_leaves_nothing(lab, spread_lab):
    start = time.monotonic()
    spread_lab.up()
    print(f"spread lab up in {time.monotonic() - start:.1f} s")
    assert f"kvmlab-{NAME}-" in lab.node("host1").run_expect("virsh list --name")
    assert spread_lab.site_of("hv1").name == "host2" and spread_lab.site_of("nfs1").name == "host1"
    # Both networks span both hosts: each host has their bridges (.1 on host1, .2 on host2) and a tunnel each.
    for h in HOSTS:
        devices = tunnels.devices(spread_lab.site_of({"host1": "nfs1", "host2": "hv1"}[h]).host)
        assert len(devices) == 2 and all(d.master and d.up for d in devices), devices
    results = run_checks(spread_lab, checks_for(spread_lab.lab))
    failed = {r.check.id: r.message for r in results if r.outcome != PASS}
    assert not failed, failed
    # `kvmlab ssh` reaches each node through the host that runs it.
    for node in ("nfs1", "hv1"):
        ssh = subprocess.run(
            [sys.executable, "-m", "kvmlab.cli", "ssh", NAME, node, "hostname"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert ssh.returncode == 0 and ssh.stdout.strip() == node, ssh.stderr

    # A cut between the hosts: hv1 no longer reaches nfs1 over storage; mended, the pool answers again.
    hv1 = spread_lab.node("hv1")
    nfs_storage = spread_lab.node("nfs1").address("storage")
    spread_lab.cut_host("host2")
    assert hv1.run(f"ping -n -q -c 2 -W 2 {nfs_storage}").rc != 0, "nfs1 answers hv1 across a cut link"
    # A synchronous write must reach the server (a read could come from the client's cache).
    write = "timeout -s KILL {s} dd if=/dev/zero of=/var/lib/libvirt/images/nfsvms/cut-probe bs=4k count=1 oflag=sync"
    stalled = hv1.run(write.format(s=15), timeout=60)
    assert stalled.rc != 0, "a write to the netfs pool went through with the link to its server cut"
    spread_lab.mend_host("host2")
    hv1.wait_for(write.format(s=30), "a write to the netfs pool once the link is mended", interval=2.0)

    # A checkpoint over both hosts: every node paused and saved on its own host, reverted together.
    nfs1 = spread_lab.node("nfs1")
    spread_lab.snapshot("spread")
    nfs1.run_expect("echo after > /srv/nfs/vms/marker && sync")
    hv1.run_expect("echo after > /root/marker && sync")
    seconds = spread_lab.revert("spread")
    print(f"spread lab reverted in {seconds:.1f} s: {spread_lab.restore_parts}")
    assert nfs1.run("test -e /srv/nfs/vms/marker").rc != 0 and hv1.run("test -e /root/marker").rc != 0
    for h, node in (("host1", "nfs1"), ("host2", "hv1")):
        saved = lab.node(h).run_expect(f"ls {spread_lab.checkpoints.root}/spread@*/")
        assert saved.split() == [f"{node}.save"], f"{h} should hold {node}'s memory file only: {saved}"

    spread_lab.down()
    for h in HOSTS:
        assert leftovers(lab, h) == "", f"{h} keeps objects of the spread lab"


def spread_client(lab: LabSession, folder: Path, name: str):
    """A client of host1 and host2, as on another machine (its own registry, leases and run files), with
    a lab file NAME.yaml of two small nodes, n1 on host1 and n2 on host2, and a hosts file naming both.
    Returns the lab file, the hosts file, the client's environment, and a function running `kvmlab`."""
    folder.mkdir(parents=True, exist_ok=True)
    hosts = folder / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": {h: {"uri": node_libvirt_uri(lab, h)} for h in HOSTS}}))
    lab_file = folder / f"{name}.yaml"
    lab_file.write_text("nodes:\n  n1: {memory: 320M, host: host1}\n  n2: {memory: 320M, host: host2}\n")
    # KVMLAB_URI on host1: the client's gc collects the hosts (and what its runs recorded), never this
    # machine, where the test's own lab runs.
    env, kvmlab = client_of(folder, node_libvirt_uri(lab, "host1"), timeout=600)
    return lab_file, hosts, env, kvmlab


def start_up(lab_file: Path, hosts: Path, env: dict[str, str]) -> subprocess.Popen:
    """`kvmlab up LAB_FILE --hosts HOSTS` in the background, its output in LAB_FILE.log; under TCG on the
    hosts: two nested-KVM guests booting at once stalled a host here, and these nodes need not boot."""
    log = lab_file.with_suffix(".log")
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kvmlab.cli", "up", str(lab_file), "--hosts", str(hosts)],
            env={**env, "KVMLAB_ACCEL": "tcg"},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_sigint,  # under make test's lanes SIGINT comes ignored, and Ctrl-C is what a test sends
        )


def wait_running_on_both_hosts(lab: LabSession, names: list[str], ups: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + 900
    while not all(f"kvmlab-{name}-" in lab.node(h).run_expect("virsh list --name") for name in names for h in HOSTS):
        for up, log in zip(ups, logs, strict=True):
            assert up.poll() is None, f"`up` ended (exit {up.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the labs' nodes never ran on both hosts"
        time.sleep(2)


def test_a_killed_spread_up_is_collected_on_every_host_by_another_clients_gc(lab, tmp_path):
    """The gc runs from a client whose registry never knew the run: the hosts alone say what is whose
    (the domains' owner, the run's lock on each host)."""
    lab_file, hosts, env, _kvmlab = spread_client(lab, tmp_path / "killed", "rkill")
    _file, other_hosts, _env, other = spread_client(lab, tmp_path / "other", "rother")
    up = start_up(lab_file, hosts, env)
    try:
        wait_running_on_both_hosts(lab, ["rkill"], [up], [lab_file.with_suffix(".log")])
    finally:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait(60)
    for h in HOSTS:
        assert "kvx" in leftovers(lab, h, "rkill"), f"the kill left no tunnel on {h}: the test proves nothing"
    gc = other("gc", "--hosts", str(other_hosts))
    assert gc.returncode == 0, gc.stderr
    for h in HOSTS:
        assert leftovers(lab, h, "rkill") == "", f"gc left objects of the killed run on {h}"


def test_two_clients_spread_labs_over_the_same_hosts_at_once_on_subnets_of_their_own(lab, tmp_path):
    """Each client has its own registry: only the hosts can order them. Both lease their subnets (and so
    their tunnels' IDs) under every host's lock, and neither takes the other's. Both `up`s are
    interrupted once both labs run on both hosts, and each takes its own lab down on Ctrl-C."""
    names = ["rtwo1", "rtwo2"]
    clients = [spread_client(lab, tmp_path / name, name) for name in names]
    ups = [start_up(lab_file, hosts, env) for lab_file, hosts, env, _kvmlab in clients]
    logs = [lab_file.with_suffix(".log") for lab_file, *_ in clients]
    try:
        wait_running_on_both_hosts(lab, names, ups, logs)
        for h in HOSTS:
            vnis = lab.node(h).run_expect("ip -o link show type vxlan | grep -o 'kvx[0-9a-f]*' | sort -u").split()
            assert len(vnis) == 2, f"{h} should have one tunnel per lab: {vnis}"
        for up in ups:
            os.killpg(up.pid, signal.SIGINT)
        for up, log, name in zip(ups, logs, names, strict=True):
            assert up.wait(300) == 130, f"{name}:\n{log.read_text()[-3000:]}"
        subnets = [re.search(r"run [0-9a-f]{6}: mgmt (\S+)", log.read_text()) for log in logs]
        assert all(subnets), [log.read_text()[-2000:] for log in logs]
        assert subnets[0].group(1) != subnets[1].group(1), [m.group(1) for m in subnets]  # type: ignore[union-attr]
    finally:
        for up in ups:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(60)
        for name, (_file, _hosts, _env, kvmlab) in zip(names, clients, strict=True):
            kvmlab("down", name, "--force", timeout=300)
    for name in names:
        for h in HOSTS:
            assert leftovers(lab, h, name) == "", f"{name} left objects on {h}"
