"""gluster: a Gluster volume with a brick on every gluster node, mounted by the hypervisors (book 5.6).

setup    every gluster node: XFS brick disk mounted at brick_dir, glusterd started
join     the first gluster node: peer probes, then the volume created with the lab's type,
         the role's options set, the lab's own options set one by one, the volume started
clients  every hypervisor: FUSE mount in /etc/fstab and a libvirt dir pool on it
"""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable

from kvmlab.errors import HarnessError, RoleError, SettingRefused
from kvmlab.model import Node
from kvmlab.remote import Remote
from kvmlab.roles import RoleContext
from kvmlab.roles.gluster.files import SCRIPTS, brick_path, peer_name
from kvmlab.roles.gluster.options import GlusterOption
from kvmlab.roles.pools import define_pool
from kvmlab.wait import wait_until

# Fixed deadlines sized for TCG (the context does not carry the accelerator):
# glusterd answers ~50 s after its start there, peers connect within seconds.
GLUSTERD_S = 300.0
PEERS_S = 180.0
BRICKS_S = 180.0
CONNECTED = "State: Peer in Cluster (Connected)"
REFUSED = "volume set: failed"  # how the gluster CLI begins glusterd's refusal of an option or value


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    script = f"{SCRIPTS}/gluster-brick.sh"
    remote.put(script, ctx.file(node, "gluster-brick.sh"), 0o755)
    remote.check(script, "format and mount the brick disk")
    remote.check("systemctl --no-reload enable --now glusterd.service", "start glusterd")
    _wait_output(remote, "gluster peer status", lambda out: out is not None, GLUSTERD_S, f"glusterd on {node.name} to answer")


def join(ctx: RoleContext, node: Node) -> None:
    """On the first gluster node only: the trusted pool, then the volume."""
    nodes = ctx.lab.by_role("gluster")
    if node.name != nodes[0].name:
        return
    s = ctx.lab.gluster
    remote = ctx.remote(node.name)
    for other in nodes[1:]:
        remote.check(f"gluster peer probe {peer_name(other.name, s)}", f"probe peer {other.name}")
    for member in nodes:
        _wait_output(
            ctx.remote(member.name),
            "gluster peer status",
            lambda out: out is not None and out.count(CONNECTED) == len(nodes) - 1,
            PEERS_S,
            f"{member.name} to see {len(nodes) - 1} peers in the cluster, connected",
        )
    # The others know the first node by the address it probed from; one probe back
    # gives it its name on the gluster network there too (Gluster's documented way).
    ctx.remote(nodes[1].name).check(f"gluster peer probe {peer_name(node.name, s)}", f"name {node.name} on {nodes[1].name}")
    script = f"{SCRIPTS}/gluster-volume.sh"
    remote.put(script, ctx.file(node, "gluster-volume.sh"), 0o755)
    remote.check(script, f"create and configure volume {s.volume}")
    # The lab's own options go in before the start: bricks then start with them, none waits for a restart.
    for option in s.options:
        set_option(remote, node.name, s.volume, option)
    remote.check(
        f"gluster volume info {s.volume} | grep -q '^Status: Started' || gluster --mode=script volume start {s.volume}",
        f"start volume {s.volume}",
    )
    bricks = {f"{peer_name(n.name, s)}:{brick_path(s)}" for n in nodes}
    _wait_output(
        remote,
        f"gluster volume status {s.volume} --xml",
        lambda out: out is not None and _online_bricks(out) >= bricks,
        BRICKS_S,
        f"the {len(bricks)} bricks of {s.volume} to be online",
    )


def attach_hypervisor(ctx: RoleContext, node: Node) -> None:
    """Mount the volume with the FUSE client and put a dir pool on it; nothing when the lab has no gluster."""
    if not ctx.lab.by_role("gluster"):
        return
    s = ctx.lab.gluster
    if s.network not in node.networks:
        raise HarnessError(f"{node.name}: hypervisor cannot mount gluster volume {s.volume}: it is not on network '{s.network}'")
    remote = ctx.remote(node.name)
    script = f"{SCRIPTS}/gluster-mount.sh"
    remote.put(script, ctx.file(node, "gluster-mount.sh"), 0o755)
    remote.check(script, f"mount gluster volume {s.volume} at {s.mount}")
    define_pool(remote, s.pool, ctx.file(node, f"pool-{s.pool}.xml"))


def set_option(remote: Remote, node: str, volume: str, option: GlusterOption) -> None:
    """`gluster volume set` of one option of the lab file; Gluster's refusal names the option's line in the file."""
    command = f"gluster --mode=script volume set {volume} {shlex.quote(option.name)} {shlex.quote(option.value)}"
    res = remote.run(command)
    if res.rc == 0:
        return
    if REFUSED in res.output:  # glusterd answered and said no; anything else is a harness fault
        refusal = " ".join(line.strip() for line in res.output.splitlines() if line.strip())
        raise SettingRefused(option.where, f"gluster refused option '{option.name}' = '{option.value}'", refusal, node, command)
    raise RoleError(node, f"set option {option.name} of volume {volume} ({option.where or 'the lab file'})", command, res.rc, res.output)


def _wait_output(remote: Remote, command: str, ready: Callable[[str | None], bool], timeout: float, what: str) -> str:
    """Poll COMMAND until READY(its stdout, or None when it fails) holds; its last output is the evidence."""
    last = ["(no answer yet)"]

    def check() -> str | None:
        res = remote.run(command, timeout=60)
        last[0] = res.output
        out = res.stdout if res.rc == 0 else None
        return (out or "(empty)") if ready(out) else None

    return wait_until(check, timeout, what, interval=3.0, context=lambda: f"$ {command}\n{last[0]}")


def _online_bricks(status_xml: str) -> set[str]:
    """host:path of every brick that `gluster volume status VOL --xml` reports online."""
    try:
        root = ET.fromstring(status_xml)
    except ET.ParseError:
        return set()
    return {
        f"{n.findtext('hostname')}:{n.findtext('path')}"
        for n in root.iter("node")
        if n.findtext("status") == "1" and (n.findtext("path") or "").startswith("/")
    }
