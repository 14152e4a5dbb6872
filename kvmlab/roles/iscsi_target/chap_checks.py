"""Checks of the iscsi-target role's CHAP: the target asks for it, the hypervisors' sessions used it,
and a wrong password is refused at login.

Passwords never leave a node in clear: the target's are compared by their SHA-256, the
sessions show only user names, and the probe's wrong password is made up for it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import uuid
from typing import Any

from kvmlab.model import Lab
from kvmlab.roles.iscsi_target.files import PORT, initiator_iqn, portals
from kvmlab.roles.iscsi_target.refused_login import assert_login_refused

ROLE = "iscsi-target"
CONFIGFS = "/sys/kernel/config/target/iscsi"

# On the target: the TPG's authentication attribute, and per ACL its CHAP users and the SHA-256
# of its passwords, as LIO holds them now (configfs), not as a file says.
_TARGET_SCRIPT = """
import glob, hashlib, json, os, sys
tpg = os.path.join(sys.argv[1], sys.argv[2], "tpgt_1")
def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
out = {"authentication": read(os.path.join(tpg, "attrib", "authentication")), "acls": {}}
for acl in sorted(glob.glob(os.path.join(tpg, "acls", "*"))):
    auth = os.path.join(acl, "auth")
    out["acls"][os.path.basename(acl)] = {
        "userid": read(os.path.join(auth, "userid")),
        "password": hashlib.sha256((read(os.path.join(auth, "password")) or "").encode()).hexdigest(),
        "userid_mutual": read(os.path.join(auth, "userid_mutual")),
        "password_mutual": hashlib.sha256((read(os.path.join(auth, "password_mutual")) or "").encode()).hexdigest(),
    }
print(json.dumps(out))
"""


def has_chap(lab: Lab) -> bool:
    return any(acl.chap for acl in lab.iscsi_target.acls)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def target_asks_for_chap(lab: Any) -> None:
    """LIO's TPG requires authentication, and each ACL holds the lab file's CHAP user and password
    (and, for mutual CHAP, the target's own), read from configfs."""
    settings = lab.lab.iscsi_target
    target = lab.by_role(ROLE)[0]
    seen = json.loads(
        target.run_expect(f"python3 -c {shlex.quote(_TARGET_SCRIPT)} {CONFIGFS} {settings.iqn}", "LIO's CHAP settings (configfs)")
    )
    assert seen["authentication"] == "1", f"{target.name}: TPG 1 of {settings.iqn} has authentication={seen['authentication']}, not 1"
    for acl in settings.acls:
        iqn = initiator_iqn(lab.lab, acl.initiator)
        have = seen["acls"].get(iqn)
        assert have is not None, f"{target.name}: no ACL {iqn} in configfs (ACLs: {', '.join(seen['acls']) or 'none'})"
        assert acl.chap is not None
        assert have["userid"] == acl.chap.user, f"{target.name}: ACL {iqn} has CHAP user '{have['userid']}', want '{acl.chap.user}'"
        assert have["password"] == _sha(acl.chap.password), f"{target.name}: ACL {iqn}'s CHAP password is not the lab file's"
        mutual = acl.mutual_chap
        want_user, want_sha = (mutual.user, _sha(mutual.password)) if mutual else ("", _sha(""))
        assert (have["userid_mutual"] or "") == want_user, (
            f"{target.name}: ACL {iqn} has mutual CHAP user '{have['userid_mutual']}', want '{want_user or '(none)'}'"
        )
        assert have["password_mutual"] == want_sha, f"{target.name}: ACL {iqn}'s mutual CHAP password is not the lab file's"


def sessions_authenticated_with_chap(lab: Any) -> None:
    """Each hypervisor's session to the target logged in with its CHAP user (and asked the target for
    the mutual one), as open-iscsi reports the running session."""
    settings = lab.lab.iscsi_target
    for acl in settings.acls:
        hv = lab.node(acl.initiator)
        out = hv.run_expect("iscsiadm -m session -P 2", "iSCSI sessions with their CHAP users")
        assert settings.iqn in out, f"{hv.name}: no session to {settings.iqn}:\n{out}"
        users = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("username:")]
        assert acl.chap is not None
        assert users and all(u == acl.chap.user for u in users), (
            f"{hv.name}: sessions logged in with CHAP users {users}, want '{acl.chap.user}'"
        )
        if acl.mutual_chap:
            inbound = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("username_in:")]
            assert inbound and all(u == acl.mutual_chap.user for u in inbound), (
                f"{hv.name}: sessions asked the target for mutual CHAP users {inbound}, want '{acl.mutual_chap.user}'"
            )


def wrong_password_is_refused(lab: Any) -> None:
    """A login under a hypervisor's own initiator name and CHAP user, with a wrong password, is
    refused as an authorization failure and leaves no session."""
    settings = lab.lab.iscsi_target
    acl = next(a for a in settings.acls if a.chap)
    hv = lab.node(acl.initiator)
    assert acl.chap is not None
    portal = f"{portals(lab.lab, lab.placement)[0]}:{PORT}"
    wrong = f"wrong-{uuid.uuid4().hex[:12]}"
    record = {"node.session.auth.authmethod": "CHAP", "node.session.auth.username": acl.chap.user, "node.session.auth.password": wrong}
    how = f"as {acl.initiator} with CHAP user {acl.chap.user} and a wrong password"
    assert_login_refused(hv, settings.iqn, portal, "kvmlab-wrong-chap", initiator_iqn(lab.lab, acl.initiator), record, how)
