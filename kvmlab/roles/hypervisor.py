"""hypervisor: libvirtd running, its default dir pool, and one netfs pool per lab entry."""

from __future__ import annotations

from kvmlab.model import Node
from kvmlab.roles import Role, RoleContext

LIBVIRT_UNITS = "virtlogd.socket virtlockd.socket libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd.service"


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    remote.check(f"systemctl enable --now {LIBVIRT_UNITS}", "start libvirtd")
    remote.check(
        "virsh -q pool-info default >/dev/null 2>&1 || virsh -q pool-define-as default dir --target /var/lib/libvirt/images",
        "define the default dir pool",
    )
    _start_pool(remote, "default")


def connect(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    for pool in ctx.lab.hypervisor.netfs_pools:
        path = f"/etc/kvmlab/pool-{pool.name}.xml"
        remote.put(path, ctx.file(node, f"pool-{pool.name}.xml"))
        remote.check(f"virsh -q pool-define {path}", f"define netfs pool {pool.name}")
        _start_pool(remote, pool.name)


def _start_pool(remote, name: str) -> None:
    remote.check(f"virsh -q pool-build {name}", f"build pool {name}")
    remote.check(f"virsh -q pool-start {name}", f"start pool {name}")
    remote.check(f"virsh -q pool-autostart {name}", f"autostart pool {name}")


ROLE = Role(
    name="hypervisor",
    setup=setup,
    connect=connect,
    state_commands=("virsh pool-list --all --details", "virsh list --all", "findmnt -t nfs,nfs4"),
)
