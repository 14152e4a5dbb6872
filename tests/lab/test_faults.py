"""labs/faults.yaml: the node fault API and whole-lab checkpoints, on two plain nodes.

Each fault is checked from inside the guests (what a storage stack would see) and the
node is back to normal afterwards.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.lab("faults")


def _reaches(lab, src: str, dst: str, network: str) -> bool:
    addr = lab.node(dst).address(network)
    return lab.node(src).run(f"ping -c 1 -W 2 {addr}").rc == 0


def _boot_id(node) -> str:
    return node.host.file("/proc/sys/kernel/random/boot_id").content_string.strip()


def test_power_off_loses_nothing_synced_and_the_node_comes_back(lab):
    n1 = lab.node("n1")
    n1.run("echo before-crash > /root/marker && sync")
    boot = _boot_id(n1)
    with n1.powered_off():
        assert n1.state == "shutoff"
        assert not _reaches(lab, "n2", "n1", "mgmt")
    assert n1.state == "running"
    assert _boot_id(n1) != boot, "the node did not boot again"
    assert n1.host.file("/root/marker").content_string == "before-crash\n"


def test_clean_shutdown_and_start(lab):
    n2 = lab.node("n2")
    n2.shutdown()
    assert n2.state == "shutoff"
    n2.start()
    assert n2.state == "running"
    assert n2.host.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")


def test_paused_node_answers_nothing_then_carries_on(lab):
    n1 = lab.node("n1")
    boot = _boot_id(n1)
    with n1.paused():
        assert n1.state == "paused"
        assert not _reaches(lab, "n2", "n1", "mgmt")
    assert n1.state == "running"
    assert _reaches(lab, "n2", "n1", "mgmt")
    assert _boot_id(n1) == boot, "a pause must not reboot the node"


def test_cut_link_isolates_one_network_only(lab):
    n1 = lab.node("n1")
    assert _reaches(lab, "n2", "n1", "data")
    with n1.link_cut("data"):
        assert not _reaches(lab, "n2", "n1", "data")
        assert _reaches(lab, "n2", "n1", "mgmt")
        # The guest sees the carrier drop on the NIC of that network.
        assert n1.run("cat /sys/class/net/eth1/carrier").output.strip() == "0"
    assert n1.run("cat /sys/class/net/eth1/carrier").output.strip() == "1"
    assert _reaches(lab, "n2", "n1", "data")


def test_removed_disk_disappears_and_returns_with_its_data(lab):
    n1 = lab.node("n1")
    dev = "/dev/disk/by-id/virtio-spare"
    n1.run(f"dd if=/dev/urandom of=/root/blob bs=1M count=4 2>/dev/null && dd if=/root/blob of={dev} bs=1M oflag=direct 2>/dev/null")
    want = n1.run("sha256sum < /root/blob").output.split()[0]
    with n1.disk_removed("spare"):
        assert n1.run(f"test -e {dev}").rc != 0
        assert "spare" not in n1.run("lsblk -dno SERIAL").output
    got = n1.run_expect(f"head -c 4194304 {dev} | sha256sum", "the returned disk's first 4 MiB").split()[0]
    assert got == want


def test_checkpoint_revert_restores_memory_disks_clock_and_network(lab):
    n1, n2 = lab.node("n1"), lab.node("n2")
    n1.run("echo kept > /root/at-checkpoint && sync")
    n2.run("sleep 100000 >/dev/null 2>&1 & echo $! > /run/sleeper")  # a process only memory remembers
    sleeper = n2.run("cat /run/sleeper").output.strip()
    lab.snapshot("faults-test")
    n1.run("rm /root/at-checkpoint && echo later > /root/after-checkpoint && sync")
    n2.run(f"kill {sleeper}")
    time.sleep(5)  # the clock must jump over this on revert

    lab.revert("faults-test")

    assert n1.run("cat /root/at-checkpoint").output.strip() == "kept"
    assert n1.run("test -e /root/after-checkpoint").rc != 0
    assert n2.run(f"kill -0 {sleeper}").rc == 0, "the process running at the checkpoint is gone"
    for node in (n1, n2):
        skew = abs(float(node.run("date +%s.%N").output) - time.time())
        assert skew < 3, f"{node.name}: clock is {skew:.1f} s off after the revert"
    assert _reaches(lab, "n1", "n2", "data")
    assert "faults-test" in lab.checkpoints.names()


def test_disposable_lab_puts_back_what_a_test_broke(disposable_lab):
    n1 = disposable_lab.node("n1")
    n1.run("touch /root/broken && sync")
    disposable_lab.revert("pristine")
    assert n1.run("test -e /root/broken").rc != 0
