"""nfs-server: export directories to a lab network or a subnet (book 5.3)."""

from kvmlab.roles import Role, RolePackage, Settings
from kvmlab.roles.nfs_server import checks, files, settings, steps

PACKAGE = RolePackage(
    order=10,
    roles=(
        Role(
            name="nfs-server",
            summary="NFS exports to a lab network or subnet",
            steps={"setup": steps.setup},
            state_commands=("exportfs -v", "systemctl status nfs-server --no-pager", "showmount -e localhost"),
            boot_priority=4,
        ),
    ),
    settings=Settings(settings.KEY, settings.NfsServerSettings(), settings.parse),
    image_packages=("nfs-kernel-server", "nfs-common"),
    files=files.files,
    checks=checks.CHECKS,
)
