"""Pure rendering: lab model + placement -> {relative path: text}. No I/O."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kvmlab import roles, runs
from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import LibvirtHost
from kvmlab.model import Lab, Node, Placement
from kvmlab.roles.iscsi_target.files import initiator_iqn
from kvmlab.templating import render_template, use_overrides

NAMESPACE = "https://kvmlab.dev/xmlns/run/1"
CLOUD_INIT_DOCS = ("user-data", "meta-data", "network-config")
PREVIEW_SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")
TB_CACHE_MIB = 128  # TCG translation cache: boots as fast as the default at a fraction of the RSS


@dataclass(frozen=True)
class Owner:
    """Who a run belongs to; written into every domain's <metadata>."""

    pid: int
    user: str
    host: str
    boot_id: str
    created: str


@dataclass(frozen=True)
class Backing:
    """The base image as the libvirt host sees it."""

    pool_dir: str
    digest: str

    def path(self, suffix: str) -> str:
        return f"{self.pool_dir}/base-{self.digest}.{suffix}"


@dataclass(frozen=True)
class RenderInput:
    lab: Lab
    placement: Placement
    backing: Backing
    accel: str  # "kvm" or "tcg"
    ssh_public_key: str
    host_keys: dict[str, tuple[str, str]]  # node -> (private, public) ed25519 host key, pinned by the harness
    owner: Owner
    console_dir: str
    mtus: Mapping[str, int] = field(default_factory=dict)  # network -> MTU, for networks that cross hosts in a tunnel


def prefix(lab_name: str, run_id: str) -> str:
    return f"kvmlab-{lab_name}-{run_id}"


def domain_name(lab_name: str, run_id: str, node: str) -> str:
    return f"{prefix(lab_name, run_id)}-{node}"


def network_name(lab_name: str, run_id: str, network: str) -> str:
    return f"{prefix(lab_name, run_id)}-{network}"


def bridge_name(lab_name: str, run_id: str, network: str) -> str:
    # Linux caps interface names at 15 characters; a digest keeps them unique.
    return "kvl" + hashlib.sha1(network_name(lab_name, run_id, network).encode()).hexdigest()[:10]


def volume_name(lab_name: str, run_id: str, node: str, what: str) -> str:
    return f"{domain_name(lab_name, run_id, node)}-{what}"


def hosts_entries(lab: Lab, placement: Placement) -> list[tuple[str, str]]:
    """(address, names) lines: a node's bare name on its first network, NODE-NET on every network."""
    rows = []
    for node in lab.nodes:
        for i, net in enumerate(node.networks):
            names = f"{node.name}-{net}" + (f" {node.name}" if i == 0 else "")
            rows.append((placement.address(lab, node.name, net), names))
    return rows


def _node_context(inp: RenderInput, node: Node) -> dict:
    lab, pl = inp.lab, inp.placement
    nics = [
        {
            "network": net,
            "libvirt_network": network_name(lab.name, pl.run_id, net),
            "mac": pl.mac(lab, node.name, net),
            "address": pl.address(lab, node.name, net),
            "prefix": lab.network(net).prefix,
            "mtu": inp.mtus.get(net, 0),
        }
        for net in node.networks
    ]
    vol_dir = inp.backing.pool_dir
    return {
        "lab": lab,
        "node": node,
        "run_id": pl.run_id,
        "namespace": NAMESPACE,
        "owner": inp.owner,
        "domain_name": domain_name(lab.name, pl.run_id, node.name),
        "accel": inp.accel,
        "tb_cache_mib": TB_CACHE_MIB,
        # A node with a video device boots the kernel that has its DRM driver (the cloud kernel has none).
        "kernel": inp.backing.path("vmlinuz-display" if node.display and node.display.needs_drm else "vmlinuz"),
        "initrd": inp.backing.path("initrd-display" if node.display and node.display.needs_drm else "initrd"),
        "root_volume": f"{vol_dir}/{volume_name(lab.name, pl.run_id, node.name, 'root.qcow2')}",
        "seed_volume": f"{vol_dir}/{volume_name(lab.name, pl.run_id, node.name, 'seed.iso')}",
        "disks": [
            {"name": d.name, "path": f"{vol_dir}/{volume_name(lab.name, pl.run_id, node.name, d.name + '.qcow2')}"} for d in node.disks
        ],
        "nics": nics,
        "console_log": f"{inp.console_dir}/{domain_name(lab.name, pl.run_id, node.name)}.log",
        "hosts": hosts_entries(lab, pl),
        "ssh_public_key": inp.ssh_public_key,
        "host_key_private": inp.host_keys[node.name][0],
        "host_key_public": inp.host_keys[node.name][1],
    }


