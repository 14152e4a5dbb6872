"""Nothing leaked after interrupts and kills; parallel labs never collide and cannot reach each other.

These drive the real `kvmlab` command and real VMs of labs/tiny.yaml.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kvmlab import render, runs, settings
from kvmlab.gc import collect
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from tests.lab.helpers import ROOT, TINY, UpProcess, default_sigint, leftovers, wait_domain_running

pytestmark = pytest.mark.lab("tiny")


@pytest.fixture
def provider():
    p = connect()
    yield p
    p.close()


@pytest.fixture
def start_up(provider):
    """Start `kvmlab up` processes; whatever a failing test leaves of their runs is removed afterwards."""
    started: list[UpProcess] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = ("--rebuild",)) -> UpProcess:
        started.append(UpProcess(env, args=args))
        return started[-1]

    yield start
    for up in started:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
            up.proc.wait(30)
        ids = {m.group(1) for line in up.lines if (m := re.search(r"run ([0-9a-f]{6}):", line))}
        if ids:
            collect(provider, only_runs=ids)


@pytest.mark.parametrize("moment", ["prepare", "boot", "role-setup"])
def test_sigkill_at_any_moment_then_gc_leaves_nothing(provider, start_up, moment):
    up = start_up()
    run_id = up.run_id
    if moment == "boot":
        wait_domain_running(provider, run_id)
    elif moment == "role-setup":
        up.wait_for(r"n1: nfs-server setup \.\.\.")
    os.killpg(up.proc.pid, signal.SIGKILL)
    up.finish()
    assert leftovers(provider, run_id), "the kill came too late to leave anything: the test proves nothing"

    out = collect(provider)

    assert run_id in out.runs
    assert leftovers(provider, run_id) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_boot_tears_down_and_says_so(provider, start_up, sig):
    up = start_up()
    run_id = up.run_id
    wait_domain_running(provider, run_id)
    os.killpg(up.proc.pid, sig)
    assert up.finish() == 130
    assert any("interrupted" in line and "removed" in line for line in up.lines), up.lines[-10:]
    assert leftovers(provider, run_id) == []


def test_sigkill_during_image_build_then_gc_leaves_no_build_files(tmp_path):
    env = {**os.environ, "KVMLAB_CACHE": str(tmp_path / "cache")}
    build = subprocess.Popen(
        [sys.executable, "-m", "kvmlab.cli", "image", "build"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert build.stdout is not None
    for line in build.stdout:
        if "running apt-get update" in line:  # mmdebstrap is working inside its build directory
            break
    os.killpg(build.pid, signal.SIGKILL)
    build.wait(60)
    images_dir = tmp_path / "cache" / "images"
    assert list(images_dir.glob("kvmlab-image-*")), "the kill left nothing: the test proves nothing"

    gc = subprocess.run([sys.executable, "-m", "kvmlab.cli", "gc"], cwd=ROOT, env=env, capture_output=True, text=True)

    assert gc.returncode == 0, gc.stderr
    assert "1 unfinished image builds" in gc.stdout
    assert list(images_dir.glob("kvmlab-image-*")) == []
    assert not any(tmp_path.as_posix() in line for line in Path("/proc/mounts").read_text().splitlines())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_pytest_run_tears_its_lab_down(provider, sig):
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/lab/test_tiny.py"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    # The child's own run, by its owner's pid: another lab may come up on this host meanwhile (make test's other lane).
    deadline = time.monotonic() + 300
    run_id = None
    while run_id is None:
        assert time.monotonic() < deadline and run.poll() is None, "the pytest run never started its lab"
        run_id = running_run_of(provider, run.pid)
        time.sleep(0.5)
    try:
        os.killpg(run.pid, sig)
        out, _ = run.communicate(timeout=180)
        assert run.returncode == 2, out[-2000:]  # pytest's "interrupted"
        assert leftovers(provider, run_id) == [], out[-2000:]
    finally:
        collect(provider, only_runs={run_id})  # whatever a failure left


def running_run_of(provider, pid: int) -> str | None:
    """The run that process PID owns, once one of its domains is running."""
    for run in runs.all_runs().values():
        if run.pid == pid and any(run.run_id in d.name and d.state == "running" for d in provider.list_domains()):
            return run.run_id
    return None


def test_node_that_never_gets_ready_fails_within_its_deadline(provider, start_up, tmp_path):
    # Deadlines scaled to a hundredth: a 3.6 s boot deadline, where the fastest boot here takes 15 s.
    # Booted, not cloned: a clone of a generic node can answer within 3.6 s on an idle host.
    up = start_up(env={"KVMLAB_TIMEOUT_SCALE": "0.01", "KVMLAB_ARTIFACTS": str(tmp_path)}, args=("--rebuild", "--cold-boot"))
    run_id = up.run_id
    started = time.monotonic()
    assert up.finish(timeout=300) == 1
    text = "\n".join(up.lines)
    assert re.search(r"timed out after \d+ s waiting for node n1 to answer SSH and finish first boot", text), text[-3000:]
    assert "console lines of n1" in text
    assert time.monotonic() - started < 120
    assert (tmp_path / run_id / "up" / "console-n1.log").exists()
    assert leftovers(provider, run_id) == []


def test_two_copies_of_a_lab_side_by_side_never_collide_nor_reach_each_other(provider):
    lab = load_lab(TINY)
    sessions = [LabSession(lab, provider, progress=lambda line: None, use_saved=False) for _ in range(2)]
    errors: list[BaseException] = []

    def up(session: LabSession) -> None:
        try:
            session.up()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        a, b = sessions
        a_node, b_node = a.node("n1"), b.node("n1")
        a_net, b_net = a.placement.subnets["mgmt"], b.placement.subnets["mgmt"]
        assert not a_net.overlaps(b_net)
        assert a_node.domain != b_node.domain
        assert render.bridge_name("tiny", a.run_id, "mgmt") != render.bridge_name("tiny", b.run_id, "mgmt")
        assert a.placement.mac(lab, "n1", "mgmt") != b.placement.mac(lab, "n1", "mgmt")

        # Both nodes are clones of one saved generic node: each must have its own identity and random state.
        assert a_node.cloned and b_node.cloned
        mine, theirs = _identity(a_node), _identity(b_node)
        assert all(mine[k] != theirs[k] for k in mine), (mine, theirs)

        host = a_node.host
        # Reachable: its own lab's host address. Not reachable: the other lab, by any address.
        host.run_expect([0], f"ping -c1 -W5 {a.placement.host_address('mgmt')}")
        for target in (b_node.address(), b.placement.host_address("mgmt")):
            assert host.run(f"ping -c1 -W3 {target}").rc != 0
            route = host.run(f"ip route get {target}")
            assert route.rc != 0 and "unreachable" in route.stderr.lower()
        # No way out of a lab at all: no default route in the node, no <forward> in the network.
        assert "default" not in host.check_output("ip -4 route show")
        assert ipaddress.ip_address(a_node.address()) in a_net
    finally:
        for s in sessions:
            s.down()
    for s in sessions:
        assert leftovers(provider, s.run_id) == []


def _identity(node) -> dict[str, str]:
    return {
        "machine-id": node.run_expect("cat /etc/machine-id").strip(),
        "random bytes": node.run_expect("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'").strip(),
        "uuid": node.run_expect("cat /proc/sys/kernel/random/uuid").strip(),
        "host key": node.run_expect("cat /etc/ssh/ssh_host_ed25519_key.pub").split()[1],
    }


def test_lab_networks_have_no_forwarding_on_the_host(provider):
    lab = load_lab(TINY)
    with LabSession(lab, provider, progress=lambda line: None, use_saved=False) as session:
        session.up()
        xml = subprocess.run(
            ["virsh", "-c", settings.libvirt_uri(), "net-dumpxml", render.network_name("tiny", session.run_id, "mgmt")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "<forward" not in xml
        host = session.node("n1").host
        # Root by key only, and no password in the image.
        assert host.check_output("passwd -S root").split()[1] == "L"
        sshd = host.check_output("sshd -T")
        assert "passwordauthentication no" in sshd
        assert "permitrootlogin without-password" in sshd
        assert session.run_dir.joinpath("id_ed25519").stat().st_mode & 0o777 == 0o600
