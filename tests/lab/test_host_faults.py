"""Hosts that misbehave: libvirtd restarted or gone, the pool's filesystem full, a node's QEMU
killed, a lab network removed behind kvmlab's back. Each either survives or fails with one clear
line, and leaves nothing behind (checked with libvirt and the run registry).

These drive the real `kvmlab` command (or a LabSession) and real VMs of a copy of labs/tiny.yaml
named `hfault`, so that `kvmlab down hfault` touches no other tiny lab on the host.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmlab import images, render, runs, settings
from kvmlab.errors import NodeStopped, PoolFull
from kvmlab.gc import collect
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from tests.lab.helpers import ROOT, TINY, UpProcess, leftovers, wait_domain_running

# alone: libvirtd is restarted and stopped, which every other lab on the host would feel.
pytestmark = [pytest.mark.lab("tiny"), pytest.mark.alone]

LAB = "hfault"
START_LIBVIRTD = ROOT / "scripts" / "start-libvirtd.sh"  # as the host's setup starts it
MIB = 2**20


@pytest.fixture
def provider():
    p = connect()
    yield p
    p.close()


@pytest.fixture
def lab_file(tmp_path: Path) -> Path:
    path = tmp_path / f"{LAB}.yaml"
    shutil.copyfile(TINY, path)
    return path


def kvmlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmlab.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def start_up(provider, lab_file):
    """Start `kvmlab up` of the hfault lab; whatever a failing test leaves of its runs is removed afterwards."""
    started: list[UpProcess] = []

    def start(env: dict[str, str] | None = None) -> UpProcess:
        started.append(UpProcess(env, lab=lab_file, args=("--rebuild",)))
        return started[-1]

    yield start
    for up in started:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
            up.proc.wait(30)
        ids = {m.group(1) for line in up.lines if (m := re.search(r"run ([0-9a-f]{6}):", line))}
        if ids:
            start_libvirtd()
            collect(connect(), only_runs=ids)


def error_line(up: UpProcess) -> str:
    """The one line `kvmlab` ends a failure with; nothing like a traceback before it."""
    assert not any("Traceback" in line for line in up.lines), "\n".join(up.lines[-40:])
    assert up.lines and up.lines[-1].startswith("kvmlab: "), "\n".join(up.lines[-20:])
    return up.lines[-1]


# -- libvirtd -------------------------------------------------------------------------------


def libvirtd_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def stop_libvirtd() -> None:
    """Stop libvirtd the way a restart does (SIGTERM): its QEMU processes live on."""
    pids = libvirtd_pids()
    assert pids, "libvirtd is not running"
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while any(runs.pid_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "libvirtd did not stop within 30 s"
        time.sleep(0.1)


def start_libvirtd() -> None:
    if not libvirtd_pids():
        subprocess.run(["bash", str(START_LIBVIRTD)], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["virsh", "-c", settings.libvirt_uri(), "version"], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "libvirtd did not answer within 60 s of its start"
        time.sleep(0.2)


def restart_libvirtd() -> None:
    stop_libvirtd()
    time.sleep(2)  # a restart is not instant: calls made meanwhile must wait for it
    start_libvirtd()


@pytest.fixture(autouse=True)
def libvirtd_left_running() -> Iterator[None]:
    """Whatever a test does to libvirtd, it runs again afterwards."""
    yield
    start_libvirtd()


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", settings.libvirt_uri(), *args], capture_output=True, text=True, check=True).stdout


def qemu_pid(domain: str) -> int:
    out = subprocess.run(["pgrep", "-f", f"guest={domain},"], capture_output=True, text=True).stdout.split()
    assert len(out) == 1, f"expected one QEMU process of {domain}, found {out}"
    return int(out[0])


# -- 1. libvirtd restarted, or gone ---------------------------------------------------------


def test_lab_survives_libvirtd_restarts_and_a_removed_network_is_reported(provider, start_up, lab_file):
    # A restart in the middle of `kvmlab up`: the node's QEMU lives on and the harness reconnects.
    up = start_up()
    run_id = up.run_id
    domain = render.domain_name(LAB, run_id, "n1")
    wait_domain_running(provider, run_id, lab=LAB)
    restart_libvirtd()
    assert up.finish(timeout=300) == 0, "\n".join(up.lines[-30:])
    assert "kvmlab: libvirtd connection lost; reconnecting" in up.lines
    assert any(f"lab {LAB} is up" in line for line in up.lines)

    # A restart in the middle of a test: the same session keeps working, on the same VM.
    (run,) = [r for r in runs.all_runs().values() if r.run_id == run_id]
    session = LabSession.attach(load_lab(lab_file), provider, run, progress=lambda line: None)
    node = session.node("n1")
    assert node.state == "running"  # this process's connection came back from the first restart too
    boot_id = node.run_expect("cat /proc/sys/kernel/random/boot_id")
    said: list[str] = []
    provider.log = said.append
    restart_libvirtd()
    assert node.state == "running"
    assert said[0] == "libvirtd connection lost; reconnecting"
    assert node.run_expect("cat /proc/sys/kernel/random/boot_id") == boot_id  # the VM did not restart

    # Its network removed behind kvmlab's back: a command on the node says so instead of hanging.
    network = render.network_name(LAB, run_id, "mgmt")
    virsh("net-destroy", network)
    with pytest.raises(NodeStopped) as stop:
        node.run("sleep 5; echo still here")
    assert str(stop.value) == (
        f"node n1 is cut off (its network mgmt is gone: libvirt network {network} was removed behind kvmlab's back)"
        f" while running `sleep 5; echo still here`: run `kvmlab down {LAB}` (if the lab is still up) and bring it up again"
    )

    # ... and `kvmlab down` removes everything else without error.
    down = kvmlab("down", LAB)
    assert down.returncode == 0 and down.stderr == "", down.stderr
    assert down.stdout.startswith(f"lab {LAB}: removed 1 domains, 0 networks")
    assert provider.domain_state(domain) == "absent"
    assert leftovers(provider, run_id) == []


def test_libvirtd_gone_for_good_during_up_fails_with_one_line_then_gc_leaves_nothing(provider, start_up):
    up = start_up(env={"KVMLAB_LIBVIRT_RECONNECT_S": "3"})
    run_id = up.run_id
    wait_domain_running(provider, run_id, lab=LAB)
    stop_libvirtd()
    try:
        assert up.finish(timeout=120) == 1
    finally:
        start_libvirtd()
    assert "kvmlab: libvirtd connection lost; reconnecting" in up.lines
    assert re.fullmatch(
        r"kvmlab: libvirtd at \S+ stopped answering \(no connection for 3 s; last: .+\):"
        r" start it with `virtlogd -d; libvirtd -d`, then run `kvmlab gc`",
        error_line(up),
    ), up.lines[-1]
    # Without libvirtd nothing could be removed: the QEMU process and the run are still there for gc.
    assert leftovers(connect(), run_id), "the lab was gone before libvirtd: the test proves nothing"

    gc = kvmlab("gc")

    assert gc.returncode == 0, gc.stderr
    assert run_id in gc.stdout
    assert leftovers(connect(), run_id) == []


# -- 2. the pool's filesystem full ----------------------------------------------------------


class SmallPool:
    """A loop-mounted ext4 filesystem as the directory of a pool of its own (KVMLAB_POOL, KVMLAB_POOL_DIR).

    Sparse, and filled with fallocate()d files, so that it costs the host's disk only what is written."""

    def __init__(self, root: Path, size_mib: int) -> None:
        self.image, self.dir = root / "pool.img", root / "pool"
        self.name = f"kvmlab-hfault-{os.getpid()}"
        self.bound: list[Path] = []  # files of the real pool bind-mounted into this one
        self.dir.mkdir()
        with open(self.image, "wb") as fh:
            fh.truncate(size_mib * MIB)
        subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(self.image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.dir)], check=True)
        (self.dir / "lost+found").rmdir()

    @property
    def free_mib(self) -> int:
        return shutil.disk_usage(self.dir).free // MIB

    def leave_free(self, mib: int) -> None:
        """Fill the filesystem until MIB MiB are free (what another program on the host might do)."""
        self.unfill()
        size = (self.free_mib - mib) * MIB
        assert size > 0, f"only {self.free_mib} MiB free, cannot leave {mib}"
        subprocess.run(["fallocate", "-l", str(size), str(self.dir / "filler")], check=True)

    def unfill(self) -> None:
        (self.dir / "filler").unlink(missing_ok=True)

    def share_base(self, image: images.Image, real_pool_dir: Path) -> None:
        """The base image's disk bind-mounted from the real pool (too big for this filesystem, and nodes only
        read it; libvirt refuses a symlink as a backing file), kernels and initrds copied."""
        base = f"base-{image.digest}"
        self._bind(real_pool_dir / f"{base}.qcow2")
        for suffix, path in image.boot_files():
            shutil.copyfile(path, self.dir / f"{base}.{suffix}")
        (self.dir / f"{base}.complete").write_text("complete\n")

    def _bind(self, source: Path) -> None:
        target = self.dir / source.name
        target.touch()
        self.bound.append(target)
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)

    def activate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KVMLAB_POOL", self.name)
        monkeypatch.setenv("KVMLAB_POOL_DIR", str(self.dir))

    def remove(self) -> None:
        subprocess.run(["virsh", "-c", settings.libvirt_uri(), "pool-destroy", self.name], capture_output=True)
        subprocess.run(["virsh", "-c", settings.libvirt_uri(), "pool-undefine", self.name], capture_output=True)
        for target in self.bound:
            subprocess.run(["umount", str(target)], check=True)
        if subprocess.run(["umount", str(self.dir)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.dir)], check=True)
        for line in subprocess.run(["losetup", "-j", str(self.image)], capture_output=True, text=True).stdout.splitlines():
            subprocess.run(["losetup", "-d", line.split(":")[0]], check=True)
        self.image.unlink()


