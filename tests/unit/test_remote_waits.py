"""A node that dies between a command's request and its answer does not hold kvmlab for good.

paramiko waits without a deadline for the answer to an exec request. The SSH server here accepts a
session and then never answers its exec request: what a node whose QEMU was killed at that moment
looks like from the client.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from kvmlab import remote
from kvmlab.errors import HarnessError, NodeStopped


class _OpenServer(paramiko.ServerInterface):
    """An SSH server that lets anyone in and opens every session."""

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


class _SilentServer(_OpenServer):
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.release.wait(60)  # blocks the server's transport: no answer ever comes
        return False


@pytest.fixture
def silent_transport() -> Iterator[paramiko.Transport]:
    """A client transport whose server opens sessions but never answers an exec request."""
    release = threading.Event()
    server_sock, client_sock = socket.socketpair()
    server = paramiko.Transport(server_sock)
    server.add_server_key(paramiko.RSAKey.generate(2048))
    server.start_server(event=threading.Event(), server=_SilentServer(release))  # negotiates in its own thread
    client = paramiko.Transport(client_sock)
    client.start_client(timeout=10)
    client.auth_none("root")
    yield client
    release.set()
    client.close()
    server.close()


def test_a_node_gone_before_it_answers_is_reported_within_a_watch_interval(silent_transport: paramiko.Transport) -> None:
    calls = []

    def stopped() -> NodeStopped | None:
        calls.append(time.monotonic())
        return NodeStopped("n1", "its QEMU process ended: killed", "bring the lab up again")

    start = time.monotonic()
    with pytest.raises(NodeStopped, match="its QEMU process ended"):
        remote._execute(silent_transport, "true", timeout=600, stopped=stopped)
    assert time.monotonic() - start < 3 * remote.WATCH_INTERVAL_S
    assert calls


def test_a_command_never_answered_fails_at_its_deadline(silent_transport: paramiko.Transport) -> None:
    start = time.monotonic()
    with pytest.raises(HarnessError, match="no result within 1 s"):
        remote._execute(silent_transport, "true", timeout=1, stopped=lambda: None)
    assert time.monotonic() - start < 1 + 2 * remote.WATCH_INTERVAL_S


class _ScriptedServer(_OpenServer):
    """Answers `ps` (the look at a hung node) with ANSWER; every other command runs forever."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if command.startswith(b"ps "):
            # The answer may reach the client before the server's reply to the exec request: an end
            # of file waits for that reply, where closing the channel would refuse the request.
            def answer() -> None:
                channel.sendall(self.answer)
                channel.send_exit_status(0)
                channel.shutdown_write()

            threading.Thread(target=answer, daemon=True).start()
        return True


class _ScriptedRemote(remote.Remote):
    """A Remote whose every connection is a new session with a _ScriptedServer."""

    def __init__(self, answer: bytes) -> None:
        super().__init__(remote.SshTarget("hv1", "192.0.2.1", *[Path("/nonexistent")] * 3))
        self.answer, self.opened = answer, []

    def _connect(self) -> paramiko.SSHClient:
        server_sock, client_sock = socket.socketpair()
        server = paramiko.Transport(server_sock)
        server.add_server_key(paramiko.RSAKey.generate(1024))
        server.start_server(event=threading.Event(), server=_ScriptedServer(self.answer))
        transport = paramiko.Transport(client_sock)
        transport.start_client(timeout=10)
        transport.auth_none("root")
        client = paramiko.SSHClient()
        client._transport = transport  # type: ignore[attr-defined]
        self.opened += [server, transport]
        return client


def test_a_hung_command_is_reported_with_what_still_runs_on_its_node() -> None:
    ps = b"D 3 rpc_wait_bit_killable /sbin/mount.nfs 10.0.0.1:/srv /mnt -o rw\nS  3  do_wait  virsh -q pool-start nfsvms\n"
    node = _ScriptedRemote(ps)
    with pytest.raises(HarnessError) as raised:
        node.run("virsh -q pool-start nfsvms", timeout=1)
    message = str(raised.value)
    assert message.startswith("hv1: `virsh -q pool-start nfsvms` gave no result within 1 s; still running there")
    assert "D 3 rpc_wait_bit_killable /sbin/mount.nfs 10.0.0.1:/srv /mnt -o rw | S 3 do_wait virsh -q pool-start nfsvms" in message
    for transport in node.opened:
        transport.close()


def test_a_hung_command_on_a_node_that_takes_no_new_connection_says_so() -> None:
    node = _ScriptedRemote(b"")
    connect = node._connect
    calls = []

    def first_only() -> paramiko.SSHClient:
        calls.append(1)
        if len(calls) > 1:
            raise HarnessError("ssh to hv1 (192.0.2.1): timed out")
        return connect()

    node._connect = first_only  # type: ignore[method-assign]
    with pytest.raises(HarnessError, match=r"gave no result within 1 s; the node does not take a new SSH connection either .*: it is hung"):
        node.run("sleep infinity", timeout=1)
    for transport in node.opened:
        transport.close()
