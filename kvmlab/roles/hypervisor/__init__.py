"""hypervisor: libvirtd with its default and ISO pools, netfs pools, and for chapter 7 inner guests and migration."""

from kvmlab.roles import Role, RolePackage, Settings
from kvmlab.roles.hypervisor import checks, files, settings, steps

PACKAGE = RolePackage(
    order=20,
    roles=(
        Role(
            name="hypervisor",
            summary="libvirt host: default, ISO and netfs pools; pools on every storage of the lab",
            steps={"setup": steps.setup, "join": steps.join, "clients": steps.clients},
            waits_for=("hypervisor", "nfs-server"),  # peers' keys; the NFS exports of netfs pools and the lockspace
            state_commands=(
                "virsh pool-list --all --details",
                "virsh list --all",
                "findmnt -t nfs,nfs4,fuse.glusterfs",
                "iscsiadm -m session -P 3",
                "iscsiadm -m iface",
                "tail -n 100 /var/log/glusterfs/*.log",
                "networkctl status --no-pager",
                "chronyc -n sources",
                "ls -l /var/lib/libvirt/boot /var/lib/libvirt/lockd/files",
                "tail -n 50 /var/log/libvirt/qemu/*.log",
            ),
        ),
    ),
    settings=Settings(settings.KEY, settings.HypervisorSettings(), settings.parse),
    image_packages=(
        "libvirt-daemon-system",
        "libvirt-clients",
        "qemu-system-x86",
        "qemu-utils",
        "virtinst",
        "qemu-block-extra",
        "nfs-common",
        "busybox-static",  # the inner guests' initramfs userland (migration lab)
    ),
    # trixie's libvirt 11 ships virtlockd, its lock plugin and the storage backends as packages of their own.
    release_packages={
        "trixie": (
            "libvirt-daemon-lock",
            "libvirt-daemon-plugin-lockd",
            "libvirt-daemon-driver-storage-iscsi",
            "libvirt-daemon-driver-storage-mpath",
            "libvirt-daemon-driver-storage-logical",
            "libvirt-daemon-driver-storage-disk",
            "libvirt-daemon-driver-storage-scsi",
        )
    },
    files=files.files,
    checks=checks.CHECKS,
)
