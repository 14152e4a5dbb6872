"""labs/iscsi.yaml: a LIO target with fileio, block and lvm LUNs, ACLs, and a libvirt iscsi pool (OUTLINE 5.4).

Expectations come from the lab's model (lab.lab.iscsi_target), not from numbers copied here.
"""

from __future__ import annotations

import re

import pytest

from kvmlab.roles.iscsi_target.settings import IscsiAcl, IscsiLun
from kvmlab.roles.iscsi_target.files import PORT, initiator_iqn
from kvmlab.roles.iscsi_target.steps import RESTORE_UNIT
from kvmlab.wait import wait_until
from kvmlab.roles.hypervisor.checks import info_field

pytestmark = pytest.mark.lab("iscsi")

MIB = 1024 * 1024
REBOOT_S = 300.0  # a reboot under TCG takes ~40 s; the initiator retries its login every few seconds
# What targetcli calls each backend of the lab file: an LV is exported as a block device.
PLUGIN = {"fileio": "fileio", "block": "block", "lvm": "block"}


def test_target_listens_only_on_its_portal_address(lab):
    target = _target(lab)
    listening = target.host.check_output(f"ss -Hltn 'sport = :{PORT}'")
    addresses = sorted(line.split()[3] for line in listening.splitlines())
    assert addresses == [f"{_portal(lab)}:{PORT}"]


def test_targetcli_shows_each_backstore_with_its_type_and_each_acl_with_its_mapped_luns(lab):
    settings = lab.lab.iscsi_target
    tree = _targetcli_tree(_target(lab).host.check_output("targetcli ls"))
    for plugin in ("fileio", "block"):
        want = sorted(lun.name for lun in settings.luns if PLUGIN[lun.backend] == plugin)
        assert _children(tree, f"/backstores/{plugin}") == want
    for lun in settings.luns:
        assert _lun_size_text(lab, lun) in tree[f"/backstores/{PLUGIN[lun.backend]}/{lun.name}"]
    tpg = f"/iscsi/{settings.iqn}/tpg1"
    assert "no-gen-acls" in tree[tpg]
    assert _children(tree, f"{tpg}/portals") == [f"{_portal(lab)}:{PORT}"]
    assert _children(tree, f"{tpg}/acls") == sorted(initiator_iqn(lab.lab, acl.initiator) for acl in settings.acls)
    for acl in settings.acls:
        acl_path = f"{tpg}/acls/{initiator_iqn(lab.lab, acl.initiator)}"
        mapped = {name: tree[f"{acl_path}/{name}"] for name in _children(tree, acl_path)}
        want = {f"mapped_lun{_index(lab, name)}": f"{PLUGIN[_lun(lab, name).backend]}/{name}" for name in acl.luns}
        assert sorted(mapped) == sorted(want)
        for name, backstore in want.items():
            assert backstore in mapped[name]


def test_each_initiator_logs_in_under_its_own_iqn(lab):
    settings = lab.lab.iscsi_target
    for acl in _hypervisor_acls(lab):
        hv = lab.node(acl.initiator).host
        iqn = initiator_iqn(lab.lab, acl.initiator)
        assert hv.file("/etc/iscsi/initiatorname.iscsi").contains(f"^InitiatorName={re.escape(iqn)}$")
        sessions = hv.check_output("iscsiadm -m session -P 3")
        assert f"Target: {settings.iqn}" in sessions
        assert re.findall(r"Iface Initiatorname: (\S+)", sessions) == [iqn]


def test_allowed_initiator_sees_exactly_its_mapped_luns_with_their_sizes(lab):
    settings = lab.lab.iscsi_target
    for acl in _hypervisor_acls(lab):
        hv = lab.node(acl.initiator).host
        prefix = f"ip-{_portal(lab)}:{PORT}-iscsi-{settings.iqn}-lun-"
        listing = hv.check_output(
            f"udevadm settle; cd /dev/disk/by-path && for link in {prefix}*; do echo ${{link#{prefix}}} $(blockdev --getsize64 $link); done"
        )
        seen = {int(lun): int(size) for lun, size in (line.split() for line in listing.splitlines())}
        assert seen == {_index(lab, name): _lun_bytes(lab, _lun(lab, name)) for name in acl.luns}


