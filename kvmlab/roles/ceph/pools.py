"""The ceph role's `pools:` and `clients:`: several pools with their size, min_size, pg count and
application, and several cephx client keys with their caps, in Ceph's own terms.

kvmlab checks what it can know from the lab file alone (a size the OSD nodes can hold, a power-of-two
pg count); cap strings are Ceph's to judge: a refusal names the entry's line in the lab file.
Without these lists the lab has the book's one pool and one client key (the `pool`, `pg_num` and
`client` settings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from yaml.nodes import Node

from kvmlab.yamlread import Reader, quote

CEPH_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # pool and client names: ceph's own commands and keyrings
APPLICATION_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # rbd, rgw, cephfs, or a name of the user's
CAP_SERVICES = ("mon", "osd", "mgr", "mds")
PG_BOUNDS = (8, 512)
MAX_CAP = 512


@dataclass(frozen=True)
class CephPool:
    name: str
    pg_num: int = 32
    size: int = 0  # replicas; 0: Ceph's default, which ceph.conf sets to one per OSD node (at most 3)
    min_size: int = 0  # 0: Ceph's default for the size
    application: str = "rbd"
    where: str = ""  # file:line:col of the entry, named when Ceph refuses it


@dataclass(frozen=True)
class CephClient:
    name: str  # without "client."
    caps: tuple[tuple[str, str], ...]  # (service, cap) in the file's order, e.g. ("osd", "allow rwx pool=KVMpool")
    where: str = ""


def book_client(name: str, pool: str) -> CephClient:
    """The book's client key: it reads the cluster map and uses one pool."""
    return CephClient(name, (("mon", "allow r"), ("osd", f"allow rwx pool={pool}")))


def _where(r: Reader, node: Node) -> str:
    mark = node.start_mark
    return f"{r.path}:{mark.line + 1}:{mark.column + 1}"


def _power_of_two(r: Reader, node: Node, what: str) -> int:
    value = r.integer(node, what, PG_BOUNDS)
    if value & (value - 1):
        raise r.fail(node, f"{what} {value} is not a power of two (e.g. 32, 64, 128)")
    return value


def parse_pools(r: Reader, value: Node, osd_nodes: int) -> tuple[CephPool, ...]:
    """`pools: [{name: KVMpool, pg_num: 32, size: 3, min_size: 2, application: rbd}, ...]`."""
    pools: list[CephPool] = []
    items = r.sequence(value, "ceph pools")
    if not items:
        raise r.fail(value, "ceph pools is empty: list at least one, e.g. [{name: KVMpool, pg_num: 32}]")
    for item in items:
        pool = _pool(r, item, osd_nodes)
        if any(p.name == pool.name for p in pools):
            raise r.fail(item, f"pool '{pool.name}' is listed twice")
        pools.append(pool)
    return tuple(pools)


def _pool(r: Reader, item: Node, osd_nodes: int) -> CephPool:
    fields = r.mapping(item, "a ceph pool", ("name", "pg_num", "size", "min_size", "application"))
    name = r.identifier(r.required(fields, "name", item, "a ceph pool"), "pool name", CEPH_NAME_RE, "KVMpool (letters, digits, . _ -)")
    size = r.optional(fields, "size", lambda n: r.integer(n, f"size of pool {name}", (1, 10)), 0)
    if size > osd_nodes:
        raise r.fail(
            fields["size"][1],
            f"pool {name} keeps {size} replicas, but the lab has {osd_nodes} ceph-osd node(s): CRUSH puts each replica "
            f"on another host, so the PGs would never be clean (use size: {osd_nodes} or add OSD nodes)",
        )
    limit = size or min(3, osd_nodes)
    min_size = r.optional(fields, "min_size", lambda n: r.integer(n, f"min_size of pool {name}", (1, 10)), 0)
    if min_size > limit:
        raise r.fail(fields["min_size"][1], f"pool {name}: min_size {min_size} is more than its size {limit}")
    return CephPool(
        name=name,
        pg_num=r.optional(fields, "pg_num", lambda n: _power_of_two(r, n, f"pg_num of pool {name}"), CephPool.pg_num),
        size=size,
        min_size=min_size,
        application=r.optional(fields, "application", lambda n: r.identifier(n, "application", APPLICATION_RE, "rbd or rgw"), "rbd"),
        where=_where(r, item),
    )


def parse_clients(r: Reader, value: Node) -> tuple[CephClient, ...]:
    """`clients: [{name: KVMpool, caps: {mon: "allow r", osd: "allow rwx pool=KVMpool"}}, ...]`."""
    clients: list[CephClient] = []
    items = r.sequence(value, "ceph clients")
    if not items:
        raise r.fail(value, "ceph clients is empty: list at least one, e.g. [{name: KVMpool, caps: {mon: 'allow r'}}]")
    for item in items:
        fields = r.mapping(item, "a ceph client", ("name", "caps"))
        name_node = r.required(fields, "name", item, "a ceph client")
        name = r.identifier(name_node, "client name", CEPH_NAME_RE, "KVMpool (without 'client.')")
        if any(c.name == name for c in clients):
            raise r.fail(name_node, f"client '{name}' is listed twice")
        if name == "admin":
            raise r.fail(name_node, "client.admin is the cluster's own key, made at bootstrap: give this client another name")
        caps_node = r.required(fields, "caps", item, f"ceph client {name}")
        caps = []
        for service, (_key, cap_node) in r.mapping(caps_node, f"caps of client {name}", CAP_SERVICES).items():
            cap = r.string(cap_node, f"{service} cap of client {name}")
            if len(cap) > MAX_CAP or "\n" in cap:
                raise r.fail(cap_node, f"{service} cap of client {name} is not one line of at most {MAX_CAP} characters")
            caps.append((service, cap))
        if not caps:
            raise r.fail(caps_node, f"client {name} has no caps: write e.g. {{mon: 'allow r', osd: 'allow rwx pool=KVMpool'}}")
        clients.append(CephClient(name, tuple(caps), _where(r, item)))
    return tuple(clients)


def chosen(r: Reader, node: Node | None, names: tuple[str, ...], what: str) -> str:
    """The pool (or client) that `pool:` (or `client:`) names among the listed ones; the first without it."""
    if node is None:
        return names[0]
    name = r.scalar_text(node, what)
    if name not in names:
        raise r.fail(node, f"{what} '{quote(name)}' is not one of the listed ones ({', '.join(names)})")
    return name


def names_a_pool(client: CephClient) -> bool:
    """Whether the client's osd caps are limited to named pools (what ceph-mon::client-key-refused-elsewhere proves)."""
    osd = dict(client.caps).get("osd", "")
    return bool(osd) and all("pool=" in part for part in osd.split(","))
