"""Clones of a generic node: which nodes share one, what the generic and each clone's XML are,
and the save image header a clone is restored through."""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvmlab import clones
from kvmlab.errors import HarnessError

from .test_render import render_smoke


def _node_xml(node: str) -> str:
    return render_smoke()[f"domains/{node}.xml"]


def test_nodes_of_one_shape_share_a_generic_and_other_shapes_do_not():
    nfs, hv = _node_xml("nfs1"), _node_xml("hv1")  # smoke: nfs1 512 MiB, hv1 768 MiB
    renamed = nfs.replace("kvmlab-smoke-0a1b2c-nfs1", "kvmlab-other-ffffff-x")
    assert clones.generic_key("d1", "tcg", nfs) == clones.generic_key("d1", "tcg", renamed)
    assert clones.generic_key("d1", "tcg", nfs) != clones.generic_key("d1", "tcg", hv)
    assert clones.generic_key("d1", "tcg", nfs) != clones.generic_key("d2", "tcg", nfs)
    assert clones.generic_key("d1", "tcg", nfs) != clones.generic_key("d1", "kvm", nfs)
    more_memory = nfs.replace("<memory unit='MiB'>512</memory>", "<memory unit='MiB'>640</memory>")
    assert more_memory != nfs
    assert clones.generic_key("d1", "tcg", more_memory) != clones.generic_key("d1", "tcg", nfs)


def test_generic_xml_has_no_nics_data_or_seed_disks_and_waits_for_a_seed():
    xml = clones.generic_domain_xml(_node_xml("hv1"), "kvmlab-generic-abc123-k1", "/pool/generic-k1.qcow2", "/c/g.log", {"pid": "7"})
    root = ET.fromstring(xml)
    assert root.findtext("name") == "kvmlab-generic-abc123-k1"
    assert root.find("uuid") is None
    assert root.findall("./devices/interface") == []
    disks = root.findall("./devices/disk")
    assert [d.findtext("serial") for d in disks] == ["root"]
    assert disks[0].find("source").get("file") == "/pool/generic-k1.qcow2"
    assert root.findtext("./os/cmdline").endswith(" kvmlab.generic")
    meta = root.find(f"./metadata/{{{clones.NAMESPACE}}}run")
    assert (meta.get("lab"), meta.get("run"), meta.get("node"), meta.get("pid")) == ("generic", "abc123", "k1", "7")
    assert {log.get("file") for log in root.iter("log")} == {"/c/g.log"}


def _saved_generic_xml(node_xml: str) -> str:
    """What libvirt writes into a generic node's save image: its XML plus a UUID, runtime addresses and a backing chain."""
    root = ET.fromstring(clones.generic_domain_xml(node_xml, "kvmlab-generic-abc123-k1", "/pool/generic-k1.qcow2", "/c/g.log", {}))
    ET.SubElement(root, "uuid").text = "00000000-0000-0000-0000-000000000001"
    disk = root.find("./devices/disk")
    ET.SubElement(disk, "backingStore", type="file")
    return ET.tostring(root, encoding="unicode")


def test_clone_xml_is_the_saved_generic_under_the_nodes_name_uuid_disk_and_log():
    node_xml = _node_xml("nfs1")
    saved = _saved_generic_xml(node_xml)
    one, two = clones.clone_domain_xml(saved, node_xml), clones.clone_domain_xml(saved, node_xml)
    root = ET.fromstring(one)
    node = ET.fromstring(node_xml)
    assert root.findtext("name") == node.findtext("name")
    assert root.findtext("uuid") not in ("00000000-0000-0000-0000-000000000001", ET.fromstring(two).findtext("uuid"))
    assert root.findtext("title") == node.findtext("title")
    meta = root.find(f"./metadata/{{{clones.NAMESPACE}}}run")
    assert meta.get("node") == "nfs1" and meta.get("lab") == "smoke"
    (disk,) = root.findall("./devices/disk")
    node_root = next(d for d in node.findall("./devices/disk") if d.findtext("serial") == "root")
    assert disk.find("source").get("file") == node_root.find("source").get("file")
    assert disk.find("backingStore") is None
    assert {log.get("file") for log in root.iter("log")} == {log.get("file") for log in node.iter("log")}
    assert root.findall("./devices/interface") == []  # plugged in after the restore


def test_hotplug_order_is_nics_then_data_disks_then_the_seed():
    devices = [ET.fromstring(x) for x in clones.hotplug_devices(_node_xml("hv1"))]
    kinds = [(d.tag, d.findtext("serial")) for d in devices]
    assert kinds[-1] == ("disk", "cidata")
    assert ("disk", "root") not in kinds
    first_disk = next(i for i, k in enumerate(kinds) if k[0] == "disk")
    assert all(tag == "interface" for tag, _ in kinds[:first_disk]) and first_disk >= 1


def test_hotplug_needs_a_seed_disk():
    xml = _node_xml("nfs1")
    root = ET.fromstring(xml)
    devices = root.find("devices")
    for disk in devices.findall("disk"):
        if disk.findtext("serial") == "cidata":
            devices.remove(disk)
    with pytest.raises(HarnessError, match="seed disk"):
        clones.hotplug_devices(ET.tostring(root, encoding="unicode"))


