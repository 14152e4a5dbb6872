"""A netfs pool's mount_options, compared with the options the kernel shows for its mount."""

from __future__ import annotations

import pytest

from kvmlab.roles.hypervisor.checks import mount_options_not_in_effect

V3 = [
    "rw",
    "relatime",
    "vers=3",
    "rsize=131072",
    "wsize=131072",
    "namlen=255",
    "hard",
    "proto=tcp",
    "timeo=600",
    "retrans=2",
    "sec=sys",
    "local_lock=all",
]
V42 = [
    "rw",
    "relatime",
    "vers=4.2",
    "rsize=131072",
    "wsize=131072",
    "namlen=255",
    "hard",
    "proto=tcp",
    "timeo=600",
    "retrans=2",
    "sec=sys",
    "local_lock=none",
]


@pytest.mark.parametrize(
    "wanted,shown",
    [
        (("vers=3", "local_lock=all"), V3),
        (("nfsvers=3",), V3),
        (("v3", "hard", "timeo=600"), V3),
        (("vers=4.2",), V42),
        (("vers=4",), V42),  # the server agreed a minor version
        (("v4.2", "proto=tcp"), V42),
    ],
)
def test_options_the_kernel_shows_are_in_effect(wanted, shown):
    assert mount_options_not_in_effect(wanted, shown) == []


def test_options_the_kernel_does_not_show_are_named_as_it_would_show_them():
    assert mount_options_not_in_effect(("nfsvers=3", "soft", "local_lock=all"), V42) == ["vers=3", "soft", "local_lock=all"]
    assert mount_options_not_in_effect(("vers=4",), V3) == ["vers=4"]
