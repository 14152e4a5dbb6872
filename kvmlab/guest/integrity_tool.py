#!/usr/bin/python3
"""kvmlab integrity tool: runs inside a lab node (python3 standard library only).

  write  PATH --state DIR   write numbered, checksummed records to PATH until SIGTERM
  verify PATH --state DIR   check every record the writer acknowledged (JSON report on stdout)

A record is RECORD_SIZE bytes at offset index * RECORD_SIZE, made of 512-byte
sectors. Every sector carries its own header (magic, run id, record index,
sector number) and a CRC32, and its payload is derived from those, so verify
can tell a sector that was never written (zeros), a sector of this record, and
a sector that is damaged or belongs elsewhere. A record counts as written only
once fsync has returned after its write: only then does the writer publish its
index in DIR/ack.json (replaced atomically), which verify takes as the list of
promises to check.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import mmap
import os
import signal
import stat
import struct
import sys
import time
import zlib

SECTOR = 512
MAGIC = b"KVMLABR1"
HEADER = struct.Struct(">8s8sQHHI")  # magic, run, index, sector, sectors per record, crc32
PAYLOAD = SECTOR - HEADER.size
SCAN_BEYOND = 16  # records past the last acknowledged one that verify also inspects
SHOW = 20  # bad records listed in full in a report; the rest are only counted


def _payload(run: bytes, index: int, sector: int) -> bytes:
    seed = hashlib.sha256(run + struct.pack(">QH", index, sector)).digest()
    return (seed * (PAYLOAD // len(seed) + 1))[:PAYLOAD]


def make_sector(run: bytes, index: int, sector: int, sectors: int) -> bytes:
    payload = _payload(run, index, sector)
    head = HEADER.pack(MAGIC, run, index, sector, sectors, 0)[:-4]
    return head + struct.pack(">I", zlib.crc32(head + payload)) + payload


def make_record(run: bytes, index: int, record_size: int) -> bytes:
    sectors = record_size // SECTOR
    return b"".join(make_sector(run, index, s, sectors) for s in range(sectors))


def classify_sector(data: bytes, run: bytes, index: int, sector: int, sectors: int) -> str:
    """empty | good | foreign (a sound sector of another record or run) | bad (unreadable header or wrong checksum)."""
    if len(data) < SECTOR or not any(data):
        return "empty"
    magic, s_run, s_index, s_sector, s_sectors, crc = HEADER.unpack_from(data)
    if magic != MAGIC or zlib.crc32(data[: HEADER.size - 4] + data[HEADER.size :]) != crc:
        return "bad"
    if (s_run, s_index, s_sector, s_sectors) != (run, index, sector, sectors) or data[HEADER.size :] != _payload(run, index, sector):
        return "foreign"
    return "good"


def classify_record(data: bytes, run: bytes, index: int, record_size: int) -> tuple[str, str]:
    """(ok | missing | torn | corrupt, detail) for the bytes found at record INDEX's place."""
    sectors = record_size // SECTOR
    kinds = [classify_sector(data[s * SECTOR : (s + 1) * SECTOR], run, index, s, sectors) for s in range(sectors)]
    if all(k == "good" for k in kinds):
        return "ok", ""
    if all(k == "empty" for k in kinds):
        return "missing", "all zeros" if len(data) >= record_size else f"only {len(data)} of {record_size} bytes exist"
    layout = "".join({"good": "G", "empty": "0", "foreign": "F", "bad": "X"}[k] for k in kinds)
    if "X" in layout:
        first = layout.index("X")
        sample = data[first * SECTOR : first * SECTOR + 32].hex()
        return "corrupt", f"sectors {layout} (G good, 0 zero, F other record, X bad checksum); sector {first} starts {sample}"
    if "F" in layout and "G" not in layout:
        first = layout.index("F")
        _m, s_run, s_index, s_sector, _n, _c = HEADER.unpack_from(data, first * SECTOR)
        return "corrupt", f"sectors {layout}: holds record {s_index} sector {s_sector} of run {s_run.hex()} instead"
    return "torn", f"sectors {layout} (G good, 0 zero, F other record): part of the record reached the disk"


# -- writer -------------------------------------------------------------------