def _write_save_image(path: Path, xml: str, cookie: bytes, stream: bytes, pad: int = 300) -> None:
    xml_part = xml.encode() + b"\0"
    data = xml_part + cookie + b"\0" + b"\0" * pad
    fields = [2, len(data), 1, 0, len(xml_part)] + [0] * 14
    path.write_bytes(clones.SAVE_MAGIC + struct.pack("<19I", *fields) + data + stream)


def test_save_header_is_read_and_rewritten_around_the_same_stream(tmp_path):
    src = tmp_path / "generic.save"
    stream = b"QEVM" + bytes(range(256)) * 10
    _write_save_image(src, "<domain><name>g</name></domain>", b"<cookie/>", stream)
    header = clones.read_save_header(src)
    assert header.xml == "<domain><name>g</name></domain>" and header.cookie == b"<cookie/>"
    assert src.read_bytes()[header.stream_offset :] == stream

    clone = tmp_path / "clone.save"
    clone.write_bytes(clones.header_bytes(header, "<domain><name>a-much-longer-name</name></domain>") + stream)
    again = clones.read_save_header(clone)
    assert again.xml == "<domain><name>a-much-longer-name</name></domain>"
    assert again.cookie == b"<cookie/>"
    assert again.fields[0] == 2 and again.fields[2] == 1  # version and was-running kept
    assert clone.read_bytes()[again.stream_offset :] == stream


def test_a_file_that_is_no_save_image_is_refused(tmp_path):
    bad = tmp_path / "x.save"
    bad.write_bytes(b"not a save image at all" * 10)
    with pytest.raises(HarnessError, match="not a libvirt QEMU save image"):
        clones.read_save_header(bad)


class _Pool:
    """A pool of volumes (name -> the file it is an overlay of) that records deletions."""

    def __init__(self, backings: dict[str, str | None]) -> None:
        self.backings = dict(backings)
        self.deleted: list[str] = []

    def volume_backings(self, pool: str) -> dict[str, str | None]:
        return dict(self.backings)

    def has_volume(self, pool: str, name: str) -> bool:
        return name in self.backings

    def delete_volume(self, pool: str, name: str) -> None:
        self.deleted.append(name)
        self.backings.pop(name, None)


def _write_generic(directory: Path, key: str, image: str | None, volume: str | None) -> None:
    meta = {"image": image} | ({"volume": volume} if volume else {})
    (directory / f"{key}.json").write_text("{not json" if image is None else json.dumps(meta))
    (directory / f"{key}.save").write_bytes(b"state")


def test_stale_generic_nodes_are_those_of_other_images_and_their_volumes_stay_for_gc(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_GENERICS_DIR", str(tmp_path))
    for key, image in (("k-old", "img-1"), ("k-new", "img-2"), ("k-broken", None)):
        _write_generic(tmp_path, key, image, f"generic-{key}-aaaaaa.qcow2")

    removed = clones.remove_stale({"img-2"})

    assert removed == ["k-broken", "k-old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k-new.json", "k-new.save"]


def test_a_generic_disk_goes_only_when_no_state_file_names_it_and_no_overlay_sits_on_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_GENERICS_DIR", str(tmp_path))
    monkeypatch.setenv("KVMLAB_POOL_DIR", "/pool")
    _write_generic(tmp_path, "k1", "img", "generic-k1-aaaaaa.qcow2")
    pool = _Pool(
        {
            "base-img.qcow2": None,
            "generic-k1-aaaaaa.qcow2": "/pool/base-img.qcow2",  # named by k1.json
            "generic-k1-bbbbbb.qcow2": "/pool/base-img.qcow2",  # made before k1 was made again; a saved lab sits on it
            "kvmlab-saved-x-n1-root.qcow2": "/pool/generic-k1-bbbbbb.qcow2",
            "generic-k2-cccccc.qcow2": "/pool/base-img.qcow2",  # nothing names it, nothing sits on it
            "generic-k3.qcow2": "/pool/base-img.qcow2",  # the name older versions gave
        }
    )

    assert clones.remove_unused_volumes(pool) == ["generic-k2-cccccc.qcow2", "generic-k3.qcow2"]
    assert pool.deleted == ["generic-k2-cccccc.qcow2", "generic-k3.qcow2"]


def test_a_generic_whose_disk_is_gone_is_made_again_on_a_new_disk_never_under_the_old_name(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_GENERICS_DIR", str(tmp_path))
    node_xml = _node_xml("nfs1")
    key = clones.generic_key("img", "tcg", node_xml)
    _write_generic(tmp_path, key, "img", f"generic-{key}-aaaaaa.qcow2")  # its volume is not in the pool
    pool = _Pool({"base-img.qcow2": None})
    made: list[str] = []

    def make(self, generic, xml, stop):
        made.append(generic.volume)
        pool.backings[generic.volume] = "/pool/base-img.qcow2"
        generic.state.write_bytes(b"new state")

    monkeypatch.setattr(clones.Generics, "_make", make)
    generics = clones.Generics(pool, "img", "tcg", log=lambda line: None)

    first = generics.for_node(node_xml)
    again = generics.for_node(node_xml)

    assert made == [first.volume] and again == first, "made once, then found through its state file"
    assert first.volume.startswith(f"generic-{key}-") and first.volume != f"generic-{key}-aaaaaa.qcow2"
    assert clones.recorded(tmp_path / f"{key}.json") == first
    assert pool.deleted == [], "a volume a state file named is left to gc, which checks that nothing sits on it"
