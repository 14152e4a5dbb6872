"""Lanes (fixtures/lanes.py, scripts/run-tests.sh): pytest processes sharing one run, each group of
tests run once, by one lane, and the tests that run alone last, once the other lanes have stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from kvmlab.loader import load_lab
from kvmlab_fixtures.lanes import runs_ceph
from tests.lab.helpers import default_sigint

ROOT = Path(__file__).resolve().parents[2]

# Every test appends what ran, where and when; a group's tests sleep so that both lanes find work.
TEST_MODULE = """
import json, os, time
import pytest

def record(name, start):
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps({{"test": name, "pid": os.getpid(), "start": start, "end": time.time()}}) + "\\n")

{marks}
@pytest.mark.parametrize("n", range({count}))
def test_it(n):
    start = time.time()
    time.sleep(0.4)
    record(__name__ + str(n), start)
"""


def write_tests(folder: Path) -> None:
    for name, count, marks in (("a", 4, ""), ("b", 3, ""), ("c", 2, ""), ("d", 2, "pytestmark = pytest.mark.alone")):
        (folder / f"test_{name}.py").write_text(TEST_MODULE.format(marks=marks, count=count))


def lanes_env(folder: Path) -> dict[str, str]:
    """run-tests.sh's environment: its `kvmlab gc` on the test driver and private state, so that it cannot
    take what a lab test of this very run (in another lane) has left on purpose."""
    private = {name: str(folder / "state" / name) for name in ("KVMLAB_STATE", "KVMLAB_LEASES", "KVMLAB_CHECKPOINT_DIR", "KVMLAB_CACHE")}
    return {
        **os.environ,
        **private,
        "KVMLAB_CONSOLE_DIR": str(folder / "state" / "console"),
        "KVMLAB_URI": "test:///default",
        "PYTHON": sys.executable,
    }


def run_lanes(folder: Path, record: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**lanes_env(folder), "RECORD": str(record)}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "run-tests.sh"), "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_lanes_run_every_test_once_by_module_and_the_alone_ones_last(tmp_path):
    write_tests(tmp_path)
    record = tmp_path / "record.jsonl"
    result = run_lanes(tmp_path, record)
    assert result.returncode == 0, result.stdout + result.stderr

    ran = records(record)
    names = [r["test"] for r in ran]
    assert sorted(names) == sorted({*names}) and len(names) == 11, names  # each test once
    lane_of_module = {}
    for r in ran:
        assert lane_of_module.setdefault(r["test"][:-1], r["pid"]) == r["pid"], "a module's tests split over lanes"
    assert len(set(lane_of_module.values())) == 2, f"one lane did everything: {lane_of_module}"
    alone = [r for r in ran if r["test"].startswith("test_d")]
    others = [r for r in ran if not r["test"].startswith("test_d")]
    assert min(r["start"] for r in alone) >= max(r["end"] for r in others), "an alone test ran beside another"

    assert "[lane 1] " in result.stdout and "[lane 2] " in result.stdout
    assert "== lane 1: pytest exit code 0" in result.stdout and "== lane 2: pytest exit code 0" in result.stdout
    assert "kvmlab lanes: lane 1 ran" in result.stdout


def test_a_failure_in_either_lane_fails_the_run(tmp_path):
    write_tests(tmp_path)
    (tmp_path / "test_e.py").write_text("def test_fails():\n    assert False, 'planted'\n")
    result = run_lanes(tmp_path, tmp_path / "record.jsonl")
    assert result.returncode == 1, result.stdout
    assert "planted" in result.stdout
    assert len(records(tmp_path / "record.jsonl")) == 11  # the other tests still ran


def test_without_lanes_the_plugin_leaves_pytest_alone(tmp_path):
    write_tests(tmp_path)
    record = tmp_path / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVMLAB_LANE")} | {"RECORD": str(record)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout
    assert [r["test"] for r in records(record)][:4] == [f"test_a{n}" for n in range(4)]  # collection order
    assert "kvmlab lanes" not in result.stdout


def test_labs_with_ceph_daemons_run_alone():
    assert runs_ceph(load_lab(ROOT / "labs" / "ceph.yaml"))
    assert not runs_ceph(load_lab(ROOT / "labs" / "smoke.yaml"))


def test_ctrl_c_stops_every_lane(tmp_path):
    (tmp_path / "test_slow.py").write_text(
        textwrap.dedent(
            """
            import time, pytest
            @pytest.mark.parametrize("n", range(2))
            def test_sleeps(n):
                time.sleep(120)
            """
        )
    )
    run = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "run-tests.sh"), "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        env=lanes_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,  # under make test's own lanes this test inherits SIGINT ignored
    )
    deadline = time.monotonic() + 60
    folder = None
    while folder is None and time.monotonic() < deadline:
        pids = sorted(Path("/tmp").glob("kvmlab-lanes.*/lane-*.pid"))
        mine = [p for p in pids if _ancestor(int(p.read_text() or 0), run.pid)]
        folder = mine[0].parent if len(mine) == 2 else None
        time.sleep(0.2)
    assert folder is not None, "the lanes never started"
    time.sleep(2)  # both in their first test
    run.send_signal(2)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 2, out  # pytest's "interrupted"
    assert "stopping the lanes" in out


def _ancestor(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False
