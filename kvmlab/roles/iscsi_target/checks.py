"""Checks of the iscsi-target role (book 5.4, 5.5): the target's LIO configuration and what its initiators see.

Expectations come from the lab's model (lab.lab.iscsi_target) and files.py; the
target is found by role, the initiators are the hypervisors the lab file gives an
ACL. A check raises AssertionError naming the node and what it saw.

With one portal network a hypervisor uses the LUNs through a libvirt iscsi pool;
with two (book 5.5) it logs in through both portals, dm-multipath joins the two
paths of each LUN and the pool is an mpath pool. Checks that hold for one layout
only say so with `applies`.
"""

from __future__ import annotations

import re
from typing import Any

from kvmlab import storage_waits as waits
from kvmlab.model import Lab
from kvmlab.redact import redact
from kvmlab.roles import Check
from kvmlab.roles.hypervisor.checks import assert_pool_running, info_field
from kvmlab.roles.iscsi_target.chap_checks import (
    has_chap,
    sessions_authenticated_with_chap,
    target_asks_for_chap,
    wrong_password_is_refused,
)
from kvmlab.roles.iscsi_target.files import PORT, Backstore, backstores, chap_auth_lines, initiator_iqn, multipath, portals
from kvmlab.roles.iscsi_target.refused_login import assert_login_refused
from kvmlab.roles.iscsi_target.settings import IscsiAcl

ROLE = "iscsi-target"
MIB = 1024 * 1024


# -- the model ------------------------------------------------------------------


def hypervisor_acls(lab: Lab) -> list[IscsiAcl]:
    """The ACLs whose initiator is a hypervisor: the nodes the role logs in to the target."""
    return [acl for acl in lab.iscsi_target.acls if "hypervisor" in lab.node(acl.initiator).roles]


def backstore(lab: Lab, name: str) -> Backstore:
    """LUN NAME as LIO has it: its index (the LUN number on the target and in every ACL), plugin and path."""
    return next(s for s in backstores(lab.iscsi_target) if s.name == name)


def lun_bytes(lab: Lab, name: str) -> int:
    """The size of LUN NAME: as the lab file says, or its whole disk for a block LUN."""
    store = backstore(lab, name)
    if store.size_mib is not None:
        return store.size_mib * MIB
    lun = next(lun for lun in lab.iscsi_target.luns if lun.name == name)
    target = lab.by_role(ROLE)[0]
    return next(d.size_mib for d in target.disks if d.name == lun.disk) * MIB


def lun_size_text(lab: Lab, name: str) -> str:
    """How `targetcli ls` prints a backstore's size, e.g. (512.0MiB)."""
    mib = lun_bytes(lab, name) / MIB
    return f"({mib / 1024:.1f}GiB)" if mib >= 1024 else f"({mib:.1f}MiB)"


def mapped_sizes(lab: Lab, acl: IscsiAcl) -> dict[int, int]:
    """LUN number -> bytes, for every LUN the ACL maps (lab ACLs map LUN N as N)."""
    return {backstore(lab, name).index: lun_bytes(lab, name) for name in acl.luns}


def by_path_prefix(lab: Lab, address: str) -> str:
    """The /dev/disk/by-path name of the target's LUNs through the portal at ADDRESS, up to the LUN number."""
    return f"ip-{address}:{PORT}-iscsi-{lab.iscsi_target.iqn}-lun-"


def targetcli_tree(text: str) -> dict[str, str]:
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


def tree_children(tree: dict[str, str], path: str, node: str) -> list[str]:
    assert path in tree, f"{node}: targetcli ls has no {path} (it shows: {', '.join(sorted(tree)) or 'nothing'})"
    return sorted(p[len(path) + 1 :] for p in tree if p.startswith(path + "/") and "/" not in p[len(path) + 1 :])


def _single_portal(lab: Lab) -> bool:
    return bool(hypervisor_acls(lab)) and not multipath(lab.iscsi_target)


def _multipath(lab: Lab) -> bool:
    return bool(hypervisor_acls(lab)) and multipath(lab.iscsi_target)


def _target(lab: Any) -> Any:
    targets = lab.by_role(ROLE)
    assert targets, f"lab {lab.lab.name} has no node with role {ROLE}"
    return targets[0]


def _addresses(lab: Any) -> list[str]:
    """Each portal as address:port."""
    return [f"{a}:{PORT}" for a in portals(lab.lab, lab.placement)]


# -- the target -----------------------------------------------------------------


def portals_are_listening(lab: Any) -> None:
    """The target listens on port 3260 on its portal address on each portal network, and nowhere else."""
    target = _target(lab)
    listening = target.run_expect(f"ss -Hltn 'sport = :{PORT}'", f"sockets listening on port {PORT}")
    seen = sorted(line.split()[3] for line in listening.splitlines() if line.strip())
    want = sorted(_addresses(lab))
    assert seen == want, f"{target.name}: listens on {', '.join(seen) or 'nothing'} for port {PORT}, the lab file wants {', '.join(want)}"


