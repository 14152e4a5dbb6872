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
    "release_unknown.yaml": (2, 10, "release 'bullseye' is not a Debian release kvmlab builds images of (bookworm, trixie)"),
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
        "unknown key 'memroy' in node 'a' (known: roles, memory, vcpus, disks, networks, display, host); did you mean 'memory'?",
    ),
    "unknown_role.yaml": (
        3,
        13,
        "unknown role 'nfs-sever' in roles of node 'a' (known: nfs-server, hypervisor, iscsi-target, gluster, ceph-mon, ceph-osd, ceph-admin, local-raid); did you mean 'nfs-server'?",
    ),
    "unknown_top_key.yaml": (
        3,
        1,
        "unknown key 'network' in the lab (known: name, release, networks, nodes, roles, templates, failover, variants, x-*); did you mean 'networks'?",
    ),
    "vcpus_not_int.yaml": (3, 12, "vcpus of node 'a' must be a whole number between 1 and 64, got 'two'"),
    "vcpus_zero.yaml": (3, 12, "vcpus of node 'a' 0 is out of range: use 1 to 64"),
    "gluster_client_off_network.yaml": (
        7,
        3,
        "hypervisor 'hv1' uses the gluster storage but is not on its network 'storage': add it to the node's networks",
    ),
    "gluster_arbiter_two_nodes.yaml": (
        6,
        14,
        "replica 3 arbiter 1 needs the number of gluster nodes to be a multiple of 3, this lab has 2: gluster1, gluster2",
    ),
    "gluster_arbiter_replica_two.yaml": (
        6,
        22,
        "replica 2 with arbiter 1 is not possible: an arbiter volume is replica 3 arbiter 1 (two data bricks and the arbiter in each set); write replica: 3, or leave replica out",
    ),
    "gluster_replica_not_dividing.yaml": (
        8,
        14,
        "replica 3 needs the number of gluster nodes to be a multiple of 3, this lab has 4: g1, g2, g3, g4",
    ),
    "gluster_disperse_and_replica.yaml": (
        8,
        5,
        "'disperse' and 'replica' cannot go together: a Gluster volume is either replicated (replica: N, and arbiter: 1 for replica 3) or dispersed (disperse: N, redundancy: R); keep one",
    ),
    "gluster_disperse_too_small.yaml": (
        5,
        23,
        "disperse 2 is too small: a disperse set needs at least 3 bricks (e.g. disperse: 3, redundancy: 1)",
    ),
    "gluster_redundancy_too_big.yaml": (
        9,
        17,
        "redundancy 2 is not possible with disperse 4: each set must lose at least 1 brick and keep more data bricks than redundant ones (disperse > 2 x redundancy); use redundancy: 1",
    ),
    "gluster_redundancy_alone.yaml": (
        7,
        5,
        "redundancy needs disperse: it is the number of bricks each disperse set may lose; add e.g. 'disperse: 3'",
    ),
    "gluster_option_set_by_role.yaml": (
        8,
        7,
        "gluster option 'network.ping-timeout' is set by the role from its 'ping_timeout' setting: write 'ping_timeout: 10' beside 'options:' instead",
    ),
    "gluster_option_without_value.yaml": (
        7,
        7,
        "gluster option performance.quick-read has no value: write it as `gluster volume set` takes it, e.g. 'performance.quick-read: on' or a number",
    ),
    "gluster_option_bad_name.yaml": (
        6,
        15,
        "gluster option 'performance cache-size' is not a Gluster option name: write e.g. performance.cache-size",
    ),
    "iscsi_lun_too_big.yaml": (8, 54, "LUN 'lun0' (2048 MiB) does not fit on disk 'd' (1024 MiB, less 64 MiB for metadata)"),
    "ceph_osd_disk_missing.yaml": (
        3,
        3,
        "node 'o1' (role ceph-osd) needs a disk named 'osd' (its disks: data); add e.g. 'disks: {osd: 4G}'",
    ),
    "yaml_syntax.yaml": (
        2,
        6,
        "the mapping opened with '{' here is never closed (still open at line 3, column 3): close it, or quote a value that contains brackets or quotes",
    ),
    "pool_network_typo.yaml": (13, 53, "pool network 'storag' is not a network of its server 'a' (mgmt, storage); did you mean 'storage'?"),
    "disk_name_typo.yaml": (
        9,
        45,
        "node 't' (role iscsi-target) needs a disk named 'fileio' (its disks: filio); did you mean 'fileio' (rename disk 'filio')?",
    ),
    "second_document.yaml": (
        3,
        1,
        "a lab file holds one YAML document, but a second one starts here: remove this '---' line (and what follows it)",
    ),
    "unclosed_bracket.yaml": (
        3,
        12,
        "the list opened with '[' here is never closed (still open at line 4, column 11): close it, or quote a value that contains brackets or quotes",
    ),
    "subnet_too_small.yaml": (
        3,
        18,
        "network 'mgmt' (/28) is too small: node 'n6' would get address .15 of it (nodes take addresses 10, 11, … in file order) but a /28 ends at .14; use 'prefix: 27' or lower",
    ),
    "merge_not_mapping.yaml": (1, 18, "a merge key '<<' in node 'a' takes a mapping or a list of them (<<: *common), got '512M'"),
    "tab_indent.yaml": (3, 1, "a tab character here: YAML indents with spaces only"),
    "latin1_comment.yaml": (1, 4, "the file is not UTF-8 text: byte 0xE9 here; save it as UTF-8 (iconv -f latin1 -t utf-8)"),
    "control_character.yaml": (4, 6, "character U+0007 is not allowed in a YAML file (control characters are not): remove it"),
    # Variants are checked when the file is loaded, even for its own lab: a value a variant sets is named at
    # its line under `variants:`, a base value that a variant makes wrong at the base's line.
    "variant_value_wrong.yaml": (4, 29, "variant 'big': memory of node 'a' 'lots' is not a size: write e.g. 512M, 2G or 1.5GiB"),
    "variant_breaks_base_setting.yaml": (
        8,
        14,
        "variant 'two-nodes': replica 3 arbiter 1 needs the number of gluster nodes to be a multiple of 3, this lab has 2: gluster1, gluster2",
    ),
    "variant_not_mapping.yaml": (4, 11, "variant 'nfs-v3' must be a mapping (key: value lines), got a list"),
    "variant_reserved_name.yaml": (
        4,
        3,
        "variant name 'base' is reserved: `--variant base` runs the file's own lab, `--variant all` every variant",
    ),
    "variant_bad_name.yaml": (
        4,
        3,
        "variant name 'NFS_v3' is not a valid name: use 1-15 lowercase letters, digits or '-', starting with a letter",
    ),
    "variant_has_variants.yaml": (6, 5, "variant 'two' has variants of its own: a variant is one set of overrides; remove this key"),
    "variant_sets_name.yaml": (5, 9, "variant 'two' sets 'name': a variant's lab is named 'store-two'; remove this key"),
    "variant_removes_missing_key.yaml": (
        8,
        7,
        "variant 'small': 'hv2: null' removes a key the lab does not have (nodes: hv2; to add it with its defaults write 'hv2: {}') (known: nfs1, hv1); did you mean 'hv1'?",
    ),
    "variant_lab_name_too_long.yaml": (
        5,
        3,
        "variant 'arbiter-one' names its lab 'replicated-storage-for-vms-arbiter-one' (38 characters): use 1-32 lowercase letters, digits or '-', starting with a letter; shorten the variant's or the lab's name",
    ),
    "variant_unknown_key.yaml": (
        5,
        5,
        "variant 'wide': unknown key 'node' in the lab (known: name, release, networks, nodes, roles, templates, failover, variants, x-*); did you mean 'nodes'?",
    ),
    "variants_not_mapping.yaml": (3, 11, "variants must be a mapping (key: value lines), got a list"),
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


