"""The libvirt provider: the only module of kvmlab that imports libvirt."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse, urlsplit

import libvirt
import libvirt_qemu

from kvmlab.errors import HarnessError, LibvirtGone, PoolFull
from kvmlab.libvirt_host import LOCAL_NAMES
from kvmlab.providers.base import DomainInfo, DomainStatus

NAMESPACE = "https://kvmlab.dev/xmlns/run/1"
CHUNK = 4 * 1024 * 1024

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}


_PAUSE_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_USER: "user",
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migration",
    libvirt.VIR_DOMAIN_PAUSED_SAVE: "save",
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "ioerror",
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting-up",
}
_DISK_ERRORS = {
    libvirt.VIR_DOMAIN_DISK_ERROR_NO_SPACE: "no space left on device",
    libvirt.VIR_DOMAIN_DISK_ERROR_UNSPEC: "I/O error",
}
ENOSPC_TEXT = "No space left on device"  # strerror(ENOSPC), as libvirt reports a failed write
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")  # where qemu:///system keeps each domain's log

F = TypeVar("F", bound=Callable[..., Any])


def _stderr(line: str) -> None:
    sys.stderr.write(f"kvmlab: {line}\n")
    sys.stderr.flush()


def _reconnecting(method: F) -> F:
    """libvirtd restarted (its QEMU processes live on and it finds them again): reconnect within
    a deadline and try METHOD once more, instead of failing on a dead connection."""

    @functools.wraps(method)
    def wrapper(self: LibvirtProvider, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (libvirt.libvirtError, HarnessError):
            if self._connected():
                raise  # a real error of this call, not a lost connection
        self._reconnect()
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _local_system(uri: str) -> bool:
    """A qemu:///system URI on this host: its domains' logs can be read here."""
    parsed = urlparse(uri)
    return parsed.scheme.split("+")[0] == "qemu" and not parsed.hostname and parsed.path == "/system"


def _last_stop(log: Path) -> str:
    """How QEMU ended, from the domain's log: libvirt's 'shutting down, reason=...' and QEMU's own last word."""
    try:
        lines = log.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return ""
    said = [ln.split(": ", 1)[-1].strip() for ln in lines if "terminating on signal" in ln or "shutting down, reason=" in ln]
    return "; ".join(said[-2:])


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours carry the message instead."""


libvirt.registerErrorHandler(_quiet, None)


def _unless_gone(exc: libvirt.libvirtError, gone_code: int, what: str) -> None:
    """Removing an object that vanished meanwhile (its creator died mid-start, a parallel cleanup) is success."""
    if exc.get_error_code() != gone_code:
        raise HarnessError(f"libvirt: {what}: {exc.get_error_message() or exc}") from exc


def _refresh(pool, timeout_s: float = 300.0) -> None:
    """Rescan the pool's directory. libvirt refuses while any volume of it is uploading (another
    lab, another process), so wait those uploads out; they end within minutes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pool.refresh(0)
            return
        except libvirt.libvirtError as exc:
            busy = "asynchronous jobs" in (exc.get_error_message() or "")
            if not busy or time.monotonic() > deadline:
                raise HarnessError(f"libvirt: refresh pool {pool.name()}: {exc.get_error_message()}") from exc
            time.sleep(0.5)


def _volume_name(xml: str) -> str:
    """The <name> of a volume's XML, for messages; libvirt itself reports XML it cannot parse."""
    try:
        return ET.fromstring(xml).findtext("name") or "(unnamed)"
    except ET.ParseError:
        return "(unparsable XML)"


AGENT_TIMEOUT_S = 10  # for one guest agent command to answer
REMOVAL_WAIT_S = 30.0  # how long a domain of the same name may take to be removed before a new one starts

# A remote host that stops answering (frozen, link cut) is declared dead after ~interval × (count + 1) s.
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 6
OPEN_TIMEOUT_S = 60.0
_event_loop_lock = threading.Lock()
_event_loop_running = False


def _remote(uri: str) -> bool:
    return (urlsplit(uri).hostname or "") not in LOCAL_NAMES


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def _start_event_loop() -> None:
    """libvirt's own event loop, in a thread: keepalive probes are sent and answered from it."""
    global _event_loop_running
    with _event_loop_lock:
        if not _event_loop_running:
            libvirt.virEventRegisterDefaultImpl()
            threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
            _event_loop_running = True


