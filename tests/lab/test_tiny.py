"""labs/tiny.yaml through the pytest fixture: the smallest lab a test can ask for."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab("tiny")


def test_node_has_its_name_and_serves_its_export(lab):
    host = lab.node("n1").host
    assert host.check_output("hostname") == "n1"
    assert "/srv/share" in host.check_output("exportfs -v")
