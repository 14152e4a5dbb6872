"""labs/iscsi.yaml: a LIO target with fileio, block and lvm LUNs, ACLs, and a libvirt iscsi pool (OUTLINE 5.4).

What the configured lab must show is a role check (kvmlab/roles/iscsi_target/checks.py
and the hypervisor's), the same checks `kvmlab verify` runs on any lab. What stays
here reboots the target: it disturbs the lab, so it runs last and only on this one.
"""

from __future__ import annotations

import pytest

from kvmlab.roles.iscsi_target.checks import backstore, by_path_prefix, hypervisor_acls, targetcli_tree
from kvmlab.roles.iscsi_target.files import backstores, portals
from kvmlab.roles.iscsi_target.steps import RESTORE_UNIT
from kvmlab.wait import wait_until

pytestmark = pytest.mark.lab("iscsi")

REBOOT_S = 300.0  # a reboot under TCG takes ~40 s; the initiator retries its login every few seconds


# The hypervisor's own checks run on the smoke and storage labs; this lab proves its storage role.
@pytest.mark.role_checks("iscsi-target")
def test_role_checks(lab, role_check):
    role_check.run(lab)


def test_target_configuration_is_restored_after_the_target_reboots(lab):
    """Last in the file: the target's testinfra host is stale after the reboot, so this uses node.run."""
    target = lab.by_role("iscsi-target")[0]
    settings = lab.lab.iscsi_target
    before = targetcli_tree(target.remote.check("targetcli ls", "targetcli ls").stdout)
    boot_id = target.run("cat /proc/sys/kernel/random/boot_id").stdout
    target.remote.check("systemd-run --on-active=1 systemctl reboot", "schedule a reboot")
    wait_until(
        lambda: target.run("cat /proc/sys/kernel/random/boot_id", timeout=30).stdout not in ("", boot_id), REBOOT_S, "the target to reboot"
    )
    wait_until(
        lambda: target.run(f"systemctl is-active {RESTORE_UNIT}", timeout=30).stdout.strip() == "active", REBOOT_S, "targetctl restore"
    )
    after = targetcli_tree(target.remote.check("targetcli ls", "targetcli ls").stdout)
    assert sorted(after) == sorted(before), f"{target.name}: targetcli ls after the reboot differs: {sorted(set(before) ^ set(after))}"
    deactivated = [f"{s.plugin}/{s.name}" for s in backstores(settings) if "deactivated" in after[f"/backstores/{s.plugin}/{s.name}"]]
    assert not deactivated, f"{target.name}: backstores {deactivated} are deactivated after the reboot"
    # The initiator's session comes back by itself: a direct read of each mapped LUN succeeds again.
    prefix = "/dev/disk/by-path/" + by_path_prefix(lab.lab, portals(lab.lab, lab.placement)[0])
    for acl in hypervisor_acls(lab.lab):
        hv = lab.node(acl.initiator)
        reads = " && ".join(f"dd if={prefix}{backstore(lab.lab, n).index} of=/dev/null bs=4096 count=1 iflag=direct" for n in acl.luns)
        wait_until(lambda hv=hv, reads=reads: hv.run(reads, timeout=60).rc == 0, REBOOT_S, f"{acl.initiator} to read its LUNs again")
