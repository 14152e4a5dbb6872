"""SSH to lab nodes: one paramiko connection per node, shared with its testinfra Host.

The only module of kvmlab that imports paramiko or testinfra.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import paramiko
import testinfra
from testinfra.backend.paramiko import ParamikoBackend

from kvmlab.errors import CommandHung, HarnessError, NodeStopped, RoleError
from kvmlab.libvirt_host import LibvirtHost

CONNECT_TIMEOUT_S = 10
# A command silent this long asks its node's watch whether the node still exists: a node whose QEMU
# ended or was paused never closes the TCP connection, so the command would sit out its whole timeout.
WATCH_INTERVAL_S = 2.0
TEST_COMMAND_TIMEOUT_S = 900  # a test's command that hangs fails instead of stalling the whole run
DIAGNOSE_TIMEOUT_S = 20  # a look at a node whose command hung: over a new connection, quickly or not at all
# What a hung command left running: processes younger than the command (its tree, whatever it
# started) and every thread in uninterruptible sleep (a hard NFS mount, a stuck disk; often a thread
# of an older daemon the command waits on), oldest first, with the kernel function each waits in.
HUNG_LINE_CHARS = 200
HUNG_PS = (
    "ps -eL --no-headers --sort=start_time -o stat=,etimes=,pid=,wchan:24=,args= | awk -v t={age} "
    "'!index($0, \"--no-headers\") && $5 !~ /^(ps|awk|head|sshd:)/ && ($1 ~ /^D/ || ($2 <= t && $5 !~ /^\\[/ && !seen[$3]++))'"
    " | head -n 8"
)

# paramiko logs every failed handshake with its traceback (Python's last-resort handler prints it):
# while a node boots, the readiness poll expects those failures and reports its own error at its deadline.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" + self.stderr if self.stderr else "")).strip()


# Asked by a command that waits on a silent node: why the node can no longer answer, or None.
Watch = Callable[[], NodeStopped | None]


@dataclass(frozen=True)
class SshTarget:
    node: str
    address: str
    key_file: Path
    known_hosts: Path
    ssh_config: Path
    user: str = "root"
    via: LibvirtHost | None = None  # a remote libvirt host: the node's network exists only inside it


class CommandTimeout(HarnessError):
    """A command gave no result within its timeout."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"command produced no result within {timeout:.0f} s")


