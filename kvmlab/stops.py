"""Named moments at which a test can freeze kvmlab, to kill it exactly there instead of racing a timer.

`KVMLAB_STOP_AT=checkpoint-saved` (names separated by commas) makes the process log one line and
stop itself (SIGSTOP) when it reaches that moment; the test then kills it (SIGKILL) or lets it go on
(SIGCONT). Unset, a stop point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

# The moments, in the order an operation reaches them (see lab.py, checkpoints.py and golden.py).
POINTS = (
    "networks-created",  # a run's networks exist on its host, nothing else of it yet (lab.py)
    "checkpoint-saved",  # every node's memory is written, nothing committed
    "checkpoint-overlays",  # fresh overlays exist, the book does not name them yet
    "checkpoint-committed",  # the book names the checkpoint and new overlays; nodes not restored yet
    "golden-volumes",  # a lab save's volumes are written, its manifest is not
)


def stop_point(name: str, log: Callable[[str], None]) -> None:
    assert name in POINTS, name
    if name in os.environ.get("KVMLAB_STOP_AT", "").split(","):
        log(f"stop point {name}: pid {os.getpid()} stops here")
        os.kill(os.getpid(), signal.SIGSTOP)
