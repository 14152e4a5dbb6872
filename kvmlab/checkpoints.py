"""Whole-lab checkpoints: every node's memory and disks saved under a name, and reverted in seconds.

How: all nodes are paused together, their memory is saved to files (the domains stop), and each
disk's current qcow2 overlay is frozen as the checkpoint's layer. Every node is then restored
from its memory file onto a fresh overlay above that layer and resumed. Reverting throws the
current overlays away, makes fresh ones above the checkpoint's layers and restores the memory
files again. Nothing is copied, so a checkpoint costs the memory file plus what was written since.

Checkpoints form a tree: reverting to one keeps every other. Layers are files in the kvmlab pool
named after the run, so `kvmlab down` and `kvmlab gc` remove them with the run.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kvmlab import render, settings
from kvmlab.errors import HarnessError
from kvmlab.wait import timeout_for, wait_until

if TYPE_CHECKING:
    from kvmlab.model import Lab, Node
    from kvmlab.providers.base import Provider
    from kvmlab.remote import Remote

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
ROOT_SERIAL = "root"


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
    def remote(self) -> Remote: ...
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
    def nodes(self) -> Sequence[CheckpointNode]: ...
    def node(self, name: str) -> CheckpointNode: ...
    def log(self, message: str) -> None: ...


def checkpoint_root(prefix: str) -> Path:
    return settings.checkpoint_dir() / prefix


@dataclass
class Checkpoint:
    name: str
    created: str
    layers: dict[str, dict[str, str]]  # node -> disk serial -> frozen volume
    save_s: float = 0.0


@dataclass
class Book:
    """What the run's checkpoints are and which overlay each disk writes to now; kept beside the memory files."""

    counter: int = 0
    tops: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> disk serial -> volume written now
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Book:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(raw["counter"], raw["tops"], {k: Checkpoint(**v) for k, v in raw["checkpoints"].items()})

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"counter": self.counter, "tops": self.tops, "checkpoints": {k: vars(v) for k, v in self.checkpoints.items()}}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    def frozen(self) -> set[str]:
        return {vol for ck in self.checkpoints.values() for disks in ck.layers.values() for vol in disks.values()}


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

    def _state_file(self, name: str, node: str) -> Path:
        return self.root / name / f"{node}.save"

    # -- snapshot -------------------------------------------------------------
    def snapshot(self, name: str) -> float:
        """Save every node under NAME (replacing a checkpoint of that name); the lab keeps running. Returns seconds taken."""
        check_name(name)
        with self._lock:
            book = self.book
            # Saving under a name in use replaces that checkpoint; its layers stay until the run ends.
            book.checkpoints.pop(name, None)
            handles = self._all_running()
            start = time.monotonic()
            (self.root / name).mkdir(parents=True, exist_ok=True)
            self.session.log(f"checkpoint {name}: pausing {len(handles)} nodes")
            self._pause_all(handles)
            try:
                self._parallel(handles, lambda h: self.session.provider.save_domain(h.domain, str(self._state_file(name, h.name))))
            except BaseException:
                self._recover_after_failed_save(handles, book, name)
                shutil.rmtree(self.root / name, ignore_errors=True)
                raise
            layers = {h.name: dict(book.tops[h.name]) for h in handles}
            book.checkpoints[name] = Checkpoint(name, datetime.now(UTC).isoformat(timespec="seconds"), layers)
            self._restore_onto_new_tops(handles, book, name)
            book.checkpoints[name].save_s = round(time.monotonic() - start, 1)
            book.save(self._book_path)
            elapsed = time.monotonic() - start
            self.session.log(f"checkpoint {name}: saved in {elapsed:.1f} s")
            return elapsed

    def _recover_after_failed_save(self, handles: Sequence[CheckpointNode], book: Book, name: str) -> None:
        """A save that failed half-way: paused nodes resume, saved ones come back from their files unchanged."""
        for h in handles:
            state_file = self._state_file(name, h.name)
            if h.state == "shutoff" and state_file.exists():
                disks = {serial: f"{settings.pool_dir()}/{vol}" for serial, vol in book.tops[h.name].items()}
                self.session.provider.restore_domain(str(state_file), disks)
            elif h.state == "paused":
                self.session.provider.resume_domain(h.domain)

    # -- revert ---------------------------------------------------------------
    def revert(self, name: str) -> float:
        """Put every node back to checkpoint NAME (memory, disks); returns the seconds it took."""
        with self._lock:
            book = self.book
            if name not in book.checkpoints:
                known = ", ".join(sorted(book.checkpoints)) or "none"
                raise HarnessError(f"lab {self.session.lab.name} has no checkpoint '{name}' (checkpoints: {known})")
            start = time.monotonic()
            handles = self.session.nodes
            for h in handles:
                h.forget_session()
            self._parallel(handles, lambda h: self.session.provider.destroy_domain(h.domain))
            self._restore_onto_new_tops(handles, book, name)
            book.save(self._book_path)
            elapsed = time.monotonic() - start
            self.session.log(f"reverted to checkpoint {name} in {elapsed:.1f} s")
            return elapsed

    # -- shared steps ---------------------------------------------------------
    def _restore_onto_new_tops(self, handles: Sequence[CheckpointNode], book: Book, name: str) -> None:
        """Fresh overlays above NAME's layers, every node restored paused, then all resumed at once."""
        provider, ck = self.session.provider, book.checkpoints[name]
        handles = [h for h in handles if h.name in ck.layers]
        frozen = book.frozen()
        book.counter += 1
        for h in handles:
            old_tops = book.tops[h.name]
            new_tops = {}
            for serial, layer in ck.layers[h.name].items():
                first = self._first_volumes(h.name)[serial]
                new = overlay_name(first, book.counter)
                provider.create_volume(settings.POOL, render.render_overlay_volume(new, f"{settings.pool_dir()}/{layer}"))
                new_tops[serial] = new
            for vol in old_tops.values():
                if vol not in frozen and vol not in new_tops.values():
                    provider.delete_volume(settings.POOL, vol)
            book.tops[h.name] = new_tops
        book.save(self._book_path)

        self.restore_all({h.name: self._state_file(name, h.name) for h in handles}, book)

    def restore_all(self, state_files: dict[str, Path], book: Book, owner: dict[str, str] | None = None) -> None:
        """Start every node from its state file onto the disks BOOK says it writes to now, all resumed at once."""
        provider = self.session.provider
        handles = [self.session.node(n) for n in state_files]

        def restore(h: CheckpointNode) -> None:
            disks = {serial: f"{settings.pool_dir()}/{vol}" for serial, vol in book.tops[h.name].items()}
            provider.restore_domain(str(state_files[h.name]), disks, paused=True, owner=owner)

        self._parallel(handles, restore)
        for h in handles:  # resumed together so that no node sees its peers frozen
            provider.resume_domain(h.domain)
        self._set_clocks(handles)

    def _set_clocks(self, handles: Sequence[CheckpointNode]) -> None:
        """A restored guest's clock stands where it was saved; Ceph and Kerberos-like peers refuse skew."""

        def set_clock(h: CheckpointNode) -> None:
            h.forget_session()
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

        self._parallel(handles, set_clock)

    def _all_running(self) -> Sequence[CheckpointNode]:
        handles = self.session.nodes
        off = [f"{h.name} ({h.state})" for h in handles if h.state not in ("running", "paused")]
        if off:
            raise HarnessError(f"cannot checkpoint lab {self.session.lab.name}: nodes not running: {', '.join(off)}")
        return handles

    def _pause_all(self, handles: Sequence[CheckpointNode]) -> None:
        for h in handles:
            if h.state == "running":
                self.session.provider.pause_domain(h.domain)

    @staticmethod
    def _parallel(handles: Sequence[CheckpointNode], fn: Callable[[CheckpointNode], None]) -> None:
        errors: list[BaseException] = []

        def call(h: CheckpointNode) -> None:
            try:
                fn(h)
            except BaseException as exc:  # reported below, first one wins
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(h,), daemon=True) for h in handles]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        if errors:
            raise errors[0]
