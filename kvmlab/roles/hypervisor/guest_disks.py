"""Inner guests a lab file declares (`hypervisor: inner_guests: [...]`), with their disk options of book 7.3:
started at bring-up on their hypervisor, and checked by reading the options back from libvirt's domain XML
and from QEMU's own command line (what the running process was given, not what was asked for)."""

from __future__ import annotations

import itertools
import json
import shlex
import xml.etree.ElementTree as ET
from typing import Any

from kvmlab.model import Node
from kvmlab.roles import RoleContext
from kvmlab.roles.hypervisor.settings import DeclaredGuest

GUEST_DIR = "/etc/kvmlab/guests"
DISK_DIR = "/var/lib/libvirt/images"  # the hypervisor's own file system: discard punches holes there

# What libvirt makes of each cache mode: the -blockdev cache flags, and the device's write cache.
CACHE_FLAGS = {
    "none": ({"direct": True, "no-flush": False}, "on"),
    "writethrough": ({"direct": False, "no-flush": False}, "off"),
    "writeback": ({"direct": False, "no-flush": False}, "on"),
    "directsync": ({"direct": True, "no-flush": False}, "off"),
    "unsafe": ({"direct": False, "no-flush": True}, "on"),
}
DEVICE_DRIVERS = {"virtio": "virtio-blk-pci", "scsi": "scsi-hd", "sata": "ide-hd"}


def disk_path(guest: DeclaredGuest) -> str:
    return f"{DISK_DIR}/{guest.name}.qcow2"


def start_declared_guests(ctx: RoleContext, node: Node) -> None:
    """Define and start the declared guests that run on NODE, each with its own thin qcow2 disk."""
    from kvmlab.inner_guest import InnerGuest, domain_xml

    settings = ctx.lab.hypervisor
    mine = [g for g in settings.guests if g.on == node.name]
    if not mine:
        return
    remote = ctx.remote(node.name)
    # Nested KVM when the hypervisor has it (TCG emulates SVM for cpu mode='maximum'), else TCG inside.
    domain_type = "kvm" if remote.run("test -c /dev/kvm").rc == 0 else "qemu"
    subnet = str(ctx.placement.subnets[settings.guest_bridge])
    for g in mine:
        d = g.disk
        options = {"bus": d.bus, "cache": d.cache, "io": d.io, "discard": d.discard, "detect_zeroes": d.detect_zeroes} if d else {}
        guest = InnerGuest(g.name, g.index, subnet, disk=disk_path(g) if d else "", domain_type=domain_type, **options)
        xml_path = f"{GUEST_DIR}/{g.name}.xml"
        remote.put(xml_path, domain_xml(guest))
        create = f"qemu-img create -q -f qcow2 {shlex.quote(disk_path(g))} {d.size_mib}M && " if d else ""
        remote.check(
            f"{create}virsh -q define {xml_path} && virsh -q start {shlex.quote(g.name)}", f"define and start inner guest {g.name}"
        )


def json_args(args: list[str], option: str) -> list[dict[str, Any]]:
    return [json.loads(value) for flag, value in itertools.pairwise(args) if flag == option and value.startswith("{")]


def disk_in_xml(xml: str, path: str) -> dict[str, str]:
    """The disk of PATH in a domain's XML: its driver's options and its target bus and device."""
    root = ET.fromstring(xml)
    disk = next((d for d in root.iter("disk") if (d.find("source") is not None and d.find("source").get("file") == path)), None)
    assert disk is not None, f"the domain has no disk {path}"
    driver, target = disk.find("driver"), disk.find("target")
    seen = {k: driver.get(k, "") if driver is not None else "" for k in ("cache", "io", "discard", "detect_zeroes")}
    return {**seen, "bus": target.get("bus", ""), "dev": target.get("dev", "")}


def disk_in_qemu(args: list[str], path: str) -> dict[str, Any]:
    """What QEMU's command line gives the image of PATH: its file and qcow2 -blockdev nodes and the -device on them."""
    blockdevs = json_args(args, "-blockdev")
    storage = next((b for b in blockdevs if b.get("filename") == path), None)
    assert storage is not None, f"QEMU was given no -blockdev for {path}"
    fmt = next(b for b in blockdevs if b.get("file") == storage["node-name"])
    device = next(d for d in json_args(args, "-device") if d.get("drive") == fmt["node-name"])
    return {"storage": storage, "format": fmt, "device": device}


def disk_problems(guest: DeclaredGuest, xml: dict[str, str], qemu: dict[str, Any]) -> list[str]:
    """How the running guest's disk differs from the lab file's, in the XML and on QEMU's command line."""
    d = guest.disk
    assert d is not None
    problems = []
    wanted = {"cache": d.cache, "io": d.io, "discard": d.discard, "detect_zeroes": d.detect_zeroes, "bus": d.bus}
    for key, value in wanted.items():
        if xml[key] != value:
            problems.append(f"domain XML has {key}='{xml[key]}', the lab file '{value}'")
    storage, fmt, device = qemu["storage"], qemu["format"], qemu["device"]
    cache, write_cache = CACHE_FLAGS[d.cache]
    seen = {
        "cache flags": (storage.get("cache"), cache),
        "device": (device.get("driver"), DEVICE_DRIVERS[d.bus]),
        "write-cache": (device.get("write-cache", "on"), write_cache),
        "aio": (storage.get("aio", "threads"), d.io or "threads"),
        "discard": (fmt.get("discard", "ignore"), d.discard or "ignore"),
        "detect-zeroes": (fmt.get("detect-zeroes", "off"), d.detect_zeroes or "off"),
    }
    problems += [f"QEMU runs it with {key} {got}, the lab file means {want}" for key, (got, want) in seen.items() if got != want]
    return problems


def check_declared_guest_disks(lab: Any) -> dict[str, str]:
    """Each declared guest runs, and its disk has the lab file's options in the domain XML and on QEMU's command
    line. Returns each guest's options as QEMU runs them."""
    guests = [g for g in lab.lab.hypervisor.guests if g.disk]
    values: dict[str, str] = {}
    for hv_name, on_hv in itertools.groupby(sorted(guests, key=lambda g: g.on), key=lambda g: g.on):
        hv = next(h for h in lab.by_role("hypervisor") if h.name == hv_name)
        for g in on_hv:
            name = shlex.quote(g.name)
            out = hv.run_expect(
                f"virsh domstate {name} && echo === && virsh dumpxml {name} && echo === && "
                f"tr '\\0' '\\n' < /proc/$(cat /run/libvirt/qemu/{name}.pid)/cmdline",
                f"inner guest {g.name}",
            )
            state, xml, cmdline = (part.strip() for part in out.split("\n===\n", 2))
            assert state == "running", f"{hv_name}: inner guest {g.name} is {state}, not running"
            qemu = disk_in_qemu(cmdline.splitlines(), disk_path(g))
            problems = disk_problems(g, disk_in_xml(xml, disk_path(g)), qemu)
            assert not problems, f"{hv_name}: inner guest {g.name}: " + "; ".join(problems)
            fmt, storage = qemu["format"], qemu["storage"]
            values[g.name] = (
                f"{qemu['device']['driver']} cache.direct={storage['cache']['direct']} aio={storage.get('aio', 'threads')}"
                f" discard={fmt.get('discard', 'ignore')} detect-zeroes={fmt.get('detect-zeroes', 'off')}"
            )
    return values
