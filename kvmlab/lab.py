"""LabSession: bring a lab up, hand out node handles, tear everything down."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kvmlab import accel as accel_mod
from kvmlab import clones, golden, images, keys, render, runs, settings, tunnels
from kvmlab.checkpoints import Checkpoints, in_parallel
from kvmlab.errors import HarnessError, LibvirtGone, NodeStopped, PoolFull
from kvmlab.gc import collect
from kvmlab.host_facts import emulated_machine, remote_accel, remote_space
from kvmlab.host_locks import RunLock, host_locked
from kvmlab.libvirt_host import LibvirtHost, host_of
from kvmlab.model import Lab, Node, Placement
from kvmlab.preflight import check_display_support, check_fits, require_builder, require_host
from kvmlab.providers.base import Provider
from kvmlab.redact import redact
from kvmlab.remote import Remote, Result, SshTarget, run_on_host
from kvmlab.roles import PHASES, RoleContext, Step, registry, waits_for
from kvmlab.seed import build_seed_iso
from kvmlab.spread import UNDERLAY_MTU, VXLAN_OVERHEAD, Spread, vni_of
from kvmlab.step_graph import StepGraph, Unit
from kvmlab.stops import stop_point
from kvmlab.wait import timeout_for, wait_until

Progress = Callable[[str], None]


def _stderr_progress(line: str) -> None:
    # One write per line: node threads log at once, and print() writes the newline separately.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class StepFailure:
    """A role step that failed while the bring-up went on (LabSession.keep_going)."""

    node: str
    role: str
    phase: str
    error: str

    def __str__(self) -> str:
        return f"{self.node}: {self.role} {self.phase} failed: {self.error}"


@dataclass
class NodeStatus:
    state: str = "pending"
    started: float | None = None
    ready_s: float | None = None  # domain start -> SSH answers and first boot finished
    roles_s: float | None = None  # ready -> every role step of the node done
    error: str | None = None


CONSOLE_READ_BYTES = 256 * 1024  # of a console log, for its last lines (a boot prints about 60 KiB)
ARTIFACT_CONSOLE_BYTES = 16 * 2**20
ROOT_FS_ERROR = "EXT4-fs error (device vda)"  # what the guest's kernel prints on a corrupt root disk
POLL_COMMAND_S = 30.0  # one readiness poll over SSH: a poll that hangs is retried on a new connection, not sat out


class NodeHandle:
    """What a test holds for one node: its testinfra host, its SSH session, its state."""

    def __init__(self, session: LabSession, node: Node) -> None:
        self.session, self.model = session, node
        self._remote: Remote | None = None
        self._host: Any = None
        self._definition: str | None = None  # the live XML before a power-off, to start the node again
        self._detached: dict[str, str] = {}  # extra disk -> its XML while unplugged
        self.cloned = False  # started from a generic node's saved state (its clock stood still meanwhile)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def roles(self) -> tuple[str, ...]:
        return self.model.roles

    @property
    def domain(self) -> str:
        return render.domain_name(self.session.lab.name, self.session.run_id, self.name)

    def address(self, network: str | None = None) -> str:
        net = network or self.model.networks[0]
        return self.session.placement.address(self.session.lab, self.name, net)

    @property
    def provider(self) -> Provider:
        """The libvirt connection of the host this node runs on."""
        return self.session.provider_of(self.name)

    @property
    def libvirt_host(self) -> LibvirtHost:
        """The host this node runs on."""
        return self.session.site_of(self.name).host

    @property
    def remote(self) -> Remote:
        if self._remote is None:
            self._remote = Remote(self.session.ssh_target(self.name), watch=self.stopped)
        return self._remote

    def stopped(self) -> NodeStopped | None:
        """Why this node can no longer answer (its QEMU ended, QEMU paused it on an I/O error, its
        network is gone), or None while it can. A node paused on purpose (pause()) is not stopped."""
        provider, lab = self.provider, self.session.lab.name
        try:
            st = provider.domain_status(self.domain)
            active = provider.active_networks() if st.state == "running" else []
        except LibvirtGone:
            raise
        except HarnessError:
            return None  # libvirt could not say: that is no proof the node is gone
        if st.state in ("absent", "shutoff", "crashed"):
            cause = f"its QEMU process ended: {st.detail or f'domain {self.domain} is {st.state}'}"
            fix = f"find what ended it (the host's dmesg, libvirt's log of {self.domain}), then bring the lab up again"
            return NodeStopped(self.name, cause, fix)
        if st.state == "paused" and st.reason == "ioerror":
            cause = f"QEMU paused it on a disk I/O error: {st.detail or 'unknown disk'}"
            if "no space" in st.detail:
                cause += f"; the pool filesystem {settings.pool_dir()} is full"
            fix = f"free space there (or set KVMLAB_POOL_DIR), then `virsh resume {self.domain}`; or `kvmlab down {lab}`"
            return NodeStopped(self.name, cause, fix)
        return self._cut_off(active) if st.state == "running" else None

    def network_gone(self) -> NodeStopped | None:
        """The node's stop when one of its lab networks no longer exists (it cannot start or answer), else None."""
        try:
            return self._cut_off(self.provider.active_networks())
        except LibvirtGone:
            raise
        except HarnessError:
            return None

    def _cut_off(self, active: list[str]) -> NodeStopped | None:
        lab = self.session.lab.name
        for net in self.model.networks:
            name = render.network_name(lab, self.session.run_id, net)
            if name not in active:
                cause = f"its network {net} is gone: libvirt network {name} was removed behind kvmlab's back"
                fix = f"run `kvmlab down {lab}` (if the lab is still up) and bring it up again"
                return NodeStopped(self.name, cause, fix, verb="is cut off")
        return None

    @property
    def host(self) -> Any:
        """A testinfra Host over this node's SSH connection."""
        if self._host is None:
            self._host = self.remote.host()
        return self._host

    @property
    def state(self) -> str:
        """running, paused or shutoff (a powered-off transient domain no longer exists; the lab still knows it)."""
        state = self.provider.domain_state(self.domain)
        return "shutoff" if state == "absent" else state

    # -- faults, driven from the host ------------------------------------------
    def _log(self, message: str) -> None:
        self.session.log(f"{self.name}: {message}")

    def forget_session(self) -> None:
        """Close the SSH session (the node went away or came back from a checkpoint); the next use reconnects."""
        if self._remote is not None:
            self._remote.close()

    def _require(self, *states: str) -> None:
        if self.state not in states:
            raise HarnessError(f"node {self.name} is {self.state}, not {' or '.join(states)}")

    def crash(self) -> None:
        """Hard power-off: what the guest had not written to its disks is lost."""
        self._require("running", "paused")
        self._definition = self.provider.domain_definition(self.domain)
        self.forget_session()
        self.provider.destroy_domain(self.domain)
        self._log("powered off (hard)")

    def shutdown(self) -> None:
        """Clean shutdown through ACPI; returns once the domain is off."""
        self._require("running")
        self._definition = self.provider.domain_definition(self.domain)
        self.provider.shutdown_domain(self.domain)
        wait_until(
            lambda: self.state == "shutoff",
            timeout_for("service", self.session.pace),
            f"node {self.name} to shut down",
            interval=1.0,
            context=self.console_tail,
        )
        self.forget_session()
        self._log("shut down")

    def start(self) -> None:
        """Boot again from the same disks; returns when SSH answers and first boot is done."""
        self._require("shutoff")
        xml = self._definition or self.session.files[f"domains/{self.name}.xml"]
        start = time.monotonic()
        self.provider.create_domain(xml)
        self.session._wait_ready(self.model)
        self._log(f"started, ready after {time.monotonic() - start:.1f} s")

    def pause(self) -> None:
        self._require("running")
        self.provider.pause_domain(self.domain)
        self._log("paused")

    def resume(self) -> None:
        self._require("paused")
        self.provider.resume_domain(self.domain)
        self._log("resumed")

    def _mac(self, network: str) -> str:
        if network not in self.model.networks:
            raise HarnessError(f"node {self.name} is not on network '{network}' (its networks: {', '.join(self.model.networks)})")
        return self.session.placement.mac(self.session.lab, self.name, network)

    def link_down(self, network: str) -> None:
        """Unplug the node's cable on NETWORK: the guest sees carrier loss, packets are dropped."""
        self.provider.set_link(self.domain, self._mac(network), up=False)
        self._log(f"link on {network} down")

    def link_up(self, network: str) -> None:
        self.provider.set_link(self.domain, self._mac(network), up=True)
        self._log(f"link on {network} up")

    def _disk_name(self, disk: str) -> str:
        names = [d.name for d in self.model.disks]
        if disk not in names:
            raise HarnessError(f"node {self.name} has no extra disk '{disk}' (its disks: {', '.join(names) or 'none'})")
        return disk

    def detach_disk(self, disk: str) -> None:
        """Hot-unplug an extra disk (a failed drive, from the guest's view); returns once it is gone."""
        provider = self.provider
        self._detached[disk] = provider.detach_disk(self.domain, self._disk_name(disk))
        wait_until(
            lambda: not provider.has_disk(self.domain, disk),
            timeout_for("service", self.session.pace),
            f"disk {disk} to leave node {self.name} (the guest acknowledges the unplug)",
            interval=0.5,
            context=self.console_tail,
        )
        self._log(f"disk {disk} removed")

    def attach_disk(self, disk: str) -> None:
        """Plug a detached extra disk back in, with the data it had."""
        xml = self._detached.pop(self._disk_name(disk), None)
        if xml is None:
            raise HarnessError(f"disk {disk} of node {self.name} is not detached")
        self.provider.attach_device(self.domain, xml)
        # Returns once the guest sees it, as detach_disk returns once the guest let it go: the
        # hot-plug reaches udev seconds later under TCG, so an immediate `udevadm settle` can miss it.
        self.wait_for(f"test -e /dev/disk/by-id/virtio-{disk}", f"disk {disk} back in node {self.name}", interval=0.5)
        self._log(f"disk {disk} plugged back")

    # Each fault as a context manager: the node is restored on exit, even when the body fails.
    @contextmanager
    def powered_off(self) -> Iterator[NodeHandle]:
        self.crash()
        try:
            yield self
        finally:
            if self.state == "shutoff":
                self.start()

    @contextmanager
    def paused(self) -> Iterator[NodeHandle]:
        self.pause()
        try:
            yield self
        finally:
            if self.state == "paused":
                self.resume()

    @contextmanager
    def link_cut(self, network: str) -> Iterator[NodeHandle]:
        self.link_down(network)
        try:
            yield self
        finally:
            self.link_up(network)

    @contextmanager
    def disk_removed(self, disk: str) -> Iterator[NodeHandle]:
        self.detach_disk(disk)
        try:
            yield self
        finally:
            if disk in self._detached:
                self.attach_disk(disk)

    def run(self, command: str, timeout: float = 600.0) -> Result:
        return self.remote.run(command, timeout=timeout)

    # -- verbs for checks and tests: each asserts, names the node, logs one timed line ----------
    def run_expect(self, command: str, what: str = "", timeout: float = 600.0) -> str:
        """Run COMMAND and expect exit 0; return its stdout. A failure says node, command, exit code and output."""
        start = time.monotonic()
        res = self.run(command, timeout=timeout)
        self._log(f"{what or command} (exit {res.rc}, {time.monotonic() - start:.1f} s)")
        if res.rc != 0:
            raise AssertionError(f"{self.name}: `{command}` exited {res.rc}: {_clip(res.output)}")
        return res.stdout.strip()

    def wait_for(self, command: str, what: str = "", timeout: float | None = None, interval: float = 2.0) -> str:
        """Wait until COMMAND succeeds (deadline scaled for TCG); return its stdout."""
        start = time.monotonic()
        last: list[Result] = []

        def ok() -> str | bool:
            res = self.run(command, timeout=120)
            last[:] = [res]
            return (res.stdout.strip() or True) if res.rc == 0 else False

        try:
            out = wait_until(
                ok,
                timeout or timeout_for("service", self.session.pace),
                f"{self.name}: {what or command}",
                interval=interval,
                failed=lambda: None if self.state == "running" else f"node {self.name} is {self.state}",
            )
        except NodeStopped:
            raise
        except HarnessError as exc:
            seen = f"; last exit {last[0].rc}: {_clip(last[0].output)}" if last else ""
            raise AssertionError(f"{exc}{seen}") from exc
        self._log(f"{what or command}: after {time.monotonic() - start:.1f} s")
        return out if isinstance(out, str) else ""

    def wait_unit(self, unit: str, timeout: float | None = None) -> None:
        """Wait until systemd unit UNIT is active; fail at once if it has failed."""
        start = time.monotonic()

        def state() -> str | None:
            now = self.run(f"systemctl is-active {unit}", timeout=60).stdout.strip()
            if now == "failed":
                status = self.run(f"systemctl status {unit} --no-pager -n 20", timeout=60).output
                raise AssertionError(f"{self.name}: unit {unit} has failed:\n{_clip(status, 1500)}")
            return now if now == "active" else None

        wait_until(
            state,
            timeout or timeout_for("service", self.session.pace),
            f"{self.name}: unit {unit} to be active",
            interval=1.0,
            failed=lambda: str(stop) if (stop := self.stopped()) else None,
        )
        self._log(f"unit {unit} active after {time.monotonic() - start:.1f} s")

    def console_tail(self, lines: int = 30) -> str:
        path = self.session.console_log(self.name)
        text = self.session.read_console(self.name)
        if text is None:
            return f"(no console log at {path})"
        tail = [ln.rstrip("\r") for ln in text.splitlines()[-lines:]]
        return f"last {len(tail)} console lines of {self.name} ({path}):\n" + "\n".join("  | " + ln for ln in tail)


