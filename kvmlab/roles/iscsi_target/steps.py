"""iscsi-target: LIO LUNs on fileio/block/lvm backends, one ACL per initiator, and the hypervisors' iscsi pool.

The target is configured by one targetcli run (each targetcli start costs ~3.5 s
under TCG). targetcli does not stop or fail on a bad command when it reads
stdin, so the step then compares the configuration it saved with the model.
"""

from __future__ import annotations

import json
import shlex

from kvmlab.errors import RoleError
from kvmlab.model import Lab, Node, Placement
from kvmlab.remote import Remote
from kvmlab.roles import RoleContext
from kvmlab.roles.iscsi_target.files import (
    PORT,
    acl_nodes,
    acl_of,
    backstores,
    chap_node_settings,
    chap_secret_uuid,
    initiator_iqn,
    multipath,
    portals,
)
from kvmlab.roles.pools import define_pool

FILES_DIR = "/etc/kvmlab/iscsi"
SAVED_CONFIG = "/etc/rtslib-fb-target/saveconfig.json"  # Debian's targetcli saveconfig and targetctl restore
RESTORE_UNIT = "rtslib-fb-targetctl.service"


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    _put_and_run(remote, ctx.file(node, "prepare-backends.sh"), "prepare-backends.sh", "sh -eu", "prepare LUN backends")
    remote.put(f"/etc/systemd/system/{RESTORE_UNIT}.d/kvmlab.conf", ctx.file(node, "targetctl-kvmlab.conf"))
    # With no saved configuration yet, targetctl restore succeeds and does nothing.
    remote.check(f"systemctl daemon-reload && systemctl --no-reload enable --now {RESTORE_UNIT}", "enable the target restore service")
    batch = _put_and_run(remote, ctx.file(node, "targetcli.batch"), "targetcli.batch", "targetcli <", "configure LIO with targetcli")
    saved = remote.check(f"cat {SAVED_CONFIG}", "read the saved target configuration").stdout
    problems = config_problems(ctx.lab, ctx.placement, json.loads(saved))
    if problems:
        raise RoleError(
            node.name, "configure LIO with targetcli", f"targetcli < {FILES_DIR}/targetcli.batch", 0, "\n".join([*problems, "", batch])
        )


def attach_hypervisor(ctx: RoleContext, node: Node) -> None:
    """Initiator name, iscsid and the iscsi pool, on a hypervisor the target has an ACL for."""
    if not ctx.lab.iscsi_target.luns or node.name not in acl_nodes(ctx.lab):
        return
    remote = ctx.remote(node.name)
    remote.put("/etc/iscsi/initiatorname.iscsi", ctx.file(node, "initiatorname.iscsi"))
    remote.check("systemctl --no-reload enable --now iscsid.socket iscsid.service", "start iscsid")
    pool = ctx.lab.iscsi_target.pool
    _chap(ctx, node, remote)
    if multipath(ctx.lab.iscsi_target):
        _attach_multipath(ctx, node, remote)
    define_pool(remote, pool, ctx.file(node, f"pool-{pool}.xml"))  # pool-start logs in


def _chap(ctx: RoleContext, node: Node, remote: Remote) -> None:
    """The hypervisor's CHAP credentials: its password in a libvirt secret that the iscsi pool's <auth>
    names, and every credential (its own, and for mutual CHAP the target's) in iscsid.conf. libvirt
    logs in through a node record of its own interface made by discovery, which takes iscsid.conf's
    settings, not the <auth> it set on the default one: without them there, a mutual CHAP login
    fails. Passwords travel on stdin, never in a command line."""
    acl = acl_of(ctx.lab, node.name)
    if not acl.chap:
        return
    remote.check(
        r"f=/etc/iscsi/iscsid.conf && sed -i '/^node\.session\.auth\.\(authmethod\|username\|password\)\(_in\)\? *=/d' $f"
        " && cat >> $f && chmod 600 $f",
        "give open-iscsi the CHAP credentials",
        stdin="".join(f"{k} = {v}\n" for k, v in chap_node_settings(acl).items()),
    )
    if multipath(ctx.lab.iscsi_target):
        return  # iscsi-login.sh sets the credentials on each node record; the mpath pool logs in to nothing
    remote.put("/etc/kvmlab/secret-iscsi-chap.xml", ctx.file(node, "secret-iscsi-chap.xml"))
    remote.check("virsh -q secret-define /etc/kvmlab/secret-iscsi-chap.xml", "define the iSCSI CHAP secret")
    uuid = chap_secret_uuid(ctx.lab, ctx.placement, node.name)
    remote.check(
        f'umask 077 && f=$(mktemp) && cat > "$f" && virsh -q secret-set-value --secret {uuid} --file "$f" --plain; '
        'rc=$?; rm -f "$f"; exit $rc',
        "store the CHAP password in the secret",
        stdin=acl.chap.password,
    )