def test_iscsi_pool_is_running_autostarted_and_lists_the_mapped_luns(lab):
    settings = lab.lab.iscsi_target
    for acl in _hypervisor_acls(lab):
        hv = lab.node(acl.initiator).host
        info = hv.check_output(f"virsh pool-info {settings.pool}")
        assert info_field(info, "State") == "running"
        assert info_field(info, "Autostart") == "yes"
        volumes = {}
        for line in hv.check_output(f"virsh -q vol-list {settings.pool}").splitlines():
            name, path = line.split()
            capacity = info_field(hv.check_output(f"virsh vol-info --bytes --pool {settings.pool} {name}"), "Capacity")
            assert path.startswith(f"/dev/disk/by-path/ip-{_portal(lab)}:{PORT}-iscsi-{settings.iqn}-lun-")
            volumes[int(name.rsplit(":", 1)[1])] = int(capacity.split()[0])  # libvirt names a LUN unit:BUS:TARGET:LUN
        assert volumes == {_index(lab, name): _lun_bytes(lab, _lun(lab, name)) for name in acl.luns}


def test_initiator_with_another_iqn_is_refused_at_login(lab):
    settings = lab.lab.iscsi_target
    hv = lab.node(_hypervisor_acls(lab)[0].initiator).host
    stranger = initiator_iqn(lab.lab, "stranger")
    assert stranger not in {initiator_iqn(lab.lab, acl.initiator) for acl in settings.acls}
    iface, portal = "kvmlab-stranger", f"{_portal(lab)}:{PORT}"
    node = f"iscsiadm -m node -T {settings.iqn} -p {portal} -I {iface}"
    hv.run_expect(
        [0], f"iscsiadm -m iface -I {iface} -o new && iscsiadm -m iface -I {iface} -o update -n iface.initiatorname -v {stranger}"
    )
    try:
        # Discovery is not access control (LIO may list the target to anyone); login is.
        hv.run(f"iscsiadm -m discovery -t sendtargets -p {portal} -I {iface} -o nonpersistent")
        hv.run_expect([0], f"{node} -o new")
        login = hv.run(f"{node} --login")
        sessions = hv.run("iscsiadm -m session -P 1").stdout
    finally:
        hv.run(f"{node} --logout; {node} -o delete; iscsiadm -m iface -I {iface} -o delete")
    assert login.rc == 24  # ISCSI_ERR_LOGIN_AUTH_FAILED
    assert "authorization failure" in (login.stdout + login.stderr)
    assert f"Iface Name: {iface}" not in sessions


def test_an_acl_shows_its_initiator_only_the_luns_it_maps(lab):
    """A temporary ACL maps one LUN under a number no lab ACL uses; its initiator sees that LUN alone."""
    settings = lab.lab.iscsi_target
    target = _target(lab).host
    hv = lab.node(_hypervisor_acls(lab)[0].initiator).host
    lun = settings.luns[-1]
    mapped = len(settings.luns)  # lab ACLs map LUN N as N, so this number (and its by-path link) is free
    iqn, iface, portal = initiator_iqn(lab.lab, "masked"), "kvmlab-masked", f"{_portal(lab)}:{PORT}"
    acls = f"/iscsi/{settings.iqn}/tpg1/acls"
    node = f"iscsiadm -m node -T {settings.iqn} -p {portal} -I {iface}"
    session = f'for s in /sys/class/iscsi_session/session*; do [ "$(cat $s/initiatorname)" = {iqn} ] && echo $s; done'
    # targetcli reading stdin saves the configuration on exit: the clean-up saves it again without the ACL.
    create = (
        f"{acls} create {iqn} add_mapped_luns=false' '{acls}/{iqn} create mapped_lun={mapped} tpg_lun_or_backstore={_index(lab, lun.name)}"
    )
    target.run_expect([0], f"printf '%s\\n' '{create}' exit | targetcli")
    try:
        hv.run_expect(
            [0],
            f"iscsiadm -m iface -I {iface} -o new && iscsiadm -m iface -I {iface} -o update -n iface.initiatorname -v {iqn}"
            f" && {node} -o new && {node} --login && s=$({session}) && iscsiadm -m session -r ${{s##*session}} --rescan",
        )
        listing = hv.check_output(
            f"s=$({session}); for d in $s/device/target*/*:*:*:*; do echo ${{d##*:}} $(blockdev --getsize64 /dev/$(ls $d/block)); done"
        )
    finally:
        hv.run(f"{node} --logout; {node} -o delete; iscsiadm -m iface -I {iface} -o delete")
        target.run(f"printf '%s\\n' '{acls} delete {iqn}' exit | targetcli")
    seen = {int(n): int(size) for n, size in (line.split() for line in listing.splitlines())}
    assert seen == {mapped: _lun_bytes(lab, lun)}


