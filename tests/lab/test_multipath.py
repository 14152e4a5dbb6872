"""labs/multipath.yaml: one LUN over two storage networks, dm-multipath on the hypervisor (OUTLINE 5.5).

The failover itself (a link cut during writes) is in test_failover.py.
"""

from __future__ import annotations

import pytest

from kvmlab import storage_waits as waits
from kvmlab.roles.iscsi_target.files import PORT, portals
from kvmlab.roles.hypervisor.checks import info_field

pytestmark = pytest.mark.lab("multipath")


def _hv(lab):
    initiators = {a.initiator for a in lab.lab.iscsi_target.acls}
    return next(h for h in lab.by_role("hypervisor") if h.name in initiators)


def test_target_listens_on_a_portal_on_each_storage_network(lab):
    target = lab.by_role("iscsi-target")[0]
    listening = target.host.check_output(f"ss -Hltn 'sport = :{PORT}'")
    assert sorted(line.split()[3] for line in listening.splitlines()) == sorted(f"{a}:{PORT}" for a in portals(lab.lab, lab.placement))


def test_hypervisor_has_a_session_through_each_portal(lab):
    sessions = waits.parse_iscsi_sessions(_hv(lab).host.check_output("iscsiadm -m session -P 1"))
    assert sessions == {f"{a}:{PORT}": "LOGGED_IN" for a in portals(lab.lab, lab.placement)}


def test_multipath_shows_each_lun_with_two_active_paths(lab):
    maps = waits.parse_multipath(_hv(lab).host.check_output("multipath -ll"))
    assert len(maps) == len(lab.lab.iscsi_target.luns)
    for m in maps:
        assert (m.active, m.failed) == (2, 0), m
        assert len({p.hctl.split(":")[0] for p in m.paths}) == 2  # two SCSI hosts: two iSCSI sessions


def test_mpath_pool_lists_the_multipath_device(lab):
    hv = _hv(lab).host
    pool = lab.lab.iscsi_target.pool
    info = hv.check_output(f"virsh pool-info {pool}")
    assert info_field(info, "State") == "running" and info_field(info, "Autostart") == "yes"
    assert "<pool type='mpath'>" in hv.check_output(f"virsh pool-dumpxml {pool}")
    maps = waits.parse_multipath(hv.check_output("multipath -ll"))
    paths = [line.split()[1] for line in hv.check_output(f"virsh -q vol-list {pool}").splitlines()]
    assert sorted(paths) == sorted(f"/dev/mapper/{m.name}" for m in maps)
