"""hypervisor: libvirtd running, its default dir pool, and one netfs pool per lab entry."""

from __future__ import annotations

from kvmlab.model import Node
from kvmlab.remote import Remote
from kvmlab.rolefiles.hypervisor import ISO_LIBRARY
from kvmlab.roles import Role, RoleContext

LIBVIRT_UNITS = "virtlogd.socket virtlockd.socket libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd.service"


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    # Debian's libvirtd exits after 120 s idle; a restarted one finds rbd and gluster pools
    # inactive (libvirt cannot check their state) and autostart runs only at boot.
    remote.check("echo 'LIBVIRTD_ARGS=\"\"' > /etc/default/libvirtd", "keep libvirtd running when idle")
    remote.check(f"systemctl enable --now {LIBVIRT_UNITS}", "start libvirtd")
    remote.check(
        "virsh -q pool-info default >/dev/null 2>&1 || virsh -q pool-define-as default dir --target /var/lib/libvirt/images",
        "define the default dir pool",
    )
    _start_pool(remote, "default")
    name, path = ISO_LIBRARY
    remote.check(f"install -d -m 0700 -o root -g root {path}", "create the ISO library directory")
    define_pool(remote, name, ctx.file(node, f"pool-{name}.xml"))


def clients(ctx: RoleContext, node: Node) -> None:
    """Pools on every storage the lab has: NFS here, the others from their own role modules."""
    remote = ctx.remote(node.name)
    for pool in ctx.lab.hypervisor.netfs_pools:
        define_pool(remote, pool.name, ctx.file(node, f"pool-{pool.name}.xml"))
    from kvmlab.roles import ceph, gluster, iscsi_target  # they import define_pool from here

    for storage in (iscsi_target, gluster, ceph):
        storage.attach_hypervisor(ctx, node)


def define_pool(remote: Remote, name: str, xml: str) -> None:
    """Define, build, start and autostart a libvirt pool from its XML (virsh pool-define and friends)."""
    path = f"/etc/kvmlab/pool-{name}.xml"
    remote.put(path, xml)
    remote.check(f"virsh -q pool-define {path}", f"define pool {name}")
    _start_pool(remote, name)


def _start_pool(remote: Remote, name: str) -> None:
    remote.check(f"virsh -q pool-build {name}", f"build pool {name}")
    remote.check(f"virsh -q pool-start {name}", f"start pool {name}")
    remote.check(f"virsh -q pool-autostart {name}", f"autostart pool {name}")


ROLE = Role(
    name="hypervisor",
    steps={"setup": setup, "clients": clients},
    state_commands=(
        "virsh pool-list --all --details",
        "virsh list --all",
        "findmnt -t nfs,nfs4,fuse.glusterfs",
        "iscsiadm -m session -P 3",
        "iscsiadm -m iface",
        "tail -n 100 /var/log/glusterfs/*.log",
    ),
)
