"""The book's labs on Debian 13, trixie (Ceph 18, Gluster 11, libvirt 11, QEMU 10), checked as a user checks
them: `kvmlab verify labs/LAB.yaml --release trixie`. Every check of every role passes, read back from the
running services; the nodes run trixie; the lab, named LAB-trixie, is torn down after.

Slow (trixie's own image, ~2 min cold, and four labs built from it, ~20 min under TCG): `make test-slow`.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvmlab.loader import load_lab

pytestmark = [pytest.mark.lab("releases"), pytest.mark.slow]
LABS = Path(__file__).resolve().parents[2] / "labs"
RELEASE = "trixie"


def kvmlab(*args: str, timeout: float = 3000) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "kvmlab.cli", *args], capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(result.stderr[-3000:])
    return result


@pytest.mark.parametrize("name", ["smoke", "iscsi", "gluster", "ceph"])
def test_the_lab_passes_every_check_on_trixie(name, tmp_path):
    lab = load_lab(LABS / f"{name}.yaml")
    assert lab.release == "bookworm", "the lab file's own release: --release makes the trixie lab"
    running = f"{lab.name}-{RELEASE}"
    junit = tmp_path / "checks.xml"
    try:
        verify = kvmlab("verify", str(LABS / f"{name}.yaml"), "--release", RELEASE, "--junit", str(junit))
        codenames = {
            node.name: kvmlab("ssh", running, node.name, ". /etc/os-release; echo $VERSION_CODENAME", timeout=120).stdout.strip()
            for node in lab.nodes
        }
    finally:
        down = kvmlab("down", running, "--force", timeout=600)
    assert verify.returncode == 0, verify.stdout[-5000:]
    assert codenames == {node.name: RELEASE for node in lab.nodes}
    suite = ET.parse(junit).getroot()
    failed = [c.get("name") for c in suite.iter("testcase") if len(c)]
    assert int(suite.get("tests")) >= 5 and not failed, f"{suite.get('tests')} checks, failed: {failed}"
    assert down.returncode == 0 and f"lab {running}: removed" in down.stdout + down.stderr, down.stdout + down.stderr
