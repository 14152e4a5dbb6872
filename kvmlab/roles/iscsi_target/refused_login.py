"""A login the target must refuse, tried from a hypervisor through a scratch iSCSI interface of its own.

The scratch interface carries the initiator name to log in as, so the hypervisor's own sessions are
left alone; the interface and its node record are removed whatever happens.
"""

from __future__ import annotations

import shlex
from typing import Any

LOGIN_AUTH_FAILED = 24  # iscsiadm's exit code for ISCSI_ERR_LOGIN_AUTH_FAILED


def assert_login_refused(hv: Any, target: str, portal: str, iface: str, initiator: str, record: dict[str, str], how: str) -> None:
    """Log in to TARGET at PORTAL as INITIATOR through IFACE, with RECORD's settings on the node record;
    the login must fail as an authorization failure and leave no session. HOW says what the login tried."""
    node = f"iscsiadm -m node -T {target} -p {portal} -I {iface}"
    hv.run_expect(
        f"iscsiadm -m iface -I {iface} -o new && iscsiadm -m iface -I {iface} -o update -n iface.initiatorname -v {initiator}",
        f"an iSCSI interface named {initiator}",
    )
    try:
        # LIO may list the target to anyone: the discovery's outcome says nothing.
        hv.run(f"iscsiadm -m discovery -t sendtargets -p {portal} -I {iface} -o nonpersistent")
        updates = "".join(f" && {node} -o update -n {name} -v {shlex.quote(value)}" for name, value in record.items())
        hv.run_expect(f"{node} -o new >/dev/null{updates}", f"a node record for a login {how}")
        login = hv.run(f"{node} --login")
        sessions = hv.run("iscsiadm -m session -P 1").stdout
    finally:
        hv.run(f"{node} --logout; {node} -o delete; iscsiadm -m iface -I {iface} -o delete")
    said = login.output.replace("\n", " ")
    assert login.rc == LOGIN_AUTH_FAILED, f"{hv.name}: login {how} exited {login.rc}, not 24 (authorization failure): {said}"
    assert "authorization failure" in said, f"{hv.name}: login {how} failed, but not as unauthorized: {said}"
    assert f"Iface Name: {iface}" not in sessions, f"{hv.name}: has a session through {iface} after the refused login {how}"
