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

import paramiko
import pytest

from kvmlab import remote
from kvmlab.errors import HarnessError, NodeStopped


class _SilentServer(paramiko.ServerInterface):
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "none"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

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
    with pytest.raises(HarnessError, match="no result before its timeout"):
        remote._execute(silent_transport, "true", timeout=1, stopped=lambda: None)
    assert time.monotonic() - start < 1 + 2 * remote.WATCH_INTERVAL_S
