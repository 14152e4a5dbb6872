"""Checks of the nfs-server role (book 5.3): what each server exports, and to whom.

Expectations come from the lab's model; nodes are found by role. A check raises
AssertionError naming the node and what it saw.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kvmlab.model import Lab
from kvmlab.roles import Check

ROLE = "nfs-server"


def export_clients(lab: Any, clients: str) -> str:
    """An export's clients as exportfs shows them: a lab network becomes its subnet in this run."""
    subnet = lab.placement.subnets.get(clients)
    return str(subnet) if subnet is not None else clients


def _pool_users(lab: Lab) -> list[tuple[str, Any]]:
    """(hypervisor, netfs pool) for every pool on an export of this lab's NFS servers."""
    return [(hv.name, pool) for hv in lab.by_role("hypervisor") for pool in lab.hypervisor.netfs_pools]


def exports_are_published(lab: Any) -> None:
    """exportfs -v on each server lists every export of the lab file, to its clients, with its options."""
    for server in lab.by_role(ROLE):
        out = server.run_expect("exportfs -v", "list exports")
        published: dict[str, str] = {}
        current = ""
        for line in out.splitlines():  # "path<TAB>clients(options)", long paths wrap the clients onto the next line
            parts = line.split()
            if line and not line[0].isspace():
                current = parts[0]
                parts = parts[1:]
            if parts and current:
                published[current] = parts[0]
        for export in lab.lab.nfs_server.exports:
            want = export_clients(lab, export.clients)
            seen = published.get(export.path)
            assert seen is not None, (
                f"{server.name}: {export.path} is not exported (exportfs -v shows: {', '.join(published) or 'nothing'})"
            )
            clients, _, options = seen.partition("(")
            assert clients == want, f"{server.name}: {export.path} is exported to {clients}, the lab file says {want}"
            missing = [o for o in export.options if o not in options.rstrip(")").split(",")]
            assert not missing, f"{server.name}: {export.path} lacks options {', '.join(missing)} (exportfs shows {options.rstrip(')')})"


def pool_clients_are_allowed(lab: Any) -> None:
    """Every hypervisor with a netfs pool on an export sits inside that export's clients, as the server announces them."""
    for hv_name, pool in _pool_users(lab.lab):
        hv = lab.node(hv_name)
        out = hv.run_expect(f"showmount -e {pool.server}-{pool.network}", f"showmount -e {pool.server}")
        announced = dict(line.split(None, 1) for line in out.splitlines()[1:] if line.strip())
        assert pool.path in announced, (
            f"{hv_name}: {pool.server} does not announce {pool.path} (it announces: {', '.join(announced) or 'nothing'})"
        )
        address = ipaddress.ip_address(hv.address(pool.network))
        allowed = [c.strip() for c in announced[pool.path].split(",")]
        inside = any(address in ipaddress.ip_network(c, strict=False) for c in allowed if c[0].isdigit())
        assert inside or "*" in allowed, (
            f"{hv_name}: pool {pool.name} mounts {pool.server}:{pool.path}, which allows {', '.join(allowed)}, "
            f"but {hv_name} is {address} on network {pool.network}"
        )


def _outside_pairs(lab: Lab) -> list[tuple[str, str, str, str]]:
    """(hypervisor, server, network, export path): a network they share that an export's clients network is not."""
    pairs = []
    for server in lab.by_role(ROLE):
        for export in lab.nfs_server.exports:
            if export.clients not in {n.name for n in lab.networks}:
                continue
            for hv in lab.by_role("hypervisor"):
                shared = [n for n in hv.networks if n in server.networks and n != export.clients]
                if shared:
                    pairs.append((hv.name, server.name, shared[0], export.path))
    return pairs


def _mount_outside(hv: Any, source: str, version: int) -> Any:
    options = f"soft,timeo=30,retrans=1,vers={version}"
    return hv.run(f"mkdir -p /mnt/kvmlab-outside && timeout 120 mount -t nfs -o {options} {source} /mnt/kvmlab-outside")


