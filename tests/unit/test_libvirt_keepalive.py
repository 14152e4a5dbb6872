"""Connections to another libvirt host send keepalive probes; local ones stay plain."""

from __future__ import annotations

import pytest

from kvmlab.providers import libvirt as provider


class FakeConnection:
    def __init__(self) -> None:
        self.keepalive: tuple[int, int] | None = None

    def setKeepAlive(self, interval: int, count: int) -> int:
        self.keepalive = (interval, count)
        return 0


@pytest.fixture
def opened(monkeypatch):
    loops: list[str] = []
    monkeypatch.setattr(provider.libvirt, "open", lambda uri: FakeConnection())
    monkeypatch.setattr(provider, "_start_event_loop", lambda: loops.append("started"))
    return loops


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+ssh://localhost/system", "test:///default"])
def test_a_local_connection_gets_no_keepalive(opened, uri):
    conn = provider.open_connection(uri)
    assert conn.keepalive is None and opened == []


@pytest.mark.parametrize("uri", ["qemu+ssh://root@10.213.0.10/system", "qemu+libssh://host-a/system?keyfile=/k"])
def test_a_remote_connection_gets_keepalive_and_the_event_loop(opened, uri):
    conn = provider.open_connection(uri)
    assert conn.keepalive == (provider.KEEPALIVE_INTERVAL_S, provider.KEEPALIVE_COUNT)
    assert opened == ["started"]
