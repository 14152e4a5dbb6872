"""Failover scenarios (OUTLINE 5.1, 5.3, 5.5, 5.6, 5.7): the failover suite runs them, and a lab file names them
under `failover:` for `kvmlab verify` to run after the roles' checks.

Each scenario finds its nodes by role, starts the integrity writer before the
fault, checks that I/O goes on during it, restores what it broke, waits for the
storage to recover, and then verifies every acknowledged record — on replicated
storage also each replica. It leaves the lab as healthy as it found it.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from kvmlab import storage_waits as waits
from kvmlab.errors import HarnessError
from kvmlab.integrity import IntegrityError, Workload, compare_replicas
from kvmlab.roles import Check
from kvmlab.roles.ceph.steps import EXPECTED_WARNINGS
from kvmlab.roles.gluster.files import brick_path, peer_name
from kvmlab.roles.iscsi_target.files import PORT, multipath, portal_networks, portals
from kvmlab.wait import timeout_for, wait_until

BEFORE = 40  # records acknowledged before the fault
DURING = 40  # records acknowledged while the fault lasts: I/O goes on
AFTER = 20  # records acknowledged once the fault is repaired


def _progress_s(lab: Any) -> float:
    return timeout_for("service", lab.pace)


def _one(lab: Any, role: str) -> Any:
    nodes = lab.by_role(role)
    assert nodes, f"lab {lab.lab.name} has no node with role {role}"
    return nodes[0]


def _name() -> str:
    return f"integrity-{uuid.uuid4().hex[:8]}"


def _sha256(node: Any, path: str) -> str:
    res = node.run(f"sha256sum {shlex.quote(path)}", timeout=300)
    if res.rc != 0:
        raise IntegrityError(f"{node.name}:{path}: cannot read the replica: {res.output}")
    return res.stdout.split()[0]


def _finish(work: Workload, lab: Any) -> None:
    """I/O resumed after the repair; then stop the writer and verify where it wrote."""
    work.wait_progress(AFTER, _progress_s(lab))
    work.stop()
    work.verify().assert_intact()


# -- 5.6 Gluster ------------------------------------------------------------------


def check_gluster_power_off_of_the_mounted_server(lab: Any) -> dict[str, Any]:
    s = lab.lab.gluster
    hv = _one(lab, "hypervisor")
    gluster = lab.by_role("gluster")
    source = hv.run(f"findmnt -n -o SOURCE {s.mount}").stdout.strip()  # e.g. gluster1-storage:/kvmgluster
    server = next((g for g in gluster if source.startswith(f"{peer_name(g.name, s)}:")), None)
    assert server is not None, f"{hv.name} mounts {s.mount} from '{source}', not from a gluster node"
    survivor = next(g for g in gluster if g is not server)
    name = _name()
    work = Workload(hv, f"{s.mount}/{name}.dat", name=name)
    facts: dict[str, Any] = {"server": server.name}
    try:
        work.start()
        work.wait_acked(BEFORE, _progress_s(lab))
        with server.powered_off():
            t0 = time.monotonic()
            state = work.wait_progress(DURING, _progress_s(lab))  # after network.ping-timeout
            facts["stall_s"] = state.max_gap_s
            facts["resumed_after_s"] = round(time.monotonic() - t0, 1)
            work.verify().assert_intact()  # reads go on too, with the server down
        _finish(work, lab)
        waits.gluster_heal_complete(survivor, s.volume, bricks=len(gluster), nodes=gluster)
        facts["replicas"] = check_gluster_bricks_agree(lab, work, f"{name}.dat")
        return facts
    finally:
        work.cleanup()
        hv.run(f"rm -f {shlex.quote(work.path)}")


def check_gluster_bricks_agree(lab: Any, work: Workload, name: str) -> int:
    """Every data brick's own copy of NAME, read on its node: each verified record by record, and all identical.
    An arbiter brick holds the name with no data; a dispersed volume's bricks hold fragments, not copies."""
    s = lab.lab.gluster
    if not s.replica:
        return 0
    sums, problems = {}, []
    for index, g in enumerate(lab.by_role("gluster")):
        brick_file = f"{brick_path(s)}/{name}"
        if s.arbiter and index % s.replica == s.replica - 1:
            size = g.run(f"stat -c %s {shlex.quote(brick_file)}").stdout.strip()
            if size != "0":
                problems.append(f"{g.name}: the arbiter brick holds {size} bytes of {brick_file}, not a name only")
            continue
        report = work.verify(g, brick_file)
        if not report.intact:
            problems.append(report.summary())
        sums[f"{g.name}:{brick_file}"] = _sha256(g, brick_file)
    try:
        compare_replicas(sums)
    except IntegrityError as exc:
        problems.insert(0, str(exc))
    if problems:
        raise IntegrityError("\n".join(problems))
    return len(sums)


