"""File locks that die with their holder (flock): a killed process never leaves one held."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def flocked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on PATH (its folder made if need be); yields False if busy and not BLOCKING."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