def targetcli_shows_the_configuration(lab: Any) -> None:
    """targetcli ls: each backstore with its type and size, the portals, no generated ACLs, each ACL with its mapped LUNs."""
    settings = lab.lab.iscsi_target
    target = _target(lab)
    tree = targetcli_tree(target.run_expect("targetcli ls"))
    stores = backstores(settings)
    for plugin in ("fileio", "block"):
        want = sorted(s.name for s in stores if s.plugin == plugin)
        seen = tree_children(tree, f"/backstores/{plugin}", target.name)
        assert seen == want, f"{target.name}: targetcli lists {plugin} backstores {seen}, the lab file wants {want}"
    for s in stores:
        summary = tree[f"/backstores/{s.plugin}/{s.name}"]
        size = lun_size_text(lab.lab, s.name)
        assert size in summary, f"{target.name}: backstore {s.plugin}/{s.name} is [{summary}], not of size {size}"
    tpg = f"/iscsi/{settings.iqn}/tpg1"
    assert tpg in tree, f"{target.name}: targetcli ls has no {tpg} (targets: {tree_children(tree, '/iscsi', target.name)})"
    assert "no-gen-acls" in tree[tpg], f"{target.name}: {tpg} is [{tree[tpg]}]: initiators without an ACL may log in"
    seen_portals, want_portals = tree_children(tree, f"{tpg}/portals", target.name), sorted(_addresses(lab))
    assert seen_portals == want_portals, f"{target.name}: {tpg} has portals {seen_portals}, the lab file wants {want_portals}"
    seen_acls = tree_children(tree, f"{tpg}/acls", target.name)
    want_acls = sorted(initiator_iqn(lab.lab, acl.initiator) for acl in settings.acls)
    assert seen_acls == want_acls, f"{target.name}: {tpg} has ACLs {seen_acls}, the lab file wants {want_acls}"
    for acl in settings.acls:
        acl_path = f"{tpg}/acls/{initiator_iqn(lab.lab, acl.initiator)}"
        mapped = {name: tree[f"{acl_path}/{name}"] for name in tree_children(tree, acl_path, target.name)}
        want = {f"mapped_lun{backstore(lab.lab, name).index}": f"{backstore(lab.lab, name).plugin}/{name}" for name in acl.luns}
        assert sorted(mapped) == sorted(want), (
            f"{target.name}: the ACL of {acl.initiator} maps {sorted(mapped)}, the lab file wants {sorted(want)} ({', '.join(acl.luns)})"
        )
        for name, store in want.items():
            assert store in mapped[name], f"{target.name}: {name} of {acl.initiator}'s ACL is [{mapped[name]}], not {store}"


# -- the initiators ------------------------------------------------------------------


def initiators_log_in_under_their_own_iqn(lab: Any) -> None:
    """Each hypervisor with an ACL has its own initiator name and one logged-in session per portal, under that name."""
    settings = lab.lab.iscsi_target
    want_sessions = {address: "LOGGED_IN" for address in _addresses(lab)}
    for acl in hypervisor_acls(lab.lab):
        hv = lab.node(acl.initiator)
        iqn = initiator_iqn(lab.lab, acl.initiator)
        names = re.findall(r"^InitiatorName=(\S+)$", hv.run_expect("cat /etc/iscsi/initiatorname.iscsi"), re.MULTILINE)
        assert names == [iqn], f"{hv.name}: /etc/iscsi/initiatorname.iscsi names {names or 'no initiator'}, want {iqn}"
        text = hv.run_expect("iscsiadm -m session -P 3", "list iSCSI sessions")
        targets = re.findall(r"^Target: (\S+)", text, re.MULTILINE)
        assert targets and set(targets) == {settings.iqn}, f"{hv.name}: has sessions to {targets or 'no target'}, want {settings.iqn}"
        sessions = waits.parse_iscsi_sessions(text)
        assert sessions == want_sessions, f"{hv.name}: sessions by portal are {sessions}, want {want_sessions}"
        used = re.findall(r"Iface Initiatorname: (\S+)", text)
        assert used == [iqn] * len(want_sessions), f"{hv.name}: its sessions log in as {used}, want {iqn} once per portal"


