"""Checks of the hypervisor role: its pools and images (book 5.2, 5.3, 5.8), on every hypervisor of a lab.

The check_* helpers take a testinfra host; the Checks at the bottom run them on
each node with the role and take pool names from the lab's model.
"""

from __future__ import annotations

import json
import re
import traceback
import uuid
from pathlib import Path
from typing import Any

from kvmlab.model import Lab
from kvmlab.roles import Check
from kvmlab.roles.hypervisor.guest_disks import check_declared_guest_disks

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


def _sections(output: str) -> list[str]:
    """The parts of a script's output between `echo ===` lines."""
    return [part.strip() for part in re.split(r"^===$", output, flags=re.M)]


# Each check runs one script per hypervisor: under TCG every SSH command and every virsh start
# costs a second or more, and a script's exit status and output still say what failed.


def check_default_pool_is_active_and_autostarted(hv: Any) -> None:
    info, xml = _sections(hv.run_expect("virsh pool-info default && echo === && virsh pool-dumpxml default", "pool default"))
    assert info_field(info, "State") == "running", f"pool default is {info_field(info, 'State')}, not running"
    assert info_field(info, "Autostart") == "yes", "pool default is not autostarted"
    assert "<path>/var/lib/libvirt/images</path>" in xml, f"pool default is not /var/lib/libvirt/images:\n{xml}"


def check_thin_raw_is_sparse_and_preallocated_is_not(hv: Any) -> None:
    thin, full = f"/var/lib/libvirt/images/thin-{_uid()}.img", f"/var/lib/libvirt/images/full-{_uid()}.img"
    out = hv.run_expect(
        f"trap 'rm -f {thin} {full}' EXIT; "
        f"dd if=/dev/zero of={thin} bs=1M seek=1024 count=0 status=none && "
        f"dd if=/dev/zero of={full} bs=1M count=32 conv=fsync status=none && "
        f"qemu-img info --output=json {thin} && echo === && qemu-img info --output=json {full}",
        "a thin 1 GiB image and a written 32 MiB one",
    )
    thin_info, full_info = (json.loads(part) for part in _sections(out))
    assert thin_info["virtual-size"] == 1024 * 2**20, f"thin image: {thin_info}"
    assert thin_info["actual-size"] < 2**20, f"thin image has {thin_info['actual-size']} bytes allocated, want only metadata"
    assert full_info["virtual-size"] == 32 * 2**20, f"written image: {full_info}"
    assert full_info["actual-size"] >= full_info["virtual-size"], f"written image has only {full_info['actual-size']} bytes allocated"


def check_iso_library_is_root_only_and_lists_copied_isos(hv: Any) -> None:
    owner, info = _sections(hv.run_expect(f"stat -c '%U %G %a' {ISO_DIR} && echo === && virsh pool-info iso_library", "the ISO library"))
    assert owner == "root root 700", f"{ISO_DIR} has owner, group and mode '{owner}', want 'root root 700'"
    assert info_field(info, "State") == "running", f"pool iso_library is {info_field(info, 'State')}, not running"
    iso = f"install-{_uid()}.iso"
    before, after = _sections(
        hv.run_expect(
            f"trap 'rm -f {ISO_DIR}/{iso}; virsh -q pool-refresh iso_library >/dev/null 2>&1' EXIT; "
            f"dd if=/dev/urandom of={ISO_DIR}/{iso} bs=1M count=2 status=none && virsh -q vol-list iso_library && echo === && "
            "virsh -q pool-refresh iso_library && virsh -q vol-list iso_library",
            f"copy {iso} in, list the pool before and after a refresh",
        )
    )
    assert iso not in before, f"pool iso_library lists {iso} before it is refreshed"
    assert iso in after, f"pool iso_library does not list {iso} after a refresh:\n{after}"


def check_pool_removal_leaves_files_in_place(hv: Any) -> None:
    name = f"scratch{_uid()}"
    path = f"/var/lib/libvirt/{name}"
    pools, kept = _sections(
        hv.run_expect(
            f"trap 'set +e; {{ virsh -q pool-destroy {name}; virsh -q pool-undefine {name}; rm -rf {path}; }} >/dev/null 2>&1' EXIT; "
            "set -e; "
            f"virsh -q pool-define-as {name} dir --target {path}; virsh -q pool-build {name}; virsh -q pool-start {name}; "
            f"virsh -q vol-create-as {name} keep.qcow2 16M --format qcow2; "
            f"virsh -q pool-destroy {name}; virsh -q pool-undefine {name}; "
            f"virsh pool-list --all --name; echo ===; ls {path}",
            f"a dir pool {name} with a volume, destroyed and undefined",
        )
    )
    assert name not in pools.split(), f"pool {name} is still listed after pool-undefine"
    assert "keep.qcow2" in kept.split(), f"{path}/keep.qcow2 is gone after the pool was undefined (left: {kept or 'nothing'})"


