"""Boot without booting: every node starts as a clone of a saved, already booted generic node.

A generic node is a node's own domain XML stripped of what makes it that node: no NICs, no data
disks, no seed disk, the kernel argument `kvmlab.generic`. It boots once per image and shape
(memory, vCPUs, accelerator, everything else the domain template renders), waits in
`kvmlab-firstboot --hotplugged` for a seed disk, and is saved there: memory to a state file in
the generics folder, disk to a frozen overlay `generic-KEY-MADE.qcow2` in kvmlab's pool. MADE is new
each time a generic is made, and the state file's metadata names its volume: a state file is only
ever used with the disk it was saved with (two generics folders sharing a pool, or a generic made
again while a saved lab still sits on the old disk, would otherwise pair a memory state with
another disk; the guest sees a corrupt filesystem at its next cold boot).

A node then starts in about a second: a fresh overlay above the generic's, the state file
restored under the node's name, UUID, disk and console log, and its NICs, data disks and seed
disk hot-plugged. Inside, kvmlab-firstboot reseeds the kernel's random pool with the node's own
secret, gives it a machine-id, hostname, keys and addresses, and restarts sshd.

libvirt refuses to restore a state file under another name or UUID, so the clone's copy of the
file header (the domain XML) is rewritten and the unchanged memory stream behind it is fed
through a named pipe: nothing is copied to disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kvmlab import render, runs, settings
from kvmlab.accel import boot_id
from kvmlab.errors import HarnessError
from kvmlab.providers.base import Provider
from kvmlab.wait import timeout_for, wait_until

NAMESPACE = render.NAMESPACE
ET.register_namespace("kvmlab", NAMESPACE)

# libvirt's QEMU save image: magic, then 19 little-endian uint32 (version, data length,
# was-running, compression, cookie offset, unused), then the XML and cookie, then QEMU's stream.
SAVE_MAGIC = b"LibvirtQemudSave"
HEADER_FIELDS = 19
HEADER_SIZE = len(SAVE_MAGIC) + 4 * HEADER_FIELDS
GENERIC_ARG = "kvmlab.generic"
READY_MARKER = "kvmlab-generic-ready"
ROOT_SERIAL = "root"
SEED_SERIAL = "cidata"
Log = Callable[[str], None]


@dataclass(frozen=True)
class SaveHeader:
    fields: tuple[int, ...]  # the 19 uint32 values
    xml: str
    cookie: bytes
    stream_offset: int  # where QEMU's migration stream starts

    @property
    def compressed(self) -> int:
        return self.fields[3]


def read_save_header(path: Path) -> SaveHeader:
    with open(path, "rb") as fh:
        head = fh.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or not head.startswith(SAVE_MAGIC):
            raise HarnessError(f"{path} is not a libvirt QEMU save image")
        fields = struct.unpack(f"<{HEADER_FIELDS}I", head[len(SAVE_MAGIC) :])
        version, data_len, _running, _compressed, cookie_offset = fields[:5]
        if version != 2:
            raise HarnessError(f"{path}: save image version {version}; kvmlab reads version 2")
        data = fh.read(data_len)
    xml_end = data.index(b"\0")
    cookie = data[cookie_offset:].split(b"\0", 1)[0] if cookie_offset else b""
    return SaveHeader(fields, data[:xml_end].decode(), cookie, HEADER_SIZE + data_len)


def header_bytes(header: SaveHeader, xml: str) -> bytes:
    """HEADER with XML in place of its own: what comes before QEMU's stream in a save image."""
    xml_part = xml.encode() + b"\0"
    data = xml_part + (header.cookie + b"\0" if header.cookie else b"")
    fields = list(header.fields)
    fields[1], fields[4] = len(data), (len(xml_part) if header.cookie else 0)
    return SAVE_MAGIC + struct.pack(f"<{HEADER_FIELDS}I", *fields) + data


# -- domain XML -------------------------------------------------------------------------------
def _disk_serial(disk: ET.Element) -> str | None:
    return disk.findtext("serial")


def _devices(root: ET.Element) -> ET.Element:
    devices = root.find("devices")
    if devices is None:
        raise HarnessError("domain XML has no <devices>")
    return devices


