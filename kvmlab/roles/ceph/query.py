"""Ceph monitor queries for the harness's own polling, lighter than the `ceph` CLI.

Under TCG one `ceph` CLI call takes 8-12 s, most of it the CLI's own start: its imports and
fetching every command's description from the monitor before sending one. A wait that polls
health or OSD counts sends the monitor command straight through librados' Python binding
(python3-rados, which the CLI itself uses), in about a quarter of that. Steps and checks that
show the book's procedure keep the `ceph` CLI; checks use these (ceph-admin's check is of the CLI itself).
"""

from __future__ import annotations

import json
import shlex

from kvmlab.remote import Remote, Result

CONF = "/etc/ceph/ceph.conf"

_SCRIPT = """
import json, sys, rados
cluster = rados.Rados(conffile=sys.argv[1])
cluster.connect(timeout=20)
rc, out, err = cluster.mon_command(sys.argv[2], b"", timeout=60)
sys.stdout.write(out.decode())
sys.stderr.write(err)
sys.exit(1 if rc else 0)
"""


def mon_command(prefix: str, fmt: str = "json", **args: object) -> str:
    """A shell command that sends monitor command PREFIX (e.g. 'health', 'osd stat') and prints its
    output in format FMT ('json', or 'plain': a key or keyring as the CLI prints it)."""
    request = json.dumps({"prefix": prefix, "format": fmt, **args})
    return f"python3 -c {shlex.quote(_SCRIPT)} {CONF} {shlex.quote(request)}"


def mon_json(remote: Remote, prefix: str, timeout: float = 120, **args: object) -> Result:
    return remote.run(mon_command(prefix, **args), timeout=timeout)
