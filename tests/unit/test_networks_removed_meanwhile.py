"""A network another lab removes between libvirt's listing and the read of its XML or bridge is
skipped, not an error of this lab's `up` (two lanes of `make test` raced on this)."""

from __future__ import annotations

import libvirt
import pytest

from kvmlab.errors import HarnessError
from kvmlab.providers.libvirt import LibvirtProvider


class _Net:
    def __init__(self, name: str, removed: bool) -> None:
        self._name, self._removed = name, removed

    def name(self) -> str:
        return self._name

    def _read(self, value: str) -> str:
        if self._removed:
            exc = libvirt.libvirtError("Network not found")
            exc.err = (libvirt.VIR_ERR_NO_NETWORK, 0, "Network not found", 0, "", None, None, 0, 0)
            raise exc
        return value

    def XMLDesc(self, flags: int = 0) -> str:
        return self._read(f"<network><name>{self._name}</name><ip address='10.9.0.1' prefix='24'/></network>")

    def bridgeName(self) -> str:
        return self._read(f"br-{self._name}")


class _Conn:
    def __init__(self, nets: list[_Net]) -> None:
        self.nets = nets

    def listAllNetworks(self, flags: int = 0) -> list[_Net]:
        return self.nets


@pytest.fixture
def provider() -> LibvirtProvider:
    p = LibvirtProvider.__new__(LibvirtProvider)
    p._conn = _Conn([_Net("gone", removed=True), _Net("kept", removed=False)])
    return p


def test_a_network_removed_meanwhile_is_left_out_of_the_addresses(provider):
    assert provider.network_addresses() == ["10.9.0.1/24"]


def test_a_network_removed_meanwhile_is_left_out_of_the_bridges(provider):
    assert provider.network_bridges() == {"kept": "br-kept"}


def test_any_other_error_still_fails(provider):
    class Broken(_Net):
        def XMLDesc(self, flags: int = 0) -> str:
            exc = libvirt.libvirtError("internal error")
            exc.err = (libvirt.VIR_ERR_INTERNAL_ERROR, 0, "internal error", 0, "", None, None, 0, 0)
            raise exc

    provider._conn = _Conn([Broken("odd", removed=False)])
    provider._connected = lambda: True  # a real error of the call, not a lost connection
    with pytest.raises(HarnessError, match="describe network odd: internal error"):
        provider.network_addresses()
