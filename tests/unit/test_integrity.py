"""The integrity tool's record format and verify, its writer on a local file, and the host side's report parsing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmlab.errors import HarnessError, LabTimeout
from kvmlab.guest import integrity_tool as tool
from kvmlab.integrity import IntegrityError, Report, Workload, WriterState, compare_replicas, parse_report, tool_source
from kvmlab.remote import Remote, Result

RUN = bytes.fromhex("0011223344556677")
SIZE = 4096


def _data(count: int, run: bytes = RUN) -> bytearray:
    return bytearray(b"".join(tool.make_record(run, i, SIZE) for i in range(count)))


def test_intact_records_verify_and_records_beyond_the_last_ack_may_be_there_or_not():
    data = _data(12)
    report = tool.verify(bytes(data), RUN, acked=9, record_size=SIZE)
    assert report["intact"] and report["ok"] == 10
    assert (report["unacked_present"], report["unacked_missing"]) == (2, 0)
    # The file ends at the last acknowledged record: nothing more to check, still intact.
    assert tool.verify(bytes(data[: 10 * SIZE]), RUN, acked=9, record_size=SIZE)["intact"]


def test_acknowledged_record_of_zeros_is_lost():
    data = _data(10)
    data[3 * SIZE : 4 * SIZE] = bytes(SIZE)
    report = tool.verify(bytes(data), RUN, acked=9, record_size=SIZE)
    assert not report["intact"]
    assert report["counts"] == {"missing": 1, "torn": 0, "corrupt": 0}
    assert report["missing"][0]["index"] == 3 and report["missing"][0]["acked"]


def test_file_shorter_than_the_acknowledged_records_loses_the_rest():
    data = _data(10)
    report = tool.verify(bytes(data[: 6 * SIZE + 100]), RUN, acked=9, record_size=SIZE)
    assert report["counts"]["missing"] == 4
    assert "only 100 of 4096 bytes" in report["missing"][0]["detail"]


def test_half_written_record_is_torn_with_its_sector_layout():
    data = _data(10)
    data[5 * SIZE + 2048 : 6 * SIZE] = bytes(2048)
    report = tool.verify(bytes(data), RUN, acked=9, record_size=SIZE)
    assert report["counts"] == {"missing": 0, "torn": 1, "corrupt": 0}
    assert "GGGG0000" in report["torn"][0]["detail"]


def test_flipped_byte_is_corrupt_and_the_report_shows_the_damaged_sector():
    data = _data(10)
    data[2 * SIZE + 3 * 512 + 100] ^= 0xFF
    report = tool.verify(bytes(data), RUN, acked=9, record_size=SIZE)
    assert report["counts"]["corrupt"] == 1
    assert "GGGXGGGG" in report["corrupt"][0]["detail"]


def test_record_of_another_place_or_run_is_corrupt_not_ok():
    data = _data(10)
    data[4 * SIZE : 5 * SIZE] = tool.make_record(RUN, 7, SIZE)  # a misdirected write
    data[6 * SIZE : 7 * SIZE] = tool.make_record(bytes(8), 6, SIZE)  # an old run's record
    report = tool.verify(bytes(data), RUN, acked=9, record_size=SIZE)
    assert [r["index"] for r in report["corrupt"]] == [4, 6]
    assert "holds record 7" in report["corrupt"][0]["detail"]


def test_damaged_record_after_the_last_ack_is_reported_even_though_unacknowledged():
    data = _data(12)
    data[11 * SIZE + 10] ^= 1
    report = tool.verify(bytes(data), RUN, acked=9, record_size=SIZE)
    assert not report["intact"]
    assert report["corrupt"][0] == {"index": 11, "acked": False, "detail": report["corrupt"][0]["detail"]}


def test_report_lists_only_the_first_bad_records_but_counts_them_all():
    data = _data(40)
    for i in range(30):
        data[i * SIZE : (i + 1) * SIZE] = bytes(SIZE)
    report = tool.verify(bytes(data), RUN, acked=39, record_size=SIZE)
    assert report["counts"]["missing"] == 30 and len(report["missing"]) == tool.SHOW


def test_writer_and_verify_on_a_local_file(tmp_path):
    path, state = tmp_path / "data", tmp_path / "state"
    writer = subprocess.Popen([sys.executable, tool.__file__, "write", str(path), "--state", str(state), "--records", "30"])
    assert writer.wait(timeout=60) == 0
    ack = json.loads((state / "ack.json").read_text())
    assert (ack["acked"], ack["done"], ack["reason"], ack["errors"]) == (29, True, "full", 0)
    out = subprocess.run(
        [sys.executable, tool.__file__, "verify", str(path), "--state", str(state)], capture_output=True, text=True, check=True
    )
    report = parse_report(out.stdout, "local:data")
    assert report.intact and report.ok == 30 and report.writer["reason"] == "full"
    with open(path, "r+b") as f:
        f.seek(17 * SIZE + 700)
        f.write(b"\x00\x01")
    out = subprocess.run(
        [sys.executable, tool.__file__, "verify", str(path), "--state", str(state)], capture_output=True, text=True, check=True
    )
    report = parse_report(out.stdout, "local:data")
    assert not report.intact
    with pytest.raises(IntegrityError, match=r"local:data: 29/30 acknowledged records intact.*\n  record 17 \(acknowledged\) corrupt"):
        report.assert_intact()


def test_parse_report_rejects_what_is_not_a_report():
    with pytest.raises(HarnessError, match="hv1:/x: integrity tool gave no report"):
        parse_report("Traceback (most recent call last):\n  boom", "hv1:/x")


def test_report_needs_every_acknowledged_record_counted_ok():
    report = Report(
        "n:/p", acked=9, ok=9, scanned=10, counts={"missing": 0, "torn": 0, "corrupt": 0}, bad=(), unacked_present=0, unacked_missing=0
    )
    assert not report.intact and report.problems() == ["9 of 10 acknowledged records intact"]


def test_writer_state_parses_the_ack_file():
    text = json.dumps({"acked": 41, "errors": 2, "last_error": "record 40: [Errno 5]", "max_gap_s": 6.2, "done": False, "reason": ""})
    assert WriterState.parse(text) == WriterState(41, 2, "record 40: [Errno 5]", 6.2, False, "")


def test_replicas_that_differ_are_named_with_their_checksums():
    compare_replicas({"g1:/b/f": "aa" * 32, "g2:/b/f": "aa" * 32})
    with pytest.raises(IntegrityError, match=r"replicas differ:\n  aaaa.*g1:/b/f, g2:/b/f\n  bbbb.*g3:/b/f"):
        compare_replicas({"g1:/b/f": "aa" * 32, "g2:/b/f": "aa" * 32, "g3:/b/f": "bb" * 32})


def test_tool_source_is_the_standard_library_script_shipped_with_the_package():
    source = tool_source()
    assert source.startswith("#!/usr/bin/python3\n")
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", *sys.stdlib_module_names}


class _AckRemote(Remote):
    """A Remote whose node holds one finished writer's ack.json, without SSH."""

    def __init__(self, ack: dict) -> None:
        self.ack = ack
        self.target = type("T", (), {"node": "hv1"})()

    def run(self, command: str, timeout: float = 600.0, stdin: str | None = None) -> Result:
        return Result(0, json.dumps(self.ack), "") if "ack.json" in command else Result(0, "", "")


def test_a_writer_that_finished_after_enough_records_satisfies_the_wait_and_one_that_stopped_short_ends_it():
    ack = {"acked": 29, "errors": 0, "last_error": "", "max_gap_s": 0.1, "done": True, "reason": "full"}
    work = Workload(_AckRemote(ack), "/x/data", name="t")
    assert work.wait_acked(30, timeout=5).acked == 29
    with pytest.raises(LabTimeout, match=r"gave up .*the writer exited \(full\) at record 29"):
        work.wait_acked(31, timeout=600)
