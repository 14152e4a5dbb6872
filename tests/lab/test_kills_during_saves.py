"""SIGKILL in the middle of `kvmlab snapshot`, `kvmlab revert` and the save of a verified lab: a
checkpoint or saved lab exists whole or not at all, the next revert works, gc and down leave nothing.
And `kvmlab down` refuses a lab that a live process owns; `kvmlab status LAB` shows one lab.

Moments inside an operation are reached with KVMLAB_STOP_AT (kvmlab/stops.py: the process stops
itself there and is killed stopped); the long libvirt calls (memory save, restore) are hit by
watching for their files and states. Labs are private copies of labs/tiny.yaml ("kills",
"killsave"), so that nothing here touches a tiny lab someone else has up.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvmlab import golden, render, settings
from kvmlab.checkpoints import OVERLAY_RE, Book, checkpoint_root
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from kvmlab.providers.base import Provider
from tests.lab.helpers import ROOT, TINY, leftovers

pytestmark = pytest.mark.lab("tiny")

LAB = "kills"


class Kvmlab:
    """A `kvmlab` command in its own process group, its output read line by line."""

    def __init__(self, *args: str, stop_at: str = "") -> None:
        self.lines: list[str] = []
        env = {**os.environ, "KVMLAB_STOP_AT": stop_at}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvmlab.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 400) -> None:
        until(lambda: any(re.search(pattern, line) for line in self.lines), timeout, f"'{pattern}' in the output", self.tail)

    def tail(self) -> str:
        return "\n".join(self.lines[-30:])

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL
        self._reader.join(10)


def until(check: Callable[[], object], timeout: float, what: str, context: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what} in vain\n{context()}"
        time.sleep(0.05)


def kvmlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmlab.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=400)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    p = connect()
    yield p
    p.close()


@pytest.fixture
def killed() -> Iterator[list[Kvmlab]]:
    """Background commands of a test: any still running when it ends are killed."""
    started: list[Kvmlab] = []
    yield started
    for cmd in started:
        if cmd.proc.poll() is None:
            cmd.kill()


def private_lab(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    shutil.copyfile(TINY, path)
    return path


# -- a saved verified lab ----------------------------------------------------------


def test_kill_during_the_save_of_a_verified_lab(provider, tmp_path, killed):
    """First here, before the shared lab: one lab at a time on this host."""
    name = "killsave"
    path = private_lab(tmp_path, name)
    golden.forget_lab(name)
    try:
        up = Kvmlab("up", "--verify", "--rebuild", str(path), stop_at="golden-volumes")
        killed.append(up)
        up.wait_for(r"stop point golden-volumes")
        run_id = re.search(r"run ([0-9a-f]{6}):", "\n".join(up.lines)).group(1)
        partial = list(golden.saved_root().glob(f"{name}-*.partial"))
        volumes = [v for v in provider.list_volumes(settings.POOL) if v.startswith(f"{golden.SAVED_PREFIX}{name}-")]
        assert partial and volumes, "the save had not begun: the test proves nothing"

        # The saving process is alive (stopped): gc leaves its save alone.
        gc = kvmlab("gc")
        assert gc.returncode == 0, gc.stderr
        assert all(p.is_dir() for p in partial), gc.stdout
        assert set(volumes) <= set(provider.list_volumes(settings.POOL))

        up.kill()
        assert not [p for p in golden.saved_root().glob(f"{name}-*") if not p.name.endswith(".partial")], "a half save is visible"

        gc = kvmlab("gc")
        assert gc.returncode == 0, gc.stderr
        # Another user's killed save may be collected too: at least ours.
        assert int(re.search(r"(\d+) leftovers of unfinished lab saves", gc.stdout).group(1)) >= len(partial) + len(volumes), gc.stdout
        assert list(golden.saved_root().glob(f"{name}-*")) == []  # what the next `up` looks for: it builds
        assert [v for v in provider.list_volumes(settings.POOL) if v.startswith(f"{golden.SAVED_PREFIX}{name}-")] == []

        # `up` had kept the lab before verifying it: its owner is dead, so `down` needs no --force.
        down = kvmlab("down", name)
        assert down.returncode == 0, down.stderr
        assert leftovers(provider, run_id) == []
        assert not checkpoint_root(render.prefix(name, run_id)).exists()
    finally:
        golden.forget_lab(name)


# -- checkpoints of a shared lab ---------------------------------------------------


@pytest.fixture(scope="module")
def shared(provider, tmp_path_factory) -> Iterator[LabSession]:
    """One running lab for the checkpoint tests, held by this pytest process, with checkpoint `base`."""
    lab = load_lab(private_lab(tmp_path_factory.mktemp("lab"), LAB))
    session = LabSession(lab, provider, progress=lambda line: None, use_saved=False)
    try:
        session.up()
        session.node("n1").run_expect("echo base > /root/mark && sync")
        session.snapshot("base")
        yield session
    finally:
        session.down()
    assert leftovers(provider, session.run_id) == []
    assert not checkpoint_root(session.prefix).exists()


def mark(session: LabSession, text: str | None = None) -> str:
    """Write TEXT to the node's marker file, or read it (the node may have been restored by another process)."""
    node = session.node("n1")
    node.forget_session()
    if text is not None:
        node.run_expect(f"echo {text} > /root/mark && sync")
    return node.run_expect("cat /root/mark").strip()