@dataclass(frozen=True)
class Site:
    """A libvirt host that runs nodes of the lab: the only one, or one of a spread lab's hosts."""

    name: str  # its name in the hosts file; "" for a lab on one host
    host: LibvirtHost
    provider: Provider
    nodes: tuple[str, ...]


class UploadProgress:
    """Says how far an upload has come, at most every INTERVAL seconds: a base image crosses a slow
    link to a remote host for minutes."""

    INTERVAL = 30.0

    def __init__(self, what: str, size: int, log: Callable[[str], None]) -> None:
        self.what, self.size, self.log = what, size, log
        self.start = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < self.INTERVAL or done >= self.size:
            return
        self.last = now
        rate = done / (now - self.start) / 2**20
        self.log(f"uploading {self.what}: {done / 2**20:.0f} of {self.size / 2**20:.0f} MiB ({rate:.1f} MiB/s)")


@dataclass
class LabSession:
    """A running lab. Use as a context manager; it is torn down on exit unless kept."""

    lab: Lab
    provider: Provider
    keep: bool = False
    progress: Progress = _stderr_progress
    accel: str = ""
    run_id: str = field(default_factory=runs.new_run_id)
    placement: Placement = field(init=False)
    files: dict[str, str] = field(default_factory=dict)
    status: dict[str, NodeStatus] = field(default_factory=dict)
    phase_s: dict[str, float] = field(default_factory=dict)
    phase_end_s: dict[str, float] = field(default_factory=dict)  # role phase -> seconds after the first boot began
    failure_dir: Path | None = None  # where a failed bring-up leaves its evidence before teardown
    use_saved: bool = True  # restore the lab's saved verified state when nothing it was built from changed
    restored: bool = False
    image: images.Image | None = None
    # False: the first failed step stops the bring-up (tests, `kvmlab up`). True: a failed step
    # is recorded in step_failures, its role is skipped on that node from then on, and everything
    # else still comes up, so that `kvmlab verify` can say which checks that one mistake breaks.
    keep_going: bool = False
    step_failures: list[StepFailure] = field(default_factory=list)
    # True: every node boots its kernel (the way generic nodes are made, and a fallback).
    # False: nodes start as clones of a saved generic node of their shape (kvmlab.clones).
    cold_boot: bool = False
    # Role steps not applied: (role, None) for all of a role's steps, (role, phase) for one phase.
    # An exercise's start state leaves to the trainee what they are to do by hand.
    leave: frozenset[tuple[str, str | None]] = frozenset()
    # What else shaped the state a saved lab keeps besides its file (e.g. an exercise's start commands).
    state_key: str = ""
    # A lab over several hosts (kvmlab.spread): which host runs each node, and each host's connection
    # by its hosts-file name. None: every node runs on `provider`'s host.
    spread: Spread | None = None
    host_providers: dict[str, Provider] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._nodes = {n.name: NodeHandle(self, n) for n in self.lab.nodes}
        self.status = {n.name: NodeStatus() for n in self.lab.nodes}
        self._t0 = time.monotonic()
        self._registered = False
        self._run_locks: list[RunLock] = []
        self._stop = threading.Event()
        self._generics: clones.Generics | None = None
        self.step_graph: StepGraph | None = None  # the role steps of the last bring-up, with their timeline
        self.restore_parts: dict[str, float] = {}  # the last revert's or saved-lab restore's parts (Checkpoints)
        # This machine, or the remote libvirt host the lab runs on (a stand-in provider without a URI: this machine).
        self.host = host_of(getattr(self.provider, "uri", "") or "qemu:///system")
        self._host_cpus: int | None = None
        self._pace: tuple[str, str] | None = None  # (accel, pace) once asked

    # -- access -------------------------------------------------------------
    def sites(self) -> list[Site]:
        """The hosts that run the lab's nodes, in the spread's host order."""
        if self.spread is None:
            return [Site("", self.host, self.provider, tuple(n.name for n in self.lab.nodes))]
        out = []
        for name in self.spread.hosts:
            nodes = tuple(self.spread.nodes_on(name))
            if nodes:
                provider = self.host_providers[name]
                out.append(Site(name, host_of(getattr(provider, "uri", "") or "qemu:///system"), provider, nodes))
        return out

    def site_of(self, node: str) -> Site:
        return next(site for site in self.sites() if node in site.nodes)

    def hosts(self) -> list[LibvirtHost]:
        return [site.host for site in self.sites()]

    def list_volumes(self) -> list[str]:
        """The pool's volumes on every host of the lab."""
        return [vol for site in self.sites() for vol in site.provider.list_volumes(settings.POOL)]

    def delete_volume(self, name: str) -> None:
        """Delete volume NAME of this run on the host of the node it belongs to (on every host when no node's)."""
        # The longest name that fits: nodes `ceph` and `ceph-osd1` both prefix ceph-osd1's volumes.
        owner = max((n.name for n in self.lab.nodes if name.startswith(f"{self.prefix}-{n.name}-")), key=len, default="")
        for site in self.sites():
            if not owner or owner in site.nodes:
                site.provider.delete_volume(settings.POOL, name)

    def provider_of(self, node: str) -> Provider:
        if self.spread is None:
            return self.provider
        return self.host_providers[self.spread.node_host[node]]

    def network_mtus(self) -> dict[str, int]:
        """The MTU of each lab network that crosses hosts in a tunnel (the others keep the default)."""
        if self.spread is None:
            return {}
        mtu = UNDERLAY_MTU - VXLAN_OVERHEAD
        return {net.name: mtu for net in self.lab.networks if self.spread.spans(self.lab, net.name)}

    def tunnel_vnis(self, site: Site) -> list[int]:
        """The tunnels on SITE: one per lab network that joins it to another host."""
        if self.spread is None:
            return []
        return [
            vni_of(self.placement.subnets[net.name])
            for net in self.lab.networks
            if self.spread.spans(self.lab, net.name) and site.name in self.spread.network_hosts(self.lab, net.name)
        ]

    def cut_host(self, name: str) -> None:
        """The fault "the links between host NAME and the lab's other hosts are cut": its tunnels down.
        Nodes on NAME still reach each other; nodes on other hosts do not reach them."""
        site = self._site_named(name)
        tunnels.set_links(site.host, self.tunnel_vnis(site), up=False)
        self.log(f"links of host {name} to the lab's other hosts cut")

    def mend_host(self, name: str) -> None:
        site = self._site_named(name)
        tunnels.set_links(site.host, self.tunnel_vnis(site), up=True)
        self.log(f"links of host {name} to the lab's other hosts mended")

    def _site_named(self, name: str) -> Site:
        for site in self.sites():
            if site.name == name:
                return site
        raise HarnessError(
            f"lab {self.lab.name} has no nodes on a host named {name!r} (its hosts: {', '.join(s.name for s in self.sites())})"
        )

    @property
    def prefix(self) -> str:
        return render.prefix(self.lab.name, self.run_id)

    @property
    def run_dir(self) -> Path:
        return settings.state_dir() / "runs" / self.prefix

    def node(self, name: str) -> NodeHandle:
        try:
            return self._nodes[name]
        except KeyError:
            raise HarnessError(f"lab '{self.lab.name}' has no node '{name}' (nodes: {', '.join(self._nodes)})") from None

    @property
    def nodes(self) -> list[NodeHandle]:
        return list(self._nodes.values())

    def by_role(self, role: str) -> list[NodeHandle]:
        return [h for h in self._nodes.values() if role in h.roles]

    def ssh_target(self, node: str) -> SshTarget:
        return SshTarget(
            node=node,
            address=self.node(node).address(),
            key_file=self.run_dir / "id_ed25519",
            known_hosts=self.run_dir / "known_hosts",
            ssh_config=self.run_dir / "ssh_config",
            via=None if (host := self.site_of(node).host).local else host,
        )

    def console_log(self, node: str) -> Path:
        """Where virtlogd writes NODE's console, on the libvirt host."""
        return settings.console_dir() / f"{render.domain_name(self.lab.name, self.run_id, node)}.log"

    def read_console(self, node: str, max_bytes: int = CONSOLE_READ_BYTES) -> str | None:
        """The end of NODE's console log (read over SSH on a remote host), or None when there is none yet."""
        path = self.console_log(node)
        host = self.site_of(node).host
        if host.local:
            try:
                with path.open("rb") as f:
                    f.seek(max(0, path.stat().st_size - max_bytes))
                    return f.read().decode(errors="replace")
            except OSError:
                return None
        try:
            res = run_on_host(host, f"tail -c {max_bytes} {shlex.quote(str(path))}", timeout=30)
        except HarnessError:
            return None
        return res.stdout if res.rc == 0 else None

    def log(self, message: str) -> None:
        self.progress(f"[{time.monotonic() - self._t0:6.1f}s] {message}")

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> LabSession:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.keep:
            self.down()

    def up(self) -> LabSession:
        """Build everything; on any failure (or Ctrl-C) nothing is left behind unless kept."""
        try:
            self._up()
        except BaseException:
            self._stop.set()
            if self.failure_dir is not None and self._registered:
                self._save_failure_evidence(self.failure_dir)
            if not self.keep:
                self.log("bring-up failed: tearing the lab down")
                self.down()
            raise
        return self

    def _save_failure_evidence(self, dest: Path) -> None:
        failed = [n for n, st in self.status.items() if st.state in ("failed", "setup")]
        try:
            self.collect_artifacts(dest, journal_nodes=[n for n in failed if self.node(n).remote.answers()])
            self.log(f"evidence of the failed bring-up is in {dest}")
        except (HarnessError, OSError) as exc:
            self.log(f"could not save evidence into {dest}: {exc}")

    def _timed(self, phase: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.phase_s[phase] = time.monotonic() - start

    def _up(self) -> None:
        image = self._prepare_image()
        if self.use_saved and self.spread is None and self.host.local and self._restore_saved(image):
            return
        self.prepare(image)
        self._timed("nodes", self._bring_up_nodes)

    def _prepare_image(self) -> images.Image:
        sites = self.sites()
        for site in sites:
            part = (
                self.lab
                if len(sites) == 1
                else dataclasses.replace(self.lab, nodes=tuple(n for n in self.lab.nodes if n.name in site.nodes))
            )
            if site.host.local:
                require_host(settings.cache_dir(), settings.pool_dir())
                check_fits(part, settings.pool_dir())
            else:
                require_builder(settings.cache_dir())  # the image is built here, then uploaded
                check_fits(part, settings.pool_dir(), remote_space(site.host, settings.pool_dir()), where=site.host.describe())
        check_display_support(self.lab, local_libvirt=all(site.host.local for site in sites))
        image = self._timed("image", lambda: images.ensure_image(self.progress, release=self.lab.release))
        if not self.accel:
            if self.host.local:
                self.accel, reason = accel_mod.choose_accel(image.kernel, settings.cache_dir())
            else:
                self.accel, reason = remote_accel(self.host)
                if self.pace != self.accel:
                    reason += f"; {self.host.describe()} is itself an emulated machine: its guests' deadlines are TCG's"
            self.log(f"accelerator: {self.accel.upper()} — {reason}")
        self.image = image
        return image

    def _restore_saved(self, image: images.Image) -> bool:
        """Restore the lab's saved verified state, if it was built from exactly what we have now."""
        saved = golden.SavedLab.find(self.lab.name, golden.session_key(self, image))
        if saved is None:
            return False
        self.log(f"found saved lab {saved.path.name} (built in {saved.build_s:.0f} s, saved {saved.created}): restoring it")
        try:
            restored = self._timed("restore", lambda: golden.restore(self, saved, image))
        except HarnessError as exc:
            self.log(f"restoring the saved lab failed ({exc}); building it instead")
            restored = False
        if not restored:
            self.run_id, self._stop = runs.new_run_id(), threading.Event()
        self.restored = restored
        return restored

    def prepare(self, image: images.Image | None = None) -> None:
        """Everything before the first domain starts: image, accelerator, leases, keys, files, volumes, networks."""
        image = image or self._prepare_image()
        self._timed("prepare", lambda: self._prepare(image))

    def _prepare(self, image: images.Image) -> None:
        # The host's networks say which subnets are taken; they are read, chosen from and added to
        # under the host's lock, so a client with another registry (or on another machine) cannot
        # take the same subnet in between.
        # A spread lab's subnets are leased on every one of its hosts at once (locks taken in host order,
        # so two spread labs cannot deadlock): each subnet is also its tunnel's ID on each host.
        with contextlib.ExitStack() as locks:
            for site in self.sites():
                locks.enter_context(host_locked(site.host, "subnets", "the host's subnet lock", timeout=300))
            taken = [addr for site in self.sites() for addr in (*site.provider.network_addresses(), *self._remote_routes(site.host))]
            run = runs.register(
                self.run_id,
                self.lab.name,
                self.lab.path,
                {n.name: n.prefix for n in self.lab.networks},
                extra_taken=taken,
                uri=self.host.uri,
                node_uris={node: site.host.uri for site in self.sites() for node in site.nodes} if self.spread else {},
            )
            self.adopt_run(run)
            self._render(image)
            self.create_networks()
        stop_point("networks-created", self.log)
        self._provision(image)

    def adopt_run(self, run: runs.Run) -> None:
        """This session is RUN from now on: its names, subnets and teardown, and its lock on the host
        (held while this process lives: a client whose registry does not know the run sees it alive)."""
        self._release_run_lock()
        self._run_locks = [RunLock(site.host, run.run_id) for site in self.sites()]
        self.run_id = run.run_id
        self._registered = True
        self.placement = run.placement()
        self.log(f"run {self.run_id}: " + ", ".join(f"{k} {v}" for k, v in run.subnets.items()))

    def owner_metadata(self) -> dict[str, str]:
        return {
            "pid": str(os.getpid()),
            "user": runs.me(),
            "host": socket.gethostname(),
            "boot": accel_mod.boot_id(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def mark_ready(self) -> None:
        """Every node ready at once: a lab restored from memory boots nothing."""
        for st in self.status.values():
            st.state, st.ready_s = "ready", 0.0

    def load_rendered(self) -> None:
        rendered = self.run_dir / "rendered"
        self.files = {str(p.relative_to(rendered)): p.read_text() for p in rendered.rglob("*") if p.is_file()}

    def create_networks_and_seeds(self) -> None:
        self.create_networks()
        self.create_seeds()

    def create_networks(self) -> None:
        if self.spread is None:
            for net in self.lab.networks:
                self.provider.create_network(self.files[f"networks/{net.name}.xml"])
            return
        self._create_spread_networks(self.spread)

    def _create_spread_networks(self, spread: Spread) -> None:
        """Each network on every host that runs a node on it, with that host's own bridge address, and
        the tunnels that join a network's bridges across hosts."""
        sites = self.sites()
        mtus = self.network_mtus()
        for site in sites:
            for net in self.lab.networks:
                if site.name in spread.network_hosts(self.lab, net.name):
                    address = spread.gateway(self.lab, net.name, site.name, self.placement.subnets[net.name])
                    site.provider.create_network(render.render_network(self.lab, self.placement, net.name, address, mtus.get(net.name, 0)))
        underlay = self._underlay(sites)
        bridges = {net.name: render.bridge_name(self.lab.name, self.run_id, net.name) for net in self.lab.networks}
        for site in sites:
            for tunnel in spread.tunnels(self.lab, site.name, self.placement.subnets, bridges, underlay[site.name]):
                tunnels.make(site.host, tunnel)
                self.log(f"{site.name}: tunnel {tunnel.device} of network {tunnel.network} to {', '.join(tunnel.peers)}")

    def _underlay(self, sites: list[Site]) -> dict[str, dict[str, str]]:
        """For each host, every host's address as the tunnel from it uses it: its own source address
        toward the others, and the others' addresses as the URIs name them."""
        out: dict[str, dict[str, str]] = {}
        for site in sites:
            peers = [other for other in sites if other is not site]
            own = tunnels.underlay_address(site.host, peers[0].host.hostname) if peers else ""
            out[site.name] = {site.name: own, **{p.name: self._resolve(site.host, p.host.hostname) for p in peers}}
        return out

    @staticmethod
    def _resolve(host: LibvirtHost, name: str) -> str:
        res = run_on_host(host, f"getent ahostsv4 {shlex.quote(name)} | awk 'NR==1 {{print $1}}'", timeout=30)
        address = res.stdout.strip()
        if not address:
            raise HarnessError(f"{host.describe()} cannot resolve the host {name}: the hosts of one lab must reach each other")
        return address

    def create_seeds(self) -> None:
        for node in self.lab.nodes:
            prefix = f"seed/{node.name}/"
            seed = build_seed_iso({k[len(prefix) :]: v for k, v in self.files.items() if k.startswith(prefix)})
            self._upload(render.volume_name(self.lab.name, self.run_id, node.name, "seed.iso"), seed, "raw", self.provider_of(node.name))

    def _render(self, image: images.Image) -> None:
        """Keys, and every file of the run (libvirt XML, seeds, role files, SSH config), written to its folder."""
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        client = keys.new_keypair(f"kvmlab-{self.prefix}")
        keys.write_private(self.run_dir / "id_ed25519", client.private_openssh)
        (self.run_dir / "id_ed25519.pub").write_text(client.public_openssh + "\n")
        host_keys = {n.name: keys.new_keypair(f"{n.name}@{self.prefix}") for n in self.lab.nodes}
        self.files = render.render_lab(
            render.RenderInput(
                lab=self.lab,
                placement=self.placement,
                backing=render.Backing(str(settings.pool_dir()), image.digest),
                accel=self.accel,
                ssh_public_key=client.public_openssh,
                host_keys={k: (v.private_openssh, v.public_openssh) for k, v in host_keys.items()},
                owner=render.Owner(
                    pid=os.getpid(),
                    user=runs.me(),
                    host=socket.gethostname(),
                    boot_id=accel_mod.boot_id(),
                    created=datetime.now(UTC).isoformat(timespec="seconds"),
                ),
                console_dir=str(settings.console_dir()),
                mtus=self.network_mtus(),
            )
        )
        self._write_ssh_files(host_keys)
        write_files(self.run_dir / "rendered", self.files)

    def _provision(self, image: images.Image) -> None:
        """What the run's domains need on each host besides their networks: console folder, base image, volumes, seeds."""

        def prepare_host(site: Site) -> None:
            if site.host.local:
                settings.console_dir().mkdir(parents=True, exist_ok=True)
            else:
                run_on_host(site.host, f"mkdir -p {shlex.quote(str(settings.console_dir()))}")
            self.ensure_base(image, site)

        in_parallel(self.sites(), prepare_host)  # a spread lab's hosts get their base image at once
        for node in self.lab.nodes:
            provider = self.provider_of(node.name)
            provider.create_volume(settings.POOL, self.files[f"volumes/{node.name}-root.xml"])
            for disk in node.disks:
                provider.create_volume(settings.POOL, self.files[f"volumes/{node.name}-{disk.name}.xml"])
        self.create_seeds()

    def _write_ssh_files(self, host_keys: dict[str, keys.KeyPair]) -> None:
        public = {name: pair.public_openssh for name, pair in host_keys.items()}
        via = {node: site.host for site in self.sites() for node in site.nodes}
        write_files(self.run_dir, render.render_ssh_files(self.lab, self.placement, self.run_dir, public, via=via))

    def ensure_base(self, image: images.Image, site: Site | None = None) -> None:
        pool_xml = render.render_pool_xml(settings.POOL, str(settings.pool_dir()))
        complete = f"base-{image.digest}.complete"
        # Two runs starting together, of any user or client, must not both upload the same base image;
        # one may wait for the other's upload (minutes over a slow link).
        host, provider = (site.host, site.provider) if site else (self.host, self.provider)
        with host_locked(host, "pool", "the host's image pool lock", timeout=3600):
            provider.ensure_pool(settings.POOL, pool_xml)
            if provider.has_volume(settings.POOL, complete):
                return
            root = image.root if host.local else images.packed_root(image, self.log)  # a third of the bytes to send
            parts = (("qcow2", root, "qcow2"), *((suffix, path, "raw") for suffix, path in image.boot_files()))
            # No marker: nothing was uploaded, or an upload was killed half-way. Start over.
            for suffix, path, fmt in parts:
                name = f"base-{image.digest}.{suffix}"
                provider.delete_volume(settings.POOL, name)
                self.log(f"uploading {name} into pool {settings.POOL}" + (f" on {site.name}" if site and site.name else ""))
                self._upload(name, path, fmt, provider)
            self._upload(complete, b"complete\n", "raw", provider)

    def _upload(self, name: str, source: Path | bytes, fmt: str, provider: Provider | None = None) -> None:
        """A new volume NAME in kvmlab's pool holding SOURCE (a file or bytes) in format FMT."""
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        # Checked first, to say which filesystem lacks how much before anything is written (an ENOSPC
        # from libvirt itself, when another writer takes the space meanwhile, becomes the same error).
        provider = provider or self.provider
        directory, free = provider.pool_space(settings.POOL)
        if size > free:
            raise PoolFull(directory, -(-size // 2**20), free // 2**20)
        where = next((site.name or site.host.hostname for site in self.sites() if site.provider is provider), "")
        sent = UploadProgress(name + (f" to {where}" if where else ""), size, self.log)
        provider.upload_volume(settings.POOL, render.render_upload_volume(name, size, fmt), source, sent)

    def _units(self, node: Node, phase: str) -> list[tuple[str, Step]]:
        """(role, step) for NODE in PHASE: its own roles' steps, then what other roles of the lab do on it."""
        role_defs = registry()
        units = [(role, role_defs[role].steps[phase]) for role in node.roles if phase in role_defs[role].steps]
        units += self._steps_of_others(node, phase)
        return [(role, step) for role, step in units if (role, None) not in self.leave and (role, phase) not in self.leave]

    def _steps_of_others(self, node: Node, phase: str) -> list[tuple[str, Step]]:
        role_defs = registry()
        units: list[tuple[str, Step]] = []
        present = {r for n in self.lab.nodes for r in n.roles}
        for other in role_defs.values():
            if other.name not in present:
                continue
            for own in node.roles:
                step = other.steps_on.get(own, {}).get(phase)
                if step is not None:
                    units.append((other.name, step))
        return units

    def _step_graph(self, ctx: RoleContext, started: float) -> StepGraph:
        """Every role step of the lab as a unit of the dependency graph (kvmlab.step_graph)."""
        units = [
            Unit(node.name, role, phase, waits_for(role), lambda step=step, node=node: step(ctx, node))
            for node in self.lab.nodes
            for phase in PHASES
            for role, step in self._units(node, phase)
        ]
        return StepGraph(units, PHASES, started)

    def _bring_up_nodes(self) -> None:
        """Start every node; each runs its role steps as their dependencies finish, `setup` as soon as it is ready."""
        role_defs = registry()
        ctx = RoleContext(self.lab, self.placement, self.files, {h.name: h.remote for h in self.nodes}, self.log)
        errors: dict[str, BaseException] = {}
        started = time.monotonic()
        graph = self._step_graph(ctx, started)
        self.step_graph = graph
        generics = None
        # Generic nodes' memory files are this machine's: a remote host's nodes boot.
        if not self.cold_boot and self.image is not None and self.host.local and self.spread is None:
            generics = clones.Generics(self.provider, self.image.digest, self.accel, self.log, self._boot_contention())
        self._generics = generics

        def boot_and_configure(node: Node) -> None:
            st = self.status[node.name]
            broken: set[str] = set()  # roles that failed a step on this node (keep_going)

            def run_unit(unit: Unit) -> bool:
                if unit.role in broken:
                    return False
                try:
                    self._step(node, unit.role, unit.phase, unit.run)
                    return True
                except (HarnessError, AssertionError) as exc:
                    if not self.keep_going:
                        raise
                    broken.add(unit.role)
                    self.step_failures.append(StepFailure(node.name, unit.role, unit.phase, str(exc)))
                    self.log(f"{node.name}: {unit.role} {unit.phase} FAILED (going on): {str(exc).splitlines()[0]}")
                    return False

            try:
                st.state, st.started = "booting", time.monotonic()
                self._start_node(node, generics)
                self._wait_ready(node)
                if self.node(node.name).cloned:
                    self.node(node.name).remote.check(f"date -u -s @{time.time():.3f} >/dev/null", "set the clock of a clone")
                st.ready_s = time.monotonic() - st.started
                st.state = "setup"
                self.log(f"{node.name}: ready after {st.ready_s:.1f} s")
                if not graph.run_node(node.name, self._stop.is_set, run_unit):
                    return
                st.roles_s = time.monotonic() - st.started - st.ready_s
                st.state = "degraded" if broken else "ready"
            except BaseException as exc:
                st.state, st.error = "failed", str(exc).splitlines()[0]
                errors[node.name] = exc
                graph.finish_node(node.name)
                self._stop.set()

        # Nodes with the longest setup chains start first, so that they finish first.
        order = sorted(self.lab.nodes, key=lambda n: min((role_defs[r].boot_priority for r in n.roles), default=9))
        threads = [threading.Thread(target=boot_and_configure, args=(n,), name=f"node-{n.name}", daemon=True) for n in order]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # short joins keep Ctrl-C deliverable to this thread
        self.phase_end_s.update(graph.phase_end_s())
        if errors:
            raise next(iter(errors.values()))

    def _start_node(self, node: Node, generics: clones.Generics | None) -> None:
        """Clone the node from its generic node; boot it when cloning is off or fails."""
        xml = self.files[f"domains/{node.name}.xml"]
        provider = self.provider_of(node.name)
        root_xml = self.files[f"volumes/{node.name}-root.xml"]
        if generics is not None:
            root = render.volume_name(self.lab.name, self.run_id, node.name, "root.qcow2")
            try:
                generic = generics.for_node(xml, self._stop)
                start = time.monotonic()
                provider.delete_volume(settings.POOL, root)
                provider.create_volume(settings.POOL, render.render_overlay_volume(root, generic.volume_path))
                clones.restore_clone(provider, generic, xml)
                self.node(node.name).cloned = True
                self.log(f"{node.name}: cloned from generic node {generic.key} in {time.monotonic() - start:.1f} s")
                return
            except HarnessError as exc:
                if self._stop.is_set():
                    raise
                self._unless_cut_off(node)  # booting it would fail the same way
                self.log(f"{node.name}: cloning failed ({str(exc).splitlines()[0]}); booting it instead")
                provider.destroy_domain(self.node(node.name).domain)
                provider.delete_volume(settings.POOL, root)
                provider.create_volume(settings.POOL, root_xml)
        try:
            provider.create_domain(xml)
        except HarnessError:
            self._unless_cut_off(node)
            raise

    def _unless_cut_off(self, node: Node) -> None:
        """Say that NODE is cut off when a network of its was removed while it started (libvirt's own
        error names only the network)."""
        if (gone := self.node(node.name).network_gone()) is not None:
            raise gone.at("while booting") from None

    def _step(self, node: Node, role: str, phase: str, fn: Callable[[], None]) -> None:
        if self._stop.is_set():
            raise HarnessError(f"{node.name}: {role} {phase} skipped: another node failed")
        start = time.monotonic()
        self.log(f"{node.name}: {role} {phase} ...")
        try:
            fn()
        except NodeStopped as exc:
            raise exc.at(f"during step {role} {phase}") from None
        self.log(f"{node.name}: {role} {phase} done in {time.monotonic() - start:.1f} s")

    def _boot_contention(self) -> float:
        """Nodes boot together and share the host's cores: allow for more than two per core (CPU-bound under TCG)."""
        return max(1.0, len(self.lab.nodes) / (2 * self.host_cpus()))

    @property
    def pace(self) -> str:
        """The accelerator whose deadlines the lab's waits get: its own, but TCG's for a remote host's KVM
        nested in an emulated machine (as fast as TCG, not as KVM)."""
        if self._pace is None or self._pace[0] != self.accel:
            nested = self.accel == "kvm" and not self.host.local and emulated_machine(self.host)
            self._pace = (self.accel, "tcg" if nested else self.accel)
        return self._pace[1]

    def host_cpus(self) -> int:
        if self._host_cpus is None:
            cpus = os.cpu_count() or 1
            if not self.host.local:
                res = run_on_host(self.host, "nproc", timeout=30)
                cpus = int(res.stdout.strip()) if res.rc == 0 and res.stdout.strip().isdigit() else 1
            self._host_cpus = cpus
        return self._host_cpus

    def _remote_routes(self, host: LibvirtHost) -> list[str]:
        """A remote host's own subnets, which its labs' networks must not overlap (this machine's are added by runs)."""
        if host.local:
            return []
        res = run_on_host(host, " ".join(runs.ROUTES_COMMAND), timeout=30)
        return [str(net) for net in runs.routed_networks(res.stdout)] if res.rc == 0 else []

    def _wait_ready(self, node: Node) -> None:
        handle = self.node(node.name)

        def failed() -> str | None:
            if self._stop.is_set():
                return "another node failed"
            if stop := handle.stopped():
                raise stop.at("while booting")
            state = handle.state
            if state != "running":
                return f"domain {handle.domain} is {state}"
            if ROOT_FS_ERROR in handle.console_tail(200):
                # Waiting will not mend it: say so now, not after the boot timeout.
                return f"its root filesystem is corrupt ('{ROOT_FS_ERROR}' on its console)"
            return None

        wait_until(
            lambda: handle.remote.answers() and handle.run("test -e /run/kvmlab-identity", timeout=POLL_COMMAND_S).rc == 0,
            timeout_for("boot", self.pace) * self._boot_contention(),
            f"node {node.name} to answer SSH and finish first boot",
            interval=0.5,  # a clone is ready seconds after its restore; each poll is one SSH attempt
            failed=failed,
            context=lambda: handle.console_tail(),
        )

    def down(self) -> None:
        """Remove every object of this run. Safe to call twice and after a partial bring-up."""
        if not self._registered:
            return
        self._stop.set()
        if self._generics is not None:
            self._generics.abort()
        for handle in self.nodes:
            handle.forget_session()
        try:
            for site in self.sites():
                collect(site.provider, only_runs={self.run_id})
                if self.spread is not None:  # their bridges went with the networks
                    tunnels.remove(site.host, [vni_of(subnet) for subnet in self.placement.subnets.values()])
        except LibvirtGone as exc:
            # Nothing can be removed without libvirtd; the run stays registered, so `kvmlab gc` finds it later.
            self.log(f"could not tear lab {self.lab.name} down: {exc}")
            return
        self._registered = False
        self._release_run_lock()
        self.log(f"lab {self.lab.name} (run {self.run_id}) torn down")

    def _release_run_lock(self) -> None:
        for lock in self._run_locks:
            lock.release()
        self._run_locks = []

    @classmethod
    def attach(cls, lab: Lab, provider: Provider, run: runs.Run, progress: Progress = _stderr_progress) -> LabSession:
        """A session for a lab that is already up (kept by `kvmlab up` or --lab-keep)."""
        session = cls(lab, provider, keep=True, progress=progress, run_id=run.run_id)
        if run.node_uris:  # a lab over several hosts: each host by its URI, in the order it was brought up in
            from kvmlab import providers

            uris = list(dict.fromkeys(run.node_uris.values()))
            session.spread = Spread(tuple(uris), dict(run.node_uris))
            session.host_providers = {uri: provider if uri == getattr(provider, "uri", "") else providers.connect(uri) for uri in uris}
        session.placement = run.placement()
        session.load_rendered()
        session._registered = True
        # The accelerator the lab was rendered for: its waits are scaled by it.
        first_domain = session.files.get(f"domains/{lab.nodes[0].name}.xml", "")
        session.accel = "kvm" if "<domain type='kvm'>" in first_domain else "tcg"
        for name, st in session.status.items():
            st.state = session.node(name).state
        return session

    # -- checkpoints ------------------------------------------------------
    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self)

    def snapshot(self, name: str) -> float:
        """Save every node's memory and disks under NAME; the lab keeps running. Returns seconds taken."""
        return self.checkpoints.snapshot(name)

    def revert(self, name: str) -> float:
        """Put the whole lab back to checkpoint NAME. Returns seconds taken."""
        return self.checkpoints.revert(name)

    def settle_storage(self) -> None:
        """Wait until every storage service of the lab has settled after a restore (Role.settle)."""
        hooks = [
            role.settle
            for role in registry().values()
            if role.settle is not None and self.by_role(role.name) and not {(role.name, None), (role.name, "setup")} & self.leave
        ]
        in_parallel(hooks, lambda settle: settle(self.lab, lambda node: self.node(node).remote))

    def mark_kept(self) -> None:
        self.keep = True
        runs.set_kept(self.run_id, True)
        for handle in self.nodes:  # the domains say it too, for a client whose registry does not know this run
            try:
                handle.provider.mark_domain_kept(handle.domain)
            except HarnessError as exc:  # the registry's record still keeps it from this registry's gc
                self.log(f"{handle.name}: could not mark domain {handle.domain} kept: {exc}")

    # -- reporting ----------------------------------------------------------
    def summary_rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for handle in self.nodes:
            st = self.status[handle.name]
            ready = f"{st.ready_s:.1f}" if st.ready_s is not None else "-"
            rows.append((handle.name, ",".join(handle.roles) or "-", handle.address(), st.state, ready))
        return rows

    def collect_artifacts(self, dest: Path, journal_nodes: list[str] | None = None) -> None:
        """Rendered files, every console, and for JOURNAL_NODES the journal and role state."""
        dest.mkdir(parents=True, exist_ok=True)
        write_files(dest / "rendered", {k: redact(v) for k, v in self.files.items()})
        for handle in self.nodes:
            console = self.read_console(handle.name, max_bytes=ARTIFACT_CONSOLE_BYTES)
            if console is not None:
                (dest / f"console-{handle.name}.log").write_text(console)
        roles = registry()
        for name in journal_nodes or []:
            handle = self.node(name)
            commands = ["journalctl -b --no-pager -o short-monotonic | tail -n 3000"]
            commands += [cmd for role in handle.roles for cmd in roles[role].state_commands]
            out = []
            for cmd in commands:
                try:
                    res = handle.run(cmd, timeout=60)
                    out.append(f"$ {cmd}  (exit {res.rc})\n{res.output}\n")
                except HarnessError as exc:
                    out.append(f"$ {cmd}\n(could not run: {exc})\n")
            (dest / f"state-{name}.txt").write_text(redact("\n".join(out)))


def _clip(text: str, limit: int = 600) -> str:
    text = text.strip() or "(no output)"
    return text if len(text) <= limit else text[: limit // 2] + " [...] " + text[-limit // 2 :]


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