@pytest.fixture
def small_pool() -> Iterator[SmallPool]:
    # Not under pytest's tmp_path: QEMU runs as another user and must reach its disks.
    root = Path(tempfile.mkdtemp(prefix="kvmlab-hfault-", dir="/tmp"))
    root.chmod(0o755)
    try:
        # 1150 MiB: `kvmlab up` refuses a pool directory with less than 1 GiB free per node before it
        # starts anything (preflight); these tests are about what happens after that check passed.
        pool = SmallPool(root, 1150)
        try:
            yield pool
        finally:
            pool.remove()
    finally:
        shutil.rmtree(root)


def test_base_image_upload_onto_a_full_pool_fails_with_one_line(provider, start_up, small_pool, monkeypatch):
    need = -(-images.cached_image().root.stat().st_size // MIB)
    free = 1030  # enough for the preflight (1024 MiB for one node), not for the base image
    assert need > free, f"the base image ({need} MiB) would fit: the test proves nothing"
    small_pool.activate(monkeypatch)
    small_pool.leave_free(free)
    up = start_up()
    run_id = up.run_id
    assert up.finish(timeout=120) == 1
    line = error_line(up)
    m = re.fullmatch(
        r"kvmlab: pool filesystem (\S+) is full \(needs (\d+) MiB, has (\d+) MiB free\): free space or set KVMLAB_POOL_DIR", line
    )
    assert m, line
    assert (m.group(1), int(m.group(2))) == (str(small_pool.dir), need)
    # libvirt counts ext4's 16 MiB reserved for its own metadata as free; df does not.
    assert free <= int(m.group(3)) <= free + 17
    assert leftovers(provider, run_id) == []
    assert provider.list_volumes(small_pool.name) == ["filler"], "no base volume, not even a partial one"


def test_enospc_during_an_upload_becomes_the_same_line(provider, small_pool, tmp_path, monkeypatch):
    small_pool.activate(monkeypatch)
    provider.ensure_pool(small_pool.name, render.render_pool_xml(small_pool.name, str(small_pool.dir)))
    small_pool.leave_free(50)
    source = tmp_path / "big.raw"
    with open(source, "wb") as fh:
        fh.truncate(120 * MIB)
    name = "kvmlab-hfault-000000-n1-big.raw"
    # Straight to the provider, past the harness's own free-space check: the write itself must fail.
    with pytest.raises(PoolFull) as full:
        provider.upload_volume(small_pool.name, render.render_upload_volume(name, 120 * MIB, "raw"), source)
    m = re.fullmatch(
        rf"pool filesystem {re.escape(str(small_pool.dir))} is full \(needs 120 MiB, has (\d+) MiB free\): free space or set KVMLAB_POOL_DIR",
        str(full.value),
    )
    assert m and 50 <= int(m.group(1)) <= 50 + 17, str(full.value)  # libvirt's free space, see above
    assert name not in provider.list_volumes(small_pool.name)


def test_node_whose_writes_fill_the_pool_fails_at_once_with_one_line(provider, small_pool, lab_file, monkeypatch):
    image = images.cached_image()
    LabSession(load_lab(lab_file), provider, progress=lambda line: None).ensure_base(image)  # in the real pool
    small_pool.share_base(image, settings.pool_dir())
    small_pool.activate(monkeypatch)
    # Booted, not cloned: a generic node's identity includes its kernel's path in the pool, so a clone
    # here would make (and register, host-wide) a generic node of its own.
    session = LabSession(load_lab(lab_file), provider, progress=lambda line: None, use_saved=False, cold_boot=True)
    try:
        session.up()
        node = session.node("n1")
        small_pool.leave_free(40)
        command = "dd if=/dev/zero of=/var/tmp/fill bs=1M count=300 oflag=direct"
        with pytest.raises(NodeStopped) as stop:
            node.run_expect(command)
        assert provider.domain_status(node.domain).reason == "ioerror"
        assert str(stop.value) == (
            f"node n1 stopped (QEMU paused it on a disk I/O error: disk vda: no space left on device;"
            f" the pool filesystem {small_pool.dir} is full) while running `{command}`:"
            f" free space there (or set KVMLAB_POOL_DIR), then `virsh resume {node.domain}`; or `kvmlab down {LAB}`"
        )
    finally:
        session.down()
    assert leftovers(provider, session.run_id) == []


# -- 3. a node's QEMU killed ----------------------------------------------------------------


def test_node_killed_during_role_setup_fails_the_step_at_once(provider, start_up):
    up = start_up()
    run_id = up.run_id
    up.wait_for(r"n1: nfs-server setup \.\.\.")
    os.kill(qemu_pid(render.domain_name(LAB, run_id, "n1")), signal.SIGKILL)
    assert up.finish(timeout=120) == 1
    assert re.fullmatch(
        r"kvmlab: node n1 stopped \(its QEMU process ended: shutting down, reason=crashed\) during step nfs-server setup:"
        r" find what ended it \(the host's dmesg, libvirt's log of \S+\), then bring the lab up again",
        error_line(up),
    ), up.lines[-1]
    assert leftovers(provider, run_id) == []


# -- 4. a lab network removed behind kvmlab's back ------------------------------------------


def test_network_removed_during_up_fails_with_one_line_and_leaves_nothing(provider, start_up):
    up = start_up()
    run_id = up.run_id
    wait_domain_running(provider, run_id, lab=LAB)
    network = render.network_name(LAB, run_id, "mgmt")
    virsh("net-destroy", network)
    assert up.finish(timeout=120) == 1
    assert re.fullmatch(
        rf"kvmlab: node n1 is cut off \(its network mgmt is gone: libvirt network {network} was removed behind kvmlab's back\)"
        rf" (while booting|during step nfs-server setup): run `kvmlab down {LAB}` \(if the lab is still up\) and bring it up again",
        error_line(up),
    ), up.lines[-1]
    assert leftovers(provider, run_id) == []
    gc = kvmlab("gc")
    assert gc.returncode == 0 and gc.stderr == "", gc.stderr