def refuses_clients_outside_the_export(lab: Any) -> None:
    """A mount from a network the export does not name is refused by the server."""
    for hv_name, server, network, path in _outside_pairs(lab.lab):
        hv = lab.node(hv_name)
        # NFSv4 first: a refused v4 mount makes mount.nfs fall back to v3, which starts rpc-statd
        # on the client (~8 s under TCG) only to be refused again. v3 only if the server has no v4.
        source = f"{server}-{network}:{path}"
        res = _mount_outside(hv, source, 4)
        if res.rc != 0 and "protocol not supported" in res.output.lower():
            res = _mount_outside(hv, source, 3)
        if res.rc == 0:
            hv.run("umount /mnt/kvmlab-outside")
        assert res.rc != 0, f"{hv_name}: mounted {source} from network {network}, which the export does not allow"
        assert "access denied" in res.output.lower(), f"{hv_name}: mount from {network} failed, but not as refused: {res.output}"


# nfsd's own view of the settings it runs with: read from the running server, not from nfs.conf.
NFSD_PROC = {"grace-time": "nfsv4gracetime", "lease-time": "nfsv4leasetime", "threads": "threads"}
NFSD_VERSIONS = {"vers2": "2", "vers3": "3", "vers4": "4", "vers4.0": "4.0", "vers4.1": "4.1", "vers4.2": "4.2"}
YES = ("y", "yes", "1", "true", "on")


def expected_in_effect(option: Any, proc: dict[str, str]) -> tuple[str, str, str] | None:
    """(where, expected, seen) for an nfs.conf option the running nfsd shows; None when it shows none of it.
    PROC holds /proc/fs/nfsd's files by name."""
    if option.section != "nfsd":
        return None
    if option.key in NFSD_PROC:
        name = NFSD_PROC[option.key]
        return f"/proc/fs/nfsd/{name}", option.value.strip(), proc.get(name, "").strip()
    if option.key in NFSD_VERSIONS:
        version = NFSD_VERSIONS[option.key]
        served = {token[1:]: token[0] for token in proc.get("versions", "").split()}
        sign = "+" if option.value.strip().lower() in YES else "-"
        # A version the kernel never lists is not served either.
        return "/proc/fs/nfsd/versions", f"{sign}{version}", f"{served.get(version, '-')}{version}"
    return None


def nfs_conf_in_effect(lab: Any) -> dict[str, str]:
    """Each nfs-conf option of the lab file: nfsd runs with it (versions, grace and lease time, threads,
    from /proc/fs/nfsd); other options as nfs-utils reads them (`nfsconf --get`), which is all they show."""
    names = " ".join((*NFSD_PROC.values(), "versions"))
    values: dict[str, str] = {}
    for server in lab.by_role(ROLE):
        command = f"cd /proc/fs/nfsd && for f in {names}; do printf '%s=%s\\n' $f \"$(cat $f)\"; done"
        dump = server.run_expect(command, "read nfsd's settings")
        proc = dict(line.split("=", 1) for line in dump.splitlines() if "=" in line)
        for option in lab.lab.nfs_server.nfs_conf:
            found = expected_in_effect(option, proc)
            if found is None:
                seen = server.run(f"nfsconf --get {option.section} {option.key}").stdout.strip()
                found = (f"nfsconf --get {option.section} {option.key}", option.value, seen)
            where, expected, seen = found
            assert seen == expected, f"{server.name}: {option.section}.{option.key}={option.value} is not in effect: {where} shows '{seen}'"
            values[f"{server.name}:{option.section}.{option.key}"] = seen
    return values  # for a baseline: what nfsd runs with


CHECKS = (
    Check(ROLE, "exports-published", exports_are_published),
    Check(ROLE, "pool-clients-allowed", pool_clients_are_allowed, applies=lambda lab: bool(_pool_users(lab))),
    Check(ROLE, "refuses-outside-clients", refuses_clients_outside_the_export, applies=lambda lab: bool(_outside_pairs(lab))),
    Check(ROLE, "nfs-conf-in-effect", nfs_conf_in_effect, applies=lambda lab: bool(lab.nfs_server.nfs_conf)),
)
