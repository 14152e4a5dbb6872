#!/usr/bin/env python3
"""Benchmark checkpoints: rebuilding a lab against reverting it, and restoring a saved lab.

    python bench/checkpoint.py labs/storage.yaml

Builds the lab from scratch (image cached), checkpoints it, changes every node, reverts,
then keeps the lab as a saved lab and brings it up again from that state. Prints one table
with the machine it ran on; every figure comes from this run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_up import interruptible, print_table, timed

from kvmlab import golden
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lab")
    args = ap.parse_args()
    source = Path(args.lab)
    say = lambda line: sys.stderr.write(line + "\n")  # noqa: E731
    provider = connect()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        # A private name, so that the user's own saved lab of this file is neither used nor replaced.
        path = Path(tmp) / f"bench-{load_lab(source).name}.yaml"
        path.write_text(source.read_text())
        lab = load_lab(path)
        try:
            with LabSession(lab, provider, progress=say, use_saved=False) as session:
                build_s, _ = timed(session.up)
                rows.append((f"build {lab.name} from scratch ({len(lab.nodes)} VMs, image cached)", f"{build_s:.1f} s"))
                snap_s = session.snapshot("bench")
                rows.append(("snapshot (pause all, save memory, freeze disks, resume)", f"{snap_s:.1f} s"))
                size = sum(p.stat().st_size for p in session.checkpoints.root.glob("bench@*/*.save"))
                rows.append(("checkpoint memory files", f"{size / 2**30:.2f} GiB"))
                for node in session.nodes:
                    node.run("dd if=/dev/urandom of=/root/scratch bs=1M count=16 2>/dev/null && sync")
                revert_s = session.revert("bench")
                rows.append(("revert the whole lab", f"{revert_s:.1f} s"))
                rows.append(("revert / rebuild", f"{revert_s / build_s:.3f}"))
                assert session.image is not None
                save_s, _ = timed(lambda: golden.save(session, "bench", session.image, build_s))
                rows.append(("keep it as a saved lab (flatten disks, link memory)", f"{save_s:.1f} s"))
            with LabSession(lab, provider, progress=say) as again:
                up_s, _ = timed(again.up)
                if not again.restored:
                    raise SystemExit("the saved lab was not restored")
                checked_s, _ = timed(lambda: [n.run("true") for n in again.nodes])
                rows.append(("`up` of the saved lab (restore + clocks)", f"{up_s:.1f} s"))
                rows.append(("first command on every node after it", f"{checked_s:.1f} s"))
        finally:
            golden.forget_lab(lab.name)
            provider.close()
    print_table(f"checkpoints ({source})", rows)
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
