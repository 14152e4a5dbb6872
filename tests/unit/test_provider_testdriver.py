"""The libvirt provider against libvirt's own test driver (test:///default): no VMs, real API."""

from __future__ import annotations

import re

import libvirt
import pytest

from kvmlab import providers, render
from kvmlab.errors import HarnessError
from kvmlab.providers import libvirt as libvirt_provider
from kvmlab.providers.libvirt import LibvirtProvider
from tests.unit.test_render import render_smoke


def test_networks_and_domains_round_trip(provider):
    files = render_smoke()
    for rel in ("networks/mgmt.xml", "networks/storage.xml"):
        provider.create_network(files[rel])
    assert {"kvmlab-smoke-0a1b2c-mgmt", "kvmlab-smoke-0a1b2c-storage"} <= set(provider.list_networks())
    assert "10.213.4.1/24" in provider.network_addresses()

    provider.create_domain(files["domains/nfs1.xml"])
    (dom,) = [d for d in provider.list_domains() if d.name == "kvmlab-smoke-0a1b2c-nfs1"]
    assert (dom.state, dom.run_id, dom.lab, dom.node) == ("running", "0a1b2c", "smoke", "nfs1")
    assert (dom.owner_pid, dom.owner_user, dom.owner_boot) == (4242, "tester", "boot-1")

    provider.destroy_domain(dom.name)
    assert provider.domain_state(dom.name) == "absent"
    provider.destroy_network("kvmlab-smoke-0a1b2c-mgmt")
    assert "kvmlab-smoke-0a1b2c-mgmt" not in provider.list_networks()


def test_destroying_what_is_gone_is_not_an_error(provider):
    provider.destroy_domain("kvmlab-nothing-000000-x")
    provider.destroy_network("kvmlab-nothing-000000-x")


def test_pool_and_volumes(provider, tmp_path):
    provider.ensure_pool("kvmlab-unit", render.render_pool_xml("kvmlab-unit", str(tmp_path / "pool")))
    provider.ensure_pool("kvmlab-unit", render.render_pool_xml("kvmlab-unit", str(tmp_path / "pool")))  # idempotent
    provider.create_volume(
        "kvmlab-unit", render_smoke()["volumes/nfs1-root.xml"].replace("<backingStore>", "<!--").replace("</backingStore>", "-->")
    )
    assert provider.has_volume("kvmlab-unit", "kvmlab-smoke-0a1b2c-nfs1-root.qcow2")
    provider.delete_volume("kvmlab-unit", "kvmlab-smoke-0a1b2c-nfs1-root.qcow2")
    assert not provider.has_volume("kvmlab-unit", "kvmlab-smoke-0a1b2c-nfs1-root.qcow2")


def test_upload_volume_takes_the_volume_xml_rendered_by_the_caller(provider, tmp_path):
    provider.ensure_pool("kvmlab-upload", render.render_pool_xml("kvmlab-upload", str(tmp_path / "pool")))
    xml = render.render_upload_volume("kvmlab-unit-up.raw", 9, "raw")
    provider.create_volume("kvmlab-upload", xml)  # libvirt accepts the XML as it is
    assert provider.has_volume("kvmlab-upload", "kvmlab-unit-up.raw")
    provider.delete_volume("kvmlab-upload", "kvmlab-unit-up.raw")
    # The test driver cannot stream uploads: the failure names the volume from the XML and leaves nothing behind.
    with pytest.raises(HarnessError, match=r"upload of volume kvmlab-unit-up\.raw failed"):
        provider.upload_volume("kvmlab-upload", xml, b"complete\n")
    assert not provider.has_volume("kvmlab-upload", "kvmlab-unit-up.raw")


def test_connect_chooses_the_provider_from_the_uri(monkeypatch):
    p = providers.connect("test:///default")
    assert isinstance(p, LibvirtProvider) and p.uri == "test:///default"
    p.close()
    monkeypatch.setenv("KVMLAB_URI", "test:///default")  # the default: settings.libvirt_uri()
    p = providers.connect()
    assert p.uri == "test:///default"
    p.close()
    for uri in ("vbox:///session", "/var/run/libvirt", "qemu+carrierpigeon:///system"):
        with pytest.raises(HarnessError, match=rf"no provider for URI '{re.escape(uri)}'.*qemu\+ssh://HOST/system"):
            providers.connect(uri)


def test_libvirt_errors_become_harness_errors(provider):
    with pytest.raises(HarnessError, match="libvirt: create domain:"):
        provider.create_domain("<domain type='test'><name>broken</name></domain>")


def test_unreachable_daemon_says_how_to_fix_it():
    with pytest.raises(HarnessError, match=r"(?s)cannot connect to libvirt at qemu\+unix:///system\?socket=/nonexistent.*libvirtd -d"):
        LibvirtProvider("qemu+unix:///system?socket=/nonexistent")


class _BusyPool:
    """A pool whose refresh libvirt refuses while another volume uploads, BUSY times."""

    def __init__(self, busy: int, message: str = "internal error: pool 'kvmlab' has asynchronous jobs running.") -> None:
        self.busy, self.message, self.refreshed = busy, message, 0

    def name(self) -> str:
        return "kvmlab"

    def refresh(self, flags: int) -> None:
        if self.busy:
            self.busy -= 1
            exc = libvirt.libvirtError("refresh")
            exc.err = (1, 0, self.message, 2, None, None, None, 0, 0)
            raise exc
        self.refreshed += 1


def test_pool_refresh_waits_for_uploads_of_other_labs(monkeypatch):
    monkeypatch.setattr(libvirt_provider.time, "sleep", lambda s: None)
    pool = _BusyPool(busy=3)
    libvirt_provider._refresh(pool)
    assert pool.refreshed == 1


def test_pool_refresh_reports_other_errors_at_once(monkeypatch):
    monkeypatch.setattr(libvirt_provider.time, "sleep", lambda s: None)
    pool = _BusyPool(busy=1, message="cannot open directory '/nowhere': No such file or directory")
    with pytest.raises(HarnessError, match="refresh pool kvmlab: cannot open directory"):
        libvirt_provider._refresh(pool)


def test_a_domain_still_being_removed_is_waited_for_before_its_successor_starts(monkeypatch):
    """libvirt reports a transient domain off while it still removes it; a start of the same name waits."""

    class StillRemoving(libvirt.libvirtError):
        def get_error_message(self) -> str:
            return "operation failed: domain 'kvmlab-faults-f6d7d3-n2' is already being removed"

    tries: list[str] = []

    class Conn:
        def isAlive(self) -> int:
            return 1

        def createXML(self, xml: str, flags: int) -> None:
            tries.append(xml)
            if len(tries) < 3:
                raise StillRemoving("removing")

    p = providers.connect("test:///default")
    monkeypatch.setattr(p, "_conn", Conn())
    monkeypatch.setattr(libvirt_provider.time, "sleep", lambda _s: None)
    p.create_domain("<domain/>")
    assert len(tries) == 3

    tries.clear()
    monkeypatch.setattr(libvirt_provider, "REMOVAL_WAIT_S", -1.0)  # past its deadline: the error comes through
    with pytest.raises(HarnessError, match="is already being removed"):
        p.create_domain("<domain/>")
