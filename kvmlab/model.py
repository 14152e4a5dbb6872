"""The lab model: frozen dataclasses built by the loader and read by everything else."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Network:
    name: str
    prefix: int = 24


@dataclass(frozen=True)
class Disk:
    name: str
    size_mib: int


@dataclass(frozen=True)
class NfsExport:
    path: str
    clients: str  # a network name or a CIDR
    options: tuple[str, ...] = ("rw", "sync", "no_root_squash")


@dataclass(frozen=True)
class NetfsPool:
    name: str
    server: str  # node name
    path: str  # exported directory on the server
    network: str  # network over which the pool mounts the export
    target: str  # mount point on the hypervisor
    mount_options: tuple[str, ...] = ()  # extra NFS mount options (libvirt's fs:mount_opts)


@dataclass(frozen=True)
class NfsServerSettings:
    exports: tuple[NfsExport, ...] = ()


@dataclass(frozen=True)
class NfsMount:
    server: str  # node name
    path: str  # exported directory on the server
    network: str  # network over which it is mounted


@dataclass(frozen=True)
class MigrationSettings:
    """Between the lab's hypervisors (book 7.3): root SSH both ways, a lock manager, synced clocks."""

    peers_ssh: bool = True  # passwordless root SSH between hypervisors, host keys pinned
    lock: str = "lockd"  # "lockd" (virtlockd) or "none"
    lockspace: NfsMount | None = None  # shared file_lockspace_dir; None: lockd locks the disk files themselves
    port_min: int = 49152  # qemu.conf migration_port_min/max
    port_max: int = 49215


@dataclass(frozen=True)
class HypervisorSettings:
    netfs_pools: tuple[NetfsPool, ...] = ()
    guest_bridge: str = ""  # a lab network bridged (br0) inside each hypervisor for its inner guests
    inner_guests: bool = False  # build the inner guests' kernel + busybox initramfs
    migration: MigrationSettings | None = None


@dataclass(frozen=True)
class IscsiLun:
    name: str
    backend: str  # fileio (a file on XFS), block (a whole extra disk), lvm (an LV on an extra disk)
    disk: str  # extra disk of the target node
    size_mib: int | None  # fileio and lvm; a block LUN is its whole disk


@dataclass(frozen=True)
class IscsiAcl:
    initiator: str  # node name; its IQN is derived from it
    luns: tuple[str, ...]


@dataclass(frozen=True)
class IscsiTargetSettings:
    iqn: str = ""
    luns: tuple[IscsiLun, ...] = ()
    acls: tuple[IscsiAcl, ...] = ()
    network: str = ""  # portal network; empty: the target's first network
    pool: str = "iscsi"  # the hypervisors' iscsi pool (an mpath pool when there are two portal networks)
    networks: tuple[str, ...] = ()  # every portal network, `network` first; two: hypervisors use dm-multipath


@dataclass(frozen=True)
class GlusterSettings:
    volume: str = "kvmgluster"
    brick_disk: str = "brick"
    brick_dir: str = "/gluster/bricks/1"
    network: str = ""  # peers, clients and auth.allow; empty: the first network
    ping_timeout: int = 42
    owner_uid: int = 64055  # libvirt-qemu on Debian (the book's 107 is CentOS's qemu)
    owner_gid: int = 64055
    pool: str = "gluster"
    mount: str = "/var/lib/libvirt/images/GlusterFS"


@dataclass(frozen=True)
class CephSettings:
    pool: str = "KVMpool"
    pg_num: int = 32
    client: str = "KVMpool"
    osd_disk: str = "osd"
    network: str = ""  # public network; empty: the first network
    libvirt_pool: str = "ceph"


@dataclass(frozen=True)
class LocalRaidSettings:
    members: tuple[str, ...] = ()  # four extra disks
    spare: str = ""
    vg: str = "raidvg"
    mount: str = "/var/lib/libvirt/images/raid"
    pool: str = "raid"


@dataclass(frozen=True)
class Node:
    name: str
    roles: tuple[str, ...]
    memory_mib: int
    vcpus: int
    disks: tuple[Disk, ...]
    networks: tuple[str, ...]


@dataclass(frozen=True)
class Lab:
    name: str
    path: str
    networks: tuple[Network, ...]
    nodes: tuple[Node, ...]
    nfs_server: NfsServerSettings = field(default_factory=NfsServerSettings)
    hypervisor: HypervisorSettings = field(default_factory=HypervisorSettings)
    iscsi_target: IscsiTargetSettings = field(default_factory=IscsiTargetSettings)
    gluster: GlusterSettings = field(default_factory=GlusterSettings)
    ceph: CephSettings = field(default_factory=CephSettings)
    local_raid: LocalRaidSettings = field(default_factory=LocalRaidSettings)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def network(self, name: str) -> Network:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def by_role(self, role: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if role in n.roles)

    @property
    def memory_mib(self) -> int:
        return sum(n.memory_mib for n in self.nodes)

    @property
    def disk_mib(self) -> int:
        return sum(d.size_mib for n in self.nodes for d in n.disks)


@dataclass(frozen=True)
class Placement:
    """Where a lab lands on the host for one run: run id and one subnet per network."""

    run_id: str
    subnets: dict[str, ipaddress.IPv4Network]

    def host_address(self, network: str) -> str:
        return str(self.subnets[network].network_address + 1)

    def address(self, lab: Lab, node: str, network: str) -> str:
        index = [n.name for n in lab.nodes].index(node)
        return str(self.subnets[network].network_address + 10 + index)

    def mac(self, lab: Lab, node: str, network: str) -> str:
        # Derived from the address, which is unique on the host while its subnet is leased.
        octets = ipaddress.IPv4Address(self.address(lab, node, network)).packed
        return "52:54:" + ":".join(f"{b:02x}" for b in octets)


KNOWN_ROLES = ("nfs-server", "hypervisor", "iscsi-target", "gluster", "ceph-mon", "ceph-osd", "ceph-admin", "local-raid")
# Keys under `roles:` in a lab file, and the roles each one configures.
SETTINGS_KEYS = {
    "nfs-server": ("nfs-server",),
    "hypervisor": ("hypervisor",),
    "iscsi-target": ("iscsi-target",),
    "gluster": ("gluster",),
    "ceph": ("ceph-mon", "ceph-osd", "ceph-admin"),
    "local-raid": ("local-raid",),
}
ISCSI_BACKENDS = ("fileio", "block", "lvm")
NFS_OPTIONS = (
    "rw",
    "ro",
    "sync",
    "async",
    "root_squash",
    "no_root_squash",
    "all_squash",
    "no_all_squash",
    "secure",
    "insecure",
    "subtree_check",
    "no_subtree_check",
    "wdelay",
    "no_wdelay",
    "crossmnt",
    "nohide",
)
