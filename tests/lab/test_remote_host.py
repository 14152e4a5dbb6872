"""A lab on a remote libvirt host: `kvmlab` on this machine drives host1 of labs/remote-host.yaml (a lab
node running libvirtd) through qemu+libssh://root@HOST/system, as a user drives a server of theirs.

The lab inside host1 is labs/tiny.yaml under another name (`rtiny`), so that `kvmlab down rtiny`
cannot touch a tiny lab of this machine. Its node's network exists only inside host1: every SSH
session to it goes through host1, and its console log is read there.
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

from kvmlab.lab import LabSession
from tests.lab.helpers import ROOT

pytestmark = pytest.mark.lab("remote-host")
INNER = "rtiny"


def remote_uri(lab: LabSession) -> str:
    """host1 as a user names their own server: its address, the key it accepts, its pinned host key."""
    address = lab.node("host1").address()
    return (
        f"qemu+libssh://root@{address}/system?keyfile={lab.run_dir / 'id_ed25519'}"
        f"&known_hosts={lab.run_dir / 'known_hosts'}&known_hosts_verify=normal&sshauth=privkey"
    )


@pytest.fixture
def inner(lab: LabSession, tmp_path: Path):
    """Run `kvmlab` against host1; the inner lab's file, and a function running a command on host1."""
    lab_file = tmp_path / f"{INNER}.yaml"
    lab_file.write_text((ROOT / "labs" / "tiny.yaml").read_text())
    # A client of its own: its run registry, leases and run files apart from this session's, as on another machine.
    private = {
        name: str(tmp_path / name.lower()) for name in ("KVMLAB_STATE", "KVMLAB_LEASES", "KVMLAB_CHECKPOINT_DIR", "KVMLAB_ARTIFACTS")
    }
    # host1's KVM is nested in a TCG machine: its guests boot at TCG's pace, against deadlines made for real KVM.
    env = {**os.environ, **private, "KVMLAB_URI": remote_uri(lab), "KVMLAB_TIMEOUT_SCALE": "3"}

    def kvmlab(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "kvmlab.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        sys.stderr.write(f"$ kvmlab {' '.join(args)}  (exit {res.returncode})\n{res.stdout[-4000:]}{res.stderr[-4000:]}\n")
        return res

    def on_host(command: str) -> str:
        return lab.node("host1").run_expect(command)

    yield lab_file, kvmlab, on_host, env
    kvmlab("down", INNER, "--force", timeout=300)


def leftovers_on(on_host) -> str:
    """Every kvmlab object of the inner lab left on host1: domains, networks, volumes, console logs."""
    return on_host(
        f"virsh list --all --name | grep -- '-{INNER}-' ;"
        f" virsh net-list --all --name | grep -- '-{INNER}-' ;"
        f" virsh vol-list kvmlab 2>/dev/null | grep -- '-{INNER}-' ;"
        f" ls /var/lib/kvmlab/console 2>/dev/null | grep -- '-{INNER}-' ; true"
    ).strip()


def test_a_lab_on_a_remote_host_passes_its_checks_answers_ssh_and_goes_down_leaving_nothing(inner):
    lab_file, kvmlab, on_host, _env = inner
    start = time.monotonic()
    up = kvmlab("up", str(lab_file), "--verify")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    sys.stderr.write(f"remote lab up and verified in {time.monotonic() - start:.1f} s\n")
    assert "accelerator: KVM" in up.stderr + up.stdout, "host1's guests should run under its KVM"
    assert re.search(rf"lab {INNER}: (\d+) checks: \1 passed, 0 failed, 0 errors", up.stdout), up.stdout

    # The node runs inside host1 (not here), and `kvmlab ssh` reaches it through host1.
    assert f"kvmlab-{INNER}-" in on_host("virsh list --name")
    ssh = kvmlab("ssh", INNER, "n1", "hostname", timeout=120)
    assert ssh.returncode == 0 and ssh.stdout.strip() == "n1", ssh.stderr

    # Checkpoints need this machine's files: refused with the reason, the lab untouched.
    snap = kvmlab("snapshot", INNER, "base", timeout=120)
    assert snap.returncode != 0 and "needs the libvirt host to be this machine" in snap.stdout + snap.stderr

    down = kvmlab("down", INNER, timeout=300)
    assert down.returncode == 0, down.stderr
    assert leftovers_on(on_host) == ""


def test_a_killed_up_on_a_remote_host_is_collected_by_gc(inner):
    lab_file, kvmlab, on_host, env = inner
    up = subprocess.Popen(
        [sys.executable, "-m", "kvmlab.cli", "up", str(lab_file)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while f"kvmlab-{INNER}-" not in on_host("virsh list --name"):
        assert up.poll() is None and time.monotonic() < deadline, "the node never started on host1"
        time.sleep(1)
    os.killpg(up.pid, signal.SIGKILL)
    up.wait(60)
    assert leftovers_on(on_host), "the kill left nothing on host1: the test proves nothing"

    gc = kvmlab("gc", timeout=300)
    assert gc.returncode == 0, gc.stderr
    assert leftovers_on(on_host) == ""
