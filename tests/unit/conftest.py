"""Fixtures of the unit tests (no VMs)."""

from __future__ import annotations

import pytest

from kvmlab.providers import connect


@pytest.fixture
def provider():
    """The libvirt provider on libvirt's in-process test driver, emptied of kvmlab objects afterwards."""
    p = connect("test:///default")
    yield p
    for dom in p.list_domains():
        p.destroy_domain(dom.name)
    for net in p.list_networks():
        if net.startswith("kvmlab-"):
            p.destroy_network(net)
    p.close()
