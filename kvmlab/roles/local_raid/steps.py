"""local-raid: the MD array of the lab's settings, LVM and XFS on it, and a libvirt dir pool (book 5.1)."""

from __future__ import annotations

from kvmlab.errors import RoleError, SettingRefused
from kvmlab.model import Node
from kvmlab.remote import Remote
from kvmlab.roles import RoleContext
from kvmlab.roles.local_raid.settings import LocalRaidSettings
from kvmlab.roles.pools import define_pool


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    create_array(remote, node.name, ctx.lab.local_raid, ctx.file(node, "raid-create.sh"))
    remote.check("sh -s", "put LVM and XFS on the array", stdin=ctx.file(node, "raid-setup.sh"))


def clients(ctx: RoleContext, node: Node) -> None:
    pool = ctx.lab.local_raid.pool
    define_pool(ctx.remote(node.name), pool, ctx.file(node, f"pool-{pool}.xml"))


def create_array(remote: Remote, node: str, s: LocalRaidSettings, script: str) -> None:
    """Run the rendered `mdadm --create`; mdadm's own refusal names the role's settings in the lab file."""
    res = remote.run("sh -s", stdin=script)
    if res.rc == 0:
        return
    command = mdadm_command(script)
    said = [line.strip() for line in res.output.splitlines() if line.strip().startswith("mdadm:")]
    if said:  # mdadm ran and judged the array; anything else (no shell, no mdadm) is a harness fault
        what = f"mdadm refused the array of role settings 'local-raid' ({s.describe()})"
        raise SettingRefused(s.where, what, " ".join(said), node, command)
    raise RoleError(node, f"create the array ({s.describe()})", command, res.rc, res.output)


def mdadm_command(script: str) -> str:
    """The `mdadm --create` command of the script, on one line, as an error quotes it."""
    joined = script.replace("\\\n", " ")
    line = next((ln for ln in joined.splitlines() if ln.startswith("mdadm --create")), "sh -s")
    return " ".join(line.split())