def book(session: LabSession) -> Book:
    return Book.load(checkpoint_root(session.prefix) / "book.json")


def stray(session: LabSession) -> list[str]:
    """Memory directories and overlays of the run that the committed book does not name."""
    b = book(session)
    root = checkpoint_root(session.prefix)
    found = [d.name for d in root.iterdir() if d.is_dir() and d.name not in b.memory_dirs()]
    claimed = b.frozen() | {vol for tops in b.tops.values() for vol in tops.values()}
    vols = session.provider.list_volumes(settings.POOL)
    found += [v for v in vols if v.startswith(session.prefix + "-") and OVERLAY_RE.search(v) and v not in claimed]
    return found + b.garbage


def revert_ok(name: str) -> None:
    res = kvmlab("revert", LAB, name)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"lab {LAB}: reverted to checkpoint {name}" in res.stdout


def listed() -> list[str]:
    res = kvmlab("snapshot", LAB)
    assert res.returncode == 0, res.stderr
    return [line.split()[0] for line in res.stdout.splitlines()]


def test_kill_while_libvirt_saves_a_new_checkpoints_memory(shared, killed):
    mark(shared, "after-base")
    snap = Kvmlab("snapshot", LAB, "half")
    killed.append(snap)
    root = checkpoint_root(shared.prefix)
    until(lambda: list(root.glob("half@*/n1.save")), 120, "the memory file of checkpoint half", snap.tail)
    snap.kill()
    assert "half" not in book(shared).checkpoints, "the kill came after the commit: the test proves nothing"

    assert listed() == ["base"]
    res = kvmlab("revert", LAB, "half")
    assert res.returncode == 1
    assert re.fullmatch(rf"kvmlab: checkpoint half of lab {LAB} was not completed \(.*\): take it again with .*", res.stderr.strip())
    revert_ok("base")
    assert mark(shared) == "base"
    assert stray(shared) == []


