"""Saved verified labs: a lab that passed its suite comes back from memory instead of being rebuilt.

`kvmlab up --verify` checkpoints a freshly built lab before its suite runs and, when the suite
passes, keeps that checkpoint here under a key made of everything the lab was built from: the
lab file, the image recipe, the accelerator and kvmlab's templates and role code. The next `up`
(or pytest session) of an unchanged lab restores it — same run id, subnets, keys and names, so
the guests' own configuration stays true — in seconds, with the guests' clocks set right.

Only one restored copy of a saved lab can run at a time (it owns its run id and subnets); a
second one, or any change of input, builds the lab as usual.

A save is written under `NAME.partial`, fsynced, and renamed to NAME last: `SavedLab.find` reads only
NAME/manifest.json, so a killed save is never restored; `kvmlab gc` removes what it left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from kvmlab import render, runs, settings
from kvmlab.checkpoints import ROOT_SERIAL, Book, Checkpoints, CheckpointSession, overlay_name
from kvmlab.errors import HarnessError
from kvmlab.host_files import fsync_dir, fsync_tree
from kvmlab.locks import flocked
from kvmlab.stops import stop_point
from kvmlab.templating import search_path

if TYPE_CHECKING:
    from kvmlab.images import Image
    from kvmlab.model import Placement

PACKAGE = Path(__file__).resolve().parent
SAVED_PREFIX = "saved-"  # pool volumes of saved labs
# What shapes a guest's state besides the lab file and the image (golden.py: how the state is saved): a change here invalidates saved labs.
SOURCES = ("roles", "render.py", "model.py", "loader.py", "variants.py", "yamlread.py", "images.py", "seed.py", "golden.py")


class GoldenSession(CheckpointSession, Protocol):
    """What saving and restoring need of a lab session (kvmlab.lab.LabSession provides it; lab.py uses this module)."""

    @property
    def checkpoints(self) -> Checkpoints: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def placement(self) -> Placement: ...
    def adopt_run(self, run: runs.Run) -> None: ...
    def load_rendered(self) -> None: ...
    def ensure_base(self, image: Image) -> None: ...
    def create_networks_and_seeds(self) -> None: ...
    def owner_metadata(self) -> dict[str, str]: ...
    def mark_ready(self) -> None: ...
    def down(self) -> None: ...

    leave: frozenset[tuple[str, str | None]]
    state_key: str


def lab_key(lab_file: Path, image_digest: str, accel: str, templates: str = "", extra: str = "") -> str:
    """EXTRA: what else shaped the saved state (the role steps left out, an exercise's start commands)."""
    h = hashlib.sha256()
    h.update(lab_file.read_bytes())
    h.update(f"\0{image_digest}\0{accel}\0{extra}\0".encode())
    files = [p for src in SOURCES for p in sorted((PACKAGE / src).rglob("*.py") if (PACKAGE / src).is_dir() else [PACKAGE / src])]
    # Every template the lab renders from: its own folder, KVMLAB_TEMPLATES, kvmlab's.
    files += sorted(p for folder in search_path(templates or None) for p in folder.rglob("*") if p.is_file())
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def session_key(session: GoldenSession, image: Image) -> str:
    lab = session.lab
    left = ",".join(sorted(f"{role}:{phase or '*'}" for role, phase in session.leave))
    return lab_key(Path(lab.path), image.digest, session.accel, lab.templates, f"{left}\0{session.state_key}")


def saved_root() -> Path:
    return settings.cache_dir() / "labs"


def saved_dir(lab_name: str, key: str) -> Path:
    return saved_root() / f"{lab_name}-{key}"


@dataclass(frozen=True)
class SavedLab:
    path: Path
    run_id: str
    subnets: dict[str, str]
    volumes: dict[str, dict[str, str]]  # node -> disk serial -> volume in the kvmlab pool
    created: str
    build_s: float
    suspended: dict[str, list[str]]  # node -> inner guests suspended in its saved memory

    @classmethod
    def find(cls, lab_name: str, key: str) -> SavedLab | None:
        path = saved_dir(lab_name, key)
        try:
            raw = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(path, raw["run_id"], raw["subnets"], raw["volumes"], raw["created"], raw.get("build_s", 0.0), raw.get("suspended", {}))


def _golden_volume(lab_name: str, key: str, node: str, serial: str) -> str:
    return f"{SAVED_PREFIX}{lab_name}-{key}-{node}-{serial}.qcow2"


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


@contextlib.contextmanager
def _saving(blocking: bool = True) -> Iterator[bool]:
    """Held while a lab is being saved, so that gc never takes a half-written save for an orphan."""
    with flocked(saved_root() / ".lock", blocking) as held:
        yield held


def save(session: GoldenSession, checkpoint: str, image: Image, build_s: float) -> Path:
    """Keep CHECKPOINT of SESSION (taken right after it was built, then verified) as the lab's saved state."""
    with _saving():
        return _save(session, checkpoint, image, build_s)


def _save(session: GoldenSession, checkpoint: str, image: Image, build_s: float) -> Path:
    lab = session.lab
    key = session_key(session, image)
    book = session.checkpoints.book
    ck = book.checkpoints[checkpoint]
    dest = saved_dir(lab.name, key)
    forget_lab(lab.name)  # one saved state per lab: an older one was built from something else
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed save's: the lock is ours, so nobody writes it any more
    tmp.mkdir(parents=True)
    start = time.monotonic()
    session.log(f"saving lab {lab.name} as {dest.name}")
    pool = settings.pool_dir()
    volumes: dict[str, dict[str, str]] = {}
    for node, disks in ck.layers.items():
        _link_or_copy(session.checkpoints.memory_dir(ck) / f"{node}.save", tmp / f"{node}.save")
        volumes[node] = {}
        for serial, layer in disks.items():
            out = _golden_volume(lab.name, key, node, serial)
            if serial == ROOT_SERIAL:
                flatten_onto(pool / layer, pool / out, pool / f"base-{image.digest}.qcow2")
            else:  # data disks have no base image below them: the whole chain, in one file
                _qemu_img(["convert", "-O", "qcow2", str(pool / layer), str(pool / out)])
            with open(pool / out, "rb") as f:
                os.fsync(f.fileno())
            volumes[node][serial] = out
    fsync_dir(pool)
    stop_point("golden-volumes", session.log)
    shutil.copytree(session.run_dir, tmp / "run")
    manifest = {
        "lab": lab.name,
        "key": key,
        "run_id": session.run_id,
        "subnets": {k: str(v) for k, v in session.placement.subnets.items()},
        "volumes": volumes,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_s": round(build_s, 1),
        "suspended": ck.suspended,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    fsync_tree(tmp)
    tmp.rename(dest)  # the commit point
    fsync_dir(dest.parent)
    session.log(f"saved lab {lab.name} as {dest.name} in {time.monotonic() - start:.1f} s; the next `up` restores it")
    return dest


def forget_lab(lab_name: str) -> None:
    """Remove every saved state of the lab named LAB_NAME."""
    # Exactly NAME-KEY: lab `ch5-nfs` must not take `ch5-nfs-alice`'s saved state with it.
    for path in saved_root().glob(f"{lab_name}-*"):
        if re.fullmatch(re.escape(lab_name) + r"-[0-9a-f]{16}", path.name):
            forget(path)


def forget(path: Path) -> None:
    """Remove a saved lab: its directory and its volumes."""
    try:
        raw = json.loads((path / "manifest.json").read_text())
        for disks in raw["volumes"].values():
            for vol in disks.values():
                (settings.pool_dir() / vol).unlink(missing_ok=True)
    except (OSError, ValueError, KeyError):
        pass
    shutil.rmtree(path, ignore_errors=True)


def remove_orphans(pool_volumes: list[str], delete_volume: Callable[[str], None]) -> list[str]:
    """What a killed save left: unfinished save directories, and saved-lab volumes no saved lab names.

    Returns what was removed; does nothing while a save is running.
    """
    removed: list[str] = []
    if not saved_root().is_dir():
        return removed  # nothing was ever saved
    with _saving(blocking=False) as held:
        if not held:
            return removed
        for partial in saved_root().glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial.name)
        named = set()
        for manifest in saved_root().glob("*/manifest.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, AttributeError):
                named |= {vol for disks in json.loads(manifest.read_text())["volumes"].values() for vol in disks.values()}
        for vol in pool_volumes:
            if vol.startswith(SAVED_PREFIX) and vol not in named:
                delete_volume(vol)
                removed.append(vol)
    return removed


def flatten_onto(layer: Path, out: Path, base: Path) -> None:
    """OUT: one overlay of BASE holding everything LAYER's chain (layer -> ... -> generic -> base) has above BASE.

    Not `qemu-img convert -B BASE`: with a backing file named, convert copies only what the top
    image itself holds and takes the rest for BASE's, so the layers between (a generic node's disk,
    the node's own overlay) would be lost. A safe-mode rebase of a copy of LAYER compares the old
    chain with BASE and writes every difference into the copy."""
    shutil.copyfile(layer, out)
    _qemu_img(["rebase", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(out)])


def _qemu_img(args: list[str]) -> None:
    res = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise HarnessError(f"qemu-img {' '.join(args)} failed: {res.stderr.strip()}")


def restore(session: GoldenSession, saved: SavedLab, image: Image) -> bool:
    """Bring SESSION up from SAVED; False (nothing left behind) when its run id or subnets are in use."""
    lab, provider = session.lab, session.provider
    run = runs.register_exact(saved.run_id, lab.name, lab.path, saved.subnets, extra_taken=provider.network_addresses())
    if run is None:
        session.log(f"saved lab {saved.path.name} not used: its run {saved.run_id} or subnets are in use; building")
        return False
    session.adopt_run(run)
    start = time.monotonic()
    try:
        if session.run_dir.exists():
            shutil.rmtree(session.run_dir)
        shutil.copytree(saved.path / "run", session.run_dir)
        session.load_rendered()
        session.ensure_base(image)
        session.create_networks_and_seeds()
        book = Book(counter=1)
        # Locked: gc would otherwise take the overlays made here, before the book names them, for leftovers.
        with session.checkpoints.locked():
            for node in lab.nodes:
                book.tops[node.name] = {}
                for serial, golden in saved.volumes[node.name].items():
                    first = f"{render.volume_name(lab.name, run.run_id, node.name, serial)}.qcow2"
                    top = overlay_name(first, book.counter)
                    provider.create_volume(settings.POOL, render.render_overlay_volume(top, f"{settings.pool_dir()}/{golden}"))
                    book.tops[node.name][serial] = top
            book.save(session.checkpoints.root / "book.json")
        owner = session.owner_metadata()
        session.checkpoints.restore_all(
            {n.name: saved.path / f"{n.name}.save" for n in lab.nodes},
            book,
            owner,
            saved.suspended,
        )
        session.mark_ready()
        session.log(f"lab {lab.name} restored from {saved.path.name} (saved {saved.created}) in {time.monotonic() - start:.1f} s")
        return True
    except BaseException:
        session.log("restoring the saved lab failed: removing what it started")
        session.down()
        raise
