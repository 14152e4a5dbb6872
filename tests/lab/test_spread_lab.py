"""One lab over two libvirt hosts: labs/smoke.yaml with nfs1 on host1 and hv1 on host2 of
labs/two-hosts.yaml, brought up through each host's qemu+libssh URI from a hosts file.

Its storage network crosses the hosts in a VXLAN tunnel: hv1's netfs pool mounts nfs1's export across
it. The lab's checks pass; a cut between the hosts stalls the pool and it recovers once mended; a
checkpoint saves each node on its own host and a revert brings both back; `down` leaves nothing on
either host.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from kvmlab import providers, tunnels
from kvmlab.hosts_file import spread_over
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.verify import PASS, checks_for, run_checks
from tests.lab.helpers import ROOT, node_libvirt_uri

pytestmark = [pytest.mark.lab("two-hosts"), pytest.mark.alone]  # nested KVM in TCG hosts: see test_remote_host.py
NAME = "rspread"


def leftovers(lab: LabSession, host: str) -> str:
    return (
        lab.node(host)
        .run_expect(
            f"virsh list --all --name | grep -- '-{NAME}-' ; virsh net-list --all --name | grep -- '-{NAME}-' ;"
            f" virsh vol-list kvmlab 2>/dev/null | grep -- '-{NAME}-' ; ip -o link show type vxlan | grep kvx ; true"
        )
        .strip()
    )


@pytest.fixture
def spread_lab(lab: LabSession, tmp_path: Path, monkeypatch):
    """The smoke lab as rspread, nfs1 pinned to host1 and hv1 to host2; torn down after."""
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(yaml.safe_dump({"hosts": {h: {"uri": node_libvirt_uri(lab, h)} for h in ("host1", "host2")}}))
    for h in ("host1", "host2"):
        lab.node(h).run_expect("true")  # its SSH session opened with this run's files, before they move below
    for var in ("KVMLAB_STATE", "KVMLAB_LEASES", "KVMLAB_CHECKPOINT_DIR", "KVMLAB_ARTIFACTS"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))  # a client of its own, as on another machine
    text = yaml.safe_load((ROOT / "labs" / "smoke.yaml").read_text())
    text["nodes"]["nfs1"]["host"], text["nodes"]["hv1"]["host"] = "host1", "host2"
    lab_file = tmp_path / f"{NAME}.yaml"
    lab_file.write_text(yaml.safe_dump(text))
    model = load_lab(lab_file)
    where, uris = spread_over(model, str(hosts), print)
    conns = {name: providers.connect(uri) for name, uri in uris.items()}
    session = LabSession(model, conns["host1"], spread=where, host_providers=conns)
    try:
        yield session
    finally:
        session.down()
        for conn in conns.values():
            conn.close()


def test_a_lab_spread_over_two_hosts_passes_its_checks_survives_a_cut_and_leaves_nothing(lab, spread_lab):
    start = time.monotonic()
    spread_lab.up()
    print(f"spread lab up in {time.monotonic() - start:.1f} s")
    assert f"kvmlab-{NAME}-" in lab.node("host1").run_expect("virsh list --name")
    assert spread_lab.site_of("hv1").name == "host2" and spread_lab.site_of("nfs1").name == "host1"
    # Both networks span both hosts: each host has their bridges (.1 on host1, .2 on host2) and a tunnel each.
    for h in ("host1", "host2"):
        devices = tunnels.devices(spread_lab.site_of({"host1": "nfs1", "host2": "hv1"}[h]).host)
        assert len(devices) == 2 and all(d.master and d.up for d in devices), devices
    results = run_checks(spread_lab, checks_for(spread_lab.lab))
    failed = {r.check.id: r.message for r in results if r.outcome != PASS}
    assert not failed, failed

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
    for h in ("host1", "host2"):
        assert leftovers(lab, h) == "", f"{h} keeps objects of the spread lab"