def render_lab(inp: RenderInput) -> dict[str, str]:
    # The lab's own templates folder (`templates:` in its file) is layered over kvmlab's.
    with use_overrides(inp.lab.templates or None):
        return _render_lab(inp)


def address_problems(lab: Lab, placement: Placement) -> list[str]:
    """What is wrong with the lab's addresses in PLACEMENT: the loader refuses such labs, so this is a last guard."""
    problems = []
    for net in lab.networks:
        subnet = placement.subnets[net.name]
        reserved = {subnet.network_address, subnet.broadcast_address, ipaddress.IPv4Address(placement.host_address(net.name))}
        seen: dict[str, str] = {}
        for node in lab.nodes:
            if net.name not in node.networks:
                continue
            address = ipaddress.IPv4Address(placement.address(lab, node.name, net.name))
            mac = placement.mac(lab, node.name, net.name)
            if address not in subnet or address in reserved:
                problems.append(f"node '{node.name}' gets {address}, not a free address of {subnet} (network '{net.name}')")
            for key in (str(address), mac):
                if key in seen:
                    problems.append(f"nodes '{seen[key]}' and '{node.name}' share {key} on network '{net.name}'")
                seen[key] = node.name
    return problems


def render_network(lab: Lab, pl: Placement, network: str, address: str = "", mtu: int = 0) -> str:
    """A lab network's libvirt XML. ADDRESS: the host's own address on it (default .1; each host of a
    network spread over hosts has its own); MTU: set when the network crosses hosts in a tunnel."""
    return render_template(
        "libvirt/network.xml.j2",
        {
            "name": network_name(lab.name, pl.run_id, network),
            "bridge": bridge_name(lab.name, pl.run_id, network),
            "address": address or pl.host_address(network),
            "prefix": pl.subnets[network].prefixlen,
            "mtu": mtu,
        },
        subject=f"network '{network}'",
    )


def _render_lab(inp: RenderInput) -> dict[str, str]:
    lab, pl = inp.lab, inp.placement
    problems = address_problems(lab, pl)
    if problems:
        raise HarnessError(f"lab {lab.name} cannot be placed: " + "; ".join(problems[:3]))
    out: dict[str, str] = {}
    for net in lab.networks:
        out[f"networks/{net.name}.xml"] = render_network(lab, pl, net.name)
    for node in lab.nodes:
        ctx = _node_context(inp, node)
        subject = f"node '{node.name}'"
        out[f"domains/{node.name}.xml"] = render_template("libvirt/domain.xml.j2", ctx, subject=subject)
        out.update(_seed_files(node, ctx))
        out[f"volumes/{node.name}-root.xml"] = render_volume(
            volume_name(lab.name, pl.run_id, node.name, "root.qcow2"), backing=inp.backing.path("qcow2"), subject=subject
        )
        for disk in node.disks:
            out[f"volumes/{node.name}-{disk.name}.xml"] = render_volume(
                volume_name(lab.name, pl.run_id, node.name, disk.name + ".qcow2"), capacity_mib=disk.size_mib, subject=subject
            )
        out.update(_role_files(lab, pl, node))
    return out


def _seed_files(node: Node, ctx: dict) -> dict[str, str]:
    """The seed disk: a NoCloud seed plus the kvmlab-* files that kvmlab-firstboot installs."""
    seed = f"seed/{node.name}"
    out = {f"{seed}/{doc}": render_template(f"cloud-init/{doc}.j2", ctx, subject=f"node '{node.name}'") for doc in CLOUD_INIT_DOCS}
    out[f"{seed}/kvmlab-hostname"] = node.name + "\n"
    # Every node its own initiator name: the image's package-made one would be shared by all.
    out[f"{seed}/kvmlab-initiatorname.iscsi"] = render_template(
        "seed/initiatorname.iscsi.j2", {"iqn": initiator_iqn(ctx["lab"], node.name)}
    )
    out[f"{seed}/kvmlab-hosts"] = render_template("seed/hosts.j2", ctx)
    out[f"{seed}/kvmlab-authorized_keys"] = ctx["ssh_public_key"] + "\n"
    out[f"{seed}/kvmlab-ssh_host_ed25519_key"] = ctx["host_key_private"].rstrip("\n") + "\n"
    out[f"{seed}/kvmlab-ssh_host_ed25519_key.pub"] = ctx["host_key_public"] + "\n"
    for nic in ctx["nics"]:
        out[f"{seed}/kvmlab-net-{nic['network']}.network"] = render_template("seed/network.j2", {"nic": nic})
    return out


