"""hypervisor: libvirtd running, its default dir pool, and one netfs pool per lab entry.

For the migration lab (book chapter 7) also: a bridge for inner guests, the inner guests'
kernel and initramfs, virtlockd as lock manager (optionally on a shared NFS lockspace),
fixed migration ports, root SSH between hypervisors with pinned host keys, and clocks
kept in step with the first hypervisor.
"""

from __future__ import annotations

import shlex

from kvmlab.model import Node
from kvmlab.roles import RoleContext
from kvmlab.roles.hypervisor.files import BRIDGE, ISO_LIBRARY, LOCKSPACE_DIR, PEER_KEY, lockspace_fstab_line, peers
from kvmlab.roles.hypervisor.guest_disks import start_declared_guests
from kvmlab.roles.pools import define_pool, start_pool

LIBVIRT_UNITS = "virtlogd.socket virtlockd.socket libvirtd.socket libvirtd-ro.socket libvirtd-admin.socket libvirtd.service"
QEMU_CONF_MARK = "# kvmlab-migration"


def setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    settings = ctx.lab.hypervisor
    if settings.guest_bridge:
        _bridge(ctx, node)
    if settings.migration is not None:
        _migration_config(ctx, node)  # before libvirtd starts, so it reads the lock manager once
    # Debian's libvirtd exits after 120 s idle; a restarted one finds rbd and gluster pools
    # inactive (libvirt cannot check their state) and autostart runs only at boot.
    remote.check("echo 'LIBVIRTD_ARGS=\"\"' > /etc/default/libvirtd", "keep libvirtd running when idle")
    # Nodes cloned from one saved generic node share its SMBIOS UUID, libvirt's default host UUID:
    # migration between two hypervisors with one host UUID is refused as a migration to itself.
    remote.check(
        "grep -q '^host_uuid_source' /etc/libvirt/libvirtd.conf || echo 'host_uuid_source = \"machine-id\"' >> /etc/libvirt/libvirtd.conf",
        "take libvirt's host UUID from the node's own machine-id",
    )
    # libvirt records each network's guest MACs there, DHCP or not; the image has no dnsmasq-base,
    # whose package would make it. Without it, a guest on a network this node's libvirtd created
    # (a lab that kvmlab brings up on this node through qemu+libssh) does not start.
    remote.check("mkdir -p /var/lib/libvirt/dnsmasq", "make libvirt's network state folder")
    remote.check(f"systemctl --no-reload enable --now {LIBVIRT_UNITS}", "start libvirtd")
    remote.check(
        "virsh -q pool-info default >/dev/null 2>&1 || virsh -q pool-define-as default dir --target /var/lib/libvirt/images",
        "define the default dir pool",
    )
    start_pool(remote, "default")
    name, path = ISO_LIBRARY
    remote.check(f"install -d -m 0700 -o root -g root {path}", "create the ISO library directory")
    define_pool(remote, name, ctx.file(node, f"pool-{name}.xml"))
    if settings.inner_guests:
        remote.put("/etc/kvmlab/inner-build.sh", ctx.file(node, "inner-build.sh"), mode=0o755)
        remote.check("/etc/kvmlab/inner-build.sh", "build the inner guests' kernel and initramfs")


def join(ctx: RoleContext, node: Node) -> None:
    """Needs the other hypervisors' keys and the NFS server's exports."""
    mig = ctx.lab.hypervisor.migration
    if mig is None:
        return
    remote = ctx.remote(node.name)
    if mig.peers_ssh:
        _trust_peers(ctx, node)
    if mig.lockspace is not None:
        line = lockspace_fstab_line(ctx.lab)
        remote.check(
            f"install -d -m 0700 {LOCKSPACE_DIR} && (grep -qxF {shlex.quote(line)} /etc/fstab || echo {shlex.quote(line)} >> /etc/fstab)"
            f" && (mountpoint -q {LOCKSPACE_DIR} || mount {LOCKSPACE_DIR})",
            "mount the shared lockspace",
        )
        # virtlockd opened its lockspace before the mount; no guest runs yet, so a restart is safe.
        remote.check("systemctl restart virtlockd.service libvirtd.service", "restart virtlockd and libvirtd on the shared lockspace")


