"""ceph-mon, ceph-osd, ceph-admin: a Ceph cluster bootstrapped by hand, and the hypervisors' rbd pool (book 5.7)."""

from kvmlab.roles import Role, RolePackage, Settings
from kvmlab.roles.ceph import checks, files, settings, steps

PACKAGE = RolePackage(
    order=50,
    roles=(
        Role(
            name="ceph-mon",
            summary="Ceph monitor and manager; the pool and the client key",
            steps={"setup": steps.mon_setup, "finish": steps.mon_finish},
            # The hypervisors' rbd pool hangs off the monitor role: one attach per hypervisor.
            steps_on={"hypervisor": {"clients": steps.attach_hypervisor}},
            state_commands=(*steps.CEPH_STATE, "systemctl status 'ceph-mon@*' 'ceph-mgr@*' --no-pager"),
            boot_priority=0,
            settle=steps.settle,
        ),
        Role(
            name="ceph-osd",
            summary="one bluestore OSD on an extra disk",
            steps={"setup": steps.osd_setup, "join": steps.osd_join},
            state_commands=("ls -l /var/lib/ceph/osd/*/", "systemctl status 'ceph-osd@*' --no-pager", "lsblk", "free -m"),
            boot_priority=1,
            waits_for=("ceph-mon",),  # an OSD joins once the monitor is up, not once every OSD is set up
        ),
        Role(
            name="ceph-admin",
            summary="ceph.conf and the admin keyring, so `ceph -s` works there",
            steps={"finish": steps.admin_finish},
            state_commands=(f"{steps.CEPH} -s",),
            boot_priority=5,
        ),
    ),
    settings=Settings(settings.KEY, settings.CephSettings(), settings.parse),
    image_packages=("ceph-mon", "ceph-mgr", "ceph-osd", "ceph-common", "libvirt-daemon-driver-storage-rbd"),
    files=files.files,
    checks=checks.CHECKS,
)