def test_target_configuration_is_restored_after_the_target_reboots(lab):
    """Last in the file: the target's testinfra host is stale after the reboot, so this uses node.run."""
    target = _target(lab)
    settings = lab.lab.iscsi_target
    before = _targetcli_tree(target.remote.check("targetcli ls", "targetcli ls").stdout)
    boot_id = target.run("cat /proc/sys/kernel/random/boot_id").stdout
    target.remote.check("systemd-run --on-active=1 systemctl reboot", "schedule a reboot")
    wait_until(
        lambda: target.run("cat /proc/sys/kernel/random/boot_id", timeout=30).stdout not in ("", boot_id), REBOOT_S, "the target to reboot"
    )
    wait_until(
        lambda: target.run(f"systemctl is-active {RESTORE_UNIT}", timeout=30).stdout.strip() == "active", REBOOT_S, "targetctl restore"
    )
    after = _targetcli_tree(target.remote.check("targetcli ls", "targetcli ls").stdout)
    assert sorted(after) == sorted(before)
    assert all("deactivated" not in after[f"/backstores/{PLUGIN[lun.backend]}/{lun.name}"] for lun in settings.luns)
    # The initiator's session comes back by itself: a direct read of each mapped LUN succeeds again.
    for acl in _hypervisor_acls(lab):
        hv = lab.node(acl.initiator)
        prefix = f"/dev/disk/by-path/ip-{_portal(lab)}:{PORT}-iscsi-{settings.iqn}-lun-"
        reads = " && ".join(f"dd if={prefix}{_index(lab, n)} of=/dev/null bs=4096 count=1 iflag=direct" for n in acl.luns)
        wait_until(lambda hv=hv, reads=reads: hv.run(reads, timeout=60).rc == 0, REBOOT_S, f"{acl.initiator} to read its LUNs again")


# --- helpers -----------------------------------------------------------------


def _target(lab):
    return lab.by_role("iscsi-target")[0]


def _portal(lab) -> str:
    return _target(lab).address(lab.lab.iscsi_target.network)


def _hypervisor_acls(lab) -> list[IscsiAcl]:
    acls = [acl for acl in lab.lab.iscsi_target.acls if "hypervisor" in lab.lab.node(acl.initiator).roles]
    assert acls, "the lab has no hypervisor with an ACL"
    return acls


def _lun(lab, name: str) -> IscsiLun:
    return next(lun for lun in lab.lab.iscsi_target.luns if lun.name == name)


def _index(lab, name: str) -> int:
    """The LUN number: its place in the lab file, on the target and in every ACL."""
    return [lun.name for lun in lab.lab.iscsi_target.luns].index(name)


def _lun_bytes(lab, lun: IscsiLun) -> int:
    if lun.size_mib is not None:
        return lun.size_mib * MIB
    disk = next(d for d in _target(lab).model.disks if d.name == lun.disk)  # a block LUN is its whole disk
    return disk.size_mib * MIB


def _lun_size_text(lab, lun: IscsiLun) -> str:
    """How targetcli ls prints the size, e.g. (512.0MiB)."""
    mib = _lun_bytes(lab, lun) / MIB
    return f"({mib / 1024:.1f}GiB)" if mib >= 1024 else f"({mib:.1f}MiB)"


def _targetcli_tree(text: str) -> dict[str, str]:
    """`targetcli ls` as {path: the bracketed summary}; depth comes from the column of 'o-'."""
    tree: dict[str, str] = {}
    stack: list[str] = []
    for line in text.splitlines():
        match = re.match(r"^(.*?)o- (\S+) \.*\s*\[(.*)\]\s*$", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        stack[depth:] = [match.group(2)]
        tree["/" + "/".join(stack[1:])] = match.group(3)
    return tree


def _children(tree: dict[str, str], path: str) -> list[str]:
    assert path in tree, f"{path} is not in targetcli ls"
    return sorted(p[len(path) + 1 :] for p in tree if p.startswith(path + "/") and "/" not in p[len(path) + 1 :])