def normalized(domain_xml: str) -> str:
    """What a node's domain XML shares with its generic node: all but its name, identity,
    NICs, data and seed disks, root disk file and console log."""
    root = ET.fromstring(domain_xml)
    for tag in ("name", "uuid", "title", "metadata"):
        for el in root.findall(tag):
            root.remove(el)
    devices = _devices(root)
    for el in list(devices):
        if el.tag == "interface" or (el.tag == "disk" and _disk_serial(el) != ROOT_SERIAL):
            devices.remove(el)
        elif el.tag == "disk":
            source = el.find("source")
            if source is not None:
                source.attrib.pop("file", None)
    for log in root.iter("log"):
        log.attrib.pop("file", None)
    for el in root.iter():
        el.text = (el.text or "").strip() or None
        el.tail = None
    return ET.tostring(root, encoding="unicode")


def generic_key(image_digest: str, accel: str, domain_xml: str) -> str:
    blob = json.dumps([image_digest, accel, normalized(domain_xml)]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def generic_domain_xml(node_xml: str, name: str, root_file: str, console_log: str, owner: dict[str, str]) -> str:
    """The generic node of NODE_XML: same shape, no NICs, data or seed disks, waiting for a seed."""
    root = ET.fromstring(node_xml)
    root.find("name").text = name  # type: ignore[union-attr]
    for tag in ("uuid", "title"):
        for el in root.findall(tag):
            root.remove(el)
    for meta in root.iter(f"{{{NAMESPACE}}}run"):
        meta.attrib.clear()
        meta.attrib.update({"lab": "generic", "run": name.split("-")[2], "node": name.split("-")[3], **owner})
    devices = _devices(root)
    for el in list(devices):
        if el.tag == "interface" or (el.tag == "disk" and _disk_serial(el) != ROOT_SERIAL):
            devices.remove(el)
        elif el.tag == "disk":
            el.find("source").set("file", root_file)  # type: ignore[union-attr]
    for log in root.iter("log"):
        log.set("file", console_log)
    cmdline = root.find("./os/cmdline")
    if cmdline is None:
        raise HarnessError("a node boots its kernel directly (<os><cmdline>) to be cloned")
    cmdline.text = f"{(cmdline.text or '').strip()} {GENERIC_ARG}"
    return ET.tostring(root, encoding="unicode")


def clone_domain_xml(saved_xml: str, node_xml: str) -> str:
    """The generic node's saved XML become NODE_XML's node: its name, a new UUID, its metadata,
    root disk and console log. Devices and addresses stay as saved: they are in the memory state."""
    saved, node = ET.fromstring(saved_xml), ET.fromstring(node_xml)
    saved.find("name").text = node.findtext("name")  # type: ignore[union-attr]
    saved.find("uuid").text = str(uuid.uuid4())  # type: ignore[union-attr]
    for tag in ("title", "metadata"):
        for el in saved.findall(tag):
            saved.remove(el)
        theirs = node.find(tag)
        if theirs is not None:
            saved.insert(2, theirs)
    node_root = next(d for d in _devices(node).findall("disk") if _disk_serial(d) == ROOT_SERIAL)
    for disk in _devices(saved).findall("disk"):
        if _disk_serial(disk) == ROOT_SERIAL:
            disk.find("source").set("file", node_root.find("source").get("file"))  # type: ignore[union-attr]
            for child in disk.findall("backingStore"):
                disk.remove(child)  # the node's overlay names its own chain
    node_log = next((log.get("file") for log in node.iter("log")), None)
    for log in saved.iter("log"):
        if node_log:
            log.set("file", node_log)
    return ET.tostring(saved, encoding="unicode")


def hotplug_devices(node_xml: str) -> list[str]:
    """What a clone gets plugged in, in order: NICs, data disks, and last the seed disk that starts its identity."""
    devices = _devices(ET.fromstring(node_xml))
    nics = [el for el in devices if el.tag == "interface"]
    disks = [el for el in devices if el.tag == "disk" and _disk_serial(el) not in (ROOT_SERIAL, SEED_SERIAL)]
    seeds = [el for el in devices if el.tag == "disk" and _disk_serial(el) == SEED_SERIAL]
    if not seeds:
        raise HarnessError("a node needs its seed disk (serial 'cidata') to be cloned")
    return [ET.tostring(el, encoding="unicode") for el in (*nics, *disks, *seeds)]


# -- generic nodes ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Generic:
    key: str
    state: Path  # the saved memory
    volume: str  # the frozen root overlay in kvmlab's pool

    @property
    def volume_path(self) -> str:
        return f"{settings.pool_dir()}/{self.volume}"


class Generics:
    """The generic nodes a session's nodes start from: each made once (per host, across runs) and shared."""

    def __init__(self, provider: Provider, image_digest: str, accel: str, log: Log, contention: float = 1.0) -> None:
        self.provider = provider
        self.image_digest = image_digest
        self.accel = accel
        self.log = log
        self.contention = contention
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._making: dict[str, Generic] = {}  # domain name -> the generic node it is becoming

    def abort(self) -> None:
        """Stop every generic node still being made (an interrupted bring-up): nothing half-made stays."""
        with self._guard:
            making = dict(self._making)
        for name, generic in making.items():
            self.provider.destroy_domain(name)
            generic.state.with_suffix(".partial").unlink(missing_ok=True)
            self.provider.delete_volume(settings.POOL, generic.volume)

    def for_node(self, node_xml: str, stop: threading.Event | None = None) -> Generic:
        key = generic_key(self.image_digest, self.accel, node_xml)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # nodes of one shape wait for the one that makes it
            return self._ensure(key, node_xml, stop)

    def _ensure(self, key: str, node_xml: str, stop: threading.Event | None) -> Generic:
        directory = settings.generics_dir()
        directory.mkdir(parents=True, exist_ok=True)
        meta = directory / f"{key}.json"
        with open(directory / f"{key}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process making the same one: wait for it
            made = recorded(meta)
            if made is not None and made.state.exists() and self.provider.has_volume(settings.POOL, made.volume):
                return made
            # Half-made by a killed run, or its volume was removed: its files go; a volume it named is
            # left to `kvmlab gc`, which removes it once no overlay sits on it.
            _remove_files(meta)
            generic = Generic(key, directory / f"{key}.save", f"generic-{key}-{runs.new_run_id()}.qcow2")
            start = time.monotonic()
            self._make(generic, node_xml, stop)
            took = time.monotonic() - start
            meta.write_text(
                json.dumps(
                    {
                        "image": self.image_digest,
                        "accel": self.accel,
                        "volume": generic.volume,
                        "created": datetime.now(UTC).isoformat(timespec="seconds"),
                        "boot_s": round(took, 1),
                    }
                )
            )
            size = generic.state.stat().st_size / 2**20
            self.log(f"generic node {key}: booted and saved in {took:.1f} s ({size:.0f} MiB); nodes of its shape start from it")
            return generic

    def _make(self, generic: Generic, node_xml: str, stop: threading.Event | None) -> None:
        provider, base = self.provider, f"{settings.pool_dir()}/base-{self.image_digest}.qcow2"
        name = f"kvmlab-generic-{runs.new_run_id()}-{generic.key}"
        console = settings.console_dir() / f"{name}.log"
        console.parent.mkdir(parents=True, exist_ok=True)
        owner = {
            "pid": str(os.getpid()),
            "user": runs.me(),
            "host": socket.gethostname(),
            "boot": boot_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        xml = generic_domain_xml(node_xml, name, generic.volume_path, str(console), owner)
        partial = generic.state.with_suffix(".partial")
        self.log(f"generic node {generic.key}: booting it once for this image and node shape")
        provider.create_volume(settings.POOL, render.render_overlay_volume(generic.volume, base))
        with self._guard:
            self._making[name] = generic
        try:
            provider.create_domain(xml)

            def waiting() -> bool:
                try:
                    return READY_MARKER in console.read_text(errors="replace")
                except OSError:
                    return False

            def failed() -> str | None:
                if stop is not None and stop.is_set():
                    return "another node failed"
                state = provider.domain_state(name)
                return None if state == "running" else f"domain {name} is {state}"

            wait_until(
                waiting,
                timeout_for("boot", self.accel) * self.contention,
                f"generic node {generic.key} to boot and wait for its seed",
                interval=1.0,
                failed=failed,
                context=lambda: _tail(console),
            )
            time.sleep(1.0)  # let the waiting loop settle: the state saved is idle
            provider.save_domain(name, str(partial))
            partial.rename(generic.state)
            console.unlink(missing_ok=True)
        except BaseException:
            provider.destroy_domain(name)
            partial.unlink(missing_ok=True)
            provider.delete_volume(settings.POOL, generic.volume)
            raise
        finally:
            with self._guard:
                self._making.pop(name, None)


def _meta(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded(meta: Path) -> Generic | None:
    """The generic node META describes, or None when META is missing, unreadable or names no volume."""
    volume = _meta(meta).get("volume")
    if not isinstance(volume, str) or not volume:
        return None
    return Generic(meta.stem, meta.with_suffix(".save"), volume)


def _remove_files(meta: Path) -> None:
    for path in (meta, meta.with_suffix(".save"), meta.with_suffix(".partial")):
        path.unlink(missing_ok=True)


def remove_stale(image_digests: set[str]) -> list[str]:
    """Remove the state files of generic nodes of images other than IMAGE_DIGESTS (an image changes only
    with its recipe); their volumes become unnamed, and remove_unused_volumes() takes them when free."""
    removed = []
    for meta in sorted(settings.generics_dir().glob("*.json")):
        if _meta(meta).get("image") not in image_digests:
            _remove_files(meta)
            removed.append(meta.stem)
    return removed


def remove_unused_volumes(provider: Provider) -> list[str]:
    """Remove generic volumes that no state file of the generics folder names and no other volume of the
    pool is an overlay of (a running clone, a checkpoint, a saved lab): a generic's disk goes only when
    nothing can read it any more."""
    named = {g.volume for meta in settings.generics_dir().glob("*.json") if (g := recorded(meta)) is not None}
    try:
        backings = provider.volume_backings(settings.POOL)
    except HarnessError:
        return []  # no pool yet: nothing was ever made
    in_use = {Path(path).name for path in backings.values() if path}
    removed = []
    for vol in sorted(backings):
        if vol.startswith("generic-") and vol.endswith(".qcow2") and vol not in named and vol not in in_use:
            provider.delete_volume(settings.POOL, vol)
            removed.append(vol)
    return removed


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no console log at {path})"
    return f"last {len(text)} console lines ({path}):\n" + "\n".join("  | " + ln.rstrip("\r") for ln in text)


# -- clones -----------------------------------------------------------------------------------
def restore_clone(provider: Provider, generic: Generic, node_xml: str) -> None:
    """Start NODE_XML's domain from GENERIC's saved state, then plug in its NICs, disks and seed."""
    header = read_save_header(generic.state)
    if header.compressed:
        raise HarnessError(f"{generic.state} is compressed; kvmlab saves generic nodes uncompressed")
    head = header_bytes(header, clone_domain_xml(header.xml, node_xml))
    with tempfile.TemporaryDirectory(prefix="kvmlab-clone-") as tmp:
        fifo = Path(tmp) / "state.save"
        os.mkfifo(fifo, 0o600)
        feeder = _Feeder(fifo, head, generic.state, header.stream_offset)
        feeder.start()
        try:
            provider.restore_domain(str(fifo))
        finally:
            feeder.finish()
    name = ET.fromstring(node_xml).findtext("name") or ""
    for device in hotplug_devices(node_xml):
        provider.attach_device(name, device)


class _Feeder(threading.Thread):
    """Writes a clone's header, then the generic's memory stream, into the pipe libvirt restores from."""

    def __init__(self, fifo: Path, head: bytes, state: Path, offset: int) -> None:
        super().__init__(name=f"feed-{fifo}", daemon=True)
        self.fifo, self.head, self.state, self.offset = fifo, head, state, offset
        self.opened = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            fd = os.open(self.fifo, os.O_WRONLY)
            self.opened.set()
            with os.fdopen(fd, "wb") as out, open(self.state, "rb") as src:
                out.write(self.head)
                src.seek(self.offset)
                shutil.copyfileobj(src, out, 4 * 2**20)

    def finish(self) -> None:
        """After the restore returned or failed: a writer still waiting for a reader is released."""
        if not self.opened.is_set():
            with contextlib.suppress(OSError):
                os.close(os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK))
        self.join(30)
