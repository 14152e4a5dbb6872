"""Collect what dead runs left behind: domains, networks, volumes, consoles, run files, leases."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab import checkpoints, clones, golden, runs, settings, tunnels
from kvmlab.accel import boot_id
from kvmlab.errors import HarnessError
from kvmlab.host_locks import run_alive, run_lock_path
from kvmlab.images import current_digests, remove_stale_builds
from kvmlab.libvirt_host import host_of
from kvmlab.providers.base import DomainInfo, Provider
from kvmlab.remote import run_on_host
from kvmlab.spread import vni_of

NAME_RE = re.compile(r"^kvmlab-(?P<lab>[a-z][a-z0-9-]*?)-(?P<run>[0-9a-f]{6})-")


@dataclass
class Collected:
    domains: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)  # image build directories of killed builds
    saved: list[str] = field(default_factory=list)  # unfinished saves and unnamed volumes of saved labs
    generics: list[str] = field(default_factory=list)  # generic nodes of images no longer built, generic disks nothing uses
    checkpoints: list[str] = field(default_factory=list)  # what killed snapshots and reverts of live runs left
    tunnels: list[str] = field(default_factory=list)  # tunnel devices of lab networks that are gone

    def merge(self, other: Collected) -> None:
        """Add what OTHER collected (another host's share of one command)."""
        for name, value in vars(other).items():
            getattr(self, name).extend(value)

    @property
    def empty(self) -> bool:
        return not (
            self.domains
            or self.networks
            or self.volumes
            or self.runs
            or self.builds
            or self.saved
            or self.generics
            or self.checkpoints
            or self.tunnels
        )


def run_of(name: str) -> str | None:
    m = NAME_RE.match(name)
    return m.group("run") if m else None


def _remove_stale_tunnels(host, registry: dict[str, runs.Run], dead) -> list[str]:
    """Tunnel devices whose bridge is gone (their network was removed, by a down, a gc or a reboot), unless
    a live run leases their subnet (it is making them this moment: a device is a bridge's port a command later)."""
    leased = {vni_of(net) for run_id, r in registry.items() if not dead(run_id) for net in r.placement().subnets.values()}
    stale = [d for d in tunnels.leftovers(host) if d.vni not in leased]
    tunnels.remove(host, [d.vni for d in stale])
    return [d.name for d in stale]


def _domain_owner_dead(dom: DomainInfo, user: str) -> bool:
    if dom.kept:
        return False  # left up on purpose; a registry that does not know it (another KVMLAB_LEASES) must not take it
    if dom.owner_user not in (None, user):
        return False  # another user's lab is never ours to remove
    if dom.owner_host not in (None, socket.gethostname()):
        return False  # started from another machine (a shared remote libvirt host): its owner cannot be judged from here
    if dom.owner_pid is None:
        return True
    return dom.owner_boot != boot_id() or not runs.pid_alive(dom.owner_pid)


def collect(provider: Provider, only_runs: set[str] | None = None) -> Collected:
    """Remove every object of dead runs, or of ONLY_RUNS (what `down` asks for).

    A run is dead when its registry record says its owner process is gone and it
    was not kept; a run with no record is judged by the owner written in its
    domains' metadata; objects that nothing claims are orphans of a killed run.
    Another user's runs are never touched.
    """
    domains = provider.list_domains()
    networks = provider.list_networks()
    try:
        volumes = provider.list_volumes(settings.POOL)
    except HarnessError:
        volumes = []  # no pool yet: nothing was ever created
    # Read after the listings: a run registers before it creates anything, so an object listed above
    # whose run has no record here has none. Read before them, a run starting meanwhile would have
    # its first network taken for an orphan.
    # Only the runs of this host: a run on another host keeps its record (and with it the way to that
    # host) until a collect there has removed its objects.
    here = getattr(provider, "uri", "")
    host = host_of(here or "qemu:///system")
    registry = {run_id: r for run_id, r in runs.all_runs().items() if r.uri in ("", here) or here in r.node_uris.values()}
    user = runs.me()
    by_run: dict[str, list[DomainInfo]] = {}
    for dom in domains:
        run_id = dom.run_id or run_of(dom.name)
        if run_id:
            by_run.setdefault(run_id, []).append(dom)

    @functools.cache
    def owner_holds_lock(run_id: str) -> bool:
        return run_alive(host, run_id)

    def dead(run_id: str) -> bool:
        if only_runs is not None:
            return run_id in only_runs
        rec = registry.get(run_id)
        if rec is not None:
            return rec.user == user and not rec.owner_alive()
        if run_id in by_run:
            return all(_domain_owner_dead(d, user) for d in by_run[run_id])
        # Networks or volumes with no domain and no record here: a run just starting (its first domain
        # comes later), of a client with another registry, is alive while it holds its lock on the host.
        return not owner_holds_lock(run_id)

    out = Collected()
    for run_id, doms in by_run.items():
        if dead(run_id):
            for dom in doms:
                provider.destroy_domain(dom.name)
                out.domains.append(dom.name)
    for net in networks:
        run_id = run_of(net)
        if run_id and dead(run_id):
            provider.destroy_network(net)
            out.networks.append(net)
    for vol in volumes:
        run_id = run_of(vol)
        if run_id and dead(run_id):
            provider.delete_volume(settings.POOL, vol)
            out.volumes.append(vol)
    if only_runs is None:
        out.tunnels = _remove_stale_tunnels(host, registry, dead)
    images_dir = settings.cache_dir() / "images"
    if images_dir.is_dir():
        out.builds = [p.name for p in remove_stale_builds(images_dir)]
    if only_runs is None:
        out.saved = golden.remove_orphans(volumes, lambda vol: provider.delete_volume(settings.POOL, vol))
        # Runs that stay up: only what their killed snapshots and reverts left (never during one).
        for root in sorted(settings.checkpoint_dir().glob("kvmlab-*")):
            rec = registry.get(run_of(root.name + "-") or "")
            if rec is not None and rec.user == user and not dead(rec.run_id):
                mine = [v for v in volumes if v.startswith(root.name + "-")]
                out.checkpoints += checkpoints.remove_leftovers_if_idle(
                    root.name, mine, lambda vol: provider.delete_volume(settings.POOL, vol), host
                )
    touched = {run_of(n) for n in out.domains + out.networks + out.volumes} | {r for r in registry if dead(r)}
    for run_id in sorted(r for r in touched if r):
        lock = run_lock_path(run_id)  # what is left of its lock on the host once its owner has gone
        if host.local:
            for path in settings.console_dir().glob(f"kvmlab-*-{run_id}-*.log"):
                path.unlink(missing_ok=True)
            Path(lock).unlink(missing_ok=True)
        else:  # its console logs, its checkpoints' memory files and its lock file
            console, memory = (shlex.quote(str(d)) for d in (settings.console_dir(), settings.checkpoint_dir()))
            run_on_host(host, f"rm -f {console}/kvmlab-*-{run_id}-*.log {shlex.quote(lock)}; rm -rf {memory}/kvmlab-*-{run_id}")
        for path in [*(settings.state_dir() / "runs").glob(f"kvmlab-*-{run_id}"), *settings.checkpoint_dir().glob(f"kvmlab-*-{run_id}")]:
            shutil.rmtree(path, ignore_errors=True)
        if runs.release_on(run_id, here):
            out.runs.append(run_id)
    if only_runs is None and not runs.all_runs():
        out.generics = clones.remove_stale(current_digests()) + clones.remove_unused_volumes(provider)
    return out


def forget_host(uri: str) -> list[str]:
    """Forget the runs recorded on the libvirt host at URI, which will never answer again (a removed
    machine, a lab node that was a host): their records and subnet leases go; what they left on that
    host, should it come back, is not collected. Returns the runs forgotten. Refused while a process
    of this machine still owns one of them, and for a host no run was recorded on."""
    recorded = {run_id: run for run_id, run in runs.all_runs().items() if uri in run.uris}
    if not recorded:
        hosts = sorted({u for run in runs.all_runs().values() for u in run.uris if u}) or ["none"]
        raise HarnessError(f"no run is recorded on {uri}: nothing to forget (hosts with runs: {', '.join(hosts)})")
    alive = [f"{run_id} (lab {run.lab}, pid {run.pid})" for run_id, run in recorded.items() if runs.holder(run) is not None]
    if alive:
        raise HarnessError(f"runs on {uri} are still owned by live processes: {', '.join(alive)}; end them first")
    for run_id in recorded:
        runs.release_on(run_id, uri)
    return sorted(recorded)