def check_gluster_divergent_brick_is_reported(lab: Any) -> str:
    """The replica check can fail: one byte changed behind Gluster's back, on one brick, is reported with its evidence."""
    s = lab.lab.gluster
    hv = _one(lab, "hypervisor")
    victim = lab.by_role("gluster")[1]
    name = _name()
    work = Workload(hv, f"{s.mount}/{name}.dat", name=name, records=30, interval=0)
    try:
        work.start()
        work.wait_acked(30, _progress_s(lab))
        work.stop()
        waits.gluster_heal_complete(victim, s.volume, bricks=len(lab.by_role("gluster")))
        flip = f"{brick_path(s)}/{name}.dat"
        res = victim.run(
            "python3 -c "
            + shlex.quote(
                f"import os; f = os.open('{flip}', os.O_RDWR); b = os.pread(f, 1, 5 * 4096 + 700);"
                " os.pwrite(f, bytes([b[0] ^ 1]), 5 * 4096 + 700); os.fsync(f)"
            )
        )
        assert res.rc == 0, res.output
        try:
            check_gluster_bricks_agree(lab, work, f"{name}.dat")
        except IntegrityError as exc:
            return str(exc)
        raise AssertionError(f"a byte changed on {victim.name}'s brick went unnoticed")
    finally:
        work.cleanup()
        hv.run(f"rm -f {shlex.quote(work.path)}")


# -- 5.7 Ceph -----------------------------------------------------------------------

CEPH = "ceph --connect-timeout 20"


def _deep_scrub_clean(mon: Any, pool: str, timeout: float) -> int:
    """Deep-scrub every PG of POOL that holds data (replicas compared object by object); none may be inconsistent.

    Empty PGs are left out: scrubs run one at a time per OSD, and under TCG each costs seconds.
    """
    pgs = json.loads(mon.run(f"{CEPH} pg ls-by-pool {pool} --format json", timeout=120).stdout)
    pgs = pgs.get("pg_stats", pgs) if isinstance(pgs, dict) else pgs
    before = {p["pgid"]: p["last_deep_scrub_stamp"] for p in pgs if p["stat_sum"]["num_objects"] > 0}
    assert before, f"no PG of pool {pool} holds an object"
    for pgid in before:
        mon.run(f"{CEPH} pg deep-scrub {pgid}", timeout=120)

    def scrubbed() -> bool:
        now = json.loads(mon.run(f"{CEPH} pg ls-by-pool {pool} --format json", timeout=120).stdout)
        now = now.get("pg_stats", now) if isinstance(now, dict) else now
        return all(p["last_deep_scrub_stamp"] != before[p["pgid"]] for p in now if p["pgid"] in before)

    wait_until(
        scrubbed,
        timeout,
        f"a deep scrub of every PG of pool {pool}",
        interval=5.0,
        context=lambda: mon.run(f"{CEPH} -s; {CEPH} pg ls-by-pool {pool} | head -40").output,
    )
    inconsistent = mon.run(f"rados list-inconsistent-pg {pool} --format json", timeout=120)
    health = mon.run(f"{CEPH} health detail", timeout=120).output
    if inconsistent.stdout.strip() not in ("[]", "") or "inconsistent" in health or "OSD_SCRUB_ERRORS" in health:
        detail = [mon.run(f"rados list-inconsistent-obj {pg} --format json-pretty", timeout=120).output for pg in _pgs(inconsistent.stdout)]
        raise IntegrityError(f"replicas of pool {pool} differ after the deep scrub:\n{health}\n" + "\n".join(detail))
    return len(before)


