"""A failover scenario as one line of a lab file: `kvmlab verify labs/gluster-arbiter.yaml` proves that
replica 3 arbiter 1 survives the loss of the data brick's server a hypervisor mounts, with nothing lost,
after the roles' checks, and records what it saw in the results file.

Slow (a Gluster server powered off and healed under TCG, ~6 min with the lab): `make test-slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvmlab.loader import load_lab

pytestmark = [pytest.mark.lab("gluster-arbiter"), pytest.mark.slow]
LAB_FILE = Path(__file__).resolve().parents[2] / "labs" / "gluster-arbiter.yaml"


def kvmlab(*args: str, timeout: float = 3000) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "kvmlab.cli", *args], capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(result.stderr[-3000:])
    return result


def test_the_arbiter_set_survives_its_mounted_server_powered_off(tmp_path):
    lab = load_lab(LAB_FILE)
    assert lab.failover == ("gluster-server-off",)
    junit = tmp_path / "checks.xml"
    try:
        verify = kvmlab("verify", str(LAB_FILE), "--junit", str(junit))
    finally:
        kvmlab("down", lab.name, "--force", timeout=600)
    assert verify.returncode == 0, verify.stdout[-5000:]
    cases = [(c.get("classname"), c.get("name"), len(c)) for c in ET.parse(junit).getroot().iter("testcase")]
    assert cases[-1] == ("failover", "gluster-server-off", 0), cases
    assert len(cases) > 10 and not [c for c in cases if c[2]], cases
    results = next(line for line in verify.stderr.splitlines() if line.startswith("results: "))
    (run,) = json.loads(Path(results.split(": ", 1)[1]).read_text())["runs"]
    facts = next(c for c in run["checks"] if c["name"] == "failover::gluster-server-off")["values"]
    # the powered-off server held a data brick; the two data bricks agree after the heal (the arbiter holds names only)
    assert facts["server"] in ("gluster1", "gluster2") and facts["replicas"] == 2, facts
