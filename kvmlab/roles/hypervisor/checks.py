"""Checks of the hypervisor role: its pools and images (book 5.2, 5.3, 5.8), on every hypervisor of a lab.

The check_* helpers take a testinfra host; the Checks at the bottom run them on
each node with the role and take pool names from the lab's model.
"""

from __future__ import annotations

import json
import traceback
import uuid
from pathlib import Path
from typing import Any

from kvmlab.model import Lab
from kvmlab.roles import Check

ROLE = "hypervisor"

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


def _each(fn):
    """Run FN(host) on every hypervisor; a failure says which one."""

    def run(lab: Any) -> None:
        for hv in lab.by_role(ROLE):
            try:
                fn(hv.host)
            except AssertionError as exc:
                raise AssertionError(f"{hv.name}: {str(exc) or _failed_line(exc)}") from exc

    return run


def _failed_line(exc: AssertionError) -> str:
    """A bare assert says nothing: its line says what was expected."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"assertion failed at {Path(frame.filename).name}:{frame.lineno}: {frame.line}"


def assert_pool_running(node: Any, pool: str) -> None:
    """POOL is defined on NODE, running and autostarted; a failure names the node and what virsh said."""
    res = node.run(f"virsh pool-info {pool}")
    assert res.rc == 0, f"{node.name}: pool {pool} is not defined: {res.output}"
    state, autostart = info_field(res.stdout, "State"), info_field(res.stdout, "Autostart")
    assert state == "running", f"{node.name}: pool {pool} is {state}, not running"
    assert autostart == "yes", f"{node.name}: pool {pool} has autostart {autostart}"


def has_hypervisor(lab: Lab) -> bool:
    return bool(lab.by_role(ROLE))


def netfs_pools_are_active_and_mounted(lab: Any) -> None:
    """Each netfs pool of the lab file is running, autostarted and mounted from its server's export."""
    for hv in lab.by_role(ROLE):
        for pool in lab.lab.hypervisor.netfs_pools:
            assert_pool_running(hv, pool.name)
            mount = hv.host.mount_point(pool.target)
            source = f"{pool.server}-{pool.network}:{pool.path}"
            assert mount.exists, f"{hv.name}: nothing is mounted at {pool.target}"
            assert mount.filesystem in ("nfs", "nfs4"), f"{hv.name}: {pool.target} is {mount.filesystem}, not NFS"
            assert mount.device == source, f"{hv.name}: {pool.target} is mounted from {mount.device}, not {source}"


def netfs_volumes_land_on_the_export(lab: Any) -> None:
    """A volume created in each netfs pool appears in the server's exported directory, owned as the export says."""
    for hv in lab.by_role(ROLE):
        for pool in lab.lab.hypervisor.netfs_pools:
            server = lab.node(pool.server)
            options = next((e.options for e in lab.lab.nfs_server.exports if e.path == pool.path), ())
            name = f"probe-{_uid()}.qcow2"
            hv.run_expect(f"virsh vol-create-as {pool.name} {name} 64M --format qcow2", f"create a volume in pool {pool.name}")
            try:
                on_server = server.host.file(f"{pool.path}/{name}")
                assert on_server.exists, f"{server.name}: {pool.path}/{name}, created by {hv.name} in pool {pool.name}, is not there"
                if "no_root_squash" in options:  # root on the hypervisor stays root on the server
                    assert on_server.uid == 0, f"{server.name}: {pool.path}/{name} belongs to uid {on_server.uid}, not root"
                info = json.loads(server.run_expect(f"qemu-img info --output=json {pool.path}/{name}"))
                assert (info["format"], info["virtual-size"]) == ("qcow2", 64 * 2**20), f"{server.name}: {name} is {info}"
            finally:
                hv.run(f"virsh vol-delete --pool {pool.name} {name}")
            assert not server.host.file(f"{pool.path}/{name}").exists, f"{server.name}: {name} is still there after vol-delete"


def _volume_lifecycle(lab: Any) -> None:
    """vol-create-as/info/delete in raw and qcow2 in the default pool (netfs-volumes-on-export covers the netfs pools)."""
    pools = ["default"]
    for hv in lab.by_role(ROLE):
        for pool in pools:
            for fmt in ("raw", "qcow2"):
                try:
                    check_volume_lifecycle(hv.host, pool, fmt)
                except AssertionError as exc:
                    raise AssertionError(f"{hv.name}: pool {pool}, {fmt}: {exc}") from exc


def _has_netfs(lab: Lab) -> bool:
    return bool(lab.hypervisor.netfs_pools)


CHECKS = (
    Check(ROLE, "default-pool", _each(check_default_pool_is_active_and_autostarted)),
    Check(ROLE, "thin-and-preallocated-images", _each(check_thin_raw_is_sparse_and_preallocated_is_not)),
    Check(ROLE, "iso-library", _each(check_iso_library_is_root_only_and_lists_copied_isos)),
    Check(ROLE, "pool-removal-keeps-files", _each(check_pool_removal_leaves_files_in_place)),
    Check(ROLE, "volume-lifecycle", _volume_lifecycle),
    Check(ROLE, "netfs-pools-active", netfs_pools_are_active_and_mounted, applies=_has_netfs),
    Check(ROLE, "netfs-volumes-on-export", netfs_volumes_land_on_the_export, applies=_has_netfs),
)
