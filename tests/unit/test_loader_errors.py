"""Every bad lab file fails with file:line:col and a message that says what would be right."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvmlab.errors import LabFileError
from kvmlab.loader import load_lab

BAD = Path(__file__).parent / "bad_labs"

# file -> (line, column, message after "file:line:col: ")
EXPECTED = {
    "bad_lab_name.yaml": (1, 7, "lab name 'My Lab' is not valid: use 1-32 lowercase letters, digits or '-', starting with a letter"),
    "bad_node_name.yaml": (
        2,
        3,
        "node name 'Web_1' is not a valid name: use 1-15 lowercase letters, digits or '-', starting with a letter",
    ),
    "disk_too_big.yaml": (4, 13, "size of disk 'data' of node 'a' 9T is impossible: it must be between 16 MiB and 2048 GiB"),
    "disk_zero.yaml": (4, 13, "size of disk 'data' of node 'a' 0M is impossible: it must be between 16 MiB and 2048 GiB"),
    "duplicate_key.yaml": (4, 5, "duplicate key 'memory' in node 'a' (first at line 3)"),
    "duplicate_node.yaml": (4, 3, "duplicate key 'a' in nodes (first at line 2)"),
    "empty_file.yaml": (1, 1, "lab file is empty: it needs at least a 'nodes:' mapping"),
    "empty_nodes.yaml": (1, 8, "nodes is empty: a lab needs at least one node"),
    "export_clients_unknown.yaml": (
        6,
        33,
        "export clients 'storage' is neither a lab network nor a CIDR (known networks: mgmt; or e.g. 10.0.0.0/24)",
    ),
    "export_missing_path.yaml": (6, 9, "an export is missing required key 'path'"),
    "export_option_unknown.yaml": (
        6,
        53,
        "unknown NFS option 'no_root_sqash' in export options (known: rw, ro, sync, async, root_squash, no_root_squash, "
        "all_squash, no_all_squash, secure, insecure, subtree_check, no_subtree_check, wdelay, no_wdelay, crossmnt, nohide); "
        "did you mean 'no_root_squash'?",
    ),
    "export_path_relative.yaml": (6, 16, "export path 'srv/x' must be an absolute path without spaces or quotes, e.g. /srv/nfs/vms"),
    "memory_not_size.yaml": (3, 13, "memory of node 'a' 'lots' is not a size: write e.g. 512M, 2G or 1.5GiB"),
    "memory_too_small.yaml": (3, 13, "memory of node 'a' 64M is impossible: it must be between 256 MiB and 64 GiB"),
    "missing_nodes.yaml": (1, 1, "the lab is missing required key 'nodes'"),
    "node_not_mapping.yaml": (2, 6, "node 'a' must be a mapping (key: value lines), got a list"),
    "pool_path_not_exported.yaml": (10, 36, "pool path '/srv/y' is not exported by the nfs-server role (exports: /srv/x)"),
    "pool_server_not_nfs.yaml": (10, 27, "pool server 'hv' is not a node with role nfs-server (those are: a)"),
    "prefix_out_of_range.yaml": (3, 13, "network prefix 8 is out of range: use 16 to 28"),
    "role_settings_unused.yaml": (4, 3, "settings for role 'nfs-server' are given but no node has that role"),
    "role_twice.yaml": (3, 25, "role 'hypervisor' is listed twice in roles of node 'a'"),
    "roles_not_list.yaml": (3, 12, "roles of node 'a' must be a list (e.g. [a, b]), got 'nfs-server'"),
    "top_not_mapping.yaml": (1, 1, "the lab must be a mapping (key: value lines), got a list"),
    "unknown_network.yaml": (6, 22, "unknown network 'storge' in networks of node 'osd2' (known: mgmt, storage); did you mean 'storage'?"),
    "unknown_node_key.yaml": (
        3,
        5,
        "unknown key 'memroy' in node 'a' (known: roles, memory, vcpus, disks, networks); did you mean 'memory'?",
    ),
    "unknown_role.yaml": (
        3,
        13,
        "unknown role 'nfs-sever' in roles of node 'a' (known: nfs-server, hypervisor, iscsi-target, gluster, ceph-mon, ceph-osd, ceph-admin, local-raid); did you mean 'nfs-server'?",
    ),
    "unknown_top_key.yaml": (
        3,
        1,
        "unknown key 'network' in the lab (known: name, networks, nodes, roles, templates); did you mean 'networks'?",
    ),
    "vcpus_not_int.yaml": (3, 12, "vcpus of node 'a' must be a whole number between 1 and 64, got 'two'"),
    "vcpus_zero.yaml": (3, 12, "vcpus of node 'a' 0 is out of range: use 1 to 64"),
    "gluster_client_off_network.yaml": (
        7,
        3,
        "hypervisor 'hv1' uses the gluster storage but is not on its network 'storage': add it to the node's networks",
    ),
    "iscsi_lun_too_big.yaml": (8, 54, "LUN 'lun0' (2048 MiB) does not fit on disk 'd' (1024 MiB, less 64 MiB for metadata)"),
    "ceph_osd_disk_missing.yaml": (
        3,
        3,
        "node 'o1' (role ceph-osd) needs an extra disk 'osd' (its disks: data); add e.g. 'disks: {osd: 4G}'",
    ),
    "yaml_syntax.yaml": (3, 3, "YAML syntax error: expected ',' or '}', but got '<scalar>'"),
}


def test_every_bad_file_has_an_expectation():
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_lab_file_points_at_the_line(name):
    line, col, message = EXPECTED[name]
    with pytest.raises(LabFileError) as info:
        load_lab(BAD / name)
    err = info.value
    assert (err.line, err.col, err.message) == (line, col, message)
    assert str(err) == f"{err.path}:{line}:{col}: {message}"
    assert err.path.endswith(f"bad_labs/{name}")


def test_missing_file_is_a_lab_file_error(tmp_path):
    with pytest.raises(LabFileError, match=r"nope.yaml:1:1: cannot read lab file: No such file or directory"):
        load_lab(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["unknown_role.yaml", "yaml_syntax.yaml", "empty_file.yaml"])
def test_cli_prints_one_line_and_no_traceback(name, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kvmlab.cli", "render", str(BAD / name), "-o", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    line, col, message = EXPECTED[name]
    assert proc.stderr.strip().endswith(f"{name}:{line}:{col}: {message}")