def _pgs(text: str) -> list[str]:
    try:
        return list(json.loads(text))
    except ValueError:
        return []


def check_ceph_io_goes_on_with_one_osd_node_down(lab: Any) -> dict[str, Any]:
    s = lab.lab.ceph
    admin = _one(lab, "ceph-admin")  # has ceph.conf and the admin keyring
    mon = admin
    hv = _one(lab, "hypervisor")
    osds = lab.by_role("ceph-osd")
    victim = osds[-1]
    name = _name()
    facts: dict[str, Any] = {"osd_node": victim.name}
    # A volume of the hypervisor's rbd pool, mapped with the kernel client on the admin node.
    hv.run(f"virsh vol-create-as {s.libvirt_pool} {name} 96M", timeout=300)
    mapped = admin.run(f"rbd map {s.pool}/{name}", timeout=300)
    assert mapped.rc == 0, f"rbd map {s.pool}/{name} on {admin.name}: {mapped.output}"
    device = mapped.stdout.strip()
    work = Workload(admin, device, name=name)
    try:
        work.start()
        work.wait_acked(BEFORE, _progress_s(lab))
        with victim.powered_off():
            degraded = waits.ceph_degraded(mon)
            facts["degraded"] = sorted(degraded.checks)
            state = work.wait_progress(DURING, _progress_s(lab))
            facts["stall_s"] = state.max_gap_s
        t0 = time.monotonic()
        waits.ceph_health_ok(mon, allowed=EXPECTED_WARNINGS, nodes=osds)
        facts["health_ok_after_s"] = round(time.monotonic() - t0, 1)
        _finish(work, lab)
        t0 = time.monotonic()
        facts["scrubbed_pgs"] = _deep_scrub_clean(mon, s.pool, waits.storage_timeout("ceph-health", lab.pace))
        facts["scrub_s"] = round(time.monotonic() - t0, 1)
        return facts
    finally:
        work.cleanup()
        admin.run(f"rbd unmap {shlex.quote(device)}", timeout=300)
        hv.run(f"virsh vol-delete --pool {s.libvirt_pool} {name}", timeout=300)


# -- 5.5 iSCSI multipath ---------------------------------------------------------------


def check_multipath_survives_a_cut_link(lab: Any) -> dict[str, Any]:
    settings = lab.lab.iscsi_target
    hv = next(h for h in lab.by_role("hypervisor") if h.name in {a.initiator for a in settings.acls})
    addresses = [f"{a}:{PORT}" for a in portals(lab.lab, lab.placement)]
    waits.iscsi_logged_in(hv, addresses)
    maps = waits.multipath_paths(hv, active=len(addresses))
    device = f"/dev/mapper/{maps[0].name}"
    cut = portal_networks(settings)[-1]
    name = _name()
    work = Workload(hv, device, name=name)
    facts: dict[str, Any] = {"map": maps[0].name, "cut": f"{hv.name} on {cut}"}
    try:
        work.start()
        work.wait_acked(BEFORE, _progress_s(lab))
        with hv.link_cut(cut):
            degraded = waits.multipath_paths(hv, active=len(addresses) - 1, failed=1)
            facts["failed_path"] = next(p.dev for p in degraded[0].paths if not p.active)
            state = work.wait_progress(DURING, _progress_s(lab))
            facts["stall_s"] = state.max_gap_s
        waits.multipath_paths(hv, active=len(addresses))
        _finish(work, lab)
        return facts
    finally:
        work.cleanup()


# -- 5.1 MD RAID10 -------------------------------------------------------------------

ARRAY = "/dev/md/kvmlab"