class Remote:
    """A node's SSH session; reconnects when the node has rebooted or the link dropped."""

    def __init__(self, target: SshTarget, watch: Watch | None = None) -> None:
        self.target = target
        self.watch = watch
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _stopped(self) -> NodeStopped | None:
        return self.watch() if self.watch is not None else None

    def _connect(self) -> paramiko.SSHClient:
        target, via = self.target, self.target.via
        sock = HostShell.of(via).tunnel(target.address, 22) if via is not None and not via.local else None
        return _open_client(
            target.address,
            target.known_hosts,  # host keys are pinned at render time
            f"ssh to {target.node} ({target.address})",
            sock=sock,
            username=target.user,
            key_filename=str(target.key_file),
            allow_agent=False,
            look_for_keys=False,
        )

    @property
    def client(self) -> paramiko.SSHClient:
        with self._lock:
            self._client = _alive_or_new(self._client, self._connect)
            return self._client

    def close_unlocked(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self.close_unlocked()

    def run(self, command: str, timeout: float = 600.0, stdin: str | None = None) -> Result:
        """Run COMMAND; one that gives no result in TIMEOUT is a CommandHung saying what still runs."""
        try:
            return self._run(command, timeout, stdin)
        except CommandTimeout as exc:
            raise CommandHung(
                f"{self.target.node}: `{_short(command)}` gave no result within {exc.timeout:.0f} s; {self.what_hangs(exc.timeout)}"
            ) from exc

    def _run(self, command: str, timeout: float, stdin: str | None = None) -> Result:
        try:
            return _execute(self.client.get_transport(), command, timeout, self._stopped, stdin)  # type: ignore[arg-type]
        except NodeStopped as exc:
            self.close()
            raise exc.at(f"while running `{_short(command)}`") from None
        except (OSError, paramiko.SSHException, EOFError, HarnessError) as exc:
            self.close()
            if stop := self._stopped():  # the node is gone: say so, not "connection timed out"
                raise stop.at(f"while running `{_short(command)}`") from exc
            if isinstance(exc, HarnessError):
                raise
            raise HarnessError(f"ssh to {self.target.node}: '{command}': {exc or type(exc).__name__}") from exc

    def what_hangs(self, age: float) -> str:
        """What the node is doing after a command of AGE seconds hung, looked at over a new connection:
        whether it answers at all, and which processes of that age (or stuck in the kernel) still run."""
        try:
            client = self._connect()
        except HarnessError as exc:
            return f"the node does not take a new SSH connection either ({exc}): it is hung or cut off"
        try:
            seen = _execute(client.get_transport(), HUNG_PS.format(age=int(age) + 1), DIAGNOSE_TIMEOUT_S, self._stopped)  # type: ignore[arg-type]
        except HarnessError as exc:
            return f"the node takes a new SSH connection but runs nothing there ({exc}): it is hung"
        finally:
            client.close()
        lines = [" ".join(line.split())[:HUNG_LINE_CHARS] for line in seen.stdout.splitlines() if line.strip()]
        if seen.rc != 0 or not lines:
            return "the node answers, and nothing of the command is left running there"
        return "still running there (state, seconds, pid, kernel wait, command): " + " | ".join(lines)

    def check(self, command: str, step: str, timeout: float = 600.0, stdin: str | None = None) -> Result:
        """Run COMMAND; a non-zero exit is a RoleError naming node, step, command and output."""
        result = self.run(command, timeout=timeout, stdin=stdin)
        if result.rc != 0:
            raise RoleError(self.target.node, step, command, result.rc, result.output)
        return result

    def put(self, path: str, content: str, mode: int = 0o644) -> None:
        directory = shlex.quote(str(Path(path).parent))
        self.check(
            f"mkdir -p {directory} && cat > {shlex.quote(path)} && chmod {mode:o} {shlex.quote(path)}",
            f"write {path}",
            stdin=content,
        )

    def answers(self) -> bool:
        """True when sshd accepts our key; False while the node is still booting."""
        if self._stopped():
            return False  # no use knocking: the node's QEMU ended, or it cannot be reached any more
        try:
            return self._run("true", timeout=CONNECT_TIMEOUT_S).rc == 0
        except HarnessError:
            return False

    def host(self) -> testinfra.host.Host:
        """A testinfra Host that reuses this node's SSH connection."""
        backend = _TimedBackend(f"paramiko://{self.target.node}", ssh_config=str(self.target.ssh_config))
        backend.remote = self  # shares our session, and follows it when it reconnects after a reboot
        return testinfra.host.Host(backend)


class HostShell:
    """A remote libvirt host over SSH: commands on it, and TCP tunnels through it to its lab networks.

    One connection per host, shared by every node's session (each tunnel is a channel of it).
    """

    _shells: ClassVar[dict[LibvirtHost, HostShell]] = {}
    _shells_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def of(cls, host: LibvirtHost) -> HostShell:
        with cls._shells_lock:
            if host not in cls._shells:
                cls._shells[host] = cls(host)
            return cls._shells[host]

    def __init__(self, host: LibvirtHost) -> None:
        self.host = host
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def _connect(self) -> paramiko.SSHClient:
        host = self.host
        known_hosts = host.known_hosts or Path("~/.ssh/known_hosts").expanduser()
        return _open_client(
            host.hostname,
            known_hosts if known_hosts.exists() else None,  # as libvirt's own SSH: a known host only
            f"ssh to the libvirt host {host.describe()}",
            hint=" (kvmlab reaches the guests of a remote host through SSH to it, with the URI's user, port,"
            " keyfile= and known_hosts=, or ~/.ssh's)",
            port=host.port,
            username=host.user,
            key_filename=str(host.key_file) if host.key_file else None,
            look_for_keys=host.key_file is None,
        )

    @property
    def client(self) -> paramiko.SSHClient:
        with self._lock:
            self._client = _alive_or_new(self._client, self._connect)
            return self._client

    def tunnel(self, address: str, port: int) -> paramiko.Channel:
        """A TCP connection from the host to ADDRESS:PORT (a guest on one of its lab networks)."""
        transport = self.client.get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=CONNECT_TIMEOUT_S)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise HarnessError(f"tunnel through {self.host.describe()} to {address}:{port}: {exc or type(exc).__name__}") from exc

    @contextmanager
    def locked(self, path: str, what: str, timeout: float = 120.0) -> Iterator[None]:
        """Hold an exclusive flock(1) on PATH on the host for the block: a command that keeps the lock
        while its SSH channel is open, so a client that dies lets go of it with its connection."""
        chan = self.client.get_transport().open_session(timeout=CONNECT_TIMEOUT_S)  # type: ignore[union-attr]
        try:
            directory = shlex.quote(str(Path(path).parent))
            hold = "sh -c 'echo locked; exec cat >/dev/null'"
            with _ChannelGuard(chan, lambda: None, time.monotonic() + timeout, timeout):
                chan.exec_command(f"mkdir -p {directory} && exec flock -x -w {timeout:.0f} {shlex.quote(path)} {hold}")
            chan.settimeout(timeout + CONNECT_TIMEOUT_S)
            try:
                answer = chan.makefile("rb").readline().decode(errors="replace").strip()
            except TimeoutError:
                answer = ""
            if answer != "locked":
                raise HarnessError(f"could not take {what} ({path} on the libvirt host {self.host.describe()}) within {timeout:.0f} s")
            yield
        finally:
            chan.close()

    def run(self, command: str, timeout: float = 120.0) -> Result:
        try:
            return _execute(self.client.get_transport(), command, timeout, lambda: None)  # type: ignore[arg-type]
        except CommandTimeout as exc:
            raise HarnessError(
                f"on the libvirt host {self.host.describe()}: '{_short(command)}' gave no result within {exc.timeout:.0f} s"
            ) from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise HarnessError(f"on the libvirt host {self.host.describe()}: '{_short(command)}': {exc or type(exc).__name__}") from exc


