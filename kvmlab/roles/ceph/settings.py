"""Settings of the ceph roles: the pool, its placement groups, the client key, OSD disks, network, ceph.conf options."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvmlab.roles.ceph.conf import CephConfOption, parse_conf
from kvmlab.roles.reader import SettingsReader

KEY = "ceph"
CEPH_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # pool and client names: ceph's own commands and keyrings


@dataclass(frozen=True)
class CephSettings:
    pool: str = "KVMpool"
    pg_num: int = 32
    client: str = "KVMpool"
    osd_disk: str = "osd"
    network: str = ""  # public network; empty: the first network
    libvirt_pool: str = "ceph"
    conf: tuple[CephConfOption, ...] = ()  # ceph.conf options of the lab's own, per section


def parse(sr: SettingsReader) -> CephSettings:
    mons = tuple(n.name for n in sr.lab.by_role("ceph-mon"))
    osds = tuple(n.name for n in sr.lab.by_role("ceph-osd"))
    admins = tuple(n.name for n in sr.lab.by_role("ceph-admin"))
    if not (mons or osds or admins):
        return CephSettings()
    r = sr.reader
    opts, _where = sr.opts("ceph", ("pool", "pg_num", "client", "osd_disk", "network", "libvirt_pool", "conf"))
    anyone = (mons + osds + admins)[0]
    if len(mons) != 1:
        raise r.fail(
            sr.node_keys[mons[1] if mons else anyone],
            f"a Ceph cluster here has exactly one node with role ceph-mon (found {len(mons)})",
        )
    if not osds:
        raise r.fail(sr.node_keys[anyone], "a Ceph cluster needs at least one node with role ceph-osd")
    d = CephSettings()
    osd_disk = r.optional(opts, "osd_disk", lambda n: r.name(n, "osd_disk"), d.osd_disk)
    for node in osds:
        sr.need_disk(opts, "osd_disk", node, osd_disk, "ceph-osd")
    pg_num = r.optional(opts, "pg_num", lambda n: r.integer(n, "pg_num", (8, 512)), d.pg_num)
    if pg_num & (pg_num - 1):
        raise r.fail(opts["pg_num"][1], f"pg_num {pg_num} is not a power of two (e.g. 32, 64, 128)")
    network = sr.network(opts, mons + osds + admins, "ceph")
    sr.clients_reach(network, tuple(n.name for n in sr.lab.by_role("hypervisor")), "ceph")
    return CephSettings(
        pool=r.optional(opts, "pool", lambda n: r.identifier(n, "pool", CEPH_NAME_RE, "KVMpool (letters, digits, . _ -)"), d.pool),
        pg_num=pg_num,
        client=r.optional(opts, "client", lambda n: r.identifier(n, "client", CEPH_NAME_RE, "KVMpool (letters, digits, . _ -)"), d.client),
        osd_disk=osd_disk,
        network=network,
        libvirt_pool=r.optional(opts, "libvirt_pool", lambda n: r.name(n, "libvirt_pool"), d.libvirt_pool),
        conf=r.optional(opts, "conf", lambda n: parse_conf(r, n), d.conf),
    )
