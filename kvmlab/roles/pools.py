"""libvirt pools on a node, defined from rendered XML: used by the hypervisor and every storage role."""

from __future__ import annotations

from kvmlab.remote import Remote


def define_pool(remote: Remote, name: str, xml: str) -> None:
    """Define, build, start and autostart a libvirt pool from its XML (virsh pool-define and friends)."""
    path = f"/etc/kvmlab/pool-{name}.xml"
    remote.put(path, xml)
    remote.check(f"virsh -q pool-define {path}", f"define pool {name}")
    start_pool(remote, name)


def start_pool(remote: Remote, name: str) -> None:
    remote.check(f"virsh -q pool-build {name}", f"build pool {name}")
    remote.check(f"virsh -q pool-start {name}", f"start pool {name}")
    remote.check(f"virsh -q pool-autostart {name}", f"autostart pool {name}")