def run_on_host(host: LibvirtHost, command: str, timeout: float = 120.0) -> Result:
    """Run a shell COMMAND on the libvirt host: this machine, or a remote one over SSH."""
    if not host.local:
        return HostShell.of(host).run(command, timeout)
    try:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"'{_short(command)}' still running after {timeout:.0f} s") from exc
    return Result(done.returncode, done.stdout, done.stderr)


class _TimedBackend(ParamikoBackend):
    """testinfra's paramiko backend, with a deadline on every command."""

    remote: Remote

    def run(self, command: str, *args: str, **kwargs: Any) -> Any:
        cmd = self.encode(self.get_command(command, *args))
        try:
            rc, stdout, stderr = self._exec_command(cmd)
        except (paramiko.SSHException, OSError, EOFError):
            self.remote.close()  # the node rebooted or was reverted: one retry on a fresh session
            rc, stdout, stderr = self._exec_command(cmd)
        return self.result(rc, cmd, stdout, stderr)

    def _exec_command(self, command: bytes) -> tuple[int, bytes, bytes]:
        transport = self.remote.client.get_transport()
        assert transport is not None
        try:
            return _execute_bytes(transport, command, TEST_COMMAND_TIMEOUT_S, self.remote._stopped)
        except NodeStopped as exc:
            self.remote.close()
            raise exc.at(f"while running `{_short(command.decode(errors='replace'))}`") from None
        except HarnessError as exc:
            raise HarnessError(f"{self.host.name}: command still running after {TEST_COMMAND_TIMEOUT_S} s: {command.decode()}") from exc


def _open_client(address: str, known_hosts: Path | None, what: str, hint: str = "", **connect: Any) -> paramiko.SSHClient:
    """An SSH client to ADDRESS that accepts only the host keys in KNOWN_HOSTS, with keepalives; a failure
    is a HarnessError saying WHAT was tried, why it failed, and HINT."""
    client = paramiko.SSHClient()
    if known_hosts is not None:
        client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(address, timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S, **connect)
    except (OSError, paramiko.SSHException, EOFError) as exc:
        client.close()
        raise HarnessError(f"{what}: {exc or type(exc).__name__}{hint}") from exc
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    return client


