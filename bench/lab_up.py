#!/usr/bin/env python3
"""Benchmark a lab: image build (cold and cached), boot to SSH, roles, verification, memory.

    python bench/lab_up.py labs/smoke.yaml [--cold-image] [--no-verify]

Prints one table, with the machine it ran on. Figures come from this run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kvmlab import images
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from kvmlab.step_graph import format_timeline
from kvmlab.verify import PASS, checks_for, run_checks, summary


def interruptible() -> None:
    """Ctrl-C tears the bench's labs down, also when a script started the bench in the background:
    such a process inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "?")
    mem = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    distro = next(
        (ln.split("=", 1)[1].strip('"') for ln in Path("/etc/os-release").read_text().splitlines() if ln.startswith("PRETTY_NAME")), "?"
    )
    return f"{cpu}, {os.cpu_count()} cores, {mem // 1024 // 1024} GiB, {distro}, kernel {platform.release()}"


def qemu_peak_rss_mib(domain: str) -> int | None:
    """Peak resident memory (VmHWM) of the QEMU process running DOMAIN."""
    out = subprocess.run(["pgrep", "-f", f"guest={domain},"], capture_output=True, text=True).stdout.split()
    for pid in out:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return None


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """The benchmark's result: a title, the machine it ran on, one aligned row per figure."""
    print(f"\nkvmlab benchmark: {title}\nmachine: {machine()}\n")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")


def timed(fn) -> tuple[float, object]:
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lab")
    ap.add_argument("--cold-image", action="store_true", help="also time a full image build in a scratch cache")
    ap.add_argument("--no-verify", action="store_true", help="skip the lab's test suite")
    args = ap.parse_args()
    quiet = lambda line: None  # noqa: E731
    rows: list[tuple[str, str]] = []

    if args.cold_image:
        with tempfile.TemporaryDirectory(prefix="kvmlab-bench-") as scratch:
            os.environ["KVMLAB_CACHE"] = scratch
            seconds, _ = timed(lambda: images.ensure_image(quiet))
            del os.environ["KVMLAB_CACHE"]
        rows.append(("image build, cold (mmdebstrap → qcow2)", f"{seconds:.1f} s"))
    was_cached = images.cached_image().exists()
    seconds, _ = timed(lambda: images.ensure_image(print))
    rows.append(("image, cached (hash check)" if was_cached else "image build, cold (first run)", f"{seconds:.2f} s"))

    lab = load_lab(args.lab)
    session = LabSession(lab, connect(), progress=lambda line: sys.stderr.write(line + "\n"), use_saved=False)
    total, _ = timed(session.up)
    timeline = ""
    try:
        ready = {n: st.ready_s or 0.0 for n, st in session.status.items()}
        roles = {n: st.roles_s or 0.0 for n, st in session.status.items()}
        rows.append(("accelerator", session.accel.upper()))
        rows.append(("prepare (keys, render, volumes, networks)", f"{session.phase_s['prepare']:.1f} s"))
        rows.append(("boot to SSH + first boot, slowest node", f"{max(ready.values()):.1f} s"))
        rows.append(("boot to SSH + first boot, per node", ", ".join(f"{n} {s:.1f}" for n, s in ready.items())))
        rows.append(("roles, per node (after its boot, with waits for other nodes)", ", ".join(f"{n} {s:.1f}" for n, s in roles.items())))
        for phase, end in session.phase_end_s.items():
            rows.append((f"last step of phase '{phase}' done (since first boot)", f"{end:.1f} s"))
        if session.step_graph is not None:
            path = " -> ".join(f"{s.node} {s.role} {s.phase} ({s.end_s:.0f} s)" for s in session.step_graph.critical_path())
            rows.append(("critical path (steps, each ending at)", path))
            timeline = format_timeline(session.step_graph.timeline)
        rows.append(("lab up, total (`LabSession.up`)", f"{total:.1f} s"))
        if not args.no_verify:
            start = time.monotonic()
            results = run_checks(session, checks_for(lab))
            rows.append(("role checks (`kvmlab verify`)", summary(results, time.monotonic() - start)))
            for r in results:
                if r.outcome != PASS:
                    print(f"{r.outcome} {r.check.id}: {r.message}", file=sys.stderr)
        peaks = {n.name: qemu_peak_rss_mib(n.domain) for n in session.nodes}
        rows.append(
            ("peak host RSS per VM (VmHWM)", ", ".join(f"{n} {p} MiB / {lab.node(n).memory_mib} MiB guest" for n, p in peaks.items()))
        )
    finally:
        session.down()
    print_table(args.lab, rows)
    if timeline:
        print(f"\nrole steps (seconds since the first boot began; # ran, x failed):\n{timeline}")
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