def _role_files(lab: Lab, pl: Placement, node: Node) -> dict[str, str]:
    out: dict[str, str] = {}
    for package in roles.packages():
        for name, text in package.files(lab, pl, node).items():
            out[f"roles/{node.name}/{name}"] = text
    return out


def render_volume(
    name: str,
    *,
    capacity_mib: int | None = None,
    capacity_bytes: int = 0,
    fmt: str = "qcow2",
    backing: str | None = None,
    subject: str = "",
) -> str:
    """A libvirt volume: CAPACITY_MIB if given, else CAPACITY_BYTES (0 for an overlay: it takes its backing's size)."""
    context = {"name": name, "capacity_mib": capacity_mib, "capacity_bytes": capacity_bytes, "format": fmt, "backing": backing}
    return render_template("libvirt/volume.xml.j2", context, subject=subject)


def render_overlay_volume(name: str, backing: str) -> str:
    """A qcow2 volume that writes above BACKING (a frozen checkpoint layer), with its size."""
    return render_volume(name, backing=backing)


def render_upload_volume(name: str, size_bytes: int, fmt: str) -> str:
    """A volume of exactly SIZE_BYTES that a provider's upload_volume fills (base image parts, seed ISOs)."""
    return render_volume(name, capacity_bytes=size_bytes, fmt=fmt)


def render_ssh_files(
    lab: Lab,
    placement: Placement,
    run_dir: Path,
    host_public_keys: dict[str, str],
    via: LibvirtHost | Mapping[str, LibvirtHost] | None = None,
) -> dict[str, str]:
    """The harness's own `ssh_config` and `known_hosts` for a run (file name -> text): each node by name, its host key pinned.
    VIA: the remote libvirt host the lab runs on (or each node's, for a lab over several hosts), which
    `ssh` goes through to reach the nodes."""
    hosts = []
    for node in lab.nodes:
        addresses = [placement.address(lab, node.name, net) for net in node.networks]
        key = " ".join(host_public_keys[node.name].split()[:2])  # type and key: known_hosts has no comment field
        jump = via.get(node.name) if isinstance(via, Mapping) else via
        hosts.append(
            {
                "name": node.name,
                "address": addresses[0],
                "names": [node.name, *addresses],
                "key": key,
                "proxy_command": proxy_command(jump) if jump is not None and not jump.local else "",
            }
        )
    context = {
        "hosts": hosts,
        "identity_file": str(run_dir / "id_ed25519"),
        "known_hosts": str(run_dir / "known_hosts"),
    }
    return {name: render_template(f"ssh/{name}.j2", context) for name in ("ssh_config", "known_hosts")}


def proxy_command(via: LibvirtHost) -> str:
    """`ssh` through the libvirt host, with the user, port, key and known hosts its URI names."""
    parts = ["ssh", "-W", "%h:%p", "-p", str(via.port), "-o", "BatchMode=yes"]
    if via.key_file is not None:
        parts += ["-i", str(via.key_file), "-o", "IdentitiesOnly=yes"]
    if via.known_hosts is not None:
        parts += ["-o", f"UserKnownHostsFile={via.known_hosts}"]
    return " ".join([*parts, via.ssh_destination])


def render_pool_xml(name: str, target: str, mode: str = "0755") -> str:
    """A libvirt dir pool on the host (kvmlab's own volumes)."""
    return render_template("libvirt/pool.xml.j2", {"type": "dir", "name": name, "target": target, "mode": mode})


def preview_placement(lab: Lab, run_id: str = "render") -> Placement:
    """A stand-in placement for `kvmlab render`, which leases nothing: the first-fit subnets of a run with nothing taken."""
    try:
        subnets = runs.allocate({net.name: net.prefix for net in lab.networks}, taken=(), pool=PREVIEW_SUBNETS)
    except runs.NoFreeSubnet as exc:
        # Nothing was taken, so the lab alone does not fit: gc or another lease would not help.
        raise HarnessError(f"the lab's networks do not fit together in {exc.pool} (network '{exc.network}', /{exc.prefix})") from None
    return Placement(run_id, subnets)