def initiators_see_exactly_their_luns(lab: Any) -> None:
    """Each hypervisor with an ACL has a by-path device for each LUN it maps, of the LUN's size, and no other."""
    for acl in hypervisor_acls(lab.lab):
        hv = lab.node(acl.initiator)
        prefix = by_path_prefix(lab.lab, portals(lab.lab, lab.placement)[0])
        listing = hv.run_expect(
            f"udevadm settle; cd /dev/disk/by-path && for link in {prefix}*; do"
            f" [ -e $link ] && echo ${{link#{prefix}}} $(blockdev --getsize64 $link); done; true",
            "list the target's LUNs by path",
        )
        seen = {int(lun): int(size) for lun, size in (line.split() for line in listing.splitlines() if line.strip())}
        want = mapped_sizes(lab.lab, acl)
        assert seen == want, f"{hv.name}: sees LUNs {seen or 'none'} (number: bytes), its ACL maps {want}"


def iscsi_pool_lists_the_mapped_luns(lab: Any) -> None:
    """Each hypervisor's iscsi pool is running, autostarted, and has one volume per mapped LUN, of its size, by path."""
    settings = lab.lab.iscsi_target
    prefix = "/dev/disk/by-path/" + by_path_prefix(lab.lab, portals(lab.lab, lab.placement)[0])
    for acl in hypervisor_acls(lab.lab):
        hv = lab.node(acl.initiator)
        assert_pool_running(hv, settings.pool)
        volumes = {}
        for line in hv.run_expect(f"virsh -q vol-list {settings.pool}").splitlines():
            if not line.strip():
                continue
            name, path = line.split()
            assert path.startswith(prefix), f"{hv.name}: volume {name} of pool {settings.pool} is {path}, not a LUN of {prefix}*"
            capacity = info_field(hv.run_expect(f"virsh vol-info --bytes --pool {settings.pool} {name}"), "Capacity")
            volumes[int(name.rsplit(":", 1)[1])] = int(capacity.split()[0])  # libvirt names a LUN unit:BUS:TARGET:LUN
        want = mapped_sizes(lab.lab, acl)
        assert volumes == want, f"{hv.name}: pool {settings.pool} has volumes {volumes or 'none'} (LUN: bytes), its ACL maps {want}"


