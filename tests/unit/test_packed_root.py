"""The compressed root disk sent to remote hosts: made once, same content, smaller."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kvmlab.images import Image, packed_root

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img is installed by `make deps`")


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
