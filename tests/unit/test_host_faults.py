"""The pure parts of surviving a misbehaving host: messages, the stop watch of SSH commands,
reconnecting to libvirtd, reading how QEMU ended. No VMs (libvirt's test driver at most)."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from kvmlab import clones, render
from kvmlab.errors import HarnessError, LibvirtGone, NodeStopped, PoolFull
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import libvirt as libvirt_provider
from kvmlab.providers.libvirt import LibvirtProvider
from kvmlab.remote import _drain, _short
from kvmlab.wait import wait_until
from tests.unit.test_wait import FakeClock


def test_messages_are_one_line_saying_what_and_what_to_do():
    assert str(PoolFull("/srv/pool", 1051, 1030)) == (
        "pool filesystem /srv/pool is full (needs 1051 MiB, has 1030 MiB free): free space or set KVMLAB_POOL_DIR"
    )
    assert str(LibvirtGone("qemu:///system", 60, "no socket")) == (
        "libvirtd at qemu:///system stopped answering (no connection for 60 s; last: no socket):"
        " start it with `virtlogd -d; libvirtd -d`, then run `kvmlab gc`"
    )
    stop = NodeStopped("n1", "its QEMU process ended: shutting down, reason=crashed", "bring the lab up again")
    assert str(stop) == "node n1 stopped (its QEMU process ended: shutting down, reason=crashed): bring the lab up again"
    during = stop.at("while running `true`").at("during step nfs-server setup")
    assert str(during) == (
        "node n1 stopped (its QEMU process ended: shutting down, reason=crashed) during step nfs-server setup: bring the lab up again"
    )
    assert "\n" not in str(during)
    cut = NodeStopped("n1", "its network mgmt is gone", "bring it up again", verb="is cut off").at("while booting")
    assert str(cut) == "node n1 is cut off (its network mgmt is gone) while booting: bring it up again"


def test_a_long_or_multiline_command_is_shortened_to_one_line():
    assert _short("systemctl start nfs-server") == "systemctl start nfs-server"
    assert _short("set -e\nmkdir -p /x\n") == "set -e..."
    assert _short("x" * 100) == "x" * 77 + "..."


def test_how_qemu_ended_is_read_from_its_log(tmp_path):
    log = tmp_path / "d.log"
    log.write_text(
        "2026-12-01 14:00:00.000+0000: starting up libvirt version: 9.0.0\n"
        "char device redirected to /dev/pts/0 (label charserial0)\n"
        "2026-12-01 14:02:30.751+0000: shutting down, reason=crashed\n"
    )
    assert libvirt_provider._last_stop(log) == "shutting down, reason=crashed"
    log.write_text(
        "2026-12-01T14:02:28.948638Z qemu-system-x86_64: terminating on signal 15 from pid 27118 (libvirtd)\n"
        "2026-12-01 14:02:30.751+0000: shutting down, reason=destroyed\n"
    )
    assert libvirt_provider._last_stop(log) == "terminating on signal 15 from pid 27118 (libvirtd); shutting down, reason=destroyed"
    assert libvirt_provider._last_stop(tmp_path / "missing.log") == ""


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu+unix:///system", True),
        ("qemu+ssh://h/system", False),
        ("qemu:///session", False),
        ("test:///default", False),
    ],
)
def test_qemu_logs_are_read_only_for_the_local_system_daemon(uri, local):
    assert libvirt_provider._local_system(uri) is local


class FakeChannel:
    """What _drain reads: a paramiko channel that yields CHUNKS of stdout (None: a silent poll), then EOF."""

    def __init__(self, chunks: list[bytes | None], stderr: bytes = b"") -> None:
        self.chunks, self.stderr = list(chunks), stderr

    def settimeout(self, _seconds: float) -> None:
        pass

    def recv_stderr_ready(self) -> bool:
        return False

    def recv(self, _n: int) -> bytes:
        chunk = self.chunks.pop(0) if self.chunks else b""
        if chunk is None:
            raise TimeoutError
        return chunk

    def makefile_stderr(self, _mode: str):
        import io

        return io.BytesIO(self.stderr)


def test_a_command_reads_to_its_end_while_the_node_lives():
    asked: list[int] = []

    def alive() -> None:
        asked.append(1)

    assert _drain(FakeChannel([b"a", None, b"b"], b"warn"), 60, alive) == (b"ab", b"warn")  # type: ignore[arg-type]
    assert asked == [1]  # asked only when the command was silent


def test_a_silent_command_on_a_stopped_node_ends_with_why():
    stop = NodeStopped("n1", "its QEMU process ended: shutting down, reason=crashed", "bring the lab up again")
    with pytest.raises(NodeStopped) as exc:
        _drain(FakeChannel([b"partial", None, None]), 600, lambda: stop)  # type: ignore[arg-type]
    assert exc.value is stop


def test_a_wait_does_not_retry_a_stopped_node():
    clock = FakeClock()
    calls: list[int] = []

    def check() -> bool:
        calls.append(1)
        raise NodeStopped("n1", "its QEMU process ended", "bring the lab up again")

    with pytest.raises(NodeStopped):
        wait_until(check, 300, "node n1 to answer", clock=clock)
    assert calls == [1] and clock.sleeps == []


def test_provider_reconnects_when_its_connection_is_lost():
    said: list[str] = []
    provider = LibvirtProvider("test:///default", reconnect_s=5, log=said.append)
    provider._conn.close()  # what a libvirtd restart does to the connection
    assert provider.domain_state("kvmlab-none-000000-n1") == "absent"
    assert said[0] == "libvirtd connection lost; reconnecting"
    assert said[1].startswith("libvirtd connection back after ")
    provider.close()


def test_provider_gives_up_after_its_deadline_then_fails_fast(monkeypatch):
    said: list[str] = []
    provider = LibvirtProvider("test:///default", reconnect_s=0.3, log=said.append)
    provider._conn.close()

    def refuse(_uri: str) -> None:
        raise libvirt.libvirtError("Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory")

    monkeypatch.setattr(libvirt_provider.libvirt, "open", refuse)
    with pytest.raises(LibvirtGone, match=r"^libvirtd at test:///default stopped answering \(no connection for 0 s; last: "):
        provider.list_networks()
    with pytest.raises(LibvirtGone):
        provider.list_domains()  # no second deadline: one attempt
    assert said == ["libvirtd connection lost; reconnecting"]


def test_a_real_error_is_not_taken_for_a_lost_connection():
    said: list[str] = []
    provider = LibvirtProvider("test:///default", log=said.append)
    with pytest.raises(HarnessError, match="Domain not found"):
        provider.domain_xml("kvmlab-none-000000-n1")
    assert said == []
    provider.close()


class _NetworklessProvider:
    """A host whose lab networks were all removed: starting a domain fails as libvirt fails it."""

    uri = "qemu:///system"

    def __init__(self) -> None:
        self.created: list[str] = []

    def active_networks(self) -> list[str]:
        return ["default"]

    def create_domain(self, xml: str) -> None:
        self.created.append(xml)
        raise HarnessError("libvirt: create domain: Network not found: no network with matching name 'kvmlab-tiny-0a1b2c-mgmt'")

    def destroy_domain(self, name: str) -> None:
        pass

    def delete_volume(self, pool: str, name: str) -> None:
        pass

    def create_volume(self, pool: str, xml: str) -> None:
        pass


class _Generics:
    def for_node(self, xml: str, stop: object) -> object:
        return type("Generic", (), {"key": "k", "volume_path": "/pool/generic-k.qcow2"})()


def _tiny_session(provider: _NetworklessProvider):
    lab = load_lab(Path(__file__).resolve().parents[2] / "labs" / "tiny.yaml")
    session = LabSession(lab, provider=provider, run_id="0a1b2c")  # type: ignore[arg-type]
    session.placement = render.preview_placement(lab)
    session.files = {"domains/n1.xml": "<domain><name>kvmlab-tiny-0a1b2c-n1</name></domain>", "volumes/n1-root.xml": "<volume/>"}
    return session


CUT_OFF = (
    r"node n1 is cut off \(its network mgmt is gone: libvirt network kvmlab-tiny-0a1b2c-mgmt was removed behind"
    r" kvmlab's back\) while booting: run `kvmlab down tiny` \(if the lab is still up\) and bring it up again"
)


def test_a_node_whose_network_was_removed_before_it_started_is_said_to_be_cut_off():
    provider = _NetworklessProvider()
    session = _tiny_session(provider)
    with pytest.raises(NodeStopped, match=f"^{CUT_OFF}$"):
        session._start_node(session.lab.nodes[0], None)


def test_a_clone_that_fails_for_a_removed_network_is_not_booted_instead(monkeypatch):
    def restore_clone(*_args: object) -> None:
        raise HarnessError("libvirt: attach device: Network not found: no network with matching name 'kvmlab-tiny-0a1b2c-mgmt'")

    monkeypatch.setattr(clones, "restore_clone", restore_clone)
    provider = _NetworklessProvider()
    session = _tiny_session(provider)
    with pytest.raises(NodeStopped, match=f"^{CUT_OFF}$"):
        session._start_node(session.lab.nodes[0], _Generics())  # type: ignore[arg-type]
    assert provider.created == []
