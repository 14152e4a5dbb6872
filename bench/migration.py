#!/usr/bin/env python3
"""Benchmark live migration between the two hypervisors of labs/migration.yaml.

    python bench/migration.py [--reuse] [--runs 3] [--inner-virt kvm|qemu]

Brings the lab up (or, with --reuse, attaches to one kept by `kvmlab up` or --lab-keep),
boots an inner guest on hv1, live-migrates it back and forth over qemu+ssh, and prints
per migration: wall-clock total, libvirt's own elapsed time and downtime (domjobinfo on
the destination), and the downtime seen from outside (longest gap in nfs1's pings,
`ping -D -i 0.2`). Figures come from this run only; the machine is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.lab.migration_helpers

from bench.lab_up import interruptible, print_table
from kvmlab import runs
from kvmlab.inner_guest import downtime
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from kvmlab.wait import wait_until
from tests.lab import migration_helpers as mh

LAB = "labs/migration.yaml"
GUEST = "bench1"
INTERVAL = 0.2


def session_for(reuse: bool, progress) -> tuple[LabSession, float | None]:
    lab = load_lab(LAB)
    provider = connect()
    if reuse:
        mine = [r for r in runs.all_runs().values() if r.lab == lab.name and r.user == runs.me() and r.owner_alive()]
        if not mine:
            sys.exit(f"no running lab '{lab.name}' to reuse: run `kvmlab up {LAB}` first, or drop --reuse")
        return LabSession.attach(lab, provider, mine[0], progress=progress), None
    session = LabSession(lab, provider, progress=progress, use_saved=False)
    start = time.monotonic()
    session.up()
    return session, time.monotonic() - start


def ms(field: str) -> float:
    """'4480         ms' -> seconds."""
    return float(field.split()[0]) / 1000.0


def migrate_once(session: LabSession, g, src: str) -> dict[str, float]:
    dst = mh.other(src)
    nfs1 = session.node("nfs1")
    log = f"/tmp/ping-{GUEST}.log"
    nfs1.run(f"rm -f {log}; (setsid timeout 600 ping -D -n -i {INTERVAL} {g.address} > {log} 2>&1 & echo $! > {log}.pid)")
    wait_until(lambda: int(nfs1.run(f"grep -c 'bytes from' {log}").stdout.strip() or 0) >= 5, 30, "pings before migrating")
    start = time.monotonic()
    mh.check(session, src, f"virsh migrate --live --persistent --verbose {GUEST} {mh.uri(dst)}", timeout=900)
    total = time.monotonic() - start
    time.sleep(2)
    nfs1.run(f"kill -INT $(cat {log}.pid)")
    job = mh.info(mh.check(session, dst, f"virsh domjobinfo {GUEST} --completed"))
    return {
        "wall": total,
        "libvirt_elapsed": ms(job["Time elapsed"]),
        "libvirt_downtime": ms(job["Total downtime"]),
        "ping_downtime": downtime(nfs1.run(f"cat {log}").stdout.splitlines(), INTERVAL),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reuse", action="store_true", help="attach to a running migration lab instead of bringing one up")
    ap.add_argument("--runs", type=int, default=3, help="live migrations, alternating hv1 -> hv2 -> hv1 ...")
    ap.add_argument("--inner-virt", choices=("kvm", "qemu"), help="force the inner guests' domain type (default: kvm if nested KVM works)")
    args = ap.parse_args()
    if args.inner_virt:
        os.environ["KVMLAB_INNER_VIRT"] = args.inner_virt
    session, up_s = session_for(args.reuse, lambda line: sys.stderr.write(line + "\n"))
    rows: list[tuple[str, str]] = []
    try:
        if up_s is not None:
            rows.append(("lab up (3 nodes, roles included)", f"{up_s:.1f} s"))
        mh.remove(session, GUEST)
        g = mh.guest(session, GUEST, 7)
        rows.append(("inner guest domain type", f"{g.domain_type} ({'nested KVM' if g.domain_type == 'kvm' else 'TCG inside TCG'})"))
        mh.create_disk(session, g)
        mh.define(session, "hv1", g)
        start = time.monotonic()
        mh.check(session, "hv1", f"virsh -q start {GUEST}")
        mh.wait_booted(session, g)
        rows.append(("inner guest boot (start -> its HTTP state answers)", f"{time.monotonic() - start:.1f} s"))
        results = []
        src = "hv1"
        for i in range(args.runs):
            r = migrate_once(session, g, src)
            results.append(r)
            rows.append(
                (
                    f"migration {i + 1}: {src} -> {mh.other(src)}",
                    f"total {r['wall']:.1f} s wall / {r['libvirt_elapsed']:.1f} s libvirt; "
                    f"downtime {r['ping_downtime']:.2f} s by ping / {r['libvirt_downtime']:.2f} s libvirt",
                )
            )
            src = mh.other(src)
        for key, label in (("wall", "total, wall"), ("ping_downtime", "downtime, ping"), ("libvirt_downtime", "downtime, libvirt")):
            values = [r[key] for r in results]
            rows.append((f"median {label}", f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"))
    finally:
        mh.remove(session, GUEST)
        if not args.reuse:
            session.down()
    print_table(f"live migration ({LAB}; lab nodes under {session.accel.upper()})", rows)
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