def _assert_portal_answers(hv: Any, portal: str) -> None:
    """A login to a portal nobody listens on retries for two minutes: say at once that nothing answers."""
    address, _, port = portal.rpartition(":")
    probe = hv.run(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{address}/{port}'")
    assert probe.rc == 0, f"{hv.name}: nothing accepts a connection on portal {portal}: {probe.output or f'exit {probe.rc}'}"


def stranger_is_refused_at_login(lab: Any) -> None:
    """An initiator name without an ACL is refused at login (discovery is not access control; login is)."""
    settings = lab.lab.iscsi_target
    hv = lab.node(hypervisor_acls(lab.lab)[0].initiator)
    stranger = initiator_iqn(lab.lab, "stranger")
    assert stranger not in {initiator_iqn(lab.lab, acl.initiator) for acl in settings.acls}, f"the lab file gives {stranger} an ACL"
    portal = _addresses(lab)[0]
    _assert_portal_answers(hv, portal)
    assert_login_refused(hv, settings.iqn, portal, "kvmlab-stranger", stranger, {}, f"as {stranger}")


def acl_shows_only_the_luns_it_maps(lab: Any) -> None:
    """A temporary ACL maps one LUN under a number no lab ACL uses; its initiator sees that LUN alone.

    Single-portal labs only: with dm-multipath (find_multipaths no) the new device
    would join the map of the LUN it shares a WWID with.
    """
    settings = lab.lab.iscsi_target
    target = _target(lab)
    hv = lab.node(hypervisor_acls(lab.lab)[0].initiator)
    lun = backstores(settings)[-1]
    mapped = len(settings.luns)  # lab ACLs map LUN N as N, so this number (and its by-path link) is free
    iqn, iface, portal = initiator_iqn(lab.lab, "masked"), "kvmlab-masked", _addresses(lab)[0]
    _assert_portal_answers(hv, portal)
    acls = f"/iscsi/{settings.iqn}/tpg1/acls"
    node = f"iscsiadm -m node -T {settings.iqn} -p {portal} -I {iface}"
    session = f'for s in /sys/class/iscsi_session/session*; do [ "$(cat $s/initiatorname)" = {iqn} ] && echo $s; done'
    # targetcli reading stdin saves the configuration on exit: the clean-up saves it again without the ACL.
    create = [f"{acls} create {iqn} add_mapped_luns=false", f"{acls}/{iqn} create mapped_lun={mapped} tpg_lun_or_backstore={lun.index}"]
    # With CHAP on, the temporary ACL takes the hypervisor's credentials: its new node record has them
    # from iscsid.conf, so the login fails only if the masking is wrong. On stdin: no password in a command line.
    create += [f"{acls}/{iqn} set auth {line}" for line in chap_auth_lines(hypervisor_acls(lab.lab)[0])]
    made = target.remote.run("targetcli", stdin="\n".join([*create, "exit", ""]))
    assert made.rc == 0, f"{target.name}: targetcli could not make a temporary ACL for {iqn}: {redact(made.output)}"
    try:
        hv.run_expect(
            f"iscsiadm -m iface -I {iface} -o new && iscsiadm -m iface -I {iface} -o update -n iface.initiatorname -v {iqn}"
            f" && {node} -o new && {node} --login && s=$({session}) && iscsiadm -m session -r ${{s##*session}} --rescan",
            f"log in as {iqn}",
        )
        listing = hv.run_expect(
            f"s=$({session}); for d in $s/device/target*/*:*:*:*; do echo ${{d##*:}} $(blockdev --getsize64 /dev/$(ls $d/block)); done",
            f"the LUNs of {iqn}'s session",
        )
    finally:
        hv.run(f"{node} --logout; {node} -o delete; iscsiadm -m iface -I {iface} -o delete")
        target.run(f"printf '%s\\n' '{acls} delete {iqn}' exit | targetcli")
    seen = {int(n): int(size) for n, size in (line.split() for line in listing.splitlines() if line.strip())}
    want = {mapped: lun_bytes(lab.lab, lun.name)}
    assert seen == want, f"{hv.name}: logged in as {iqn}, sees LUNs {seen or 'none'} (number: bytes), its ACL maps only {want}"


# -- multipath (two portal networks) ---------------------------------------------------


def _maps(hv: Any) -> list[waits.MpathMap]:
    return waits.parse_multipath(hv.run_expect("multipath -ll"))


def multipath_joins_each_lun_over_every_portal(lab: Any) -> None:
    """multipath -ll on each hypervisor with an ACL: one map per mapped LUN, each with an active path per portal."""
    paths = len(portals(lab.lab, lab.placement))
    for acl in hypervisor_acls(lab.lab):
        hv = lab.node(acl.initiator)
        maps = _maps(hv)
        assert len(maps) == len(acl.luns), (
            f"{hv.name}: multipath -ll shows {len(maps)} maps ({', '.join(m.name for m in maps) or 'none'}), "
            f"its ACL maps {len(acl.luns)} LUNs"
        )
        for m in maps:
            assert (m.active, m.failed) == (paths, 0), (
                f"{hv.name}: map {m.name} has {m.active} active and {m.failed} failed paths, want {paths} active"
            )
            hosts = sorted({p.hctl.split(":")[0] for p in m.paths})
            assert len(hosts) == paths, f"{hv.name}: map {m.name} has its paths on SCSI hosts {hosts}, want one per iSCSI session ({paths})"


def mpath_pool_lists_the_multipath_devices(lab: Any) -> None:
    """Each hypervisor's mpath pool is running, autostarted, and lists exactly its multipath devices."""
    pool = lab.lab.iscsi_target.pool
    for acl in hypervisor_acls(lab.lab):
        hv = lab.node(acl.initiator)
        assert_pool_running(hv, pool)
        xml = hv.run_expect(f"virsh pool-dumpxml {pool}")
        assert "<pool type='mpath'>" in xml, f"{hv.name}: pool {pool} is not an mpath pool: {xml.splitlines()[0] if xml else 'no XML'}"
        want = sorted(f"/dev/mapper/{m.name}" for m in _maps(hv))
        seen = sorted(line.split()[1] for line in hv.run_expect(f"virsh -q vol-list {pool}").splitlines() if line.strip())
        assert seen == want, f"{hv.name}: pool {pool} lists {seen or 'nothing'}, multipath -ll has {want}"


CHECKS = (
    Check(ROLE, "portals-listening", portals_are_listening),
    Check(ROLE, "targetcli-configuration", targetcli_shows_the_configuration),
    Check(ROLE, "initiator-sessions", initiators_log_in_under_their_own_iqn, applies=lambda lab: bool(hypervisor_acls(lab))),
    Check(ROLE, "initiator-luns", initiators_see_exactly_their_luns, applies=_single_portal),
    Check(ROLE, "iscsi-pool", iscsi_pool_lists_the_mapped_luns, applies=_single_portal),
    Check(ROLE, "multipath-maps", multipath_joins_each_lun_over_every_portal, applies=_multipath),
    Check(ROLE, "mpath-pool", mpath_pool_lists_the_multipath_devices, applies=_multipath),
    Check(ROLE, "chap-on-target", target_asks_for_chap, applies=has_chap),
    Check(ROLE, "chap-sessions", sessions_authenticated_with_chap, applies=has_chap),
    Check(ROLE, "chap-wrong-password-refused", wrong_password_is_refused, applies=has_chap),
    Check(ROLE, "stranger-refused", stranger_is_refused_at_login, applies=lambda lab: bool(hypervisor_acls(lab))),
    Check(ROLE, "acl-masks-luns", acl_shows_only_the_luns_it_maps, applies=_single_portal),
)
