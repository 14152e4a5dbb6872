"""iscsi-target: an LIO target with fileio, block and LVM LUNs and per-initiator ACLs (book 5.4, 5.5)."""

from kvmlab.roles import Role, RolePackage, Settings
from kvmlab.roles.iscsi_target import checks, files, settings, steps

PACKAGE = RolePackage(
    order=30,
    roles=(
        Role(
            name="iscsi-target",
            summary="iSCSI target (targetcli): LUNs, ACLs, portals; the hypervisors' iscsi pool",
            steps={"setup": steps.setup},
            steps_on={"hypervisor": {"clients": steps.attach_hypervisor}},
            state_commands=(
                "targetcli ls",
                f"cat {steps.SAVED_CONFIG}",
                f"systemctl status {steps.RESTORE_UNIT} --no-pager",
                "findmnt -t xfs",
                "lvs",
                "multipath -ll",
            ),
            boot_priority=3,
        ),
    ),
    settings=Settings(settings.KEY, settings.IscsiTargetSettings(), settings.parse),
    image_packages=("targetcli-fb", "lvm2", "xfsprogs", "open-iscsi", "multipath-tools"),
    files=files.files,
    checks=checks.CHECKS,
)