def open_connection(uri: str, timeout: float = OPEN_TIMEOUT_S) -> libvirt.virConnect:
    """libvirt.open; a connection to another host also sends keepalive probes. Without them a call over
    SSH to a host that stopped answering blocks forever (seen in XMLDesc over qemu+libssh); with them
    libvirt closes the connection, the call fails, and the caller's reconnect deadline takes over.

    Opening one is bounded too: to a host whose kernel had stalled, libvirt.open over libssh waited
    forever for the SSH handshake. After TIMEOUT it raises TimeoutError (the opening thread is left to
    libvirt; it ends when the host answers or the process exits)."""
    if not _remote(uri):
        return libvirt.open(uri)
    _start_event_loop()
    opened: dict[str, Any] = {}

    def attempt() -> None:
        try:
            opened["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            opened["error"] = exc

    thread = threading.Thread(target=attempt, name="libvirt-open", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer from {uri} within {timeout:.0f} s")
    if "error" in opened:
        raise opened["error"]
    conn = opened["conn"]
    conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    return conn


class LibvirtProvider:
    def __init__(self, uri: str, reconnect_s: float = 60.0, log: Callable[[str], None] = _stderr) -> None:
        self.uri = uri
        self.reconnect_s, self.log = reconnect_s, log
        self._lock = threading.Lock()
        self._reconnect_lock = threading.Lock()
        self._gave_up = False  # reconnecting failed once: later calls try once, not for a whole deadline each
        try:
            self._conn = open_connection(uri)
        except (libvirt.libvirtError, TimeoutError) as exc:
            fix = (
                "start the daemons (`virtlogd -d && libvirtd -d`, or `make deps`)"
                if not _remote(uri)
                else "check that SSH to the host works with the URI's user, keyfile= and known_hosts=, and that libvirtd runs there"
            )
            said = exc.get_error_message() if isinstance(exc, libvirt.libvirtError) else str(exc)
            raise HarnessError(f"cannot connect to libvirt at {uri}: {said}\n  fix: {fix}") from exc

    def _connected(self) -> bool:
        try:
            return self._conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    def _reconnect(self) -> None:
        """Open a new connection, retrying until the deadline; LibvirtGone when libvirtd does not come back."""
        with self._reconnect_lock:
            if self._connected():
                return  # another thread reconnected meanwhile
            seconds = 0.0 if self._gave_up else self.reconnect_s
            if not self._gave_up:
                self.log("libvirtd connection lost; reconnecting")
            start = time.monotonic()
            while True:
                try:
                    conn = open_connection(self.uri)
                except libvirt.libvirtError as exc:
                    last = exc.get_error_message()
                except TimeoutError as exc:
                    last = str(exc)
                else:
                    with contextlib.suppress(libvirt.libvirtError):
                        self._conn.close()
                    self._conn, self._gave_up = conn, False
                    self.log(f"libvirtd connection back after {time.monotonic() - start:.1f} s")
                    return
                if time.monotonic() - start >= seconds:
                    self._gave_up = True
                    raise LibvirtGone(self.uri, self.reconnect_s, last)
                time.sleep(0.5)

    def open_console(self, name: str) -> LibvirtConsole:
        return LibvirtConsole(self.uri, name)

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise HarnessError(f"libvirt: {what}: {exc.get_error_message() or exc}") from exc

    # storage
    @_reconnecting
    def ensure_pool(self, name: str, xml: str) -> None:
        with self._lock:
            try:
                pool = self._conn.storagePoolLookupByName(name)
            except libvirt.libvirtError:
                pool = self._call(f"define pool {name}", self._conn.storagePoolDefineXML, xml, 0)
                self._call(f"build pool {name}", pool.build, 0)
                pool.setAutostart(1)
            if not pool.isActive():
                self._call(f"start pool {name}", pool.create, 0)
            _refresh(pool)

    def _pool(self, name: str):
        return self._call(f"look up pool {name}", self._conn.storagePoolLookupByName, name)

    @_reconnecting
    def has_volume(self, pool: str, name: str) -> bool:
        try:
            self._pool(pool).storageVolLookupByName(name)
            return True
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise  # not "no such volume": a lost connection says nothing about the volume
            return False

    @_reconnecting
    def pool_space(self, pool: str) -> tuple[str, int]:
        """(directory, free bytes) of POOL's filesystem, as libvirt sees it on the libvirt host."""
        p = self._pool(pool)
        with contextlib.suppress(libvirt.libvirtError):
            p.refresh(0)  # libvirt measures free space on refresh; refused while uploads run (then: the last measure)
        directory = ET.fromstring(p.XMLDesc(0)).findtext("./target/path") or pool
        return directory, p.info()[3]

    @_reconnecting
    def list_volumes(self, pool: str) -> list[str]:
        p = self._pool(pool)
        _refresh(p)
        return list(p.listVolumes())

    @_reconnecting
    def volume_backings(self, pool: str) -> dict[str, str | None]:
        """Every volume of POOL with the file it is an overlay of (None: not an overlay)."""
        p = self._pool(pool)
        _refresh(p)
        out: dict[str, str | None] = {}
        for vol in p.listAllVolumes(0):
            try:
                root = ET.fromstring(vol.XMLDesc(0))
            except libvirt.libvirtError as exc:
                _unless_gone(exc, libvirt.VIR_ERR_NO_STORAGE_VOL, f"describe volume {vol.name()}")
                continue
            out[vol.name()] = root.findtext("./backingStore/path")
        return out

    @_reconnecting
    def upload_volume(self, pool: str, xml: str, source: Path | bytes, sent: Callable[[int], None] | None = None) -> None:
        """Create the volume XML describes (its capacity SOURCE's size) and fill it with SOURCE; SENT is
        told the bytes sent so far after each chunk."""
        name = _volume_name(xml)
        data_len = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        p = self._pool(pool)
        with contextlib.suppress(libvirt.libvirtError):
            p.storageVolLookupByName(name).delete(0)  # half an upload cut short by a libvirtd restart
        try:
            vol = p.createXML(xml, 0)  # libvirt allocates the whole volume here: a full pool fails here first
        except libvirt.libvirtError as exc:
            self._raise_if_full(pool, data_len, exc)
            raise HarnessError(f"libvirt: create volume {name}: {exc.get_error_message()}") from exc
        stream = self._conn.newStream(0)
        try:
            vol.upload(stream, 0, data_len, 0)
            if isinstance(source, bytes):
                for off in range(0, data_len, CHUNK):
                    stream.send(source[off : off + CHUNK])
            else:
                with open(source, "rb") as fh:
                    done = 0
                    while chunk := fh.read(CHUNK):
                        stream.send(chunk)
                        done += len(chunk)
                        if sent is not None:
                            sent(done)
            stream.finish()
        except (libvirt.libvirtError, OSError) as exc:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            self._raise_if_full(pool, data_len, exc)
            raise HarnessError(f"libvirt: upload of volume {name} failed: {exc}") from exc

    def _raise_if_full(self, pool: str, need: int, exc: Exception) -> None:
        """ENOSPC from libvirt while writing a volume of NEED bytes: say which filesystem is full, and how full."""
        if ENOSPC_TEXT in str(exc) and self._connected():
            directory, free = self.pool_space(pool)
            raise PoolFull(directory, -(-need // 2**20), free // 2**20) from exc

    @_reconnecting
    def create_volume(self, pool: str, xml: str) -> None:
        self._call("create volume", self._pool(pool).createXML, xml, 0)

    @_reconnecting
    def delete_volume(self, pool: str, name: str) -> None:
        try:
            vol = self._pool(pool).storageVolLookupByName(name)
            vol.delete(0)
        except libvirt.libvirtError as exc:
            _unless_gone(exc, libvirt.VIR_ERR_NO_STORAGE_VOL, f"delete volume {name}")

    # networks
    @_reconnecting
    def create_network(self, xml: str) -> None:
        self._call("create network", self._conn.networkCreateXML, xml)

    @_reconnecting
    def destroy_network(self, name: str) -> None:
        try:
            net = self._conn.networkLookupByName(name)
            persistent = net.isPersistent()  # a transient network is gone once destroyed
            if net.isActive():
                net.destroy()
            if persistent:
                net.undefine()
        except libvirt.libvirtError as exc:
            _unless_gone(exc, libvirt.VIR_ERR_NO_NETWORK, f"destroy network {name}")

    @_reconnecting
    def list_networks(self) -> list[str]:
        return [n.name() for n in self._conn.listAllNetworks(0)]

    @_reconnecting
    def active_networks(self) -> list[str]:
        return [n.name() for n in self._conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]

    @_reconnecting
    def network_bridges(self) -> dict[str, str]:
        bridges = {}
        for net in self._conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
            try:
                bridges[net.name()] = net.bridgeName()
            except libvirt.libvirtError as exc:  # another lab removed it since the listing
                _unless_gone(exc, libvirt.VIR_ERR_NO_NETWORK, f"read the bridge of network {net.name()}")
        return bridges

    @_reconnecting
    def network_addresses(self) -> list[str]:
        """The <ip> of every defined network, so leases never overlap networks we did not create."""
        out = []
        for net in self._conn.listAllNetworks(0):
            try:
                root = ET.fromstring(net.XMLDesc(0))
            except libvirt.libvirtError as exc:  # another lab removed it since the listing
                _unless_gone(exc, libvirt.VIR_ERR_NO_NETWORK, f"describe network {net.name()}")
                continue
            for ip in root.findall("ip"):
                if ip.get("address"):
                    out.append(f"{ip.get('address')}/{ip.get('prefix') or ip.get('netmask') or 24}")
        return out

    # domains
    @_reconnecting
    def create_domain(self, xml: str) -> None:
        # A transient domain that has just shut down is reported off while libvirt still removes it;
        # starting one of the same name then fails with "is already being removed" for a moment.
        deadline = time.monotonic() + REMOVAL_WAIT_S
        while True:
            try:
                self._conn.createXML(xml, 0)
                return
            except libvirt.libvirtError as exc:
                if "is already being removed" not in (exc.get_error_message() or "") or time.monotonic() > deadline:
                    raise HarnessError(f"libvirt: create domain: {exc.get_error_message()}") from exc
            time.sleep(0.5)

    @_reconnecting
    def destroy_domain(self, name: str) -> None:
        try:
            dom = self._conn.lookupByName(name)
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        except libvirt.libvirtError as exc:
            _unless_gone(exc, libvirt.VIR_ERR_NO_DOMAIN, f"destroy domain {name}")

    @_reconnecting
    def domain_state(self, name: str) -> str:
        try:
            state, _reason = self._conn.lookupByName(name).state(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise  # a lost connection is not a domain that is gone
            return "absent"
        return _STATES.get(state, "unknown")

    @_reconnecting
    def domain_status(self, name: str) -> DomainStatus:
        """State, why (paused: user, ioerror, ...), and what libvirt knows of how it stopped."""
        try:
            dom = self._conn.lookupByName(name)
            state, reason = dom.state(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            # A transient domain is gone once QEMU ends; its log still says how it ended.
            return DomainStatus("absent", "", _last_stop(QEMU_LOG_DIR / f"{name}.log") if _local_system(self.uri) else "")
        if state != libvirt.VIR_DOMAIN_PAUSED:
            return DomainStatus(_STATES.get(state, "unknown"), "", "")
        why = _PAUSE_REASONS.get(reason, "other")
        detail = ""
        if why == "ioerror":
            with contextlib.suppress(libvirt.libvirtError):
                errors = dom.diskErrors(0)
                detail = ", ".join(f"disk {dev}: {_DISK_ERRORS.get(code, 'I/O error')}" for dev, code in sorted(errors.items()) if code)
        return DomainStatus("paused", why, detail)

    def _domain(self, name: str):
        return self._call(f"find domain {name}", self._conn.lookupByName, name)

    @_reconnecting
    def domain_definition(self, name: str) -> str:
        """The XML to start the domain again from, without runtime details (pty paths, aliases); with its
        secrets (a VNC password), which the domain started again must keep."""
        return self._call(
            f"dump XML of {name}", lambda: self._domain(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        )

    @_reconnecting
    def shutdown_domain(self, name: str) -> None:
        self._call(f"shut down {name}", lambda: self._domain(name).shutdown())

    @_reconnecting
    def pause_domain(self, name: str) -> None:
        self._call(f"pause {name}", lambda: self._domain(name).suspend())

    @_reconnecting
    def resume_domain(self, name: str) -> None:
        self._call(f"resume {name}", lambda: self._domain(name).resume())

    @_reconnecting
    def set_guest_time(self, name: str, seconds: float) -> None:
        """Set the guest's clock to SECONDS (epoch) through its QEMU guest agent.

        `date` run by the agent (guest-exec), not the agent's guest-set-time: that one also writes the
        RTC with `hwclock -w`, which waits for the RTC's next second (0.5 s on an idle node, 4.8-6.5 s
        for the 12 nodes of a revert). The RTC is read only at boot, and QEMU's follows the host's."""
        dom = self._domain(name)
        what = f"set the clock of {name} through its guest agent"
        try:
            date = {"path": "/bin/date", "arg": ["-u", "-s", f"@{seconds:.6f}"], "capture-output": True}
            started = self._agent(dom, what, "guest-exec", date)
        except HarnessError as exc:
            if "disabled" not in str(exc) and "not found" not in str(exc):
                raise
            whole = int(seconds)  # an agent that refuses guest-exec still sets the clock its own way
            self._call(what, dom.setTime, {"seconds": whole, "nseconds": int((seconds - whole) * 1e9)}, 0)
            return
        deadline = time.monotonic() + AGENT_TIMEOUT_S
        while not (status := self._agent(dom, what, "guest-exec-status", {"pid": started["pid"]})).get("exited"):
            if time.monotonic() > deadline:
                raise HarnessError(f"{what}: `date` did not end within {AGENT_TIMEOUT_S} s")
            time.sleep(0.05)
        if status.get("exitcode") != 0:
            err = base64.b64decode(status.get("err-data", "")).decode(errors="replace").strip()
            raise HarnessError(f"{what}: `date` exited {status.get('exitcode')}: {err}")

    def _agent(self, dom: libvirt.virDomain, what: str, command: str, arguments: dict) -> dict:
        """One QEMU guest agent command, its `return` value."""
        text = json.dumps({"execute": command, "arguments": arguments})
        reply = self._call(what, libvirt_qemu.qemuAgentCommand, dom, text, AGENT_TIMEOUT_S, 0)
        return json.loads(reply)["return"]

    @_reconnecting
    def set_link(self, name: str, mac: str, up: bool) -> None:
        """Plug or unplug the virtual cable of the NIC with MAC; the guest sees carrier loss."""
        root = ET.fromstring(self.domain_xml(name))
        for iface in root.findall("./devices/interface"):
            mac_el = iface.find("mac")
            if mac_el is not None and mac_el.get("address", "").lower() == mac.lower():
                link = iface.find("link")
                if link is None:
                    link = ET.SubElement(iface, "link")
                link.set("state", "up" if up else "down")
                xml = ET.tostring(iface, encoding="unicode")
                self._call(f"set link of {mac} on {name}", self._domain(name).updateDeviceFlags, xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                return
        raise HarnessError(f"domain {name} has no interface with MAC {mac}")

    @_reconnecting
    def detach_disk(self, name: str, serial: str) -> str:
        """Hot-unplug the disk with SERIAL; returns its XML so that it can be plugged back."""
        root = ET.fromstring(self.domain_xml(name))
        for disk in root.findall("./devices/disk"):
            if disk.findtext("serial") == serial:
                xml = ET.tostring(disk, encoding="unicode")
                self._call(f"detach disk {serial} from {name}", self._domain(name).detachDeviceFlags, xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                # Plugged back as configured: runtime-only elements would be refused.
                for child in list(disk):
                    if child.tag in ("alias", "backingStore"):
                        disk.remove(child)
                source = disk.find("source")
                if source is not None:
                    source.attrib.pop("index", None)
                return ET.tostring(disk, encoding="unicode")
        raise HarnessError(f"domain {name} has no disk with serial {serial}")

    @_reconnecting
    def has_disk(self, name: str, serial: str) -> bool:
        return any(d.findtext("serial") == serial for d in ET.fromstring(self.domain_xml(name)).findall("./devices/disk"))

    @_reconnecting
    def attach_device(self, name: str, xml: str) -> None:
        self._call(f"attach a device to {name}", lambda: self._domain(name).attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE))

    @_reconnecting
    def save_domain(self, name: str, path: str) -> None:
        """Write the domain's memory and device state to PATH; the domain stops."""
        self._call(f"save {name} to {path}", lambda: self._domain(name).save(path))

    @_reconnecting
    def saved_domain_xml(self, path: str) -> str:
        return self._call(f"read saved state {path}", self._conn.saveImageGetXMLDesc, path, libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE)

    def restore_domain(
        self, path: str, disks: dict[str, str] | None = None, paused: bool = False, owner: dict[str, str] | None = None
    ) -> None:
        """Start a domain from saved state; DISKS (serial -> file) points its disks at other, equivalent files,
        OWNER replaces the owner recorded in its kvmlab metadata (a saved lab restored by another process)."""
        xml = None
        if disks or owner:
            root = ET.fromstring(self.saved_domain_xml(path))
            tag = f"{{{NAMESPACE}}}run"
            for meta in root.iter(tag):
                meta.attrib.update(owner or {})
            disks = disks or {}
            for disk in root.findall("./devices/disk"):
                serial, source = disk.findtext("serial"), disk.find("source")
                if serial in disks and source is not None:
                    source.set("file", disks[serial])
                    for child in disk.findall("backingStore"):
                        disk.remove(child)  # the new file names its own backing chain
            xml = ET.tostring(root, encoding="unicode")
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0
        self._call(f"restore from {path}", self._conn.restoreFlags, path, xml, flags)

    @_reconnecting
    def domain_xml(self, name: str) -> str:
        return self._call(f"dump XML of {name}", lambda: self._conn.lookupByName(name).XMLDesc(0))

    @_reconnecting
    def console_log_path(self, name: str) -> str | None:
        root = ET.fromstring(self.domain_xml(name))
        log = root.find("./devices/serial/log")
        return log.get("file") if log is not None else None

    @_reconnecting
    def mark_domain_kept(self, name: str) -> None:
        """Add kept='1' to the domain's kvmlab metadata (live: kvmlab's domains are transient)."""
        try:
            dom = self._conn.lookupByName(name)
            element = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0))
            element.set("kept", "1")
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                ET.tostring(element, encoding="unicode"),
                "kvmlab",
                NAMESPACE,
                libvirt.VIR_DOMAIN_AFFECT_LIVE,
            )
        except libvirt.libvirtError as exc:
            _unless_gone(exc, libvirt.VIR_ERR_NO_DOMAIN, f"mark domain {name} kept")

    @_reconnecting
    def list_domains(self) -> list[DomainInfo]:
        out = []
        for dom in self._conn.listAllDomains(0):
            name = dom.name()
            if not name.startswith("kvmlab-"):
                continue
            meta = {}
            try:
                raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
                meta = ET.fromstring(raw).attrib
            except libvirt.libvirtError:
                pass
            try:
                state, _ = dom.state(0)
            except libvirt.libvirtError as exc:
                # A transient domain torn down between the listing and this call is simply gone.
                _unless_gone(exc, libvirt.VIR_ERR_NO_DOMAIN, f"read the state of domain {name}")
                continue
            pid = meta.get("pid")
            out.append(
                DomainInfo(
                    name=name,
                    state=_STATES.get(state, "unknown"),
                    run_id=meta.get("run"),
                    lab=meta.get("lab"),
                    node=meta.get("node"),
                    owner_pid=int(pid) if pid and pid.isdigit() else None,
                    owner_user=meta.get("user"),
                    owner_host=meta.get("host"),
                    owner_boot=meta.get("boot"),
                    kept=meta.get("kept") == "1",
                )
            )
        return out


class LibvirtConsole:
    """A domain's console stream on a connection of its own, so that a blocking read in one thread
    never holds up the provider's other calls. FORCE takes the console over from an earlier holder
    (a `virsh console` left open); sharing it between viewers is the caller's job."""

    def __init__(self, uri: str, name: str) -> None:
        try:
            self._conn = open_connection(uri)
            self._stream = self._conn.newStream(0)
            self._conn.lookupByName(name).openConsole(None, self._stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        except TimeoutError as exc:
            raise HarnessError(f"libvirt: open the console of {name}: {exc}") from exc
        except libvirt.libvirtError as exc:
            raise HarnessError(f"libvirt: open the console of {name}: {exc.get_error_message()}") from exc
        self._closed = False

    def read(self) -> bytes:
        try:
            data = self._stream.recv(4096)
        except libvirt.libvirtError:
            return b""
        return data if isinstance(data, bytes) else b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = self._stream.send(bytes(view))
            view = view[max(sent, 0) :]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