def check_volume_lifecycle(hv: Any, pool: str, fmt: str) -> None:
    """vol-create-as, vol-info, vol-delete: the volume has the asked capacity and format, then is gone."""
    name = f"vol-{_uid()}.{fmt}"
    out = hv.run_expect(
        f"virsh -q vol-create-as {pool} {name} 48M --format {fmt} || exit; "
        f"trap 'virsh -q vol-delete --pool {pool} {name} >/dev/null 2>&1' EXIT; "
        f"virsh vol-info --bytes --pool {pool} {name} && echo === && "
        f"path=$(virsh vol-path --pool {pool} {name}) && echo $path && echo === && "
        f"{{ case $path in /dev/*) echo '{{}}';; *) qemu-img info --output=json $path;; esac; }} && echo === && "
        f"virsh -q vol-delete --pool {pool} {name} && virsh -q vol-list {pool}",
        f"create, inspect and delete a {fmt} volume in pool {pool}",
    )
    info, path, image, listed = _sections(out)
    capacity = info_field(info, "Capacity")
    assert capacity == f"{48 * 2**20} bytes", f"volume {name} has capacity {capacity}, want 48 MiB"
    if not path.startswith("/dev/"):
        assert json.loads(image)["format"] == fmt, f"{path} is {json.loads(image)['format']}, not {fmt}"
    assert name not in listed, f"volume {name} is still listed in pool {pool} after vol-delete"


def _each(fn):
    """Run FN(node) on every hypervisor; a failure says which one."""

    def run(lab: Any) -> None:
        for hv in lab.by_role(ROLE):
            try:
                fn(hv)
            except AssertionError as exc:
                said = str(exc) or _failed_line(exc)
                raise AssertionError(said if said.startswith(f"{hv.name}:") else f"{hv.name}: {said}") from exc

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


# How the kernel shows an NFS mount option it took under another name (nfs(5)).
MOUNT_ALIASES = {"nfsvers": "vers", "v3": "vers=3", "v4": "vers=4", "v4.0": "vers=4.0", "v4.1": "vers=4.1", "v4.2": "vers=4.2"}


def mount_options_not_in_effect(wanted: tuple[str, ...], in_effect: list[str]) -> list[str]:
    """The options of WANTED the kernel does not show for the mount (its /proc/mounts options):
    `nfsvers=3` is shown as vers=3, `vers=4` as the minor version the server agreed (vers=4.2)."""
    shown = set(in_effect)
    missing = []
    for option in wanted:
        key, eq, value = option.partition("=")
        option = MOUNT_ALIASES.get(option, f"{MOUNT_ALIASES.get(key, key)}{eq}{value}")
        if option == "vers=4":
            if not any(o.startswith("vers=4") for o in shown):
                missing.append(option)
        elif option not in shown:
            missing.append(option)
    return missing


def netfs_mount_options_in_effect(lab: Any) -> dict[str, str]:
    """Each netfs pool's mount_options are in effect on its mount, as the kernel shows them
    (what `nfsstat -m` prints): the NFS version served, hard/soft, timeouts, sizes."""
    values: dict[str, str] = {}
    for hv in lab.by_role(ROLE):
        for pool in lab.lab.hypervisor.netfs_pools:
            if not pool.mount_options:
                continue
            mount = hv.host.mount_point(pool.target)
            assert mount.exists, f"{hv.name}: nothing is mounted at {pool.target}"
            missing = mount_options_not_in_effect(pool.mount_options, list(mount.options))
            assert not missing, (
                f"{hv.name}: pool {pool.name}'s mount at {pool.target} lacks {', '.join(missing)} of its mount_options "
                f"(in effect: {','.join(mount.options)})"
            )
            values[f"{hv.name}:{pool.name}"] = ",".join(mount.options)
    return values  # for a baseline: the options the kernel mounted with


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
                    check_volume_lifecycle(hv, pool, fmt)
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
    Check(ROLE, "guest-disk-options", check_declared_guest_disks, applies=lambda lab: any(g.disk for g in lab.hypervisor.guests)),
    Check(
        ROLE,
        "netfs-mount-options",
        netfs_mount_options_in_effect,
        applies=lambda lab: any(p.mount_options for p in lab.hypervisor.netfs_pools),
    ),
)
