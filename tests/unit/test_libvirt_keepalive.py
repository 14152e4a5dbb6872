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


def test_opening_a_remote_connection_that_never_answers_times_out(monkeypatch):
    never = __import__("threading").Event()
    monkeypatch.setattr(provider.libvirt, "open", lambda uri: never.wait(5))
    monkeypatch.setattr(provider, "_start_event_loop", lambda: None)
    with pytest.raises(TimeoutError, match=r"no answer from qemu\+ssh://root@10.213.0.10/system within 0 s"):
        provider.open_connection("qemu+ssh://root@10.213.0.10/system", timeout=0.2)
    never.set()


def test_a_provider_that_cannot_open_its_remote_host_says_so(monkeypatch):
    def too_slow(uri, timeout=provider.OPEN_TIMEOUT_S):
        raise TimeoutError(f"no answer from {uri} within 60 s")

    monkeypatch.setattr(provider, "open_connection", too_slow)
    with pytest.raises(provider.HarnessError, match=r"cannot connect to libvirt at qemu\+ssh://h/system: no answer .* within 60 s"):
        provider.LibvirtProvider("qemu+ssh://h/system")
