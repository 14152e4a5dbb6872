"""UploadProgress: a long upload says how far it has come, at most every 30 s, and never for a short one."""

from __future__ import annotations

from kvmlab import lab as lab_mod
from kvmlab.lab import UploadProgress

MIB = 2**20


def test_an_upload_reports_its_progress_every_interval_and_not_in_between(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(lab_mod.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    progress = UploadProgress("base.qcow2 to host2", 600 * MIB, lines.append)
    for second, done in ((10, 60), (29, 174), (30, 180), (45, 270), (61, 366), (100, 600)):
        clock[0] = 100.0 + second
        progress(done * MIB)
    assert lines == [
        "uploading base.qcow2 to host2: 180 of 600 MiB (6.0 MiB/s)",
        "uploading base.qcow2 to host2: 366 of 600 MiB (6.0 MiB/s)",
    ]


def test_a_finished_upload_says_nothing_more():
    lines: list[str] = []
    progress = UploadProgress("seed.iso", MIB, lines.append)
    progress.last -= 60
    progress(MIB)
    assert lines == []
