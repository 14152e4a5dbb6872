"""gluster: a replicated Gluster volume on XFS bricks, and the hypervisors' pool on its FUSE mount (book 5.6)."""

from kvmlab.roles import Role, RolePackage, Settings
from kvmlab.roles.gluster import checks, files, settings, steps

PACKAGE = RolePackage(
    order=40,
    roles=(
        Role(
            name="gluster",
            summary="replicated Gluster volume; the hypervisors' dir pool on its FUSE mount",
            steps={"setup": steps.setup, "join": steps.join},
            steps_on={"hypervisor": {"clients": steps.attach_hypervisor}},
            state_commands=(
                "systemctl status glusterd --no-pager",
                "gluster peer status",
                "gluster volume info",
                "gluster volume status all detail",
                "findmnt -t xfs",
                "tail -n 100 /var/log/glusterfs/glusterd.log",
            ),
            boot_priority=2,
        ),
    ),
    settings=Settings(settings.KEY, settings.GlusterSettings(), settings.parse),
    image_packages=("glusterfs-server", "glusterfs-client", "xfsprogs"),
    files=files.files,
    checks=checks.CHECKS,
)