def test_kill_after_the_memory_of_a_replacing_snapshot_is_saved(shared, killed):
    before = book(shared).checkpoints["base"]
    mark(shared, "changed")
    snap = Kvmlab("snapshot", LAB, "base", stop_at="checkpoint-saved")
    killed.append(snap)
    snap.wait_for(r"stop point checkpoint-saved")
    (half,) = [d for d in checkpoint_root(shared.prefix).glob("base@*") if d.name != before.memory]

    gc = kvmlab("gc")  # the snapshot's process is alive (stopped): gc keeps off
    assert gc.returncode == 0 and half.is_dir(), gc.stdout + gc.stderr

    snap.kill()
    assert book(shared).checkpoints["base"] == before, "the old checkpoint must stay whole"
    gc = kvmlab("gc")
    assert gc.returncode == 0, gc.stderr
    assert int(re.search(r"(\d+) leftovers of unfinished checkpoints", gc.stdout).group(1)) >= 1, gc.stdout
    assert not half.exists()
    assert shared.run_id not in gc.stdout.split(":")[0], "gc must not take the live lab"

    revert_ok("base")
    assert mark(shared) == "base", "reverted to the half-taken replacement"
    assert stray(shared) == []


def test_kill_right_after_a_snapshot_commits(shared, killed, provider):
    mark(shared, "late")
    snap = Kvmlab("snapshot", LAB, "late", stop_at="checkpoint-committed")
    killed.append(snap)
    snap.wait_for(r"stop point checkpoint-committed")
    snap.kill()
    assert provider.domain_state(shared.node("n1").domain) == "absent"  # saved, never restored

    assert listed() == ["base", "late"]
    revert_ok("late")
    assert mark(shared) == "late"
    assert stray(shared) == []


def test_kill_in_a_revert_before_its_commit(shared, killed, provider):
    mark(shared, "before-revert")
    counter = book(shared).counter
    rev = Kvmlab("revert", LAB, "base", stop_at="checkpoint-overlays")
    killed.append(rev)
    rev.wait_for(r"stop point checkpoint-overlays")
    rev.kill()
    assert provider.domain_state(shared.node("n1").domain) == "absent"
    assert book(shared).counter == counter
    assert len(stray(shared)) == 1, "the uncommitted overlay"

    res = kvmlab("revert", LAB, "base")  # its overlay has the name the killed one used: it is replaced
    assert res.returncode == 0, res.stdout + res.stderr
    assert "removed what an interrupted snapshot or revert left" in res.stderr
    assert mark(shared) == "base"
    assert stray(shared) == []


def test_kill_while_a_revert_restores_the_nodes(shared, killed, provider):
    mark(shared, "before-revert")
    counter = book(shared).counter
    domain = shared.node("n1").domain
    rev = Kvmlab("revert", LAB, "base")
    killed.append(rev)
    until(lambda: book(shared).counter > counter and provider.domain_state(domain) == "paused", 120, "the restore to begin", rev.tail)
    rev.kill()
    assert provider.domain_state(domain) == "paused", "restored paused, never resumed: half-restored"

    revert_ok("base")
    assert provider.domain_state(domain) == "running"
    assert mark(shared) == "base"
    assert stray(shared) == []


# -- who owns a lab; one lab's status --------------------------------------------------


def test_down_is_refused_while_this_pytest_session_owns_the_lab(shared, provider):
    res = kvmlab("down", LAB)
    assert res.returncode == 1
    line = res.stderr.strip()
    assert re.fullmatch(
        rf"kvmlab: lab {LAB} \(run {shared.run_id}\) is owned by pid {os.getpid()} \(command line \S*python\S* .*pytest.*, "
        r"user \S+, started \S+\): it is still running; stop it first, or pass --force",
        line,
    ), line
    assert provider.domain_state(shared.node("n1").domain) == "running"


def test_status_of_one_lab(shared):
    res = kvmlab("status", LAB)
    assert res.returncode == 0, res.stderr
    assert f"lab {LAB} run {shared.run_id}: pid {os.getpid()}" in res.stdout
    (n1,) = [line.split() for line in res.stdout.splitlines() if line.startswith("n1 ")]
    assert n1 == ["n1", "running", f"mgmt={shared.node('n1').address()}", "nfs-server"]

    unknown = kvmlab("status", "no-such-lab")
    assert unknown.returncode == 1
    assert re.fullmatch(r"kvmlab: no lab 'no-such-lab' is up \(labs up: .*\bkills\b.*\)", unknown.stderr.strip()), unknown.stderr