def _alive_or_new(client: paramiko.SSHClient | None, connect: Callable[[], paramiko.SSHClient]) -> paramiko.SSHClient:
    """CLIENT while its transport is up; otherwise it is closed and CONNECT makes a new one (after a reboot, a revert)."""
    transport = client.get_transport() if client is not None else None
    if client is not None and transport is not None and transport.is_active():
        return client
    if client is not None:
        client.close()
    return connect()


def _execute(transport: paramiko.Transport, command: str, timeout: float, stopped: Watch, stdin: str | None = None) -> Result:
    rc, out, err = _execute_bytes(transport, command.encode(), timeout, stopped, stdin)
    return Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))


def _execute_bytes(
    transport: paramiko.Transport, command: bytes, timeout: float, stopped: Watch, stdin: str | None = None
) -> tuple[int, bytes, bytes]:
    """Run COMMAND on a new channel of TRANSPORT, within TIMEOUT, asking STOPPED whether its node is gone."""
    chan = transport.open_session(timeout=CONNECT_TIMEOUT_S)
    deadline = time.monotonic() + timeout
    with _ChannelGuard(chan, stopped, deadline, timeout):
        chan.exec_command(command)
    if stdin is not None:
        chan.settimeout(timeout)
        chan.sendall(stdin.encode())
        chan.shutdown_write()
    out, err = _drain(chan, timeout, stopped)
    with _ChannelGuard(chan, stopped, deadline, timeout):
        rc = chan.recv_exit_status()
    return rc, out, err


class _ChannelGuard:
    """Bounds one of paramiko's waits that have no deadline (the answer to an exec request, the exit
    status): a node killed at that moment never answers and would hold its caller for good. A watcher
    closes the channel, which ends paramiko's wait, once STOPPED names a cause or DEADLINE passes; the
    block then raises that cause, or a timeout."""

    def __init__(self, chan: paramiko.Channel, stopped: Watch, deadline: float, timeout: float) -> None:
        self.chan, self.stopped, self.deadline, self.timeout = chan, stopped, deadline, timeout
        self.cause: NodeStopped | None = None
        self.error: Exception | None = None
        self.expired = False
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(WATCH_INTERVAL_S):
            try:
                self.cause = self.stopped()
            except Exception as exc:  # libvirt itself is gone: the caller is told, as by _drain
                self.error = exc
            self.expired = time.monotonic() > self.deadline
            if self.cause is not None or self.error is not None or self.expired:
                self.chan.close()
                return

    def __enter__(self) -> _ChannelGuard:
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._watcher.join()
        if self.cause is not None:
            raise self.cause from None
        if self.error is not None:
            raise self.error
        if self.expired:
            raise CommandTimeout(self.timeout) from None


def _drain(chan: paramiko.Channel, timeout: float, stopped: Watch) -> tuple[bytes, bytes]:
    """Read stdout and stderr to their end within TIMEOUT; whenever the command is silent for
    WATCH_INTERVAL_S, ask STOPPED whether the node still exists and raise what it says if not."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    chan.settimeout(WATCH_INTERVAL_S)
    while True:
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        try:
            data = chan.recv(65536)
        except TimeoutError:
            if stop := stopped():
                raise stop from None
            if time.monotonic() > deadline:
                raise CommandTimeout(timeout) from None
            continue
        if not data:
            break  # stdout closed: the command has ended
        out += data
    chan.settimeout(max(1.0, deadline - time.monotonic()))
    try:
        err += chan.makefile_stderr("rb").read()
    except TimeoutError as exc:
        raise CommandTimeout(timeout) from exc
    return bytes(out), bytes(err)


def _short(command: str) -> str:
    """A command as one short line, for messages (role steps run whole scripts)."""
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first if len(first) <= 80 and "\n" not in command.strip() else first[:77] + "..."
