"""A remote libvirt host: what kvmlab reads from its URI, how `ssh` reaches its guests, what it refuses there."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from kvmlab import gc, render
from kvmlab.errors import HarnessError
from kvmlab.lab import LabSession
from kvmlab.libvirt_host import host_of
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.providers.base import DomainInfo
from kvmlab.remote import run_on_host

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("uri", ["qemu:///system", "qemu+unix:///system", "test:///default", "qemu+ssh://localhost/system"])
def test_local_uris_are_this_machine(uri):
    assert host_of(uri).local


def test_a_remote_uri_gives_user_port_key_and_known_hosts():
    host = host_of("qemu+libssh2://admin@10.1.2.3:2222/system?keyfile=/k/id&known_hosts=/k/known&sshauth=privkey")
    assert not host.local
    assert (host.hostname, host.user, host.port) == ("10.1.2.3", "admin", 2222)
    assert host.key_file == Path("/k/id") and host.known_hosts == Path("/k/known")
    assert host.describe() == "admin@10.1.2.3 (port 2222)"


def test_defaults_are_root_on_port_22_with_sshs_own_files():
    host = host_of("qemu+ssh://host-a/system")
    assert (host.user, host.port, host.key_file, host.known_hosts) == ("root", 22, None, None)


def test_a_remote_host_without_ssh_is_refused_with_the_uri_to_use():
    with pytest.raises(HarnessError, match=r"qemu\+ssh://root@host-a/system"):
        host_of("qemu+tls://host-a/system")


def test_ssh_config_goes_through_the_remote_host():
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})
    host = host_of("qemu+ssh://root@10.1.2.3/system?keyfile=/k/id&known_hosts=/k/known")
    keys = {n.name: "ssh-ed25519 AAAAC3Nza key" for n in lab.nodes}
    config = render.render_ssh_files(lab, placement, Path("/run"), keys, via=host)["ssh_config"]
    assert config.count("ProxyCommand ssh -W %h:%p -p 22 -o BatchMode=yes -i /k/id -o IdentitiesOnly=yes") == len(lab.nodes)
    assert "UserKnownHostsFile=/k/known root@10.1.2.3" in config
    local = render.render_ssh_files(lab, placement, Path("/run"), keys, via=host_of("qemu:///system"))["ssh_config"]
    assert "ProxyCommand" not in local


class _RemoteProvider:
    uri = "qemu+ssh://root@10.1.2.3/system"


def test_a_remote_host_s_nodes_are_reached_through_that_host():
    session = LabSession(load_lab(ROOT / "labs" / "tiny.yaml"), provider=_RemoteProvider())  # type: ignore[arg-type]
    session.placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")})
    assert session.ssh_target("n1").via == session.host


def test_gc_leaves_domains_started_from_another_machine():
    def domain(host: str | None) -> DomainInfo:
        return DomainInfo("kvmlab-tiny-abc123-n1", "running", "abc123", "tiny", "n1", 1, None, host, "old-boot")

    assert not gc._domain_owner_dead(domain("another-client"), "root")
    assert gc._domain_owner_dead(domain(socket.gethostname()), "root")  # this machine's, from an earlier boot


def test_commands_on_this_machine_run_in_bash():
    res = run_on_host(host_of("qemu:///system"), "echo $((6 * 7)); exit 3")
    assert (res.rc, res.stdout) == (3, "42\n")