def clients(ctx: RoleContext, node: Node) -> None:
    """The netfs pools; each storage role attaches its own pool as a step of its own (steps_on)."""
    remote = ctx.remote(node.name)
    for pool in ctx.lab.hypervisor.netfs_pools:
        define_pool(remote, pool.name, ctx.file(node, f"pool-{pool.name}.xml"))
    start_declared_guests(ctx, node)


def _bridge(ctx: RoleContext, node: Node) -> None:
    """Move the node's address on the guest network to br0 and make the NIC its port."""
    remote = ctx.remote(node.name)
    network = ctx.lab.hypervisor.guest_bridge
    # Sorted before the seed's 10-kvmlab-net-* files, which match the NIC by MAC and give it the address.
    remote.put(f"/etc/systemd/network/04-kvmlab-{BRIDGE}.netdev", ctx.file(node, "bridge.netdev"))
    remote.put(f"/etc/systemd/network/04-kvmlab-{BRIDGE}.network", ctx.file(node, "bridge.network"))
    remote.put("/etc/systemd/network/05-kvmlab-bridge-port.network", ctx.file(node, "bridge-port.network"))
    mac = ctx.placement.mac(ctx.lab, node.name, network)
    address = ctx.address(node.name, network)
    awk = '\'index($0, mac) && $2 != br { sub(":", "", $2); print $2; exit }\''
    find_nic = f"ip -o link show | awk -v mac='link/ether {mac}' -v br='{BRIDGE}:' {awk}"
    bridged = f"ip -4 -o addr show {BRIDGE} | grep -q ' {address}/' && ip -o link show $nic | grep -q 'master {BRIDGE}'"
    remote.check(
        f"nic=$({find_nic}) && networkctl reload && ip addr flush dev $nic && networkctl reconfigure $nic"
        f" && for i in $(seq 100); do {bridged} && exit 0; sleep 0.3; done; networkctl status {BRIDGE} $nic --no-pager; exit 1",
        f"bridge the {network} network on {BRIDGE}",
    )


def _migration_config(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    mig = ctx.lab.hypervisor.migration
    assert mig is not None
    fragment = ctx.file(node, "qemu-migration.conf")
    remote.put("/etc/kvmlab/qemu-migration.conf", fragment)
    remote.check(
        f"grep -q '^{QEMU_CONF_MARK}' /etc/libvirt/qemu.conf || cat /etc/kvmlab/qemu-migration.conf >> /etc/libvirt/qemu.conf",
        "set the lock manager and migration ports in qemu.conf",
    )
    if mig.lock == "lockd":
        remote.put("/etc/libvirt/qemu-lockd.conf", ctx.file(node, "qemu-lockd.conf"))
    remote.put("/etc/chrony/chrony.conf", ctx.file(node, "chrony.conf"))
    remote.check("systemctl --no-reload enable chrony.service && systemctl restart chrony.service", "keep the clock in step")
    if mig.peers_ssh:
        remote.put("/root/.ssh/config", ctx.file(node, "ssh-config"), mode=0o600)
        remote.check(f"test -f {PEER_KEY} || ssh-keygen -q -t ed25519 -N '' -C root@{node.name} -f {PEER_KEY}", "make the peers' SSH key")


def _trust_peers(ctx: RoleContext, node: Node) -> None:
    """Authorize each peer's root key, and pin each peer's host key under its names and addresses."""
    remote = ctx.remote(node.name)
    for peer in peers(ctx.lab, node):
        # Read over the harness's own pinned SSH session to the peer: no trust on first use.
        user_key = ctx.remote(peer).check(f"cat {PEER_KEY}.pub", f"read {peer}'s root key").stdout.strip()
        host_key = ctx.remote(peer).check("cat /etc/ssh/ssh_host_ed25519_key.pub", f"read {peer}'s host key").stdout.split()
        names = [peer, f"{peer}-*", *(ctx.address(peer, net) for net in ctx.lab.node(peer).networks)]
        known = f"{','.join(names)} {host_key[0]} {host_key[1]}"
        for line, path in ((user_key, "/root/.ssh/authorized_keys"), (known, "/root/.ssh/known_hosts")):
            remote.check(f"touch {path} && (grep -qxF {shlex.quote(line)} {path} || echo {shlex.quote(line)} >> {path})", f"trust {peer}")
