"""The host-wide run registry: who owns which lab run, and which subnets it leased.

One JSON file under a file lock, shared by every user of the host, so that two
labs (or two copies of one lab) never get the same subnet, and `gc` can tell a
dead owner's leftovers from a live or kept lab.
"""

from __future__ import annotations

import fcntl
import getpass
import ipaddress
import json
import os
import pwd
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from kvmlab import settings
from kvmlab.accel import boot_id
from kvmlab.errors import HarnessError
from kvmlab.model import Placement

SUBNET_POOL = ipaddress.IPv4Network(os.environ.get("KVMLAB_SUBNETS", "10.213.0.0/16"))


@dataclass
class Run:
    run_id: str
    lab: str
    lab_file: str
    user: str
    pid: int
    host: str
    boot_id: str
    started: float
    subnets: dict[str, str] = field(default_factory=dict)
    kept: bool = False  # left up on purpose (`kvmlab up`, --lab-keep): never collected
    uri: str = ""  # the libvirt host it runs on ("": KVMLAB_URI's, as before runs recorded it)
    node_uris: dict[str, str] = field(default_factory=dict)  # a lab spread over hosts: each node's host

    @property
    def uris(self) -> list[str]:
        """Every libvirt host the run has objects on."""
        return list(dict.fromkeys([self.uri, *self.node_uris.values()]))

    def placement(self) -> Placement:
        """The run's subnets as the model uses them (the registry keeps them as strings, for JSON)."""
        return Placement(self.run_id, {name: ipaddress.IPv4Network(subnet) for name, subnet in self.subnets.items()})

    def owner_alive(self) -> bool:
        return self.kept or (self.host == socket.gethostname() and self.boot_id == boot_id() and pid_alive(self.pid))


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """The live process that owns a run."""

    pid: int
    command: str
    user: str
    started: float  # epoch seconds


def process_info(pid: int, proc: Path = Path("/proc")) -> Holder | None:
    """PID's command line, user and start time from /proc, or None if it has gone."""
    try:
        # One line whatever the arguments hold (a `python -c` script has newlines), and not a page long.
        command = " ".join((proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split())[:300]
        # Field 22 of stat is the start in clock ticks after boot; the command name before it may hold spaces.
        ticks = int((proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in (proc / "stat").read_text().splitlines() if line.startswith("btime "))
        uid = (proc / str(pid)).stat().st_uid
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Holder(pid, command or "?", user, btime + ticks / os.sysconf("SC_CLK_TCK"))


def holder(run: Run) -> Holder | None:
    """The process that owns RUN if it is still running here, else None.

    Unlike Run.owner_alive(), a kept run is not held by anyone once the `kvmlab up` that kept it has
    exited. A pid that now belongs to a process started after the run was registered was reused:
    not the owner."""
    if run.host != socket.gethostname() or run.boot_id != boot_id() or not pid_alive(run.pid):
        return None
    info = process_info(run.pid)
    if info is None or info.started > run.started + 2:  # /proc's start time is rounded to clock ticks
        return None
    return info


def down_refusal(run: Run) -> str | None:
    """Why `kvmlab down` (without --force) must leave RUN alone: another live process owns it; None if it may go."""
    h = holder(run)
    if h is None or h.pid == os.getpid():
        return None
    started = datetime.fromtimestamp(h.started).astimezone().isoformat(timespec="seconds")
    return (
        f"lab {run.lab} (run {run.run_id}) is owned by pid {h.pid} (command line {h.command}, user {h.user}, started {started}): "
        "it is still running; stop it first, or pass --force"
    )


def new_run_id() -> str:
    return secrets.token_hex(3)


def me() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


@contextmanager
def _registry() -> Iterator[dict[str, Run]]:
    directory = settings.lease_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "runs.lock").touch()
    except OSError as exc:
        raise HarnessError(
            f"cannot use the run registry at {directory}: {exc.strerror}; set KVMLAB_LEASES to a writable directory"
        ) from exc
    with open(directory / "runs.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = directory / "runs.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            raw = {}
        runs = {k: Run(**v) for k, v in raw.items()}
        yield runs
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in runs.items()}, indent=1, sort_keys=True))
        os.replace(tmp, path)


ROUTES_COMMAND = ["ip", "-j", "-4", "route", "show", "table", "all"]