def _mdadm_detail(node: Any) -> dict[str, str]:
    fields = {}
    for line in node.run(f"mdadm --detail {ARRAY}").stdout.splitlines():
        key, sep, value = line.partition(" : ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def check_raid_rebuilds_onto_a_spare_when_a_member_disappears(lab: Any) -> dict[str, Any]:
    s = lab.lab.local_raid
    hv = _one(lab, "local-raid")
    member = _active_members(hv, (*s.members, *s.spares), len(s.members))[1]  # after an earlier run a spare may be a member
    device = f"/dev/disk/by-id/virtio-{member}"
    name = _name()
    work = Workload(hv, f"{s.mount}/{name}.dat", name=name)
    facts: dict[str, Any] = {"member": member}
    try:
        work.start()
        work.wait_acked(BEFORE, _progress_s(lab))
        with hv.disk_removed(member):
            noticed = waits.md_degraded(hv, ARRAY)
            facts["noticed"] = noticed.syncing or f"[{noticed.devices}/{noticed.working}]"
            work.wait_progress(DURING, _progress_s(lab))
            t0 = time.monotonic()
            waits.md_in_sync(hv, ARRAY)
            facts["rebuild_s"] = round(time.monotonic() - t0, 1)
            fields = _mdadm_detail(hv)
            members, spares = str(len(s.members)), str(len(s.spares) - 1)
            assert (fields["Active Devices"], fields["Working Devices"], fields["Spare Devices"]) == (members, members, spares), fields
        _finish(work, lab)
        # The redundancy itself: an MD check reads every mirror half (or parity) and counts differences.
        md = hv.run(f"basename $(readlink -f {ARRAY})").stdout.strip()
        hv.run(f"echo check > /sys/block/{md}/md/sync_action")
        wait_until(
            lambda: hv.run(f"cat /sys/block/{md}/md/sync_action /sys/block/{md}/md/last_sync_action").stdout.split() == ["idle", "check"],
            waits.storage_timeout("md-sync", lab.pace),
            f"an MD check of {ARRAY} to finish",
            interval=2.0,
            context=lambda: hv.run("cat /proc/mdstat").output,
        )
        mismatches = hv.run(f"cat /sys/block/{md}/md/mismatch_cnt").stdout.strip()
        if mismatches != "0":
            raise IntegrityError(f"MD check found {mismatches} mismatched sectors between mirrors:\n{hv.run('cat /proc/mdstat').output}")
        return facts
    finally:
        work.cleanup()
        hv.run(f"rm -f {shlex.quote(work.path)}")
        _restore_member_as_spare(lab, hv, device, len(s.spares))


def _active_members(hv: Any, disks: tuple[str, ...], count: int) -> list[str]:
    active = hv.run(f"mdadm --detail {ARRAY} | awk '/active sync/ {{print $NF}}'").stdout.split()
    real = {d: hv.run(f"readlink -f /dev/disk/by-id/virtio-{d}").stdout.strip() for d in disks}
    members = [d for d in disks if real[d] in active]
    assert len(members) == count, f"{ARRAY} on {hv.name} has active members {active}, want {count} of {disks}"
    return members


def _restore_member_as_spare(lab: Any, hv: Any, device: str, spares: int) -> None:
    """The plugged-back disk becomes a spare again, so the array has as many members and spares as before."""
    wait_until(lambda: hv.run(f"test -b {device}").rc == 0, _progress_s(lab), f"{device} to come back on {hv.name}", interval=1.0)
    real = hv.run(f"readlink -f {device}").stdout.strip()
    if real in hv.run(f"mdadm --detail {ARRAY}").stdout:
        return
    hv.run(f"mdadm {ARRAY} --remove failed; mdadm {ARRAY} --remove detached")
    res = hv.run(f"mdadm --zero-superblock {device} && mdadm {ARRAY} --add {device}")
    if res.rc != 0:
        raise HarnessError(f"could not add {device} back to {ARRAY} as a spare: {res.output}")
    wait_until(
        lambda: _mdadm_detail(hv).get("Spare Devices") == str(spares),
        _progress_s(lab),
        f"{device} to be the spare of {ARRAY}",
        context=lambda: hv.run(f"mdadm --detail {ARRAY}").output,
    )


# -- 5.3 NFS ---------------------------------------------------------------------------


def check_nfs_hard_mount_rides_out_a_server_restart(lab: Any) -> dict[str, Any]:
    server = _one(lab, "nfs-server")
    pool = next(p for p in lab.lab.hypervisor.netfs_pools if p.server == server.name)
    hv = next(h for h in lab.by_role("hypervisor"))
    options = hv.run(f"findmnt -n -o FSTYPE,OPTIONS {pool.target}").stdout.split()
    assert options and options[0].startswith("nfs"), f"{pool.target} on {hv.name}: {options}"
    assert "soft" not in options[1].split(","), f"{pool.target} is a soft mount: {options[1]}"
    name = _name()
    work = Workload(hv, f"{pool.target}/{name}.dat", name=name)
    facts: dict[str, Any] = {"server": server.name}
    try:
        work.start()
        work.wait_acked(BEFORE, _progress_s(lab))
        with server.powered_off():
            # A hard mount makes the writer wait, not fail: no acknowledgement while the server is away.
            stalled = work.state_now().acked
            time.sleep(3)  # the server is off: let the writer run into it
            facts["acked_while_off"] = work.state_now().acked - stalled
        t0 = time.monotonic()
        waits.nfs_responsive(hv, pool.target, nodes=[server])
        state = work.wait_progress(DURING, _progress_s(lab))
        facts["resumed_after_s"] = round(time.monotonic() - t0, 1)
        facts["stall_s"] = state.max_gap_s
        assert state.errors == 0, f"the writer saw I/O errors on a hard mount: {state.last_error}"
        _finish(work, lab)
        # The server's own copy, read on the server.
        export_file = f"{pool.path}/{name}.dat"
        work.verify(server, export_file).assert_intact()
        return facts
    finally:
        work.cleanup()
        with suppress(HarnessError):
            hv.run(f"rm -f {shlex.quote(work.path)}", timeout=120)


# -- as checks of a lab file ------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A scenario a lab file names under `failover:`; kvmlab verify runs it after the roles' checks."""

    run: Callable[[Any], dict[str, Any]]
    roles: tuple[str, ...]  # a lab without a node of each cannot run it
    what: str
    lacks: Callable[[Any], str] = lambda _lab: ""  # what else the lab (the model) would need, if anything


def _nfs_lacks(lab: Any) -> str:
    servers = {n.name for n in lab.by_role("nfs-server")}
    return "" if any(p.server in servers for p in lab.hypervisor.netfs_pools) else "a hypervisor netfs pool on the NFS server"


def _multipath_lacks(lab: Any) -> str:
    return "" if multipath(lab.iscsi_target) else "portals on two networks (iscsi-target 'portals:'), for two paths"


def _raid_lacks(lab: Any) -> str:
    return "" if lab.local_raid.spares else "a spare to rebuild onto (local-raid 'spares:')"


SCENARIOS = {
    "nfs-server-restart": Scenario(
        check_nfs_hard_mount_rides_out_a_server_restart,
        ("nfs-server", "hypervisor"),
        "the NFS server off and on under a hard mount",
        _nfs_lacks,
    ),
    "gluster-server-off": Scenario(
        check_gluster_power_off_of_the_mounted_server, ("gluster", "hypervisor"), "the Gluster server a hypervisor mounts powered off"
    ),
    "ceph-osd-node-down": Scenario(check_ceph_io_goes_on_with_one_osd_node_down, ("ceph-osd", "hypervisor"), "one OSD node powered off"),
    "multipath-link-cut": Scenario(
        check_multipath_survives_a_cut_link, ("iscsi-target", "hypervisor"), "one iSCSI path's link cut", _multipath_lacks
    ),
    "raid-member-lost": Scenario(
        check_raid_rebuilds_onto_a_spare_when_a_member_disappears,
        ("local-raid",),
        "an array member removed, rebuilt onto a spare",
        _raid_lacks,
    ),
}
ROLE = "failover"


def _check_of(name: str) -> Check:
    return Check(ROLE, name, lambda lab: SCENARIOS[name].run(lab), lambda lab: name in lab.failover)


# Run by kvmlab verify one at a time, after every other check: each one breaks something on purpose.
CHECKS = tuple(_check_of(name) for name in SCENARIOS)
