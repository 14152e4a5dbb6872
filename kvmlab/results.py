"""The results file of `kvmlab verify` and `kvmlab matrix`: what ran, where, how long it took, each check's outcome.

One JSON document, `{"format": FORMAT, "written": TIME, "runs": [RUN, ...]}`, with a RUN per lab: a verify of one
lab writes one beside its artifacts (`artifacts/<run>/results-<time>.json`), a matrix one per variant. A RUN is

    {"lab": "gluster-arbiter", "variant": "arbiter" or null, "lab_file": "labs/gluster.yaml", "run": RUN_ID,
     "started": ISO time, "machine": {"cores": 2, "accelerator": "tcg", "host": NAME},
     "bring_up": {"how": "built" | "restored" | "already up" | "failed", "seconds": 312.4 or null, "restored": false},
     "bring_up_failures": [role steps that failed], "error": "" or why its checks did not run,
     "checks": [{"name": "gluster::volume-options", "result": "pass" | "FAIL" | "ERROR", "seconds": 3.1,
                 "message": "", "values": {setting: value read back}  (only from checks that return them)}]}

kvmlab/baseline.py compares two of these files; messages and values are redacted as artifacts are.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmlab.errors import HarnessError
from kvmlab.redact import redact

FORMAT = "kvmlab-results/1"
BUILT, RESTORED, ALREADY_UP, FAILED = "built", "restored", "already up", "failed"
PASS = "pass"  # kvmlab.verify.PASS; not imported, so that reading a results file needs no role code
SECRET_WORDS = ("password", "secret", "keyring")  # a read-back value under such a key is never written


def now() -> datetime:
    return datetime.now(UTC)


def stamp(at: datetime | None = None) -> str:
    """A UTC time for file names: they sort by time."""
    return f"{(at or now()):%Y%m%dT%H%M%SZ}"


def file_name(at: datetime | None = None) -> str:
    """`results-<UTC time>.json`: the newest of a folder is the last by name."""
    return f"results-{stamp(at)}.json"


def bring_up(session: Any) -> tuple[str, float | None]:
    """How SESSION's lab (a LabSession) came up, and in how many seconds: built, restored from its saved
    verified state, or already up when this command found it (then it is not known)."""
    seconds = sum(session.phase_s.values()) if session.phase_s else None
    if session.restored:
        return RESTORED, seconds
    return (BUILT, seconds) if seconds is not None else (ALREADY_UP, None)


def machine(accel: str) -> dict[str, Any]:
    """What the times depend on: a baseline from another machine compares poorly."""
    return {"cores": os.cpu_count(), "accelerator": accel, "host": socket.gethostname()}


def of_run(session: Any, checks: Sequence[Any], started: datetime, error: str = "", came_up: bool = False) -> dict[str, Any]:
    """The RUN entry of SESSION's lab: CHECKS are kvmlab.verify.CheckResults; ERROR says why its checks did not run
    (the lab did not come up, unless CAME_UP)."""
    lab = session.lab
    how, seconds = (FAILED, None) if error and not came_up else bring_up(session)
    return {
        "lab": lab.name,
        "variant": lab.variant or None,
        "lab_file": lab.path,
        "release": getattr(lab, "release", None),
        "run": session.run_id,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(session.accel),
        "bring_up": {"how": how, "seconds": None if seconds is None else round(seconds, 1), "restored": how == RESTORED},
        "bring_up_failures": [redact(str(f)) for f in session.step_failures],
        "error": redact(error),
        "checks": [_check(r) for r in checks],
    }


def _check(result: Any) -> dict[str, Any]:
    entry = {"name": result.check.id, "result": result.outcome, "seconds": round(result.seconds, 2), "message": redact(result.message)}
    if result.values is not None:
        entry["values"] = _clean(json.loads(json.dumps(result.values, default=str)))
    return entry


def _clean(value: Any, key: str = "") -> Any:
    """VALUE with secrets masked: values under a secret-sounding key, and secrets inside any text."""
    if any(word in key.lower() for word in SECRET_WORDS):
        return "(redacted)"
    if isinstance(value, dict):
        return {k: _clean(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, key) for v in value]
    return redact(value) if isinstance(value, str) else value


def passed(run: dict[str, Any]) -> bool:
    """The lab came up, every role step of its bring-up worked and every check passed."""
    return not run.get("error") and not run.get("bring_up_failures") and all(c["result"] == PASS for c in run.get("checks", []))


def write(path: Path, runs: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": FORMAT, "written": now().isoformat(timespec="seconds"), "runs": list(runs)}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def read(path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The runs of a results file; PATH may be a folder, whose newest results file is read. Returns the file read too."""
    if path.is_dir():
        found = sorted(path.glob("results-*.json"))
        if not found:
            raise HarnessError(f"no results file (results-*.json) in {path}: name one, or the folder a verify or matrix wrote it to")
        path = found[-1]
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read results file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise HarnessError(f"{path} is not a results file of kvmlab: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or not _runs_well_formed(document.get("runs")):
        raise HarnessError(f"{path} is not a results file of kvmlab (format {FORMAT})")
    return path, document["runs"]


def _runs_well_formed(runs: Any) -> bool:
    """What a comparison reads of each run: its lab's name, and each check's name, result and seconds."""
    if not isinstance(runs, list):
        return False
    for run in runs:
        if not isinstance(run, dict) or not isinstance(run.get("lab"), str) or not isinstance(run.get("checks", []), list):
            return False
        if not all(isinstance(c, dict) and {"name", "result", "seconds"} <= c.keys() for c in run.get("checks", [])):
            return False
    return True
