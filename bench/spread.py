#!/usr/bin/env python3
"""Benchmark a lab spread over two libvirt hosts against the same lab on one of them.

    python bench/spread.py [labs/smoke.yaml]

The hosts are host1 and host2 of labs/two-hosts.yaml, brought up on this machine first and reached
through qemu+libssh as a user's own servers would be (their guests under the nested KVM that TCG's
emulated SVM gives them). Two runs of the lab, one after the other:

1. every node on host1 (the base image uploaded to host1 first);
2. the nodes spread over host1 and host2 in turn, in file order (the base image uploaded to host2,
   which does not have it yet), networks joined by VXLAN tunnels.

So each run uploads the image to one host, and each row shows the upload apart. Prints one table,
with the machine it ran on; every figure comes from this run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

import yaml  # noqa: E402
from lab_up import interruptible, print_table, timed  # noqa: E402

from kvmlab import providers  # noqa: E402
from kvmlab.hosts_file import spread_over  # noqa: E402
from kvmlab.lab import LabSession  # noqa: E402
from kvmlab.loader import load_lab  # noqa: E402
from kvmlab.model import Lab  # noqa: E402
from kvmlab.verify import PASS, checks_for, run_checks, summary  # noqa: E402
from tests.lab.helpers import node_libvirt_uri  # noqa: E402

HOSTS = ("host1", "host2")


def say(line: str) -> None:
    sys.stderr.write(line + "\n")


def measure(session: LabSession, title: str, rows: list[tuple[str, str]]) -> None:
    """Bring SESSION's lab up, run its checks, take it down; its figures added to ROWS under TITLE."""
    try:
        total, _ = timed(session.up)
        prepare = session.phase_s.get("prepare", 0.0)
        ready = max((st.ready_s or 0.0) for st in session.status.values())
        rows.append((f"{title}: lab up, total", f"{total:.1f} s"))
        rows.append((f"{title}:   of which prepare (base image upload to one host, volumes, networks)", f"{prepare:.1f} s"))
        rows.append((f"{title}:   lab up without the prepare", f"{total - prepare:.1f} s"))
        rows.append((f"{title}:   slowest node ready (boot to SSH)", f"{ready:.1f} s"))
        start = time.monotonic()
        results = run_checks(session, checks_for(session.lab))
        rows.append((f"{title}: role checks", summary(results, time.monotonic() - start)))
        for r in results:
            if r.outcome != PASS:
                say(f"{r.outcome} {r.check.id}: {r.message}")
        if session.spread is None:
            return
        start = time.monotonic()
        session.snapshot("bench")
        rows.append((f"{title}: snapshot over both hosts", f"{time.monotonic() - start:.1f} s"))
        rows.append((f"{title}: revert over both hosts", f"{session.revert('bench'):.1f} s"))
    finally:
        start = time.monotonic()
        session.down()
        rows.append((f"{title}: down", f"{time.monotonic() - start:.1f} s"))


def in_turn(lab: Lab) -> Lab:
    """LAB with its nodes pinned to host1, host2, host1, ... in file order."""
    nodes = tuple(dataclasses.replace(node, host=HOSTS[i % len(HOSTS)]) for i, node in enumerate(lab.nodes))
    return dataclasses.replace(lab, nodes=nodes)


@contextlib.contextmanager
def hosts_and_lab(source: Path, rows: list[tuple[str, str]]) -> Iterator[tuple[LabSession, Lab, Path]]:
    """host1 and host2 (labs/two-hosts.yaml) up on this machine, their time added to ROWS; SOURCE's lab
    under a private name, so that a lab of the user's own of that file is never touched; and a
    temporary folder. Everything is gone after."""
    with LabSession(load_lab(ROOT / "labs" / "two-hosts.yaml"), providers.connect(), progress=say, use_saved=False) as hosts_lab:
        hosts_s, _ = timed(hosts_lab.up)
        rows.append(("hosts host1, host2 (labs/two-hosts.yaml) up on this machine", f"{hosts_s:.1f} s"))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{('b' + load_lab(source).name)[:12]}.yaml"
            path.write_text(source.read_text())
            yield hosts_lab, load_lab(path), Path(tmp)


def main() -> int:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "labs" / "smoke.yaml")
    rows: list[tuple[str, str]] = []
    with hosts_and_lab(source, rows) as (hosts_lab, lab, tmp):
        uris = {h: node_libvirt_uri(hosts_lab, h) for h in HOSTS}
        one = providers.connect(uris["host1"])
        try:
            measure(LabSession(lab, one, progress=say, use_saved=False), f"{lab.name} on host1 alone", rows)
        finally:
            one.close()
        hosts_file = tmp / "hosts.yaml"
        hosts_file.write_text(yaml.safe_dump({"hosts": {h: {"uri": uri} for h, uri in uris.items()}}))
        spread_lab = in_turn(lab)
        placed = spread_over(spread_lab, str(hosts_file), say)
        assert placed is not None
        where, used = placed
        conns = {h: providers.connect(uri) for h, uri in used.items()}
        try:
            session = LabSession(spread_lab, conns["host1"], progress=say, spread=where, host_providers=conns)
            on = ", ".join(f"{n.name}@{n.host}" for n in spread_lab.nodes)
            measure(session, f"{lab.name} spread ({on})", rows)
        finally:
            for conn in conns.values():
                conn.close()
    print_table(f"{source} on one host and spread over two (hosts are TCG guests, their guests nested KVM)", rows)
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
