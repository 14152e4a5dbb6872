"""local-raid: an MD array (RAID1, 5, 6 or 10) with spares, LVM and XFS, and a libvirt dir pool on it (book 5.1)."""

from kvmlab.roles import Role, RolePackage, Settings
from kvmlab.roles.local_raid import checks, files, settings, steps

PACKAGE = RolePackage(
    order=60,
    roles=(
        Role(
            name="local-raid",
            summary="MD RAID 1, 5, 6 or 10 (default) with spares, LVM, XFS and a dir pool on the node itself",
            steps={"setup": steps.setup, "clients": steps.clients},
            state_commands=("cat /proc/mdstat", "mdadm --detail /dev/md/kvmlab", "lvs", "findmnt -t xfs"),
        ),
    ),
    settings=Settings(settings.KEY, settings.LocalRaidSettings(), settings.parse),
    image_packages=("mdadm", "lvm2", "xfsprogs"),
    files=files.files,
    checks=checks.CHECKS,
)
