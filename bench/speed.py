#!/usr/bin/env python3
"""kvmlab's time to a ready lab against the floor: the same VMs started with plain `virsh create`,
kvmlab booting them (cold), and kvmlab starting them as clones of saved generic nodes.

    python bench/speed.py [labs/trio.yaml]

Both runs use the same image, the same rendered domain XML, volumes and seeds.
The floor starts the domains with `virsh create`, one after another as a shell
loop would, and polls each with `ssh NODE true`; kvmlab's figure is the whole of
`LabSession.up()` (leases, keys, render, volumes, networks, boot, readiness).
The clone path runs twice: the first run makes the generic node of the lab's
node shape when the cache has none (once per image and shape), the second
starts from the cached one.
"""

from __future__ import annotations

import subprocess
import sys
import time

from lab_up import interruptible, machine  # bench/ is on sys.path when a script of it runs

from kvmlab import settings
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect


def floor_run(lab, provider) -> float:
    session = LabSession(lab, provider, progress=lambda line: None, use_saved=False)
    try:
        session.prepare()  # not timed: the floor is only "start and wait for SSH"
        domains = [session.run_dir / "rendered" / "domains" / f"{n.name}.xml" for n in lab.nodes]
        ssh_config = session.run_dir / "ssh_config"
        start = time.monotonic()
        for xml in domains:
            subprocess.run(["virsh", "-q", "-c", settings.libvirt_uri(), "create", str(xml)], check=True, stdout=subprocess.DEVNULL)
        waiting = {n.name for n in lab.nodes}
        while waiting:
            for node in sorted(waiting):
                ok = (
                    subprocess.run(
                        ["ssh", "-F", str(ssh_config), "-o", "ConnectTimeout=2", "-o", "BatchMode=yes", node, "true"],
                        capture_output=True,
                    ).returncode
                    == 0
                )
                if ok:
                    waiting.discard(node)
            if time.monotonic() - start > 900:
                raise SystemExit("floor: nodes did not answer SSH within 900 s")
            time.sleep(0.5)
        return time.monotonic() - start
    finally:
        session.down()


def kvmlab_run(lab, provider, cold_boot: bool = False) -> tuple[float, LabSession]:
    session = LabSession(lab, provider, progress=lambda line: None, use_saved=False, cold_boot=cold_boot)
    start = time.monotonic()
    try:
        session.up()
        return time.monotonic() - start, session
    finally:
        session.down()


def main() -> int:
    lab = load_lab(sys.argv[1] if len(sys.argv) > 1 else "labs/trio.yaml")
    provider = connect()
    floor = floor_run(lab, provider)
    cold, cold_session = kvmlab_run(lab, provider, cold_boot=True)
    first, _ = kvmlab_run(lab, provider)
    ours, session = kvmlab_run(lab, provider)

    def ready(s: LabSession) -> str:
        return ", ".join(f"{n} {st.ready_s:.1f}" for n, st in s.status.items())

    print(f"\nkvmlab speed benchmark: {lab.path} ({len(lab.nodes)} nodes, accelerator {session.accel.upper()})")
    print(f"machine: {machine()}\n")
    print(f"  plain `virsh create` + ssh poll (floor)          {floor:6.1f} s")
    print(f"  kvmlab up, nodes booted (--cold-boot)            {cold:6.1f} s   (per node: {ready(cold_session)})")
    print(f"  kvmlab up, clones, first (makes generic nodes)   {first:6.1f} s")
    print(f"  kvmlab up, clones of cached generic nodes        {ours:6.1f} s   (per node: {ready(session)})")
    print(f"  ratio clones / floor                             {ours / floor:6.2f}")
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
