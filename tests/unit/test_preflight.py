"""Preflight refuses what cannot work, before anything starts, with numbers and the fix."""

from __future__ import annotations

import pytest

from kvmlab import preflight
from kvmlab.errors import PreflightError
from kvmlab.loader import parse_lab

LAB = parse_lab("nodes:\n  a: {memory: 4G}\n  b: {memory: 4G, disks: {d: 100G}}\n", "big.yaml", default_name="big")


def test_lab_that_does_not_fit_in_memory_is_refused_with_numbers(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "available_memory_mib", lambda: 6000)
    with pytest.raises(PreflightError) as info:
        preflight.check_fits(LAB, tmp_path)
    assert str(info.value).startswith(
        "lab 'big' needs 8592 MiB of memory (2 nodes, 8192 MiB guest RAM + 200 MiB each for QEMU) but only 6000 MiB is available"
    )


def test_lab_that_does_not_fit_on_disk_is_refused_with_numbers(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "available_memory_mib", lambda: 100_000)
    monkeypatch.setattr(preflight, "free_disk_mib", lambda path: 1000)
    with pytest.raises(PreflightError, match=r"needs about 27648 MiB of disk under .* but only 1000 MiB is free"):
        preflight.check_fits(LAB, tmp_path)


def test_missing_tools_each_say_their_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight.shutil, "which", lambda name: None)
    checks = {c.name: c for c in preflight.host_checks(tmp_path, tmp_path)}
    assert checks["qemu"].detail == "qemu-system-x86_64 missing: apt-get install qemu-system-x86 (or `make deps`)"
    assert checks["mmdebstrap"].detail == "mmdebstrap missing: apt-get install mmdebstrap"
    with pytest.raises(PreflightError, match="qemu-system-x86_64 missing"):
        preflight.require_host(tmp_path, tmp_path)


def test_unwritable_cache_dir_is_reported(monkeypatch, tmp_path):
    # Root may write anywhere, so the permission answer is what is faked here.
    monkeypatch.setattr(preflight.os, "access", lambda path, mode: False)
    checks = {c.name: c for c in preflight.host_checks(tmp_path / "cache", tmp_path)}
    assert not checks["cache dir"].ok
    assert checks["cache dir"].detail == f"{tmp_path / 'cache'} is not writable: set KVMLAB_CACHE / KVMLAB_POOL_DIR or fix its permissions"
