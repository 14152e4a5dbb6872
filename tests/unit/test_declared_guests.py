"""Inner guests declared in a lab file (`hypervisor: inner_guests: [...]`, book 7.3): what the loader takes
and refuses, and how the check compares the options read back with the lab file's (no VMs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvmlab.errors import LabFileError
from kvmlab.inner_guest import InnerGuest, domain_xml
from kvmlab.loader import load_lab, parse_lab
from kvmlab.roles.hypervisor.guest_disks import disk_in_qemu, disk_in_xml, disk_path, disk_problems
from kvmlab.roles.hypervisor.settings import GuestDisk

ROOT = Path(__file__).resolve().parents[2]
LAB = """\
networks: {mgmt: {}, guests: {}}
nodes:
  hv1: {roles: [hypervisor]}
  hv2: {roles: [hypervisor]}
roles:
  hypervisor:
    guest_bridge: guests
    inner_guests:
      - name: db
        on: hv2
        disk: {size: 128M, bus: scsi, cache: writeback, io: threads, discard: unmap, detect_zeroes: on}
"""


def error_of(text: str) -> tuple[int, int, str]:
    with pytest.raises(LabFileError) as err:
        parse_lab(text, "lab.yaml", "lab")
    return err.value.line, err.value.col, err.value.message


def test_a_declared_guest_with_its_disk_in_libvirts_terms():
    (g,) = parse_lab(LAB, "lab.yaml", "lab").hypervisor.guests
    assert (g.name, g.on, g.index, g.disk) == ("db", "hv2", 60, GuestDisk(128, "scsi", "writeback", "threads", "unmap", "on"))
    lab = load_lab(ROOT / "labs" / "guest-disks.yaml")
    assert lab.hypervisor.inner_guests and [g.on for g in lab.hypervisor.guests] == ["hv1", "hv1"]
    assert parse_lab(LAB.replace("        on: hv2\n", ""), "lab.yaml", "lab").hypervisor.guests[0].on == "hv1"


def test_the_combinations_qemu_refuses_are_refused_at_the_disk_line():
    line, col, message = error_of(LAB.replace("io: threads", "io: native"))
    assert (line, col) == (11, 15) and "io 'native' with cache 'writeback': native AIO needs the image opened with O_DIRECT" in message
    _, _, message = error_of(LAB.replace("discard: unmap", "discard: ignore").replace("detect_zeroes: on", "detect_zeroes: unmap"))
    assert "detect_zeroes 'unmap' with discard 'ignore'" in message


def test_unknown_values_and_missing_bridge_are_refused_with_what_would_be_right():
    assert error_of(LAB.replace("bus: scsi", "bus: ide"))[2] == "bus 'ide' is not a bus mode libvirt knows (virtio, scsi, sata)"
    assert (
        error_of(LAB.replace("on: hv2", "on: hv3"))[2] == "inner guest 'on' 'hv3' is not a hypervisor node (hv1, hv2); did you mean 'hv2'?"
    )
    line, _, message = error_of(LAB.replace("    guest_bridge: guests\n", ""))
    assert (line, message) == (7, "inner guests need a network to run on: set guest_bridge (a network every hypervisor is on)")
    assert "is used twice" in error_of(LAB + "      - name: db\n")[2]


def qemu_args(path: str, cache: dict, aio: str, discard: str, zeroes: str, driver: str, write_cache: str) -> list[str]:
    storage = {"driver": "file", "filename": path, "node-name": "libvirt-1-storage", "cache": cache, "aio": aio, "discard": "unmap"}
    fmt = {"node-name": "libvirt-1-format", "driver": "qcow2", "file": "libvirt-1-storage", "cache": cache, "discard": discard}
    fmt["detect-zeroes"] = zeroes
    device = {"driver": driver, "drive": "libvirt-1-format", "write-cache": write_cache}
    return ["-blockdev", json.dumps(storage), "-blockdev", json.dumps(fmt), "-device", json.dumps(device)]


def test_the_check_finds_nothing_wrong_when_xml_and_qemu_match_and_names_each_difference():
    (g,) = parse_lab(LAB, "lab.yaml", "lab").hypervisor.guests
    d = g.disk
    xml = domain_xml(
        InnerGuest(
            g.name,
            g.index,
            "10.0.0.0/24",
            disk=disk_path(g),
            bus=d.bus,
            cache=d.cache,
            io=d.io,
            discard=d.discard,
            detect_zeroes=d.detect_zeroes,
        )
    )
    seen_xml = disk_in_xml(xml, disk_path(g))
    right = disk_in_qemu(
        qemu_args(disk_path(g), {"direct": False, "no-flush": False}, "threads", "unmap", "on", "scsi-hd", "on"), disk_path(g)
    )
    assert disk_problems(g, seen_xml, right) == []
    wrong = disk_in_qemu(
        qemu_args(disk_path(g), {"direct": True, "no-flush": False}, "threads", "ignore", "on", "scsi-hd", "on"), disk_path(g)
    )
    assert disk_problems(g, {**seen_xml, "discard": "ignore"}, wrong) == [
        "domain XML has discard='ignore', the lab file 'unmap'",
        "QEMU runs it with cache flags {'direct': True, 'no-flush': False}, the lab file means {'direct': False, 'no-flush': False}",
        "QEMU runs it with discard ignore, the lab file means unmap",
    ]
