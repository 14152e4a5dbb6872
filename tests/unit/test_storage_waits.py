"""Parsers of the storage-aware waits, on outputs as the services print them, and the waits' fail-fast."""

from __future__ import annotations

import json

import pytest

from kvmlab import storage_waits as sw
from kvmlab.errors import LabTimeout
from kvmlab.remote import Result

MULTIPATH_TWO_ACTIVE = """\
mpatha (36001405a1b2c3d4e5f60718293a4b5c6) dm-0 LIO-ORG,lun0
size=512M features='1 queue_if_no_path' hwhandler='1 alua' wp=rw
|-+- policy='service-time 0' prio=50 status=active
| `- 2:0:0:0 sda 8:0  active ready running
`-+- policy='service-time 0' prio=50 status=enabled
  `- 3:0:0:0 sdb 8:16 active ready running
"""

MULTIPATH_ONE_FAILED = """\
mpatha (36001405a1b2c3d4e5f60718293a4b5c6) dm-0 LIO-ORG,lun0
size=512M features='1 queue_if_no_path' hwhandler='1 alua' wp=rw
|-+- policy='service-time 0' prio=50 status=active
| `- 2:0:0:0 sda 8:0  active ready running
`-+- policy='service-time 0' prio=0 status=enabled
  `- 3:0:0:0 sdb 8:16 failed faulty running
"""

MULTIPATH_ONE_GROUP = """\
mpatha (36001405015bdf57dc1040ecb063f11e2) dm-0 LIO-ORG,lun0
size=512M features='1 queue_if_no_path' hwhandler='1 alua' wp=rw
`-+- policy='service-time 0' prio=50 status=active
  |- 2:0:0:0 sda 8:0  active ready running
  `- 3:0:0:0 sdb 8:16 active ready running
"""

MDSTAT_RECOVERING = """\
Personalities : [raid10]
md127 : active raid10 vdf[4] vde[3] vdd[2] vdc[1](F) vdb[0]
      1042432 blocks super 1.2 512K chunks 2 near-copies [4/3] [U_UU]
      [=>...................]  recovery =  8.9% (46848/521216) finish=0.8min speed=9369K/sec

unused devices: <none>
"""

MDSTAT_CLEAN = """\
Personalities : [raid10]
md127 : active raid10 vdf[4] vde[3] vdd[2] vdb[0]
      1042432 blocks super 1.2 512K chunks 2 near-copies [4/4] [UUUU]

unused devices: <none>
"""

HEAL_PENDING = """\
Brick gluster1-storage:/gluster/bricks/1/kvmgluster
Status: Transport endpoint is not connected
Number of entries: -

Brick gluster2-storage:/gluster/bricks/1/kvmgluster
/integrity-1.dat
Status: Connected
Number of entries: 1

Brick gluster3-storage:/gluster/bricks/1/kvmgluster
Status: Connected
Number of entries: 0
"""

SESSIONS = """\
Target: iqn.2026-11.dev.kvmlab:multipath (non-flash)
\tCurrent Portal: 10.213.1.10:3260,1
\tPersistent Portal: 10.213.1.10:3260,1
\t\tIface Name: default
\t\tiSCSI Connection State: LOGGED IN
\t\tiSCSI Session State: LOGGED_IN
\tCurrent Portal: 10.213.2.10:3260,1
\tPersistent Portal: 10.213.2.10:3260,1
\t\tiSCSI Connection State: TRANSPORT WAIT
\t\tiSCSI Session State: FAILED
"""


def _ceph(health: str, checks: dict, states: dict[str, int], osds=(3, 3, 3)) -> str:
    return json.dumps(
        {
            "health": {"status": health, "checks": {k: {"summary": {"message": v}} for k, v in checks.items()}},
            "osdmap": {"num_osds": osds[0], "num_up_osds": osds[1], "num_in_osds": osds[2]},
            "pgmap": {"num_pgs": sum(states.values()), "pgs_by_state": [{"state_name": k, "count": v} for k, v in states.items()]},
        }
    )