def host_networks() -> list[ipaddress.IPv4Network]:
    """Subnets already routed on this host (its own interfaces), which a lab must avoid."""
    try:
        out = subprocess.run(ROUTES_COMMAND, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return routed_networks(out.stdout)


def routed_networks(routes_json: str) -> list[ipaddress.IPv4Network]:
    """The destinations of `ip -j -4 route` output (this host's, or a remote libvirt host's)."""
    try:
        routes = json.loads(routes_json or "[]")
    except ValueError:
        return []
    nets = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                nets.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue
    return nets


class NoFreeSubnet(HarnessError):
    """allocate() found no free /PREFIX in POOL for NETWORK; callers may say it their own way."""

    def __init__(self, network: str, prefix: int, pool: ipaddress.IPv4Network) -> None:
        self.network, self.prefix, self.pool = network, prefix, pool
        super().__init__(f"no free /{prefix} subnet left in {pool} for network '{network}'; run `kvmlab gc` or set KVMLAB_SUBNETS")


def allocate(
    prefixes: dict[str, int], taken: Iterable[ipaddress.IPv4Network], pool: ipaddress.IPv4Network | None = None
) -> dict[str, ipaddress.IPv4Network]:
    """First-fit subnets from POOL (default SUBNET_POOL), one per network, overlapping nothing in TAKEN."""
    pool = pool or SUBNET_POOL
    used = list(taken)
    out: dict[str, ipaddress.IPv4Network] = {}
    for name, prefix in prefixes.items():
        for candidate in pool.subnets(new_prefix=prefix):
            if not any(candidate.overlaps(u) for u in used):
                out[name] = candidate
                used.append(candidate)
                break
        else:
            raise NoFreeSubnet(name, prefix, pool)
    return out


def register(
    run_id: str,
    lab: str,
    lab_file: str,
    prefixes: dict[str, int],
    extra_taken: Iterable[str] = (),
    uri: str = "",
    node_uris: dict[str, str] | None = None,
) -> Run:
    """Record a new run and lease its subnets, atomically with respect to other runs."""
    with _registry() as runs:
        taken = [ipaddress.IPv4Network(s) for r in runs.values() for s in r.subnets.values()]
        taken += [ipaddress.IPv4Network(s, strict=False) for s in extra_taken]
        taken += host_networks()
        subnets = allocate(prefixes, taken)
        run = Run(
            run_id=run_id,
            lab=lab,
            lab_file=lab_file,
            user=me(),
            pid=os.getpid(),
            host=socket.gethostname(),
            boot_id=boot_id(),
            started=time.time(),
            subnets={k: str(v) for k, v in subnets.items()},
            uri=uri,
            node_uris=dict(node_uris or {}),
        )
        runs[run_id] = run
        return run


def register_exact(run_id: str, lab: str, lab_file: str, subnets: dict[str, str], extra_taken: Iterable[str] = ()) -> Run | None:
    """Record a run with a given id and subnets (a saved lab coming back), or None if either is in use."""
    with _registry() as runs:
        if run_id in runs:
            return None
        taken = [ipaddress.IPv4Network(s) for r in runs.values() for s in r.subnets.values()]
        taken += [ipaddress.IPv4Network(s, strict=False) for s in extra_taken]
        taken += host_networks()
        wanted = [ipaddress.IPv4Network(s) for s in subnets.values()]
        if any(w.overlaps(t) for w in wanted for t in taken):
            return None
        run = Run(run_id, lab, lab_file, me(), os.getpid(), socket.gethostname(), boot_id(), time.time(), dict(subnets))
        runs[run_id] = run
        return run


def release(run_id: str) -> None:
    with _registry() as runs:
        runs.pop(run_id, None)


def release_on(run_id: str, uri: str) -> bool:
    """RUN's objects on the host at URI are gone: forget that host; the record goes with its last host.
    True when the record is gone (a lab over several hosts keeps it while another host has its nodes)."""
    with _registry() as runs:
        run = runs.get(run_id)
        if run is None:
            return True
        left = {node: where for node, where in run.node_uris.items() if where != uri}
        if not left:  # a run on one host, or the last host of a spread one
            runs.pop(run_id)
            return True
        run.node_uris = left
        run.uri = next(iter(left.values()))
        return False


def set_kept(run_id: str, kept: bool) -> None:
    with _registry() as runs:
        if run_id in runs:
            runs[run_id].kept = kept


def all_runs() -> dict[str, Run]:
    with _registry() as runs:
        return dict(runs)
