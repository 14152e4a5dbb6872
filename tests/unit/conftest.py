"""Fixtures of the unit tests (no VMs)."""

from __future__ import annotations

import sys

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


def pytest_terminal_summary(terminalreporter) -> None:
    """How much the loader fuzzing tried, in CI's log (the issue asks for the figure)."""
    fuzz = sys.modules.get("tests.unit.test_loader_fuzz")
    if fuzz is not None and fuzz.TRIED["labs"]:  # 0: another lane ran the fuzzing
        terminalreporter.write_line(f"loader fuzz: {fuzz.TRIED['labs']} mutated labs tried")
