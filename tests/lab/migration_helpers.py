"""Inner guests for tests/lab/test_migration.py: define, start, find, read their state, clean up."""

from __future__ import annotations

import json
import os
import shlex
import socket
import struct
import urllib.request
from dataclasses import replace

from kvmlab.errors import HarnessError
from kvmlab.inner_guest import Graphics, InnerGuest, domain_xml, parse_state
from kvmlab.wait import timeout_for, wait_until

POOL = "migrate"
POOL_DIR = "/var/lib/libvirt/images/migrate"
HVS = ("hv1", "hv2")
XML_DIR = "/root/inner"
# Inner guests boot in ~70 s under TCG inside a TCG hypervisor; "boot" is 90 s x 4 under TCG.
BOOT = "boot"


def other(hv: str) -> str:
    return HVS[1] if hv == HVS[0] else HVS[0]


def uri(hv: str) -> str:
    return f"qemu+ssh://{hv}/system"


def run(lab, hv: str, command: str, timeout: float = 600.0):
    return lab.node(hv).run(command, timeout=timeout)


def check(lab, hv: str, command: str, timeout: float = 600.0) -> str:
    result = run(lab, hv, command, timeout)
    assert result.rc == 0, f"{hv}: {command}\nrc={result.rc}\n{result.output}"
    return result.stdout


def domain_type(lab) -> str:
    """kvm when the hypervisors have nested KVM, else qemu (TCG inside TCG); KVMLAB_INNER_VIRT forces one."""
    forced = os.environ.get("KVMLAB_INNER_VIRT", "")
    if forced:
        assert forced in ("kvm", "qemu"), f"KVMLAB_INNER_VIRT must be kvm or qemu, not {forced!r}"
        return forced
    return "kvm" if run(lab, "hv1", "test -c /dev/kvm").rc == 0 else "qemu"


def guest(lab, name: str, index: int, *, disk: bool = True, cache: str = "none", graphics: tuple[Graphics, ...] = ()) -> InnerGuest:
    subnet = str(lab.placement.subnets[lab.lab.hypervisor.guest_bridge])
    path = f"{POOL_DIR}/{name}.qcow2" if disk else ""
    return InnerGuest(name, index, subnet, disk=path, cache=cache, domain_type=domain_type(lab), graphics=graphics)


def with_cache(g: InnerGuest, cache: str) -> InnerGuest:
    return replace(g, cache=cache)


def create_disk(lab, g: InnerGuest, hv: str = "hv1") -> None:
    if g.disk:
        check(lab, hv, f"virsh -q vol-create-as {POOL} {g.name}.qcow2 32M --format qcow2")


def define(lab, hv: str, g: InnerGuest) -> None:
    path = f"{XML_DIR}/{g.name}.xml"
    lab.node(hv).remote.put(path, domain_xml(g))
    check(lab, hv, f"virsh -q define {path}")


def state(lab, hv: str, name: str) -> str:
    """virsh domstate, or 'absent' when HV does not know the domain."""
    result = run(lab, hv, f"virsh -q domstate {name}")
    return result.stdout.strip() if result.rc == 0 else "absent"


def running_on(lab, name: str) -> list[str]:
    return [hv for hv in HVS if state(lab, hv, name) == "running"]


def where(lab, name: str) -> str:
    hosts = running_on(lab, name)
    assert len(hosts) == 1, f"{name} runs on {hosts or 'no hypervisor'}, expected exactly one"
    return hosts[0]


def remove(lab, *names: str) -> None:
    """Destroy and undefine NAMES on both hypervisors and delete their disks; quiet when absent."""
    for hv in HVS:
        gone = "; ".join(f"virsh -q destroy {n} >/dev/null 2>&1; virsh -q undefine {n} >/dev/null 2>&1" for n in names)
        run(lab, hv, f"{gone}; true")
    files = " ".join(f"{POOL_DIR}/{n}*" for n in names)
    run(lab, "hv1", f"rm -f {files}; virsh -q pool-refresh {POOL}")
    run(lab, "hv2", f"virsh -q pool-refresh {POOL}")


def read_state(g: InnerGuest, timeout: float = 5.0) -> dict[str, str]:
    """The guest's own report (its CGI over HTTP), read from this host's address on the guest network."""
    try:
        with urllib.request.urlopen(f"http://{g.address}/cgi-bin/state", timeout=timeout) as response:
            return parse_state(response.read().decode())
    except OSError as exc:
        raise HarnessError(f"{g.name} ({g.address}) does not answer: {exc}") from exc


def state_after_migration(lab, g: InnerGuest) -> dict[str, str]:
    """The guest's report once it answers again: under TCG its first answer after resuming can take seconds."""
    return wait_until(lambda: read_state(g), timeout_for("service", lab.accel), f"{g.name} to answer after migrating", interval=1.0)


def wait_booted(lab, g: InnerGuest) -> dict[str, str]:
    """Until the guest's counter runs; its console tail goes into the error otherwise."""
    return wait_until(
        lambda: (s := read_state(g)).get("counter_alive") == "yes" and s,
        timeout_for(BOOT, lab.accel),
        f"inner guest {g.name} to boot and answer on {g.address}",
        interval=2.0,
        failed=lambda: None if running_on(lab, g.name) else f"{g.name} runs on no hypervisor",
    )


def info(text: str) -> dict[str, str]:
    """'Key: value' lines of virsh domjobinfo and friends."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def dumpxml(lab, hv: str, name: str, inactive: bool = False) -> str:
    return check(lab, hv, f"virsh dumpxml {'--inactive ' if inactive else ''}{name}")


def qemu_img_info(lab, hv: str, path: str) -> dict:
    return json.loads(check(lab, hv, f"qemu-img info --output=json {shlex.quote(path)}"))


def rfb_security_types(address: str, port: int, timeout: float = 10.0) -> tuple[bytes, list[int]]:
    """Version and security types a VNC server offers (RFB 3.8 handshake, nothing more)."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        version = _recv(sock, 12)
        sock.sendall(b"RFB 003.008\n")
        count = _recv(sock, 1)[0]
        if count == 0:  # the server refuses and says why
            (length,) = struct.unpack(">I", _recv(sock, 4))
            raise AssertionError(f"VNC server refused: {_recv(sock, length)!r}")
        return version, list(_recv(sock, count))


def spice_link_reply(address: str, port: int, timeout: float = 10.0) -> bytes:
    """The first bytes of a SPICE server's answer to a link request for the main channel."""
    mess = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)  # connection id, main channel, id 0, no caps, caps offset
    header = b"REDQ" + struct.pack("<III", 2, 2, len(mess))
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(header + mess)
        return _recv(sock, 16)


def _recv(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data