class Writer:
    def __init__(self, path: str, state: str, record_size: int, records: int, interval: float) -> None:
        self.path, self.state, self.record_size, self.interval = path, state, record_size, interval
        self.records = records
        self.stop = False
        self.errors = 0
        self.last_error = ""
        self.max_gap_s = 0.0
        os.makedirs(state, exist_ok=True)
        self.run = os.urandom(8)

    def publish(self, acked: int, done: bool = False, reason: str = "") -> None:
        # Readers see the old or the new file, never half of one. The state directory is on the
        # writer's own root disk, which the faults of a test do not touch.
        info = {
            "pid": os.getpid(),
            "path": self.path,
            "run": self.run.hex(),
            "record_size": self.record_size,
            "records": self.records,
            "acked": acked,
            "errors": self.errors,
            "last_error": self.last_error,
            "max_gap_s": round(self.max_gap_s, 3),
            "time": time.time(),
            "done": done,
            "reason": reason,
        }
        tmp = os.path.join(self.state, "ack.json.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, os.path.join(self.state, "ack.json"))

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def main(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self.publish(-1)
        fd = self._open()
        if stat.S_ISBLK(os.fstat(fd).st_mode):
            self.records = min(self.records, os.lseek(fd, 0, os.SEEK_END) // self.record_size)
        index, last_ack = 0, time.monotonic()
        reason = "stopped"
        while not self.stop:
            if index >= self.records:
                reason = "full"
                break
            try:
                os.pwrite(fd, make_record(self.run, index, self.record_size), index * self.record_size)
                os.fsync(fd)
            except OSError as exc:
                # Not acknowledged: write the same record again once the storage answers. After a
                # failed fsync the page cache may hold anything, so the file is opened afresh.
                self.errors += 1
                self.last_error = f"record {index}: {exc}"
                self.publish(index - 1)
                with contextlib.suppress(OSError):
                    os.close(fd)
                time.sleep(0.5)
                while not self.stop:
                    try:
                        fd = self._open()
                        break
                    except OSError as exc2:
                        self.last_error = f"reopen: {exc2}"
                        time.sleep(0.5)
                continue
            now = time.monotonic()
            self.max_gap_s = max(self.max_gap_s, now - last_ack)
            last_ack = now
            self.publish(index)
            index += 1
            if self.interval:
                time.sleep(self.interval)
        os.close(fd)
        self.publish(index - 1, done=True, reason=reason)
        return 0

    def _on_term(self, signum: int, frame: object) -> None:
        self.stop = True  # finish (and acknowledge) the record in flight, then exit


# -- verify -------------------------------------------------------------------


def _read_all(path: str, length: int, direct: bool) -> bytes:
    """LENGTH bytes from the start of PATH as the storage has them, not as this node's page cache does."""
    flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags)
    try:
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        size = os.lseek(fd, 0, os.SEEK_END)
        length = min(length, size)
        if direct:
            # O_DIRECT needs aligned buffers and lengths: an anonymous mmap is page-aligned.
            aligned = -(-length // 4096) * 4096
            if aligned == 0:
                return b""
            buf = mmap.mmap(-1, aligned)
            got = os.preadv(fd, [buf], 0)
            return bytes(buf[: min(got, length)])
        chunks, offset = [], 0
        while offset < length:
            chunk = os.pread(fd, min(1 << 20, length - offset), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def verify(data: bytes, run: bytes, acked: int, record_size: int) -> dict:
    """Check records 0..ACKED (each must be intact) and a few beyond (may be missing, never damaged)."""
    report: dict = {"run": run.hex(), "record_size": record_size, "acked": acked, "ok": 0, "missing": [], "torn": [], "corrupt": []}
    beyond = {"ok": 0, "missing": 0}
    scanned = 0
    for index in range(acked + 1 + SCAN_BEYOND):
        start = index * record_size
        if index > acked and start >= len(data):
            break
        scanned += 1
        kind, detail = classify_record(data[start : start + record_size], run, index, record_size)
        if kind == "ok" and index <= acked:
            report["ok"] += 1
        elif kind in ("ok", "missing") and index > acked:
            beyond[kind] += 1  # never acknowledged: present or absent are both fine
        else:
            report[kind].append({"index": index, "acked": index <= acked, "detail": detail})
    report["scanned"] = scanned
    report["unacked_present"], report["unacked_missing"] = beyond["ok"], beyond["missing"]
    counts = {k: len(report[k]) for k in ("missing", "torn", "corrupt")}
    for k in counts:
        report[k] = report[k][:SHOW]
    report["counts"] = counts
    report["intact"] = not any(counts.values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="integrity_tool")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("path")
    w.add_argument("--state", required=True)
    w.add_argument("--record-size", type=int, default=4096)
    w.add_argument("--records", type=int, default=8192)
    w.add_argument("--interval", type=float, default=0.0)
    v = sub.add_parser("verify")
    v.add_argument("path")
    v.add_argument("--state", help="the writer's state directory (run id, last acknowledged record)")
    v.add_argument("--run", help="run id (hex), instead of --state")
    v.add_argument("--acked", type=int, help="last acknowledged record, instead of --state")
    v.add_argument("--record-size", type=int)
    v.add_argument("--direct", action="store_true", help="read with O_DIRECT (block devices)")
    args = parser.parse_args(argv)
    if args.command == "write":
        if args.record_size % SECTOR or args.record_size <= 0:
            parser.error(f"--record-size must be a multiple of {SECTOR}")
        return Writer(args.path, args.state, args.record_size, args.records, args.interval).main()
    info: dict = {}
    if args.state:
        with open(os.path.join(args.state, "ack.json")) as f:
            info = json.load(f)
    run = bytes.fromhex(args.run or info["run"])
    acked = args.acked if args.acked is not None else info["acked"]
    record_size = args.record_size or info.get("record_size", 4096)
    data = _read_all(args.path, (acked + 1 + SCAN_BEYOND) * record_size, args.direct)
    report = verify(data, run, acked, record_size)
    report["path"] = args.path
    report["writer"] = {k: info[k] for k in ("errors", "last_error", "max_gap_s", "done", "reason") if k in info}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