def _nodes(count: int, prefix: int | None = None) -> bytes:
    networks = f"networks:\n  mgmt: {{prefix: {prefix}}}\n" if prefix else ""
    return (networks + "nodes:\n" + "".join(f"  n{i}: {{}}\n" for i in range(count))).encode()


# Inputs too big or too odd to keep as files: content -> (line, column, message).
GENERATED = {
    "binary": (b"\x7fELF\x02\x01\x01\x00\x00", 1, 8, "this is a binary file (it holds NUL bytes), not a YAML lab file"),
    "memory_of_400_digits": (
        b"nodes:\n  a: {memory: " + b"9" * 400 + b"G}\n",
        2,
        15,
        "memory of node 'a' 9999999999999999999999999999999999999999…9999999G (401 characters) is impossible: it must be between 256 MiB and 64 GiB",
    ),
    "vcpus_of_5000_digits": (
        b"nodes:\n  a: {vcpus: " + b"9" * 5000 + b"}\n",
        2,
        14,
        "vcpus of node 'a' 9999999999999999999999999999999999999999…99999999 (5000 characters) is out of range: use 1 to 64",
    ),
    "nested_3000_deep": (
        b"nodes:\n  a: " + b"[" * 3000 + b"]" * 3000 + b"\n",
        2,
        104,
        "values are nested more than 100 levels deep here: a lab file never needs that",
    ),
    "role_name_of_a_megabyte": (
        b"nodes:\n  a: {roles: [" + b"x" * 2**20 + b"]}\n",
        2,
        15,
        "unknown role 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…xxxxxxxx (1048576 characters)' in roles of node 'a' (known: nfs-server, hypervisor, iscsi-target, gluster, ceph-mon, ceph-osd, ceph-admin, local-raid)",
    ),
    "key_of_1100_characters": (
        b"nodes:\n  " + b"k" * 1100 + b": {}\n",
        2,
        1,
        "a key longer than 1024 characters ends here: YAML does not allow it; shorten the key",
    ),
    "300_nodes_on_a_24": (
        _nodes(300),
        247,
        3,
        "network 'mgmt' (/24) is too small: node 'n245' would get address .255 of it (nodes take addresses 10, 11, … in file order) but a /24 ends at .254; use 'prefix: 23' or lower",
    ),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_bad_input_points_at_the_line(name, tmp_path):
    content, line, col, message = GENERATED[name]
    path = tmp_path / "lab.yaml"
    path.write_bytes(content)
    with pytest.raises(LabFileError) as info:
        load_lab(path)
    assert (info.value.line, info.value.col, info.value.message) == (line, col, message)


def test_the_largest_subnet_fill_loads(tmp_path):
    # 5 nodes take .10-.14 of a /28, whose broadcast is .15: exactly full.
    path = tmp_path / "lab.yaml"
    path.write_bytes(_nodes(5, prefix=28))
    assert len(load_lab(path).nodes) == 5


def test_a_utf8_byte_order_mark_is_harmless(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_bytes("\ufeff# café\nnodes:\n  a: {}\n".encode())
    assert [n.name for n in load_lab(path).nodes] == ["a"]


def test_merge_keys_share_settings_and_own_keys_win(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text("x-node: &node {memory: 512M, vcpus: 2}\nnodes:\n  a: {<<: *node}\n  b: {<<: *node, vcpus: 1}\n")
    lab = load_lab(path)
    assert [(n.memory_mib, n.vcpus) for n in lab.nodes] == [(512, 2), (512, 1)]
