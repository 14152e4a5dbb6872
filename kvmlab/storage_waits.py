"""Named waits on storage services: a deadline, fail-fast, and the service's own status as evidence.

Each wait takes a node handle (its accelerator scales the deadline) or a Remote,
polls a service command, and returns what it saw once the state is reached. On
timeout the LabTimeout carries the service's own view (`ceph -s`, `gluster volume
heal VOL info`, `multipath -ll`, /proc/mdstat, ...). A wait gives up at once when
what it waits for can no longer happen: a node it depends on (NODES) is not
running, the service reports a final failure (an MD array FAILED, a volume that
does not exist).

The parsers are pure functions, tested without VMs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kvmlab.errors import HarnessError, LabTimeout
from kvmlab.remote import Remote, Result
from kvmlab.wait import TIMEOUTS_S, timeout_for, wait_until

# Seconds under KVM, scaled like every other deadline (TCG factor, KVMLAB_TIMEOUT_SCALE).
STORAGE_TIMEOUTS_S = {
    "ceph-health": 150.0,  # an OSD node back from a reboot: OSD up, peering, recovery of a small pool
    "ceph-degraded": 60.0,  # heartbeat grace (20 s) and the monitor's report
    "gluster-heal": 90.0,
    "iscsi-login": 45.0,
    "multipath": 45.0,
    "md-sync": 150.0,  # a rebuild of a small member
    "nfs": 60.0,
}


def storage_timeout(name: str, accel: str) -> float:
    factor = timeout_for("service", accel) / TIMEOUTS_S["service"]
    return STORAGE_TIMEOUTS_S[name] * factor


# -- parsers ------------------------------------------------------------------


@dataclass(frozen=True)
class MpathPath:
    hctl: str
    dev: str
    dm_state: str  # active | failed
    checker: str  # ready | faulty | ghost | shaky | i/o pending ...
    online: str  # running | offline ...

    @property
    def active(self) -> bool:
        return self.dm_state == "active" and self.checker == "ready"


@dataclass(frozen=True)
class MpathMap:
    name: str
    wwid: str
    paths: tuple[MpathPath, ...]

    @property
    def active(self) -> int:
        return sum(p.active for p in self.paths)

    @property
    def failed(self) -> int:
        return sum(not p.active for p in self.paths)


_MAP_RE = re.compile(r"^(?:(?P<alias>\S+) \((?P<wwid>\S+)\)|(?P<bare>\S+)) (?P<dm>dm-\d+) ")
_PATH_RE = re.compile(r"[-`|+ ]*(?P<hctl>\d+:\d+:\d+:\d+)\s+(?P<dev>\S+)\s+\d+:\d+\s+(?P<dm>\S+)\s+(?P<chk>.+?)\s+(?P<on>\S+)\s*$")


def parse_multipath(text: str) -> list[MpathMap]:
    """The maps of `multipath -ll`, each with its paths' states."""
    maps: list[MpathMap] = []
    name = wwid = ""
    paths: list[MpathPath] = []
    for line in text.splitlines():
        if m := _MAP_RE.match(line):
            if name:
                maps.append(MpathMap(name, wwid, tuple(paths)))
            name = m["alias"] or m["bare"]
            wwid, paths = m["wwid"] or m["bare"], []
        elif name and (p := _PATH_RE.match(line)):
            paths.append(MpathPath(p["hctl"], p["dev"], p["dm"], p["chk"], p["on"]))
    if name:
        maps.append(MpathMap(name, wwid, tuple(paths)))
    return maps


@dataclass(frozen=True)
class MdState:
    name: str  # md127
    active: bool  # "active", not "inactive"
    devices: int  # [n/m]: n
    working: int  # [n/m]: m
    syncing: str  # "recovery = 8.9% ..." or "" when no resync/recovery runs
    failed_members: tuple[str, ...]

    @property
    def in_sync(self) -> bool:
        return self.active and self.working == self.devices and not self.syncing


