"""The compressed root disk sent to remote hosts: made once, same content, smaller."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlab.images import Image, packed_root, remove_stale_builds


@pytest.fixture(autouse=True)
def _qemu_img() -> None:
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is a prerequisite: `make deps` installs it (qemu-utils)")


def _image(tmp_path: Path) -> Image:
    image = Image("0123456789abcdef", tmp_path / "0123456789abcdef")
    image.directory.mkdir()
    raw = tmp_path / "root.raw"
    # Compressible content: 4 MiB of repeated text, as a root filesystem is mostly.
    raw.write_bytes(b"kvmlab root disk text\n" * (4 * 2**20 // 22))
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(image.root)], check=True)
    return image


def _info(path: Path) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True).stdout)


def test_the_packed_root_holds_the_same_disk_in_fewer_bytes(tmp_path: Path) -> None:
    image = _image(tmp_path)
    lines: list[str] = []
    packed = packed_root(image, lines.append)
    assert packed == image.packed_root
    same = subprocess.run(["qemu-img", "compare", str(image.root), str(packed)], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    assert packed.stat().st_size < image.root.stat().st_size / 4
    info = _info(packed)
    assert info["format-specific"]["data"]["compression-type"] == "zstd"
    assert any("compress" in line for line in lines)
    assert not list(image.directory.glob("*.partial"))


def test_the_packed_root_is_made_once(tmp_path: Path) -> None:
    image = _image(tmp_path)
    first = packed_root(image, lambda line: None)
    made = first.stat().st_mtime_ns
    lines: list[str] = []
    assert packed_root(image, lines.append) == first
    assert first.stat().st_mtime_ns == made and lines == []


def test_a_half_packed_root_is_removed_once_nobody_packs_it(tmp_path: Path) -> None:
    image = _image(tmp_path)
    partial = image.packed_root.with_name("root.zst.qcow2.partial")
    partial.write_bytes(b"half")
    with open(tmp_path / f"{image.digest}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a packing in progress (another process's lock, as far as flock goes)
        assert remove_stale_builds(tmp_path) == [] and partial.exists()
    assert remove_stale_builds(tmp_path) == [partial] and not partial.exists()
    assert image.root.exists()


def test_a_killed_builds_folder_is_removed_and_a_running_ones_kept(tmp_path: Path) -> None:
    killed, running = tmp_path / "kvmlab-image-aaaa-x1", tmp_path / "kvmlab-image-bbbb-x2"
    for folder in (killed, running):
        (folder / "rootfs").mkdir(parents=True)
    with open(tmp_path / "bbbb.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # bbbb's build is still running
        assert remove_stale_builds(tmp_path) == [killed]
    assert not killed.exists() and running.is_dir()
    assert remove_stale_builds(tmp_path, held_digest="bbbb") == [running], "the caller holds bbbb's lock: its folder is stale"
