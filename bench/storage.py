#!/usr/bin/env python3
"""The storage lab, end to end, in one run: every figure of the speed goals.

    python bench/storage.py [labs/storage.yaml] [--no-cold-image] [--no-trio]

1. image build, cold (in a scratch cache), and the cached hash check
2. the lab up from scratch with the image cached: per-node readiness, role steps as a
   timeline, and the critical path (the chain of steps that ended last)
3. the role checks, side by side (`kvmlab verify`)
4. the whole cold path: image + up + checks
5. snapshot, then revert of the whole lab (median of 3) with its parts, storage settle included
6. keep it as a saved lab; `up` from it, with its parts
7. labs/trio.yaml (3 VMs) without a saved lab of its own, against the `virsh create` floor

Prints one table with the machine it ran on; every figure comes from this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_up import interruptible, print_table, timed
from speed import floor_run, kvmlab_run

from kvmlab import golden, images, settings
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from kvmlab.step_graph import format_timeline
from kvmlab.verify import PASS, checks_for, run_checks, summary

REPO = Path(__file__).resolve().parent.parent


def parts(session: LabSession) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in session.restore_parts.items())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lab", nargs="?", default=str(REPO / "labs/storage.yaml"))
    ap.add_argument("--no-cold-image", action="store_true", help="skip the cold image build (~70 s)")
    ap.add_argument("--no-trio", action="store_true", help="skip the 3-VM lab against the virsh floor")
    args = ap.parse_args()
    say = lambda line: sys.stderr.write(line + "\n")  # noqa: E731
    rows: list[tuple[str, str]] = []
    timeline = ""

    image_s = 0.0
    if not args.no_cold_image:
        with tempfile.TemporaryDirectory(prefix="kvmlab-bench-") as scratch:
            os.environ["KVMLAB_CACHE"] = scratch
            image_s, _ = timed(lambda: images.ensure_image(lambda _line: None))
            del os.environ["KVMLAB_CACHE"]
        rows.append(("image build, cold (scratch cache)", f"{image_s:.1f} s"))
    cached_s, _ = timed(lambda: images.ensure_image(say))
    rows.append(("image, cached (hash check)", f"{cached_s:.2f} s"))

    provider = connect()
    source = Path(args.lab)
    with tempfile.TemporaryDirectory() as tmp:
        # A private name, so that the user's own saved lab of this file is neither used nor replaced.
        path = Path(tmp) / f"bench-{load_lab(source).name}.yaml"
        path.write_text(source.read_text())
        lab = load_lab(path)
        try:
            generics_before = set(settings.generics_dir().glob("*.json"))
            with LabSession(lab, provider, progress=say, use_saved=False) as session:
                up_s, _ = timed(session.up)
                made = len(set(settings.generics_dir().glob("*.json")) - generics_before)
                ready = {n: st.ready_s or 0.0 for n, st in session.status.items()}
                slowest = max(ready, key=lambda n: ready[n])
                rows.append(("accelerator", session.accel.upper()))
                how = f"{made} generic nodes made first" if made else "generic nodes cached"
                rows.append((f"lab up, image cached ({len(lab.nodes)} VMs; {how})", f"{up_s:.1f} s"))
                rows.append(("  nodes ready (SSH), first / slowest", f"{min(ready.values()):.1f} / {ready[slowest]:.1f} s ({slowest})"))
                for phase, end in session.phase_end_s.items():
                    rows.append((f"  last step of phase '{phase}' ended", f"{end:.1f} s"))
                assert session.step_graph is not None
                chain = session.step_graph.critical_path()
                rows.append(("  critical path", " -> ".join(f"{s.node} {s.role} {s.phase} (to {s.end_s:.0f} s)" for s in chain)))
                timeline = format_timeline(session.step_graph.timeline)

                checks_s, results = timed(lambda: run_checks(session, checks_for(lab), log=say))
                rows.append(("role checks, side by side", summary(results, checks_s)))
                for r in results:
                    if r.outcome != PASS:
                        print(f"{r.outcome} {r.check.id}: {r.message}", file=sys.stderr)
                cold_path = image_s + up_s + checks_s
                rows.append(("whole cold path (image + up + checks)", f"{cold_path:.1f} s" + (" (image not built)" if not image_s else "")))

                snap_s = session.snapshot("bench")
                rows.append(("snapshot (pause all, save memory, freeze disks, resume)", f"{snap_s:.1f} s"))
                size = sum(p.stat().st_size for p in session.checkpoints.root.glob("bench@*/*.save"))
                rows.append(("checkpoint memory files", f"{size / 2**30:.2f} GiB"))
                reverts = []
                for i in range(3):
                    for node in session.nodes:  # something to throw away
                        node.run("dd if=/dev/urandom of=/root/scratch bs=1M count=16 2>/dev/null && sync")
                    reverts.append(session.revert("bench"))
                    rows.append((f"  revert {i + 1} parts (s)", parts(session)))
                rows.append(("revert the whole lab, median of 3 (storage settled)", f"{statistics.median(reverts):.1f} s"))
                assert session.image is not None
                save_s, _ = timed(lambda: golden.save(session, "bench", session.image, up_s))
                rows.append(("keep it as a saved lab", f"{save_s:.1f} s"))
            with LabSession(lab, provider, progress=say) as again:
                saved_s, _ = timed(again.up)
                if not again.restored:
                    raise SystemExit("the saved lab was not restored")
                rows.append(("`up` of the saved lab (storage settled)", f"{saved_s:.1f} s"))
                rows.append(("  its parts (s)", parts(again)))
        finally:
            golden.forget_lab(lab.name)

    if not args.no_trio:
        trio = load_lab(REPO / "labs/trio.yaml")
        floor = floor_run(trio, provider)
        kvmlab_run(trio, provider)  # makes its generic nodes if this host has none of its shape
        ours, session = kvmlab_run(trio, provider)
        rows.append(("trio (3 VMs): plain `virsh create` + SSH poll (the floor)", f"{floor:.1f} s"))
        rows.append(("trio: `kvmlab up`, no saved lab (clones of generic nodes)", f"{ours:.1f} s ({ours / floor:.2f} of the floor)"))
    provider.close()
    print_table(f"storage lab ({source})", rows)
    print(f"\nrole steps (seconds since the first boot began; # ran, x failed):\n{timeline}")
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
