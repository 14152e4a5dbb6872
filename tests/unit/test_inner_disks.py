"""Inner guests' disk options (OUTLINE 7.3): the XML each one renders and the combinations refused (no VMs)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from kvmlab.inner_guest import CACHE_MODES, InnerGuest, domain_xml
from kvmlab.roles.hypervisor import files as hypervisor
from kvmlab.templating import render_template


def disk_guest(**options: str) -> InnerGuest:
    return InnerGuest("g", 0, "10.0.0.0/24", disk="/p/g.qcow2", **options)


def devices(guest: InnerGuest) -> ET.Element:
    return ET.fromstring(domain_xml(guest)).find("devices")


def driver(guest: InnerGuest) -> dict[str, str]:
    return dict(devices(guest).find("disk/driver").attrib)


def test_defaults_are_a_virtio_disk_with_cache_none_and_libvirts_other_defaults():
    devs = devices(disk_guest())
    assert dict(devs.find("disk/driver").attrib) == {"name": "qemu", "type": "qcow2", "cache": "none"}
    assert dict(devs.find("disk/target").attrib) == {"dev": "vda", "bus": "virtio"}
    assert devs.find("controller") is None
    assert ET.fromstring(domain_xml(disk_guest())).findtext("os/kernel") == hypervisor.INNER_KERNEL


@pytest.mark.parametrize("cache", CACHE_MODES)
def test_each_cache_mode_is_rendered(cache):
    assert driver(disk_guest(cache=cache))["cache"] == cache


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"io": "native"}, {"io": "native"}),
        ({"io": "threads", "cache": "writeback"}, {"io": "threads"}),
        ({"discard": "unmap"}, {"discard": "unmap"}),
        ({"discard": "ignore"}, {"discard": "ignore"}),
        ({"detect_zeroes": "on"}, {"detect_zeroes": "on"}),
        ({"detect_zeroes": "off"}, {"detect_zeroes": "off"}),
        ({"detect_zeroes": "unmap", "discard": "unmap"}, {"detect_zeroes": "unmap", "discard": "unmap"}),
        ({"io": "native", "cache": "directsync"}, {"io": "native", "cache": "directsync"}),
    ],
)
def test_io_discard_and_detect_zeroes_are_rendered_on_the_driver(options, expected):
    attrs = driver(disk_guest(**options))
    assert {k: attrs.get(k) for k in expected} == expected
    assert not {"io", "discard", "detect_zeroes"} - set(options) & set(attrs), "unset options are left to libvirt"


def test_scsi_bus_gets_a_virtio_scsi_controller_and_sda():
    devs = devices(disk_guest(bus="scsi"))
    assert dict(devs.find("disk/target").attrib) == {"dev": "sda", "bus": "scsi"}
    assert dict(devs.find("controller").attrib) == {"type": "scsi", "index": "0", "model": "virtio-scsi"}


def test_sata_bus_is_sda_on_the_machines_ahci_and_boots_the_generic_kernel():
    root = ET.fromstring(domain_xml(disk_guest(bus="sata")))
    assert dict(root.find("devices/disk/target").attrib) == {"dev": "sda", "bus": "sata"}
    assert root.find("devices/controller") is None, "libvirt adds the AHCI controller itself"
    assert root.findtext("os/kernel") == hypervisor.INNER_KERNEL_GENERIC
    assert root.findtext("os/initrd") == hypervisor.INNER_INITRD


def test_guest_without_disk_renders_no_controller_and_the_cloud_kernel():
    root = ET.fromstring(domain_xml(InnerGuest("g", 0, "10.0.0.0/24", bus="sata")))
    assert root.find("devices/disk") is None and root.find("devices/controller") is None
    assert root.findtext("os/kernel") == hypervisor.INNER_KERNEL


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bus": "ide"}, "disk bus 'ide' is not one of 'virtio', 'scsi', 'sata'"),
        ({"cache": "default"}, "cache mode 'default' is not one of 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'"),
        ({"io": "io_uring"}, "io mode 'io_uring' is not one of '' (libvirt's default), 'native', 'threads'"),
        ({"discard": "on"}, "discard mode 'on' is not one of '' (libvirt's default), 'unmap', 'ignore'"),
        ({"detect_zeroes": "yes"}, "detect_zeroes mode 'yes' is not one of '' (libvirt's default), 'on', 'off', 'unmap'"),
    ],
)
def test_unknown_values_are_refused_naming_the_allowed_ones(options, message):
    with pytest.raises(ValueError) as info:
        domain_xml(disk_guest(**options))
    assert message in str(info.value)


@pytest.mark.parametrize("cache", ["writethrough", "writeback", "unsafe"])
def test_native_io_without_o_direct_is_refused(cache):
    with pytest.raises(ValueError) as info:
        domain_xml(disk_guest(io="native", cache=cache))
    assert f"io 'native' with cache '{cache}'" in str(info.value) and "O_DIRECT" in str(info.value)


@pytest.mark.parametrize("discard", ["", "ignore"])
def test_detect_zeroes_unmap_without_discard_unmap_is_refused(discard):
    with pytest.raises(ValueError) as info:
        domain_xml(disk_guest(detect_zeroes="unmap", discard=discard))
    assert f"detect_zeroes 'unmap' with discard {discard!r}" in str(info.value) and "needs discard 'unmap'" in str(info.value)


def test_initramfs_has_each_bus_driver_loaded_only_with_its_controller_and_the_disk_cgi():
    script = hypervisor.inner_build_script()
    assert "virtio_blk" in hypervisor.INNER_MODULES
    assert hypervisor.INNER_BUS_MODULES == {"scsi": ("virtio_scsi", "sd_mod"), "sata": ("ahci", "sd_mod")}
    assert 'module_files "$version" virtio_scsi sd_mod' in script and 'install_modules bus.list "$dir" sata.order' in script
    assert "www/cgi-bin/disk" in script and hypervisor.INNER_KERNEL_GENERIC.rsplit("/", 1)[1] in script
    assert "modules=/lib/modules/$(uname -r)" in script


@pytest.mark.parametrize("template", ["disk.cgi.j2", "state.cgi.j2"])
def test_guest_cgis_are_valid_shell(template):
    text = render_template(f"roles/hypervisor/inner/{template}", {})
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0


def test_disk_cgi_refuses_a_bad_request_without_touching_the_disk():
    text = render_template("roles/hypervisor/inner/disk.cgi.j2", {})
    out = subprocess.run(["sh", "-c", text], env={"QUERY_STRING": "fill=1;reboot", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert "rc 2" in out.stdout and "fill needs a number of MiB" in out.stdout
