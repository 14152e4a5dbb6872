"""Checks of a hypervisor's pools and images (book 5.2, 5.8), shared by every lab with one."""

from __future__ import annotations

import json
import uuid

ISO_DIR = "/var/lib/libvirt/isos"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def info_field(virsh_info: str, name: str) -> str:
    """A 'Name: value' field of virsh's *-info output."""
    for line in virsh_info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    raise AssertionError(f"no '{name}' in:\n{virsh_info}")


def pool_field(host, pool: str, name: str) -> str:
    return info_field(host.check_output(f"virsh pool-info {pool}"), name)


def check_default_pool_is_active_and_autostarted(host) -> None:
    assert pool_field(host, "default", "State") == "running"
    assert pool_field(host, "default", "Autostart") == "yes"
    assert "<path>/var/lib/libvirt/images</path>" in host.check_output("virsh pool-dumpxml default")


def check_thin_raw_is_sparse_and_preallocated_is_not(host) -> None:
    thin, full = f"/var/lib/libvirt/images/thin-{_uid()}.img", f"/var/lib/libvirt/images/full-{_uid()}.img"
    try:
        host.run_expect([0], f"dd if=/dev/zero of={thin} bs=1M seek=1024 count=0 status=none")
        host.run_expect([0], f"dd if=/dev/zero of={full} bs=1M count=256 conv=fsync status=none")
        thin_info = json.loads(host.check_output(f"qemu-img info --output=json {thin}"))
        full_info = json.loads(host.check_output(f"qemu-img info --output=json {full}"))
        assert thin_info["virtual-size"] == 1024 * 2**20
        assert thin_info["actual-size"] < 2**20  # nothing allocated but metadata
        assert full_info["virtual-size"] == 256 * 2**20
        assert full_info["actual-size"] >= full_info["virtual-size"]
    finally:
        host.run(f"rm -f {thin} {full}")


def check_iso_library_is_root_only_and_lists_copied_isos(host) -> None:
    directory = host.file(ISO_DIR)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o700)
    assert pool_field(host, "iso_library", "State") == "running"
    iso = f"install-{_uid()}.iso"
    host.run_expect([0], f"dd if=/dev/urandom of={ISO_DIR}/{iso} bs=1M count=2 status=none")
    try:
        assert iso not in host.check_output("virsh vol-list iso_library")  # not until the pool is refreshed
        host.run_expect([0], "virsh pool-refresh iso_library")
        assert iso in host.check_output("virsh vol-list iso_library")
    finally:
        host.run(f"rm -f {ISO_DIR}/{iso}; virsh pool-refresh iso_library")


def check_pool_removal_leaves_files_in_place(host) -> None:
    name = f"scratch{_uid()}"
    path = f"/var/lib/libvirt/{name}"
    host.run_expect([0], f"virsh pool-define-as {name} dir --target {path} && virsh pool-build {name} && virsh pool-start {name}")
    try:
        host.run_expect([0], f"virsh vol-create-as {name} keep.qcow2 16M --format qcow2")
        host.run_expect([0], f"virsh pool-destroy {name}")
        host.run_expect([0], f"virsh pool-undefine {name}")
        assert name not in host.check_output("virsh pool-list --all --name").split()
        assert host.file(f"{path}/keep.qcow2").exists
    finally:
        host.run(f"virsh pool-destroy {name}; virsh pool-undefine {name}; rm -rf {path}")


def check_volume_lifecycle(host, pool: str, fmt: str) -> None:
    """vol-create-as, vol-info, vol-delete: the volume has the asked capacity and format, then is gone."""
    name = f"vol-{_uid()}.{fmt}"
    host.run_expect([0], f"virsh vol-create-as {pool} {name} 48M --format {fmt}")
    try:
        info = host.check_output(f"virsh vol-info --bytes --pool {pool} {name}")
        capacity = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("Capacity"))
        assert capacity == f"{48 * 2**20} bytes"
        path = host.check_output(f"virsh vol-path --pool {pool} {name}")
        if fmt != "raw" or not path.startswith("/dev/"):
            assert json.loads(host.check_output(f"qemu-img info --output=json {path}"))["format"] == fmt
    finally:
        host.run_expect([0], f"virsh vol-delete --pool {pool} {name}")
    assert name not in host.check_output(f"virsh vol-list {pool}")
