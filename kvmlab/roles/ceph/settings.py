"""Settings of the ceph roles: pools, client keys (and which of them libvirt uses), OSD disks, network, ceph.conf options."""

from __future__ import annotations

from dataclasses import dataclass

from kvmlab.roles.ceph.conf import CephConfOption, parse_conf
from kvmlab.roles.ceph.pools import CEPH_NAME_RE, CephClient, CephPool, book_client, chosen, parse_clients, parse_pools
from kvmlab.roles.reader import SettingsReader

KEY = "ceph"


@dataclass(frozen=True)
class CephSettings:
    pool: str = "KVMpool"  # the pool the hypervisors' rbd pool uses
    pg_num: int = 32  # that pool's
    client: str = "KVMpool"  # the key the hypervisors' libvirt secret holds
    osd_disk: str = "osd"
    network: str = ""  # public network; empty: the first network
    libvirt_pool: str = "ceph"
    conf: tuple[CephConfOption, ...] = ()  # ceph.conf options of the lab's own, per section
    pools: tuple[CephPool, ...] = (CephPool("KVMpool"),)  # every pool the cluster gets, `pool` among them
    clients: tuple[CephClient, ...] = (book_client("KVMpool", "KVMpool"),)  # every client key, `client` among them


def parse(sr: SettingsReader) -> CephSettings:
    mons = tuple(n.name for n in sr.lab.by_role("ceph-mon"))
    osds = tuple(n.name for n in sr.lab.by_role("ceph-osd"))
    admins = tuple(n.name for n in sr.lab.by_role("ceph-admin"))
    if not (mons or osds or admins):
        return CephSettings()
    r = sr.reader
    opts, _where = sr.opts("ceph", ("pool", "pg_num", "client", "osd_disk", "network", "libvirt_pool", "conf", "pools", "clients"))
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
    network = sr.network(opts, mons + osds + admins, "ceph")
    sr.clients_reach(network, tuple(n.name for n in sr.lab.by_role("hypervisor")), "ceph")
    pools, pool = _pools(sr, opts, len(osds))
    clients, client = _clients(sr, opts, pool)
    return CephSettings(
        pool=pool.name,
        pg_num=pool.pg_num,
        client=client,
        osd_disk=osd_disk,
        network=network,
        libvirt_pool=r.optional(opts, "libvirt_pool", lambda n: r.name(n, "libvirt_pool"), d.libvirt_pool),
        conf=r.optional(opts, "conf", lambda n: parse_conf(r, n), d.conf),
        pools=pools,
        clients=clients,
    )


def _pools(sr: SettingsReader, opts: dict, osd_nodes: int) -> tuple[tuple[CephPool, ...], CephPool]:
    """Every pool, and the one libvirt uses: `pools:` with `pool:` naming one, or the book's one pool."""
    r = sr.reader
    pool_node = opts["pool"][1] if "pool" in opts else None
    if "pools" in opts:
        if "pg_num" in opts:
            raise r.fail(opts["pg_num"][0], "with 'pools:', each pool has its own pg_num: move it into the pool's entry")
        pools = parse_pools(r, opts["pools"][1], osd_nodes)
        name = chosen(r, pool_node, tuple(p.name for p in pools), "pool")
        return pools, next(p for p in pools if p.name == name)
    name = CephSettings.pool
    if pool_node is not None:
        name = r.identifier(pool_node, "pool", CEPH_NAME_RE, "KVMpool (letters, digits, . _ -)")
    pg_num = r.optional(opts, "pg_num", lambda n: r.integer(n, "pg_num", (8, 512)), CephSettings.pg_num)
    if pg_num & (pg_num - 1):
        raise r.fail(opts["pg_num"][1], f"pg_num {pg_num} is not a power of two (e.g. 32, 64, 128)")
    pool = CephPool(name, pg_num)
    return (pool,), pool


def _clients(sr: SettingsReader, opts: dict, pool: CephPool) -> tuple[tuple[CephClient, ...], str]:
    """Every client key, and the one libvirt uses: `clients:` with `client:` naming one, or the book's one key."""
    r = sr.reader
    client_node = opts["client"][1] if "client" in opts else None
    if "clients" in opts:
        clients = parse_clients(r, opts["clients"][1])
        return clients, chosen(r, client_node, tuple(c.name for c in clients), "client")
    name = CephSettings.client
    if client_node is not None:
        name = r.identifier(client_node, "client", CEPH_NAME_RE, "KVMpool (letters, digits, . _ -)")
    return (book_client(name, pool.name),), name