def _attach_multipath(ctx: RoleContext, node: Node, remote: Remote) -> None:
    """Sessions over both portal networks, dm-multipath over them; the pool is then an mpath pool."""
    remote.put("/etc/multipath.conf", ctx.file(node, "multipath.conf"))
    remote.check("systemctl --no-reload enable --now multipathd.socket multipathd.service", "start multipathd")
    # open-iscsi.service logs in to the automatic nodes at boot.
    remote.check("systemctl --no-reload enable open-iscsi.service", "log in to iSCSI at boot")
    _put_and_run(remote, ctx.file(node, "iscsi-login.sh"), "iscsi-login.sh", "sh -eu", "log in to the target through every portal")
    remote.check("multipathd reconfigure >/dev/null; udevadm settle", "let multipathd pick up the iSCSI paths")


def config_problems(lab: Lab, pl: Placement, saved: dict) -> list[str]:
    """What the saved LIO configuration (saveconfig.json) lacks or has beyond the lab's settings."""
    settings = lab.iscsi_target
    stores = backstores(settings)
    problems: list[str] = []
    have_stores = {(so.get("plugin"), so.get("name")): so.get("dev") for so in saved.get("storage_objects", [])}
    want_stores = {(s.plugin, s.name): s.path for s in stores}
    if have_stores != want_stores:
        problems.append(f"backstores: want {sorted(want_stores.items())}, saved {sorted(have_stores.items())}")
    targets = {t.get("wwn"): t for t in saved.get("targets", [])}
    if settings.iqn not in targets:
        return [*problems, f"target {settings.iqn} is not saved (saved: {sorted(targets)})"]
    tpgs = targets[settings.iqn].get("tpgs", [])
    if len(tpgs) != 1:
        return [*problems, f"target {settings.iqn} has {len(tpgs)} TPGs, want 1"]
    tpg = tpgs[0]
    have_luns = {lun.get("index"): lun.get("storage_object") for lun in tpg.get("luns", [])}
    want_luns = {s.index: f"/backstores/{s.plugin}/{s.name}" for s in stores}
    if have_luns != want_luns:
        problems.append(f"LUNs: want {want_luns}, saved {have_luns}")
    have_portals = sorted((p.get("ip_address"), p.get("port")) for p in tpg.get("portals", []))
    want_portals = sorted((address, PORT) for address in portals(lab, pl))
    if have_portals != want_portals:
        problems.append(f"portals: want {', '.join(f'{a}:{p}' for a, p in want_portals)} only, saved {have_portals}")
    if str(tpg.get("attributes", {}).get("generate_node_acls")) != "0":
        problems.append("generate_node_acls is not 0: initiators without an ACL would log in")
    index = {s.name: s.index for s in stores}
    want_acls = {initiator_iqn(lab, a.initiator): sorted(index[n] for n in a.luns) for a in settings.acls}
    have_acls = {
        acl.get("node_wwn"): sorted(m.get("tpg_lun") for m in acl.get("mapped_luns", []) if m.get("index") == m.get("tpg_lun"))
        for acl in tpg.get("node_acls", [])
    }
    if have_acls != want_acls:
        problems.append(f"ACLs (initiator: mapped LUNs): want {want_acls}, saved {have_acls}")
    return problems + chap_problems(lab, tpg)


def chap_problems(lab: Lab, tpg: dict) -> list[str]:
    """Where the saved TPG's CHAP differs from the lab's ACLs (a password is never shown, only said to differ)."""
    acls = lab.iscsi_target.acls
    want_auth = "1" if any(a.chap for a in acls) else "0"
    problems = []
    if str(tpg.get("attributes", {}).get("authentication")) != want_auth:
        problems.append(f"TPG attribute authentication is {tpg.get('attributes', {}).get('authentication')}, want {want_auth}")
    saved = {acl.get("node_wwn"): acl for acl in tpg.get("node_acls", [])}
    for acl in acls:
        have = saved.get(initiator_iqn(lab, acl.initiator), {})
        for field, chap in (("chap", acl.chap), ("chap_mutual", acl.mutual_chap)):
            user, password = (chap.user, chap.password) if chap else ("", "")
            if have.get(f"{field}_userid", "") != user:
                problems.append(f"ACL {acl.initiator}: {field}_userid is '{have.get(f'{field}_userid', '')}', want '{user}'")
            if have.get(f"{field}_password", "") != password:
                problems.append(f"ACL {acl.initiator}: {field}_password is not the lab file's")
    return problems


def _put_and_run(remote: Remote, text: str, name: str, runner: str, step: str) -> str:
    """Keep the file on the node (for whoever debugs it) and run it, in one SSH command."""
    path = shlex.quote(f"{FILES_DIR}/{name}")
    return remote.check(f"mkdir -p {FILES_DIR} && cat > {path} && {runner} {path}", step, stdin=text).output
