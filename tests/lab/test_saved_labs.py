"""A lab saved after it was built and verified comes back from that state on the next `up`.

Uses a private copy of labs/tiny.yaml under another name, so that a user's own saved
tiny lab is never replaced or used here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kvmlab import golden, settings
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect

pytestmark = pytest.mark.lab("tiny")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def probe_lab(tmp_path):
    path = tmp_path / "restore-probe.yaml"
    shutil.copyfile(ROOT / "labs" / "tiny.yaml", path)
    lab = load_lab(path)
    provider = connect()
    yield lab, provider
    golden.forget_lab(lab.name)
    provider.close()


def test_saved_lab_is_restored_with_its_state_clock_and_services(probe_lab):
    lab, provider = probe_lab
    with LabSession(lab, provider, progress=lambda line: None) as built:
        built.up()
        assert not built.restored, "no saved state existed, the lab must be built"
        built.node("n1").run("echo saved > /root/state && sync")
        built.snapshot("built")
        built.node("n1").run("echo after > /root/state && sync")  # not part of the saved state
        assert built.image is not None
        saved = golden.save(built, "built", built.image, sum(built.phase_s.values()))
        run_id = built.run_id
        # The saved disk holds exactly what the checkpoint's whole chain held (generic node's disk included):
        # a restored node reads it the first time a block is not in its page cache, and all of it at a cold boot.
        pool = settings.pool_dir()
        volume = json.loads((saved / "manifest.json").read_text())["volumes"]["n1"]["root"]
        layer = built.checkpoints.book.checkpoints["built"].layers["n1"]["root"]
        same = subprocess.run(["qemu-img", "compare", str(pool / volume), str(pool / layer)], capture_output=True, text=True)
        assert same.returncode == 0, f"saved disk {volume} differs from checkpoint layer {layer}: {same.stdout}{same.stderr}"

    time.sleep(3)  # the restored clock has to catch up with this
    with LabSession(lab, provider, progress=lambda line: None) as restored:
        restored.up()
        assert restored.restored
        assert restored.run_id == run_id, "a saved lab keeps its run id, names and subnets"
        n1 = restored.node("n1")
        assert n1.run("cat /root/state").output.strip() == "saved"
        assert n1.run("hostname").output.strip() == "n1"
        assert "/srv/share" in n1.run("exportfs -v").output, "the NFS export of the saved lab is served again"
        skew = abs(float(n1.run("date +%s.%N").output) - time.time())
        assert skew < 3, f"clock is {skew:.1f} s off after the restore"
        # And it still checkpoints like a freshly built lab.
        assert restored.snapshot("again") > 0
        restored.revert("again")
        assert n1.run("cat /root/state").output.strip() == "saved"