def test_multipath_counts_active_and_failed_paths_per_map():
    (m,) = sw.parse_multipath(MULTIPATH_TWO_ACTIVE)
    assert (m.name, m.wwid, m.active, m.failed) == ("mpatha", "36001405a1b2c3d4e5f60718293a4b5c6", 2, 0)
    (m,) = sw.parse_multipath(MULTIPATH_ONE_FAILED)
    assert (m.active, m.failed) == (1, 1)
    assert [(p.dev, p.dm_state, p.checker) for p in m.paths] == [("sda", "active", "ready"), ("sdb", "failed", "faulty")]
    (m,) = sw.parse_multipath(MULTIPATH_ONE_GROUP)  # both paths in one group, as LIO's ALUA reports them
    assert [p.dev for p in m.paths if p.active] == ["sda", "sdb"]
    assert sw.parse_multipath("") == []


def test_mdstat_tells_recovery_from_in_sync():
    state = sw.parse_mdstat(MDSTAT_RECOVERING, "md127")
    assert state is not None and not state.in_sync
    assert (state.devices, state.working, state.failed_members) == (4, 3, ("vdc",))
    assert state.syncing.startswith("recovery =  8.9%")
    clean = sw.parse_mdstat(MDSTAT_CLEAN, "md127")
    assert clean is not None and clean.in_sync
    assert sw.parse_mdstat(MDSTAT_CLEAN, "md0") is None


def test_heal_info_is_complete_only_with_every_brick_connected_and_empty():
    bricks = sw.parse_heal_info(HEAL_PENDING)
    assert [(b.status, b.entries, b.healed) for b in bricks] == [
        ("Transport endpoint is not connected", None, False),
        ("Connected", 1, False),
        ("Connected", 0, True),
    ]


def test_iscsi_sessions_by_portal():
    assert sw.parse_iscsi_sessions(SESSIONS) == {"10.213.1.10:3260": "LOGGED_IN", "10.213.2.10:3260": "FAILED"}


def test_ceph_state_healthy_degraded_and_allowed_warnings():
    ok = sw.parse_ceph_status(_ceph("HEALTH_OK", {}, {"active+clean": 33}))
    assert ok.healthy() and ok.active_clean and not ok.degraded
    down = sw.parse_ceph_status(_ceph("HEALTH_WARN", {"OSD_DOWN": "1 osds down"}, {"active+undersized+degraded": 33}, (3, 2, 3)))
    assert down.degraded and not down.healthy()
    warned = sw.parse_ceph_status(_ceph("HEALTH_WARN", {"MON_DISK_LOW": "low"}, {"active+clean": 33}))
    assert not warned.healthy() and warned.healthy(allowed=["MON_DISK_LOW"])


class _FakeRemote(sw.Remote):
    """A Remote that answers from a script of outputs, without SSH."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs
        self.target = type("T", (), {"node": "hv1"})()

    def run(self, command: str, timeout: float = 600.0, stdin: str | None = None) -> Result:
        for key, out in self.outputs.items():
            if key in command:
                return Result(0, out, "")
        return Result(1, "", "unknown")


def test_wait_times_out_with_the_services_own_output():
    remote = _FakeRemote({"multipath -ll 2>&1": MULTIPATH_ONE_FAILED, "multipath -ll;": MULTIPATH_ONE_FAILED})
    with pytest.raises(LabTimeout) as exc:
        sw.multipath_paths(remote, active=2, timeout=0.05)
    assert "multipath maps with 2 active and 0 failed paths" in str(exc.value)
    assert "3:0:0:0 sdb 8:16 failed faulty running" in str(exc.value)  # the evidence


def test_wait_gives_up_at_once_when_a_node_it_needs_is_down():
    node = type("N", (), {"name": "gluster1", "state": "shutoff"})()
    remote = _FakeRemote({"heal": HEAL_PENDING})
    with pytest.raises(LabTimeout, match=r"gave up waiting .*node gluster1 is shutoff"):
        sw.gluster_heal_complete(remote, "kvmgluster", bricks=3, nodes=[node], timeout=600)


def test_md_wait_fails_fast_on_a_failed_array():
    failed = "md127\n" + MDSTAT_RECOVERING + "           State : clean, FAILED\n"
    remote = _FakeRemote({"mdstat": failed})
    with pytest.raises(LabTimeout, match="has failed"):
        sw.md_in_sync(remote, timeout=600)


def test_md_wait_returns_once_in_sync():
    remote = _FakeRemote({"mdstat": "md127\n" + MDSTAT_CLEAN})
    assert sw.md_in_sync(remote, timeout=5).in_sync
