"""Whole-lab checkpoints: every node's memory and disks saved under a name, and reverted in seconds.

How: all nodes are paused together, their memory is saved to files (the domains stop), and each
disk's current qcow2 overlay is frozen as the checkpoint's layer. Every node is then restored
from its memory file onto a fresh overlay above that layer and resumed. Reverting throws the
current overlays away, makes fresh ones above the checkpoint's layers and restores the memory
files again. Nothing is copied, so a checkpoint costs the memory file plus what was written since.

Memory files are written where the nodes run: on a remote libvirt host, in the same directory there
(host_files); the book and the lock stay with the client that owns the run.

Checkpoints form a tree: reverting to one keeps every other. Layers are files in the kvmlab pool
named after the run, so `kvmlab down` and `kvmlab gc` remove them with the run.

A kill at any moment never leaves a half-written checkpoint to revert to: memory goes to a directory
of its own and new overlays get the next counter, and nothing names them until book.json is replaced
(fsynced, renamed: the commit point). Whatever a killed snapshot or revert left (memory directories and
overlays no book names, overlays the book gave up) is removed by the next snapshot or revert of the run,
or by `kvmlab gc`; a per-run file lock keeps both away from an operation still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from kvmlab import host_files, render, settings
from kvmlab.errors import HarnessError
from kvmlab.host_files import fsync_dir
from kvmlab.inner_suspend import resume_inner_guests, suspend_inner_guests
from kvmlab.locks import flocked
from kvmlab.stops import stop_point
from kvmlab.wait import timeout_for, wait_until

if TYPE_CHECKING:
    from kvmlab.libvirt_host import LibvirtHost
    from kvmlab.model import Lab, Node
    from kvmlab.providers.base import Provider
    from kvmlab.remote import Remote

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
ROOT_SERIAL = "root"
OVERLAY_RE = re.compile(r"\.c(\d+)\.qcow2$")  # overlay_name()'s counter
BOOK = "book.json"
AGENT_CLOCK_S = 30.0  # for a just-resumed guest's agent to answer, all nodes catching up at once under TCG
T = TypeVar("T")


# What checkpoints need of a lab session and its node handles (kvmlab.lab's LabSession and NodeHandle
# provide it): lab.py uses this module, so this module names what it needs instead of importing lab.py.
class CheckpointNode(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def domain(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def model(self) -> Node: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def remote(self) -> Remote: ...
    @property
    def provider(self) -> Provider: ...  # the connection of the host it runs on
    @property
    def libvirt_host(self) -> LibvirtHost: ...  # the host it runs on
    def forget_session(self) -> None: ...
    def console_tail(self, lines: int = 30) -> str: ...


class CheckpointSession(Protocol):
    @property
    def lab(self) -> Lab: ...
    @property
    def provider(self) -> Provider: ...
    @property
    def run_id(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def accel(self) -> str: ...
    @property
    def host(self) -> LibvirtHost: ...
    @property
    def nodes(self) -> Sequence[CheckpointNode]: ...
    def node(self, name: str) -> CheckpointNode: ...
    def log(self, message: str) -> None: ...
    def settle_storage(self) -> None: ...
    def hosts(self) -> list[LibvirtHost]: ...  # every host the lab runs nodes on
    def delete_volume(self, name: str) -> None: ...  # a volume of the run, on the host that has it
    def list_volumes(self) -> list[str]: ...  # the run's pool volumes on every host

    restore_parts: dict[str, float]  # the last revert's or restore's parts, set here


def checkpoint_root(prefix: str) -> Path:
    return settings.checkpoint_dir() / prefix


@dataclass
class Checkpoint:
    name: str
    created: str
    layers: dict[str, dict[str, str]]  # node -> disk serial -> frozen volume
    save_s: float = 0.0
    memory: str = ""  # directory of the memory files under the run's root ("": NAME, as older books had it)
    suspended: dict[str, list[str]] = field(default_factory=dict)  # node -> inner guests suspended in its saved memory


@dataclass
class Book:
    """What the run's checkpoints are and which overlay each disk writes to now; kept beside the memory files."""

    counter: int = 0
    tops: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> disk serial -> volume written now
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    garbage: list[str] = field(default_factory=list)  # volumes given up at the last commit, not yet deleted

    @classmethod
    def load(cls, path: Path) -> Book:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        checkpoints = {k: Checkpoint(**v) for k, v in raw["checkpoints"].items()}
        return cls(raw["counter"], raw["tops"], checkpoints, raw.get("garbage", []))

    def save(self, path: Path) -> None:
        """Replace the book at PATH atomically and durably: a reader sees the old book or the new one, never a mix."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "counter": self.counter,
            "tops": self.tops,
            "checkpoints": {k: vars(v) for k, v in self.checkpoints.items()},
            "garbage": self.garbage,
        }
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(data, indent=1))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)

    def frozen(self) -> set[str]:
        return {vol for ck in self.checkpoints.values() for disks in ck.layers.values() for vol in disks.values()}

    def memory_dirs(self) -> set[str]:
        return {ck.memory or ck.name for ck in self.checkpoints.values()}


@contextlib.contextmanager
def run_lock(root: Path, blocking: bool = True) -> Iterator[bool]:
    """The run's checkpoint lock (one snapshot or revert at a time, across processes); yields False if busy and not BLOCKING.

    A flock: the kernel drops it when its holder dies, so a killed process never leaves it held."""
    with flocked(root / ".lock", blocking) as held:
        yield held


def remove_leftovers(
    root: Path, prefix: str, volumes: Iterable[str], delete_volume: Callable[[str], None], host: LibvirtHost | Sequence[LibvirtHost]
) -> list[str]:
    """Remove what killed snapshots and reverts of run PREFIX left; the caller holds run_lock(ROOT). Returns what went.

    Left over are: memory directories that no checkpoint of the book names, overlays numbered past the book's
    counter (made for a commit that never came), and the overlays the last commit gave up (book.garbage).
    Frozen layers of replaced checkpoints are never touched: newer overlays are built on them."""
    path = root / BOOK
    book = Book.load(path)
    removed: list[str] = []
    named = book.memory_dirs()
    for each in host if isinstance(host, Sequence) else [host]:  # a lab over several hosts: on each
        for name in host_files.subdirs(each, root):  # the memory directories, on the libvirt host
            if name not in named:
                host_files.remove_tree(each, root / name)
                removed.append(name)
    for vol in sorted(set(volumes) | set(book.garbage)):
        m = OVERLAY_RE.search(vol)
        if vol in book.garbage or (vol.startswith(prefix + "-") and m and int(m.group(1)) > book.counter):
            delete_volume(vol)
            removed.append(vol)
    if book.garbage:
        book.garbage = []
        book.save(path)
    return removed


def remove_leftovers_if_idle(prefix: str, volumes: Iterable[str], delete_volume: Callable[[str], None], host: LibvirtHost) -> list[str]:
    """remove_leftovers() for `kvmlab gc`: nothing, while a snapshot or revert of the run is running."""
    root = checkpoint_root(prefix)
    if not root.is_dir():
        return []
    with run_lock(root, blocking=False) as held:
        return remove_leftovers(root, prefix, volumes, delete_volume, host) if held else []


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise HarnessError(
            f"checkpoint name '{name}' is not valid: use 1-40 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        )
    return name


def overlay_name(first: str, counter: int) -> str:
    """The COUNTER-th overlay of a disk whose first volume is FIRST (…-root.qcow2 -> …-root.c3.qcow2)."""
    stem = first.removesuffix(".qcow2")
    return f"{stem}.c{counter}.qcow2"


class Checkpoints:
    """Snapshot and revert for one running lab session."""

    def __init__(self, session: CheckpointSession) -> None:
        self.session = session
        self.root = checkpoint_root(session.prefix)
        self._book_path = self.root / "book.json"
        self._lock = threading.Lock()
        self.parts: dict[str, float] = {}  # the current revert's or restore's parts, in seconds

    @property
    def book(self) -> Book:
        book = Book.load(self._book_path)
        if not book.tops:
            book.tops = {node.name: self._first_volumes(node.name) for node in self.session.lab.nodes}
        return book

    def names(self) -> list[str]:
        return sorted(self.book.checkpoints)

    def _first_volumes(self, node: str) -> dict[str, str]:
        lab, run = self.session.lab, self.session.run_id
        model = self.session.node(node).model
        vols = {ROOT_SERIAL: render.volume_name(lab.name, run, node, "root.qcow2")}
        vols.update({d.name: render.volume_name(lab.name, run, node, d.name + ".qcow2") for d in model.disks})
        return vols

    def memory_dir(self, ck: Checkpoint) -> Path:
        return self.root / (ck.memory or ck.name)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held while this run's checkpoints or overlays change: another process waits, gc keeps off."""
        with run_lock(self.root, blocking=False) as held:
            if held:
                yield
                return
        self.session.log(f"lab {self.session.lab.name}: waiting for another process's snapshot or revert of it to end")
        with run_lock(self.root):
            yield

    def _tidy(self, quiet: bool = False) -> Book:
        """Remove what a killed snapshot or revert of this run left (the lock is held); the book as committed."""
        removed = remove_leftovers(
            self.root, self.session.prefix, self.session.list_volumes(), self.session.delete_volume, self.session.hosts()
        )
        if removed and not quiet:
            self.session.log(f"removed what an interrupted snapshot or revert left: {', '.join(removed)}")
        return self.book

    # -- snapshot -------------------------------------------------------------
    def snapshot(self, name: str) -> float:
        """Save every node under NAME (replacing a checkpoint of that name); the lab keeps running. Returns seconds taken."""
        check_name(name)
        with self._lock, self.locked():
            book = self._tidy()
            handles = self._all_running()
            start = time.monotonic()
            # Memory goes to a directory no book names yet: a checkpoint of the same name stays whole until the commit.
            memory = self.root / f"{name}@{book.counter + 1}"
            hosts = self.session.hosts()
            self.root.mkdir(parents=True, exist_ok=True)  # the book's, here
            for host in hosts:
                host_files.make_dir(host, memory)
            suspended = suspend_inner_guests(handles, self.session.log)
            self.session.log(f"checkpoint {name}: pausing {len(handles)} nodes")
            self._pause_all(handles)
            try:
                in_parallel(handles, lambda h: h.provider.save_domain(h.domain, str(memory / f"{h.name}.save")))
                in_parallel(hosts, lambda host: host_files.sync_tree(host, memory))
            except BaseException:
                self._recover_after_failed_save(handles, book, memory)
                resume_inner_guests(handles, suspended)
                for host in hosts:
                    host_files.remove_tree(host, memory)
                raise
            stop_point("checkpoint-saved", self.session.log)
            layers = {h.name: dict(book.tops[h.name]) for h in handles}
            # Replaces a checkpoint of that name: its layers stay until the run ends (newer overlays may sit on them).
            book.checkpoints[name] = Checkpoint(
                name, datetime.now(UTC).isoformat(timespec="seconds"), layers, memory=memory.name, suspended=suspended
            )
            self._restore_onto_new_tops(handles, book, name)
            book.checkpoints[name].save_s = round(time.monotonic() - start, 1)
            book.save(self._book_path)
            elapsed = time.monotonic() - start
            self.session.log(f"checkpoint {name}: saved in {elapsed:.1f} s")
            return elapsed

    def _recover_after_failed_save(self, handles: Sequence[CheckpointNode], book: Book, memory: Path) -> None:
        """A save that failed half-way: paused nodes resume, saved ones come back from their files unchanged."""
        for h in handles:
            state_file = memory / f"{h.name}.save"
            if h.state == "shutoff" and host_files.exists(h.libvirt_host, state_file):
                disks = {serial: f"{settings.pool_dir()}/{vol}" for serial, vol in book.tops[h.name].items()}
                h.provider.restore_domain(str(state_file), disks)
            elif h.state == "paused":
                h.provider.resume_domain(h.domain)

    # -- revert ---------------------------------------------------------------
    def revert(self, name: str) -> float:
        """Put every node back to checkpoint NAME (memory, disks); returns the seconds it took."""
        with self._lock, self.locked():
            lab = self.session.lab.name
            unfinished = name not in self.book.checkpoints and any(self.root.glob(f"{name}@*"))
            book = self._tidy(quiet=unfinished)  # the error below says it
            if unfinished:
                raise HarnessError(
                    f"checkpoint {name} of lab {lab} was not completed (the process taking it stopped before the end; "
                    f"what it left is removed): take it again with `kvmlab snapshot {lab} {name}`"
                )
            if name not in book.checkpoints:
                known = ", ".join(sorted(book.checkpoints)) or "none"
                raise HarnessError(f"lab {lab} has no checkpoint '{name}' (checkpoints: {known})")
            start = time.monotonic()
            self.parts = self.session.restore_parts = {}
            handles = self.session.nodes
            for h in handles:
                h.forget_session()
            with self._part("stop the nodes"):
                in_parallel(handles, lambda h: h.provider.destroy_domain(h.domain))
            self._restore_onto_new_tops(handles, book, name)
            book.save(self._book_path)
            elapsed = time.monotonic() - start
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in self.parts.items())
            self.session.log(f"reverted to checkpoint {name} in {elapsed:.1f} s ({parts})")
            return elapsed

    # -- shared steps ---------------------------------------------------------
    def _restore_onto_new_tops(self, handles: Sequence[CheckpointNode], book: Book, name: str) -> None:
        """Fresh overlays above NAME's layers, every node restored paused, then all resumed at once."""
        ck = book.checkpoints[name]
        handles = [h for h in handles if h.name in ck.layers]
        frozen = book.frozen()
        book.counter += 1
        overlays_started = time.monotonic()
        for h in handles:
            old_tops = book.tops[h.name]
            new_tops = {}
            for serial, layer in ck.layers[h.name].items():
                first = self._first_volumes(h.name)[serial]
                new = overlay_name(first, book.counter)
                h.provider.create_volume(settings.POOL, render.render_overlay_volume(new, f"{settings.pool_dir()}/{layer}"))
                new_tops[serial] = new
            # Deleted only after the commit: until then the book on disk still writes to them.
            book.garbage += [vol for vol in old_tops.values() if vol not in frozen and vol not in new_tops.values()]
            book.tops[h.name] = new_tops
        stop_point("checkpoint-overlays", self.session.log)
        book.save(self._book_path)  # the commit point
        stop_point("checkpoint-committed", self.session.log)
        remove_leftovers(self.root, self.session.prefix, [], self.session.delete_volume, self.session.hosts())
        book.garbage = []
        self.parts["new overlays"] = time.monotonic() - overlays_started

        self.restore_all({h.name: self.memory_dir(ck) / f"{h.name}.save" for h in handles}, book, suspended=ck.suspended)

    def restore_all(
        self,
        state_files: dict[str, Path],
        book: Book,
        owner: dict[str, str] | None = None,
        suspended: dict[str, list[str]] | None = None,
    ) -> None:
        """Start every node from its state file onto the disks BOOK says it writes to now, all resumed at
        once; then the inner guests SUSPENDED for the save (node -> guests) run again."""
        handles = [self.session.node(n) for n in state_files]
        if self.parts is not self.session.restore_parts:  # a saved-lab restore (a revert set them already)
            self.parts = self.session.restore_parts = {}

        def restore(h: CheckpointNode) -> None:
            disks = {serial: f"{settings.pool_dir()}/{vol}" for serial, vol in book.tops[h.name].items()}
            h.provider.restore_domain(str(state_files[h.name]), disks, paused=True, owner=owner)

        with self._part("restore memory"):
            in_parallel(handles, restore)
        with self._part("resume"):
            for h in handles:  # resumed together so that no node sees its peers frozen
                h.provider.resume_domain(h.domain)
        with self._part("clocks"):
            self._set_clocks(handles)
        if suspended:
            with self._part("inner guests resumed"):
                resume_inner_guests(handles, suspended)
        with self._part("storage settled"):  # part of the revert: a check right after it must not see a transient
            self.session.settle_storage()

    @contextlib.contextmanager
    def _part(self, name: str) -> Iterator[None]:
        """Time one part of a revert or restore into self.parts (what bounds a revert, measured)."""
        start = time.monotonic()
        try:
            yield
        finally:
            self.parts[name] = time.monotonic() - start

    def _set_clocks(self, handles: Sequence[CheckpointNode]) -> None:
        """A restored guest's clock stands where it was saved; Ceph and Kerberos-like peers refuse skew.

        Through each guest's agent: with every node catching up at once under TCG, a new SSH session
        took 26-34 s of a 12-node revert, and nothing needs SSH yet (sessions reconnect when used).
        Over SSH where the agent does not answer (a state saved before nodes had one)."""

        def set_clock(h: CheckpointNode) -> None:
            h.forget_session()
            try:
                wait_until(
                    lambda: self._agent_clock(h),
                    AGENT_CLOCK_S,
                    f"the guest agent of {h.name} to set its clock",
                    interval=0.5,
                )
                return
            except HarnessError as exc:
                self.session.log(f"{h.name}: clock not set through the guest agent ({exc}); setting it over SSH")
            # A just-resumed guest may take a while to answer ARP and SSH when every node catches up at once.
            wait_until(
                h.remote.answers,
                timeout_for("ssh-command", self.session.accel),
                f"node {h.name} to answer SSH after its restore",
                interval=1.0,
                failed=lambda: None if h.state == "running" else f"domain {h.domain} is {h.state}",
                context=h.console_tail,
            )
            h.remote.check(f"date -u -s @{time.time():.3f} >/dev/null", "set the clock after a restore", timeout=60)

        in_parallel(handles, set_clock)

    def _agent_clock(self, h: CheckpointNode) -> bool:
        try:
            h.provider.set_guest_time(h.domain, time.time())
        except HarnessError:
            return False  # the agent is not answering yet
        return True

    def _all_running(self) -> Sequence[CheckpointNode]:
        handles = self.session.nodes
        off = [f"{h.name} ({h.state})" for h in handles if h.state not in ("running", "paused")]
        if off:
            raise HarnessError(f"cannot checkpoint lab {self.session.lab.name}: nodes not running: {', '.join(off)}")
        return handles

    def _pause_all(self, handles: Sequence[CheckpointNode]) -> None:
        for h in handles:
            if h.state == "running":
                h.provider.pause_domain(h.domain)


def in_parallel(items: Sequence[T], fn: Callable[[T], None]) -> None:
    """FN on every item at once, each in a thread; the first error is raised once all have ended."""
    errors: list[BaseException] = []

    def call(item: T) -> None:
        try:
            fn(item)
        except BaseException as exc:  # reported below, first one wins
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(item,), daemon=True) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)  # short joins keep Ctrl-C deliverable
    if errors:
        raise errors[0]
