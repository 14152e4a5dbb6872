"""A trainer's and two trainees' session, through the `kvmlab exercise` command as they would type it.

Two trainees work on the same exercise at once, each in a lab of their own; `status` shows both;
one trainee's work and mess do not show in the other's grade; reset, stage reset, hints, finish
(results kept, lab gone) and a second start that restores the saved start state.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

EXERCISE = "ch5-default-pool"  # on the smallest lab of the book's exercises (nfs1, hv1)
ANN, BOB = "ann", "bob"  # fixed: their saved start states are reused by the next run, not piled up


def kvmlab(*args: str, expect: int = 0) -> str:
    """Run the kvmlab command; its stdout. Its exit status must be EXPECT."""
    result = subprocess.run([sys.executable, "-m", "kvmlab.cli", *args], capture_output=True, text=True, timeout=1500)
    sys.stderr.write(result.stderr[-3000:])
    assert result.returncode == expect, (
        f"kvmlab {' '.join(args)} exited {result.returncode}, not {expect}:\n{result.stdout}\n{result.stderr[-2000:]}"
    )
    return result.stdout


def ssh(trainee: str, node: str, command: str) -> None:
    """What a trainee types into their own lab: `kvmlab ssh EXERCISE-NAME NODE COMMAND`."""
    result = subprocess.run(
        [sys.executable, "-m", "kvmlab.cli", "ssh", f"{EXERCISE}-{trainee}", node, command], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{node}: {command}: {result.stdout}{result.stderr}"


def web_page_links_the_task(lab: str) -> None:
    """`kvmlab web` on a trainee's lab, as typed: its page lists the lab's nodes and links the task text."""
    proc = subprocess.Popen([sys.executable, "-m", "kvmlab.cli", "web", lab], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "?key=" in line, f"kvmlab web printed {line!r}; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url.replace("/?", "/api/lab?"), timeout=60) as response:
            page = json.load(response)
        assert page["task"] and {n["name"] for n in page["nodes"]} == {"nfs1", "hv1"}, page
        with urllib.request.urlopen(url.replace("/?", "/task?"), timeout=60) as response:
            assert "The default storage pool" in response.read().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()


def _down(who: str) -> None:
    subprocess.run([sys.executable, "-m", "kvmlab.cli", "down", f"{EXERCISE}-{who}", "--force"], capture_output=True, timeout=600)


@pytest.fixture
def trainees():
    for who in (ANN, BOB):  # a copy an earlier, killed run left up
        _down(who)
    yield (ANN, BOB)
    for who in (ANN, BOB):  # whatever the test left up goes
        _down(who)


# Its labs are its own (the trainees'): the marker keeps it out of `-m "not lab"` and in a group of its own.
@pytest.mark.lab("exercise-trainees")
def test_two_trainees_side_by_side(trainees, tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_ARTIFACTS", str(tmp_path / "artifacts"))
    ann, bob = trainees
    with ThreadPoolExecutor(2) as pool:  # both start at once, as a class does
        outputs = pool.map(lambda who: kvmlab("exercise", "start", EXERCISE, "--as", who), (ann, bob))
        starts = dict(zip((ann, bob), outputs, strict=True))
    for who, out in starts.items():
        assert f"lab {EXERCISE}-{who}" in out and "# The default storage pool" in out

    status = kvmlab("exercise", "status")
    rows = {line.split()[1]: line for line in status.splitlines() if line.startswith(EXERCISE)}
    assert {ann, bob} <= set(rows) and all("running" in rows[w] for w in (ann, bob)), status

    first = kvmlab("exercise", "check", EXERCISE, "--as", ann, expect=1)
    assert "score: 0%" in first and "hint: " in first and "[FAIL] 1." in first, first

    kvmlab("exercise", "solve", EXERCISE, "--as", ann)
    # ann's mess outside what was asked: another pool, a stray domain, nfs1's server stopped
    ssh(ann, "hv1", "mkdir -p /srv/junk && virsh pool-define-as junk dir --target /srv/junk && virsh pool-start junk")
    ssh(
        ann,
        "hv1",
        "printf \"<domain type='qemu'><name>stray</name><memory unit='MiB'>32</memory><os><type>hvm</type></os></domain>\" > /tmp/s.xml && virsh define /tmp/s.xml",
    )
    ssh(ann, "nfs1", "systemctl stop nfs-server")
    solved = kvmlab("exercise", "check", EXERCISE, "--as", ann)
    assert "score: 100%" in solved, solved
    others = kvmlab("exercise", "check", EXERCISE, "--as", bob, expect=1)
    assert "score: 0%" in others, f"{bob}'s lab shows {ann}'s work:\n{others}"

    hint = kvmlab("exercise", "hint", EXERCISE, "1", "--as", bob)
    assert hint.startswith("hint 1 of 2 for 'hv1 has a dir pool 'default'"), hint

    web_page_links_the_task(f"{EXERCISE}-{bob}")

    kvmlab("exercise", "reset", EXERCISE, "--as", ann)
    assert "score: 0%" in kvmlab("exercise", "check", EXERCISE, "--as", ann, expect=1)
    kvmlab("exercise", "reset", EXERCISE, "--as", bob, "--stage", "2")
    staged = kvmlab("exercise", "check", EXERCISE, "--as", bob, expect=1)
    assert "[pass] 1." in staged and "[FAIL] 2." in staged, staged

    done = kvmlab("exercise", "finish", EXERCISE, "--as", ann, expect=1)
    results = Path(done.rsplit("results: ", 1)[1].strip())
    data = json.loads((results / "results.json").read_text())
    assert (data["exercise"], data["trainee"], data["score"]) == (EXERCISE, ann, 0)
    assert [c["score"] for c in data["checks"]] == [0, 100, 0], data["checks"]
    assert (results / "junit.xml").read_text().count("<testcase") == 3
    status = kvmlab("exercise", "status")
    assert any(line.startswith(EXERCISE) and ann in line and "finished" in line for line in status.splitlines()), status

    again = kvmlab("exercise", "start", EXERCISE, "--as", ann)
    assert "restored from its saved start state" in again, again
    assert "score: 0%" in kvmlab("exercise", "check", EXERCISE, "--as", ann, expect=1)
    for who in (ann, bob):
        kvmlab("exercise", "finish", EXERCISE, "--as", who, expect=1)
