"""What killed snapshots and reverts leave is found and removed (never during one); `down` refuses a lab
that a live process owns; `status LAB` shows one lab. No VMs: files, the registry and libvirt's test driver."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kvmlab import checkpoints, cli, gc, runs
from kvmlab.checkpoints import Book, Checkpoint, remove_leftovers, remove_leftovers_if_idle, run_lock
from kvmlab.libvirt_host import LibvirtHost
from tests.unit.test_runs_gc import _start_smoke_objects, dead_pid, private_registry  # noqa: F401  (autouse fixture)

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "kvmlab-tiny-0a0a0a"
LOCAL = LibvirtHost("qemu:///system")


def _vol(suffix: str, prefix: str = PREFIX) -> str:
    return f"{prefix}-n1-root{suffix}.qcow2"


def _book_with_checkpoint_a(root: Path) -> Book:
    """A run with checkpoint `a` (taken at counter 1), reverted since: it writes to overlay c2."""
    book = Book(counter=2, tops={"n1": {"root": _vol(".c2")}}, garbage=[_vol(".c1")])
    book.checkpoints["a"] = Checkpoint("a", "2026-12-01T00:00:00+00:00", {"n1": {"root": _vol("")}}, memory="a@1")
    book.save(root / "book.json")
    (root / "a@1").mkdir()
    (root / "a@1" / "n1.save").write_bytes(b"memory")
    return book


def test_leftovers_are_what_no_committed_book_names(tmp_path):
    root = tmp_path / PREFIX
    root.mkdir()
    _book_with_checkpoint_a(root)
    (root / "b@3").mkdir()  # a snapshot killed before its commit
    (root / "b@3" / "n1.save").write_bytes(b"half")
    pool = [_vol(""), _vol(".c1"), _vol(".c2"), _vol(".c3"), _vol(".seed", ""), _vol(".c9", "kvmlab-tiny-0b0b0b")]
    deleted: list[str] = []

    removed = remove_leftovers(root, PREFIX, pool, deleted.append, LOCAL)

    # c3: made for a commit that never came; c1: given up by the last commit. The frozen layer, the
    # current overlay and another run's overlay stay.
    assert sorted(deleted) == [_vol(".c1"), _vol(".c3")]
    assert sorted(removed) == sorted(["b@3", _vol(".c1"), _vol(".c3")])
    assert sorted(p.name for p in root.iterdir()) == ["a@1", "book.json"]
    again = Book.load(root / "book.json")
    assert again.garbage == [] and again.checkpoints["a"].memory == "a@1" and again.counter == 2


def test_a_replaced_checkpoints_layers_stay_they_back_newer_overlays(tmp_path):
    root = tmp_path / PREFIX
    root.mkdir()
    book = Book(counter=3, tops={"n1": {"root": _vol(".c3")}})
    # `a` was taken twice: first its layer was root.qcow2 (memory a@1), now c1 (memory a@2); c1 sits on root.qcow2.
    book.checkpoints["a"] = Checkpoint("a", "t", {"n1": {"root": _vol(".c1")}}, memory="a@2")
    book.save(root / "book.json")
    (root / "a@1").mkdir()
    (root / "a@2").mkdir()
    deleted: list[str] = []
    removed = remove_leftovers(root, PREFIX, [_vol(""), _vol(".c1"), _vol(".c3")], deleted.append, LOCAL)
    assert deleted == []
    assert removed == ["a@1"]  # the replaced checkpoint's memory is nobody's


def test_a_book_written_before_memory_directories_had_their_own_names_still_reads(tmp_path):
    path = tmp_path / "book.json"
    path.write_text(
        json.dumps({"counter": 1, "tops": {}, "checkpoints": {"a": {"name": "a", "created": "t", "layers": {}, "save_s": 1.0}}})
    )
    book = Book.load(path)
    assert book.memory_dirs() == {"a"} and book.garbage == []


def test_gc_keeps_off_a_snapshot_in_progress_and_cleans_after_it(tmp_path):
    root = checkpoints.checkpoint_root(PREFIX)
    root.mkdir(parents=True)
    (root / "b@1").mkdir()
    deleted: list[str] = []
    with run_lock(root):  # a snapshot running (another process: a flock is per open file)
        assert remove_leftovers_if_idle(PREFIX, [_vol(".c1")], deleted.append, LOCAL) == []
    assert (root / "b@1").is_dir() and deleted == []
    assert sorted(remove_leftovers_if_idle(PREFIX, [_vol(".c1")], deleted.append, LOCAL)) == sorted(["b@1", _vol(".c1")])
    assert deleted == [_vol(".c1")]


def test_gc_removes_a_killed_snapshots_leftovers_of_a_kept_run_and_keeps_the_run(provider):
    run = runs.register("0a0a0a", "tiny", str(ROOT / "labs" / "tiny.yaml"), {"mgmt": 24})
    runs.set_kept(run.run_id, True)
    root = checkpoints.checkpoint_root(PREFIX)
    root.mkdir(parents=True)
    (root / "x@1").mkdir()

    out = gc.collect(provider)

    assert out.checkpoints == ["x@1"] and out.runs == []
    assert "0a0a0a" in runs.all_runs() and root.is_dir()


# -- down: who owns a lab ----------------------------------------------------


@pytest.fixture
def other_process():
    """A live process that is not this one, as the owner of a lab would be."""
    proc = subprocess.Popen(["sleep", "60"])
    time.sleep(0.1)
    yield proc
    proc.kill()
    proc.wait()


def _run(pid: int, kept: bool = False, started: float | None = None) -> runs.Run:
    run = runs.register("0c0c0c", "smoke", str(ROOT / "labs" / "smoke.yaml"), {"mgmt": 24, "storage": 24})
    run.pid, run.kept = pid, kept
    run.started = time.time() if started is None else started
    with runs._registry() as reg:
        reg[run.run_id] = run
    return run


def test_down_is_refused_while_another_live_process_owns_the_lab(other_process):
    why = runs.down_refusal(_run(other_process.pid))
    assert why is not None
    assert why.startswith(f"lab smoke (run 0c0c0c) is owned by pid {other_process.pid} (command line sleep 60, user {runs.me()}, started ")
    assert why.endswith("): it is still running; stop it first, or pass --force")
    assert "\n" not in why


def test_down_may_remove_kept_labs_whose_up_has_exited_and_labs_of_dead_owners():
    assert runs.down_refusal(_run(dead_pid(), kept=True)) is None  # `kvmlab up` left it running and exited
    assert runs.down_refusal(_run(dead_pid())) is None  # killed owner: its leftovers
    assert runs.down_refusal(_run(os.getpid())) is None  # the asking process itself


def test_a_kept_lab_is_still_refused_while_the_process_keeping_it_runs(other_process):
    # `kvmlab up --verify` marks the lab kept before it verifies and saves it; `pytest --lab-keep` too.
    assert runs.down_refusal(_run(other_process.pid, kept=True)) is not None


def test_a_reused_pid_is_not_the_owner(other_process):
    # The run was registered long before the process that now has its pid started.
    assert runs.down_refusal(_run(other_process.pid, started=time.time() - 3600)) is None


def test_cli_down_refuses_then_forces(provider, monkeypatch, other_process, capsys):
    monkeypatch.setattr(cli, "_provider", lambda uri=None: provider)
    run = _run(other_process.pid)
    _start_smoke_objects(provider, run.run_id, other_process.pid, user=runs.me())

    assert cli.main(["down", "smoke"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kvmlab: lab smoke (run 0c0c0c) is owned by pid {other_process.pid} (command line sleep 60")
    assert len(err.splitlines()) == 1
    assert {d.name for d in provider.list_domains()} >= {"kvmlab-smoke-0c0c0c-nfs1", "kvmlab-smoke-0c0c0c-hv1"}

    assert cli.main(["down", "smoke", "--force"]) == 0
    assert "removed 2 domains" in capsys.readouterr().out
    assert not [d for d in provider.list_domains() if "0c0c0c" in d.name] and "0c0c0c" not in runs.all_runs()


def test_cli_down_removes_a_kept_lab_without_force(provider, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_provider", lambda uri=None: provider)
    run = _run(dead_pid(), kept=True)
    _start_smoke_objects(provider, run.run_id, run.pid, user=runs.me())
    assert cli.main(["down", "smoke"]) == 0
    assert not [d for d in provider.list_domains() if "0c0c0c" in d.name]


# -- status LAB ----------------------------------------------------------------


def test_status_of_one_lab_shows_its_runs_nodes_addresses_and_roles(provider, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_provider", lambda uri=None: provider)
    run = _run(os.getpid())
    _start_smoke_objects(provider, run.run_id, os.getpid(), user=runs.me())
    mgmt = run.placement().subnets["mgmt"]

    assert cli.main(["status", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"lab smoke run 0c0c0c: pid {os.getpid()}, user {runs.me()}, started " in out
    nfs1 = next(line for line in out.splitlines() if line.startswith("nfs1 "))
    assert nfs1.split()[1] == "running"
    assert f"mgmt={mgmt.network_address + 10}" in nfs1 and nfs1.split()[-1] == "nfs-server"
    assert next(line for line in out.splitlines() if line.startswith("hv1 ")).split()[-1] == "hypervisor"


def test_status_of_an_unknown_lab_names_the_labs_that_are_up(provider, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_provider", lambda uri=None: provider)
    _run(os.getpid())
    assert cli.main(["status", "nope"]) == 1
    assert capsys.readouterr().err.strip() == "kvmlab: no lab 'nope' is up (labs up: smoke)"


def test_status_without_a_lab_keeps_the_table(provider, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_provider", lambda uri=None: provider)
    _run(os.getpid())
    assert cli.main(["status"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["lab", "run", "user", "owner", "subnets", "nodes"]


def test_down_is_refused_while_a_snapshot_or_revert_holds_the_lab(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_CHECKPOINT_DIR", str(tmp_path))
    run = _run(dead_pid(), kept=True)  # a kept lab: its `up` has exited, so only the checkpoint lock tells
    root = tmp_path / "kvmlab-smoke-0c0c0c"
    assert cli._checkpoint_busy(run) is None  # no checkpoint ever taken
    root.mkdir()
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(60)",
            str(root / ".lock"),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        assert (
            cli._checkpoint_busy(run)
            == "lab smoke (run 0c0c0c): a snapshot or revert is running on it; wait for it to end, or pass --force"
        )
    finally:
        holder.kill()
        holder.wait()
    assert cli._checkpoint_busy(run) is None


# -- runs on several libvirt hosts ---------------------------------------------


def test_down_and_gc_go_to_the_host_each_run_recorded_and_gc_names_a_host_that_does_not_answer(provider, monkeypatch, capsys):
    """A run placed by --hosts is found on its own host; gc visits every host a run recorded."""
    far = "qemu+ssh://root@far.example/system"
    asked: list[str | None] = []

    def provider_at(uri: str | None = None):
        asked.append(uri)
        if uri == far:
            raise cli.HarnessError("cannot connect to libvirt at qemu+ssh://root@far.example/system: no route")
        return provider

    monkeypatch.setattr(cli, "_provider", provider_at)
    monkeypatch.setenv("KVMLAB_URI", "test:///default")
    placed = runs.register("0d0d0d", "smoke", str(ROOT / "labs" / "smoke.yaml"), {"mgmt": 24, "storage": 24}, uri="test:///default")
    placed.pid = dead_pid()
    with runs._registry() as reg:
        reg[placed.run_id] = placed
        reg["0e0e0e"] = runs.Run("0e0e0e", "tiny", "x.yaml", runs.me(), os.getpid(), "h", "b", time.time(), uri=far)
    _start_smoke_objects(provider, placed.run_id, placed.pid, user=runs.me())

    assert cli.main(["gc"]) == 1
    out = capsys.readouterr()
    assert asked == ["test:///default", far]
    assert "removed runs 0d0d0d: 2 domains" in out.out
    assert out.err.strip() == (
        f"kvmlab gc: could not collect on {far}: cannot connect to libvirt at {far}: no route;"
        f" what dead runs left there stays until it answers (if it never will: `kvmlab gc --forget {far}`)"
    )
    assert set(runs.all_runs()) == {"0e0e0e"}, "the far run's record is how a later gc finds its host"


def test_status_shows_the_labs_of_a_host_that_does_not_answer_as_unreachable(provider, monkeypatch, capsys):
    far = "qemu+ssh://root@far.example/system"

    def provider_at(uri: str | None = None):
        if uri == far:
            raise cli.HarnessError(f"cannot connect to libvirt at {far}: no route")
        return provider

    monkeypatch.setattr(cli, "_provider", provider_at)
    monkeypatch.setenv("KVMLAB_URI", "test:///default")
    here = _run(os.getpid())
    _start_smoke_objects(provider, here.run_id, os.getpid(), user=runs.me())
    with runs._registry() as reg:
        reg["0e0e0e"] = runs.Run(
            "0e0e0e", "smoke", str(ROOT / "labs" / "smoke.yaml"), runs.me(), os.getpid(), "h", "b", time.time(), uri=far
        )

    assert cli.main(["status"]) == 0
    out = capsys.readouterr()
    assert f"cannot connect to libvirt at {far}: no route; its labs' nodes show as unreachable" in out.err
    rows = {line.split()[1]: line for line in out.out.splitlines()[2:]}
    assert "nfs1=running" in rows["0c0c0c"]
    assert rows["0e0e0e"].endswith("unreachable")

    assert cli.main(["status", "smoke"]) == 0
    far_part = capsys.readouterr().out.split("lab smoke run 0e0e0e")[1]
    assert [line.split()[1] for line in far_part.splitlines() if line.startswith(("nfs1 ", "hv1 "))] == ["unreachable"] * 2