def parse_mdstat(text: str, name: str) -> MdState | None:
    """One array of /proc/mdstat (NAME e.g. md127), or None if it is not there."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith(f"{name} :"):
            continue
        block = [line]
        for follow in lines[i + 1 :]:
            if not follow.strip() or re.match(r"^\S", follow):
                break
            block.append(follow)
        text_block = "\n".join(block)
        counts = re.search(r"\[(\d+)/(\d+)\]", text_block)
        sync = re.search(r"(recovery|resync|reshape|check|repair)\s*=\s*\S+.*", text_block)
        delayed = re.search(r"(resync|recovery)=(DELAYED|PENDING)", text_block)
        failed = tuple(m.group(1) for m in re.finditer(r"(\S+?)\[\d+\]\(F\)", line))
        return MdState(
            name=name,
            active=line.split(":", 1)[1].split()[0] == "active",
            devices=int(counts.group(1)) if counts else 0,
            working=int(counts.group(2)) if counts else 0,
            syncing=(sync.group(0).strip() if sync else "") or (delayed.group(0) if delayed else ""),
            failed_members=failed,
        )
    return None


@dataclass(frozen=True)
class HealBrick:
    brick: str
    status: str
    entries: int | None  # None: unknown ("-")

    @property
    def healed(self) -> bool:
        return self.status == "Connected" and self.entries == 0


def parse_heal_info(text: str) -> list[HealBrick]:
    """Bricks of `gluster volume heal VOL info`, with their connection and pending heal entries."""
    bricks: list[HealBrick] = []
    brick, status = "", ""
    for line in text.splitlines():
        if line.startswith("Brick "):
            brick, status = line[6:].strip(), ""
        elif line.startswith("Status:"):
            status = line.split(":", 1)[1].strip()
        elif line.startswith("Number of entries:") and brick:
            value = line.split(":", 1)[1].strip()
            bricks.append(HealBrick(brick, status, int(value) if value.isdigit() else None))
            brick = ""
    return bricks


def parse_iscsi_sessions(text: str) -> dict[str, str]:
    """Portal (address:port) -> iSCSI session state, from `iscsiadm -m session -P 1`."""
    sessions: dict[str, str] = {}
    portal = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Current Portal:"):
            portal = s.split(":", 1)[1].strip().split(",")[0]
            sessions[portal] = "?"
        elif s.startswith("iSCSI Session State:") and portal:
            sessions[portal] = s.split(":", 1)[1].strip()
    return sessions


@dataclass(frozen=True)
class CephState:
    health: str
    checks: dict[str, str]  # check name -> summary
    pgs: int
    pg_states: dict[str, int]
    osds: tuple[int, int, int]  # total, up, in

    @property
    def active_clean(self) -> bool:
        return self.pgs > 0 and self.pg_states.get("active+clean", 0) == self.pgs

    def healthy(self, allowed: Iterable[str] = ()) -> bool:
        return self.active_clean and (self.health == "HEALTH_OK" or not (set(self.checks) - set(allowed)))

    @property
    def degraded(self) -> bool:
        return bool({"OSD_DOWN", "OSD_HOST_DOWN", "PG_DEGRADED"} & set(self.checks))


def parse_ceph_status(text: str) -> CephState:
    d = json.loads(text)
    osdmap = d["osdmap"].get("osdmap", d["osdmap"])  # nested before Pacific
    pgmap = d.get("pgmap", {})
    return CephState(
        health=d["health"]["status"],
        checks={k: v.get("summary", {}).get("message", "") for k, v in d["health"].get("checks", {}).items() if not v.get("muted")},
        pgs=int(pgmap.get("num_pgs", 0)),
        pg_states={s["state_name"]: int(s["count"]) for s in pgmap.get("pgs_by_state", [])},
        osds=(int(osdmap["num_osds"]), int(osdmap["num_up_osds"]), int(osdmap["num_in_osds"])),
    )


# -- the waits ------------------------------------------------------------------


def _remote_accel(target: Any, accel: str | None) -> tuple[Remote, str, Any]:
    """(remote, accelerator, node handle or None) of a node handle or a Remote."""
    if isinstance(target, Remote):
        return target, accel or "tcg", None
    return target.remote, accel or getattr(target.session, "pace", "") or "tcg", target


def _service_wait(
    target: Any,
    command: str,
    judge: Callable[[Result], tuple[Any, str | None]],
    what: str,
    timeout_name: str,
    *,
    evidence: str,
    nodes: Iterable[Any] = (),
    timeout: float | None = None,
    accel: str | None = None,
    interval: float = 2.0,
) -> Any:
    """Poll COMMAND; JUDGE returns (value when reached else falsy, reason when it can no longer be reached)."""
    remote, accel, handle = _remote_accel(target, accel)
    watched = [n for n in [handle, *nodes] if n is not None]

    def check() -> Any:
        res = remote.run(command, timeout=120)
        value, reason = judge(res)
        if reason:
            raise _Fatal(reason)  # not a HarnessError: wait_until lets it through at once
        return value

    def failed() -> str | None:
        for node in watched:
            state = node.state
            if state != "running":
                return f"node {node.name} is {state}"
        return None

    def context() -> str:
        return f"{remote.target.node}$ {evidence}\n{remote.run(evidence, timeout=120).output}"

    seconds = timeout if timeout is not None else storage_timeout(timeout_name, accel)
    try:
        return wait_until(check, seconds, what, interval=interval, failed=failed, context=context)
    except _Fatal as exc:
        raise LabTimeout(f"gave up waiting for {what}: {exc}\n{context()}") from None


class _Fatal(Exception):
    """What a wait waits for can no longer happen."""


CEPH = "ceph --connect-timeout 20"


def ceph_health_ok(target: Any, *, allowed: Iterable[str] = (), nodes: Iterable[Any] = (), timeout: float | None = None) -> CephState:
    """Health OK (or only ALLOWED checks) and every PG active+clean."""
    allowed = tuple(allowed)

    def judge(res: Result) -> tuple[Any, str | None]:
        if res.rc != 0:
            return None, None
        state = parse_ceph_status(res.stdout)
        return (state if state.healthy(allowed) else None), None

    return _service_wait(
        target,
        f"{CEPH} -s --format json",
        judge,
        "Ceph health OK with every PG active+clean",
        "ceph-health",
        evidence=f"{CEPH} -s; {CEPH} health detail",
        nodes=nodes,
        timeout=timeout,
    )


def ceph_degraded(target: Any, *, timeout: float | None = None) -> CephState:
    """Until the cluster itself reports an OSD down or PGs degraded."""

    def judge(res: Result) -> tuple[Any, str | None]:
        if res.rc != 0:
            return None, None
        state = parse_ceph_status(res.stdout)
        return (state if state.degraded else None), None

    return _service_wait(
        target,
        f"{CEPH} -s --format json",
        judge,
        "Ceph to report an OSD down / PGs degraded",
        "ceph-degraded",
        evidence=f"{CEPH} -s",
        timeout=timeout,
    )


def gluster_heal_complete(
    target: Any, volume: str, *, bricks: int, nodes: Iterable[Any] = (), timeout: float | None = None
) -> list[HealBrick]:
    """Every one of BRICKS bricks connected with no entry left to heal."""

    def judge(res: Result) -> tuple[Any, str | None]:
        if "does not exist" in res.output:
            return None, f"volume {volume} does not exist"
        found = parse_heal_info(res.stdout)
        return (found if len(found) == bricks and all(b.healed for b in found) else None), None

    return _service_wait(
        target,
        f"gluster volume heal {shlex.quote(volume)} info",
        judge,
        f"Gluster volume {volume}: heal complete on {bricks} bricks",
        "gluster-heal",
        evidence=f"gluster volume heal {volume} info; gluster volume status {volume}",
        nodes=nodes,
        timeout=timeout,
    )


def iscsi_logged_in(target: Any, portals: Iterable[str], *, nodes: Iterable[Any] = (), timeout: float | None = None) -> dict[str, str]:
    """A LOGGED_IN session to every portal (address:port)."""
    portals = tuple(portals)

    def judge(res: Result) -> tuple[Any, str | None]:
        sessions = parse_iscsi_sessions(res.stdout)
        return (sessions if all(sessions.get(p) == "LOGGED_IN" for p in portals) else None), None

    return _service_wait(
        target,
        "iscsiadm -m session -P 1 2>&1",
        judge,
        f"iSCSI sessions logged in to {', '.join(portals)}",
        "iscsi-login",
        evidence="iscsiadm -m session -P 1; systemctl is-active iscsid",
        nodes=nodes,
        timeout=timeout,
    )


def multipath_paths(
    target: Any, *, active: int, failed: int = 0, nodes: Iterable[Any] = (), timeout: float | None = None
) -> list[MpathMap]:
    """Every multipath map has exactly ACTIVE active paths and FAILED failed ones."""

    def judge(res: Result) -> tuple[Any, str | None]:
        maps = parse_multipath(res.stdout)
        ok = bool(maps) and all((m.active, m.failed) == (active, failed) for m in maps)
        return (maps if ok else None), None

    return _service_wait(
        target,
        "multipath -ll 2>&1",
        judge,
        f"multipath maps with {active} active and {failed} failed paths",
        "multipath",
        evidence="multipath -ll; iscsiadm -m session -P 1",
        nodes=nodes,
        timeout=timeout,
    )


def md_in_sync(target: Any, array: str = "/dev/md/kvmlab", *, timeout: float | None = None) -> MdState:
    """The array active with every member working and no resync or recovery running."""
    command = f"name=$(basename $(readlink -f {shlex.quote(array)})); echo $name; cat /proc/mdstat; mdadm --detail {shlex.quote(array)}"

    def judge(res: Result) -> tuple[Any, str | None]:
        name, _, rest = res.stdout.partition("\n")
        state = parse_mdstat(rest, name.strip())
        if state is None:
            return None, f"array {array} ({name.strip()}) is not in /proc/mdstat"
        if not state.active or re.search(r"^\s*State : .*FAILED", rest, re.M):
            return None, f"array {array} has failed"
        return (state if state.in_sync else None), None

    return _service_wait(
        target,
        command,
        judge,
        f"MD array {array} in sync",
        "md-sync",
        evidence=f"cat /proc/mdstat; mdadm --detail {array}",
        timeout=timeout,
        interval=3.0,
    )


def md_degraded(target: Any, array: str = "/dev/md/kvmlab", *, timeout: float | None = None) -> MdState:
    """Until the array has noticed a lost member: a member short, or a rebuild onto the spare running."""
    command = f"name=$(basename $(readlink -f {shlex.quote(array)})); echo $name; cat /proc/mdstat"

    def judge(res: Result) -> tuple[Any, str | None]:
        name, _, rest = res.stdout.partition("\n")
        state = parse_mdstat(rest, name.strip())
        if state is None:
            return None, f"array {array} ({name.strip()}) is not in /proc/mdstat"
        return (state if state.working < state.devices or state.syncing or state.failed_members else None), None

    return _service_wait(
        target,
        command,
        judge,
        f"MD array {array} to notice a lost member",
        "md-sync",
        evidence=f"cat /proc/mdstat; mdadm --detail {array}",
        timeout=timeout,
        interval=1.0,
    )


def nfs_responsive(target: Any, mountpoint: str, *, nodes: Iterable[Any] = (), timeout: float | None = None) -> str:
    """An NFS mount at MOUNTPOINT answers a stat and a directory listing within seconds.

    Nothing is created: during the server's grace period after a restart, new opens
    wait, while clients reclaim the state they had and their I/O goes on.
    """
    q = shlex.quote(mountpoint)
    command = (
        f"findmnt -n -o FSTYPE {q}; timeout -s KILL 15 sh -c "
        + shlex.quote(f"stat -f {q} >/dev/null && ls {q} >/dev/null")
        + " && echo responsive"
    )

    def judge(res: Result) -> tuple[Any, str | None]:
        fstype = res.stdout.split("\n", 1)[0].strip()
        if not fstype.startswith("nfs"):
            return None, f"{mountpoint} is not an NFS mount (findmnt: {fstype or 'not mounted'})"
        return (fstype if "responsive" in res.stdout else None), None

    return _service_wait(
        target,
        command,
        judge,
        f"NFS mount {mountpoint} to answer",
        "nfs",
        evidence=f"findmnt {q}; nfsstat -m; tail -n 5 /proc/self/mountstats",
        nodes=nodes,
        timeout=timeout,
    )


def status_text(target: Any, command: str) -> str:
    """COMMAND's output on TARGET, for a test's own evidence."""
    remote, _, _ = _remote_accel(target, None)
    try:
        return remote.run(command, timeout=120).output
    except HarnessError as exc:
        return f"(could not run {command}: {exc})"
