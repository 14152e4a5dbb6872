#!/usr/bin/env python3
"""How fast a lab runs inside a libvirt host that is itself a TCG guest, as host1 of
labs/two-hosts.yaml is on a machine without working KVM: its nodes under the host's nested KVM
(which TCG's emulated SVM gives it), then under TCG inside TCG.

    python bench/inner_accel.py [labs/tiny.yaml]

This is what the two-hosts suites (`make test-slow`) cost on such a machine, and why they are not in
`make test`: nested KVM there is fast but failed runs (an inner guest rebooting by itself, a host dying
while restoring its guest); TCG inside TCG avoids the emulated SVM at the price measured here. The
TCG run's deadlines are stretched (KVMLAB_TIMEOUT_SCALE, default 3 here: 18 minutes to boot) so that a boot
that never ends still ends the run, with its node's last console lines. Prints one table, with the machine it ran on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from lab_up import interruptible, print_table  # noqa: E402
from spread import hosts_and_lab, measure, say  # noqa: E402

from kvmlab import providers  # noqa: E402
from kvmlab.lab import LabSession  # noqa: E402
from tests.lab.helpers import node_libvirt_uri  # noqa: E402


def main() -> int:
    source = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "labs" / "tiny.yaml")
    rows: list[tuple[str, str]] = []
    with hosts_and_lab(source, rows) as (hosts_lab, lab, _tmp):
        for accel, scale in (("kvm", "1"), ("tcg", os.environ.get("KVMLAB_TIMEOUT_SCALE", "3"))):
            os.environ.update(KVMLAB_ACCEL=accel, KVMLAB_TIMEOUT_SCALE=scale)
            title = f"{lab.name} in host1, {'nested KVM' if accel == 'kvm' else 'TCG in TCG'}"
            conn = providers.connect(node_libvirt_uri(hosts_lab, "host1"))
            try:
                measure(LabSession(lab, conn, progress=say, use_saved=False), title, rows)
            except Exception as exc:  # a figure for the other accelerator is still worth printing
                say(f"{title}: {exc}")
                rows.append((f"{title}: failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
            finally:
                conn.close()
    print_table(f"{source} inside a libvirt host that is a TCG guest: nested KVM against TCG in TCG", rows)
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
