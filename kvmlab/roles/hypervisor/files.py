"""Files of the hypervisor role: pools, and for the migration lab the guest bridge, inner guests' boot files,
lock manager, migration ports, peers' SSH and clocks."""

from __future__ import annotations

from kvmlab.model import Lab, Node, Placement
from kvmlab.templating import render_template

ISO_LIBRARY = ("iso_library", "/var/lib/libvirt/isos")  # book 5.8: a root-only directory of install media
BRIDGE = "br0"  # inside each hypervisor: the inner guests' bridge onto the lab network `guest_bridge`
BOOT_DIR = "/var/lib/libvirt/boot"  # where libvirt's AppArmor profile lets QEMU read kernels
INNER_KERNEL = f"{BOOT_DIR}/kvmlab-inner-vmlinuz"
INNER_INITRD = f"{BOOT_DIR}/kvmlab-inner-initrd.img"
# Debian's generic kernel of the same version: the cloud kernel the hypervisors run has no AHCI driver,
# so guests with a SATA disk boot this one (same initramfs, its own modules).
INNER_KERNEL_GENERIC = f"{BOOT_DIR}/kvmlab-inner-vmlinuz-generic"
INNER_MODULES = ("virtio_pci", "virtio_blk", "virtio_net")  # the rest of virtio and net_failover come as dependencies
# Disk controllers' drivers, loaded only by guests that have the controller (loading SCSI's took
# ~13 s of one TCG-inside-TCG boot here); dependencies (scsi_mod, libata) come along.
INNER_BUS_MODULES = {"scsi": ("virtio_scsi", "sd_mod"), "sata": ("ahci", "sd_mod")}
LOCKSPACE_DIR = "/var/lib/libvirt/lockd/files"  # lockd's file_lockspace_dir when the lab shares one over NFS
PEER_KEY = "/root/.ssh/id_kvmlab_peers"


def lockspace_fstab_line(lab: Lab) -> str:
    """The /etc/fstab entry that mounts the migration lab's shared lockd lockspace over NFS (it must have one)."""
    mig = lab.hypervisor.migration
    assert mig is not None and mig.lockspace is not None, "lockspace_fstab_line needs migration.lockspace"
    source = f"{mig.lockspace.server}-{mig.lockspace.network}:{mig.lockspace.path}"
    return render_template("roles/hypervisor/lockspace.fstab.j2", {"source": source, "mount": LOCKSPACE_DIR}).rstrip("\n")


def files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    if "hypervisor" not in node.roles:
        return {}
    name, path = ISO_LIBRARY
    out = {f"pool-{name}.xml": render_template("libvirt/pool.xml.j2", {"type": "dir", "name": name, "target": path, "mode": "0700"})}
    for pool in lab.hypervisor.netfs_pools:
        out[f"pool-{pool.name}.xml"] = render_template(
            "roles/hypervisor/pool-netfs.xml.j2",
            {
                "name": pool.name,
                "target": pool.target,
                "host": f"{pool.server}-{pool.network}",
                "source_dir": pool.path,
                "mount_options": pool.mount_options,
            },
        )
    out.update(_bridge_files(lab, pl, node))
    if lab.hypervisor.inner_guests:
        out["inner-build.sh"] = inner_build_script()
    out.update(_migration_files(lab, pl, node))
    return out


def _bridge_files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    network = lab.hypervisor.guest_bridge
    if not network:
        return {}
    ctx = {
        "network": network,
        "bridge": BRIDGE,
        "mac": pl.mac(lab, node.name, network),
        "address": pl.address(lab, node.name, network),
        "prefix": lab.network(network).prefix,
    }
    return {
        "bridge.netdev": render_template("roles/hypervisor/bridge.netdev.j2", ctx),
        "bridge.network": render_template("roles/hypervisor/bridge.network.j2", ctx),
        "bridge-port.network": render_template("roles/hypervisor/bridge-port.network.j2", ctx),
    }


def inner_build_script() -> str:
    inner = "roles/hypervisor/inner"
    return render_template(
        f"{inner}/build.sh.j2",
        {
            "boot_dir": BOOT_DIR,
            "kernel_name": INNER_KERNEL.rsplit("/", 1)[1],
            "generic_kernel_name": INNER_KERNEL_GENERIC.rsplit("/", 1)[1],
            "initrd_name": INNER_INITRD.rsplit("/", 1)[1],
            "modules": INNER_MODULES,
            "bus_modules": INNER_BUS_MODULES,
            "init": render_template(f"{inner}/init.j2", {}).rstrip("\n"),
            "inittab": render_template(f"{inner}/inittab.j2", {}).rstrip("\n"),
            "cgi": render_template(f"{inner}/state.cgi.j2", {}).rstrip("\n"),
            "disk_cgi": render_template(f"{inner}/disk.cgi.j2", {}).rstrip("\n"),
        },
    )


def time_source(lab: Lab) -> str:
    """The hypervisor the others keep their clocks in step with: the first one."""
    return lab.by_role("hypervisor")[0].name


def peers(lab: Lab, node: Node) -> list[str]:
    return [n.name for n in lab.by_role("hypervisor") if n.name != node.name]


def _migration_files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    mig = lab.hypervisor.migration
    if mig is None:
        return {}
    source = time_source(lab)
    out = {
        "qemu-migration.conf": render_template(
            "roles/hypervisor/qemu-migration.conf.j2", {"lock": mig.lock, "port_min": mig.port_min, "port_max": mig.port_max}
        ),
        "chrony.conf": render_template(
            "roles/hypervisor/chrony.conf.j2",
            {"serve": node.name == source, "server": source, "allow": [str(pl.subnets[n.name]) for n in lab.networks]},
        ),
    }
    if mig.lock == "lockd":
        out["qemu-lockd.conf"] = render_template(
            "roles/hypervisor/qemu-lockd.conf.j2", {"lockspace_dir": LOCKSPACE_DIR if mig.lockspace else ""}
        )
    if mig.peers_ssh:
        out["ssh-config"] = render_template("roles/hypervisor/ssh-config.j2", {"peers": peers(lab, node), "key": PEER_KEY})
    return out
