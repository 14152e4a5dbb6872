"""The libvirt provider: the only module of kvmlab that imports libvirt."""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from kvmlab.errors import HarnessError
from kvmlab.providers.base import DomainInfo

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


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; ours carry the message instead."""


libvirt.registerErrorHandler(_quiet, None)


def _unless_gone(exc: libvirt.libvirtError, gone_code: int, what: str) -> None:
    """Removing an object that vanished meanwhile (its creator died mid-start, a parallel cleanup) is success."""
    if exc.get_error_code() != gone_code:
        raise HarnessError(f"libvirt: {what}: {exc.get_error_message()}") from exc


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


class LibvirtProvider:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        try:
            self._conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HarnessError(
                f"cannot connect to libvirt at {uri}: {exc.get_error_message()}\n"
                "  fix: start the daemons (`virtlogd -d && libvirtd -d`, or `make deps`)"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise HarnessError(f"libvirt: {what}: {exc.get_error_message()}") from exc

    # storage
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

    def has_volume(self, pool: str, name: str) -> bool:
        try:
            self._pool(pool).storageVolLookupByName(name)
            return True
        except libvirt.libvirtError:
            return False

    def list_volumes(self, pool: str) -> list[str]:
        p = self._pool(pool)
        _refresh(p)
        return list(p.listVolumes())

    def upload_volume(self, pool: str, xml: str, source: Path | bytes) -> None:
        """Create the volume XML describes (its capacity SOURCE's size) and fill it with SOURCE."""
        name = _volume_name(xml)
        data_len = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        p = self._pool(pool)
        vol = self._call(f"create volume {name}", p.createXML, xml, 0)
        stream = self._conn.newStream(0)
        try:
            vol.upload(stream, 0, data_len, 0)
            if isinstance(source, bytes):
                for off in range(0, data_len, CHUNK):
                    stream.send(source[off : off + CHUNK])
            else:
                with open(source, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        stream.send(chunk)
            stream.finish()
        except (libvirt.libvirtError, OSError) as exc:
            stream.abort()
            vol.delete(0)
            raise HarnessError(f"libvirt: upload of volume {name} failed: {exc}") from exc

    def create_volume(self, pool: str, xml: str) -> None:
        self._call("create volume", self._pool(pool).createXML, xml, 0)

    def delete_volume(self, pool: str, name: str) -> None:
        try:
            vol = self._pool(pool).storageVolLookupByName(name)
            vol.delete(0)
        except libvirt.libvirtError as exc:
            _unless_gone(exc, libvirt.VIR_ERR_NO_STORAGE_VOL, f"delete volume {name}")

    # networks
    def create_network(self, xml: str) -> None:
        self._call("create network", self._conn.networkCreateXML, xml)

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

    def list_networks(self) -> list[str]:
        return [n.name() for n in self._conn.listAllNetworks(0)]

    def network_bridges(self) -> dict[str, str]:
        return {n.name(): n.bridgeName() for n in self._conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)}

    def network_addresses(self) -> list[str]:
        """The <ip> of every defined network, so leases never overlap networks we did not create."""
        out = []
        for net in self._conn.listAllNetworks(0):
            for ip in ET.fromstring(net.XMLDesc(0)).findall("ip"):
                if ip.get("address"):
                    out.append(f"{ip.get('address')}/{ip.get('prefix') or ip.get('netmask') or 24}")
        return out

    # domains
    def create_domain(self, xml: str) -> None:
        self._call("create domain", self._conn.createXML, xml, 0)

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

    def domain_state(self, name: str) -> str:
        try:
            state, _reason = self._conn.lookupByName(name).state(0)
        except libvirt.libvirtError:
            return "absent"
        return _STATES.get(state, "unknown")

    def _domain(self, name: str):
        return self._call(f"find domain {name}", self._conn.lookupByName, name)

    def domain_definition(self, name: str) -> str:
        """The XML to start the domain again from, without runtime details (pty paths, aliases)."""
        return self._call(f"dump XML of {name}", lambda: self._domain(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def shutdown_domain(self, name: str) -> None:
        self._call(f"shut down {name}", lambda: self._domain(name).shutdown())

    def pause_domain(self, name: str) -> None:
        self._call(f"pause {name}", lambda: self._domain(name).suspend())

    def resume_domain(self, name: str) -> None:
        self._call(f"resume {name}", lambda: self._domain(name).resume())

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

    def has_disk(self, name: str, serial: str) -> bool:
        return any(d.findtext("serial") == serial for d in ET.fromstring(self.domain_xml(name)).findall("./devices/disk"))

    def attach_device(self, name: str, xml: str) -> None:
        self._call(f"attach a device to {name}", lambda: self._domain(name).attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE))

    def save_domain(self, name: str, path: str) -> None:
        """Write the domain's memory and device state to PATH; the domain stops."""
        self._call(f"save {name} to {path}", lambda: self._domain(name).save(path))

    def saved_domain_xml(self, path: str) -> str:
        return self._call(f"read saved state {path}", self._conn.saveImageGetXMLDesc, path, 0)

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

    def domain_xml(self, name: str) -> str:
        return self._call(f"dump XML of {name}", lambda: self._conn.lookupByName(name).XMLDesc(0))

    def console_log_path(self, name: str) -> str | None:
        root = ET.fromstring(self.domain_xml(name))
        log = root.find("./devices/serial/log")
        return log.get("file") if log is not None else None

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
                )
            )
        return out
