"""nfs-server's nfs-conf: the service's own settings, passed through as written, and read back from nfsd."""

from __future__ import annotations

import ipaddress

import pytest

from kvmlab.errors import LabFileError
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.roles.nfs_server.checks import expected_in_effect
from kvmlab.roles.nfs_server.files import files
from kvmlab.roles.nfs_server.settings import NfsConfOption

LAB = """nodes:
  nfs1: {roles: [nfs-server]}
roles:
  nfs-server:
    exports: [{path: /srv/share, clients: mgmt}]
    nfs-conf:
%s"""


def lab_with(tmp_path, conf: str):
    path = tmp_path / "nfs.yaml"
    path.write_text(LAB % conf)
    return load_lab(path)


def test_options_are_passed_through_with_booleans_as_nfs_conf_spells_them(tmp_path):
    lab = lab_with(tmp_path, "      nfsd: {vers3: false, vers4.2: yes, grace-time: 10, threads: 16}\n      mountd: {manage-gids: y}\n")
    assert lab.nfs_server.nfs_conf == (
        NfsConfOption("nfsd", "vers3", "n"),
        NfsConfOption("nfsd", "vers4.2", "y"),
        NfsConfOption("nfsd", "grace-time", "10"),
        NfsConfOption("nfsd", "threads", "16"),
        NfsConfOption("mountd", "manage-gids", "y"),
    )
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")})
    text = files(lab, placement, lab.node("nfs1"))["nfs.conf"]
    assert "[nfsd]\nvers3=n\nvers4.2=y\ngrace-time=10\nthreads=16\n" in text and "[mountd]\nmanage-gids=y\n" in text


def test_no_nfs_conf_writes_no_file(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("nodes:\n  nfs1: {roles: [nfs-server]}\nroles:\n  nfs-server:\n    exports: [{path: /srv/a, clients: mgmt}]\n")
    lab = load_lab(path)
    assert "nfs.conf" not in files(lab, Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")}), lab.node("nfs1"))


@pytest.mark.parametrize(
    ("conf", "words"),
    [
        ("      NFSD: {vers3: n}\n", "nfs-conf section 'NFSD' is not an nfs.conf section name"),
        ("      nfsd: {'vers 3': n}\n", "nfs-conf key 'vers 3' in [nfsd] is not an nfs.conf key"),
        ("      nfsd: [vers3]\n", "must be a mapping"),
        ("      nfsd: {threads: ''}\n", "must be one printable line"),
    ],
)
def test_bad_nfs_conf_names_the_line(tmp_path, conf, words):
    with pytest.raises(LabFileError) as info:
        lab_with(tmp_path, conf)
    assert info.value.line == 7 and words in info.value.message, info.value.message


PROC = {"nfsv4gracetime": "10\n", "nfsv4leasetime": "90", "threads": "8", "versions": "-2 -3 +4 +4.1 +4.2"}


@pytest.mark.parametrize(
    ("option", "expected", "seen"),
    [
        (NfsConfOption("nfsd", "grace-time", "10"), "10", "10"),
        (NfsConfOption("nfsd", "lease-time", "15"), "15", "90"),
        (NfsConfOption("nfsd", "vers3", "n"), "-3", "-3"),
        (NfsConfOption("nfsd", "vers4.2", "y"), "+4.2", "+4.2"),
        (NfsConfOption("nfsd", "vers2", "y"), "+2", "-2"),
        (NfsConfOption("nfsd", "vers4.0", "y"), "+4.0", "-4.0"),  # not listed: not served
    ],
)
def test_nfsd_settings_are_read_from_the_running_server(option, expected, seen):
    where, want, got = expected_in_effect(option, PROC)
    assert where.startswith("/proc/fs/nfsd/") and (want, got) == (expected, seen)


def test_other_options_have_no_running_view():
    assert expected_in_effect(NfsConfOption("mountd", "manage-gids", "y"), PROC) is None
    assert expected_in_effect(NfsConfOption("nfsd", "rdma", "y"), PROC) is None
