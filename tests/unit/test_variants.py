"""Variants of a lab file: how they merge over the file's own lab, how their labs are named and chosen,
and where their errors point. (Bad files with one mistake each are in bad_labs/, see test_loader_errors.py.)"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings

from kvmlab import variants
from kvmlab.errors import LabFileError
from kvmlab.loader import load_lab, load_lab_file, parse_lab_file
from tests.unit.fuzz_mutations import mutated_text
from tests.unit.test_loader_fuzz import FUZZ, check_lab, position_in

ROOT = Path(__file__).resolve().parents[2]

STORAGE = """\
name: store
x-gluster: &gluster {roles: [gluster], memory: 512M, disks: {brick: 2G}}
networks:
  mgmt: {}
  storage: {}
nodes:
  nfs1: {roles: [nfs-server], memory: 512M}
  gluster1: {<<: *gluster}
  gluster2: {<<: *gluster}
  gluster3: {<<: *gluster}
  hv1: {roles: [hypervisor], memory: 768M}
roles:
  nfs-server:
    exports:
      - {path: /srv/nfs/vms, clients: storage, options: [rw, sync, no_root_squash, no_subtree_check]}
  gluster:
    network: storage
  hypervisor:
    netfs_pools:
      - {name: nfsvms, server: nfs1, network: storage, path: /srv/nfs/vms}
"""

VARIANTS = """\
variants:
  arbiter: {roles: {gluster: {arbiter: 1}}}
  nfs-v3: {roles: {hypervisor: {netfs_pools: [{name: nfsvms, server: nfs1, network: storage, path: /srv/nfs/vms, mount_options: [vers=3]}]}}}
  big-brick: {nodes: {gluster1: {memory: 1G, disks: {extra: 1G}}}}
  no-nfs:
    nodes: {nfs1: null}
    roles: {nfs-server: null, hypervisor: {netfs_pools: null}}
  hv2: {nodes: {hv2: {roles: [hypervisor]}}}
"""


def lab_file(tmp_path: Path, text: str, name: str = "lab.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def storage(tmp_path: Path):
    return load_lab_file(lab_file(tmp_path, STORAGE + VARIANTS))


# -- merging ----------------------------------------------------------------------------------------


def test_a_file_without_variants_loads_as_before(tmp_path):
    plain = load_lab(lab_file(tmp_path, STORAGE))
    file = load_lab_file(lab_file(tmp_path, STORAGE))
    assert file.base == plain and not file.variants and file.every() == [plain]


def test_the_base_lab_ignores_its_variants(tmp_path):
    plain = load_lab(lab_file(tmp_path, STORAGE))
    with_variants = load_lab(lab_file(tmp_path, STORAGE + VARIANTS))
    assert with_variants == plain


def test_mappings_merge_key_by_key(storage):
    lab = storage.variants["arbiter"]
    assert (lab.gluster.arbiter, lab.gluster.network, lab.gluster.replica) == (1, "storage", 3)  # network kept from the base
    assert lab.nodes == storage.base.nodes


def test_a_list_replaces_the_whole_list(storage):
    (pool,) = storage.variants["nfs-v3"].hypervisor.netfs_pools
    (base_pool,) = storage.base.hypervisor.netfs_pools
    assert (pool.name, pool.network, pool.mount_options, base_pool.mount_options) == ("nfsvms", "storage", ("vers=3",), ())


def test_a_merge_reaches_into_keys_that_came_from_a_merge_key(storage):
    node = storage.variants["big-brick"].node("gluster1")
    assert node.memory_mib == 1024
    assert [(d.name, d.size_mib) for d in node.disks] == [("brick", 2048), ("extra", 1024)]  # the anchor's disk kept
    assert storage.variants["big-brick"].node("gluster2") == storage.base.node("gluster2")  # the anchor itself unchanged


def test_null_removes_a_key(storage):
    lab = storage.variants["no-nfs"]
    assert [n.name for n in lab.nodes] == ["gluster1", "gluster2", "gluster3", "hv1"]
    assert lab.hypervisor.netfs_pools == ()


def test_nodes_keep_their_order_and_new_ones_come_last(storage):
    # Node order is address order: a variant must not move the base's nodes.
    assert [n.name for n in storage.variants["hv2"].nodes] == ["nfs1", "gluster1", "gluster2", "gluster3", "hv1", "hv2"]


def test_a_scalar_replaces_and_a_mapping_replaces_a_scalar(tmp_path):
    file = load_lab_file(
        lab_file(
            tmp_path,
            """\
            nodes:
              a:
              b: {vcpus: 2}
            variants:
              v: {nodes: {a: {vcpus: 3}, b: {vcpus: 4}}}
            """,
        )
    )
    assert [(n.name, n.vcpus) for n in file.variants["v"].nodes] == [("a", 3), ("b", 4)]
    assert [(n.name, n.vcpus) for n in file.base.nodes] == [("a", 1), ("b", 2)]


def test_a_variant_may_build_on_another_through_an_anchor(tmp_path):
    file = load_lab_file(
        lab_file(
            tmp_path,
            """\
            nodes: {a: {}}
            variants:
              big: &big {nodes: {a: {memory: 1G}}}
              big-wide: {<<: *big, networks: {mgmt: {}, storage: {}}}
            """,
        )
    )
    lab = file.variants["big-wide"]
    assert lab.node("a").memory_mib == 1024 and [n.name for n in lab.networks] == ["mgmt", "storage"]


def test_merge_builds_new_nodes_and_changes_none_of_the_file(tmp_path):
    from kvmlab.yaml_errors import compose
    from kvmlab.yamlread import Reader

    text = "nodes: {a: {vcpus: 2}}\nvariants: {v: {nodes: {a: {vcpus: 3}}}}\n"
    root = compose(text, "lab.yaml", "empty")
    before = repr(root)
    reader = Reader("lab.yaml")
    overrides = reader.mapping(reader.mapping(root, "the lab", ())["variants"][1], "variants", ())["v"][1]
    merged = variants.apply(reader, root, overrides)
    assert repr(root) == before
    assert [k.value for k, _ in merged.value] == ["nodes"]  # no `variants:` in a variant's lab


def test_aliases_in_a_variant_do_not_multiply_work(tmp_path):
    """Each level aliases the one before ten times: 10**8 merges if each alias were merged anew."""
    lines = ["x-m0: &m0 {vcpus: 1}"]
    lines += [f"x-m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' for j in range(10))}}}" for i in range(1, 9)]
    path = lab_file(tmp_path, "\n".join([*lines, "nodes: {a: {}}", "variants:", "  v: {x-big: *m8, x-m8: *m8}"]) + "\n")
    code = "import sys\nfrom kvmlab.loader import load_lab_file\nload_lab_file(sys.argv[1])"
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("merging a variant of nested aliases ran past 20 s")
    assert proc.returncode == 0, proc.stderr[-2000:]


# -- names ------------------------------------------------------------------------------------------


def test_a_variant_lab_has_its_own_name(storage):
    assert storage.base.name == "store" and storage.base.variant == ""
    assert [(lab.name, lab.variant) for lab in storage.variants.values()] == [
        ("store-arbiter", "arbiter"),
        ("store-nfs-v3", "nfs-v3"),
        ("store-big-brick", "big-brick"),
        ("store-no-nfs", "no-nfs"),
        ("store-hv2", "hv2"),
    ]
    assert all(lab.path == storage.base.path for lab in storage.variants.values())


def test_settings_made_from_the_lab_name_follow_the_variant(tmp_path):
    # The iSCSI target's default IQN is made from the lab name: a variant's target is its own.
    file = load_lab_file(
        lab_file(
            tmp_path,
            """\
            name: san
            nodes:
              t: {roles: [iscsi-target], disks: {d: 1G}}
            roles:
              iscsi-target: {luns: [{name: lun0, backend: block, disk: d}]}
            variants:
              two: {}
            """,
        )
    )
    assert (file.base.iscsi_target.iqn, file.variants["two"].iscsi_target.iqn) == (
        "iqn.2026-11.dev.kvmlab:san",
        "iqn.2026-11.dev.kvmlab:san-two",
    )


def test_a_lab_name_from_the_file_name_prefixes_its_variants(tmp_path):
    file = load_lab_file(lab_file(tmp_path, "nodes: {a: {}}\nvariants: {v: {}}\n", name="my_lab.yaml"))
    assert file.variants["v"].name == "my-lab-v"


def test_named_finds_the_lab_a_run_record_names(storage):
    assert storage.named("store-arbiter") is storage.variants["arbiter"]
    assert storage.named("store") is storage.base
    assert storage.named("someone-else") is storage.base  # a trainee's lab, named by its exercise


# -- choosing variants ------------------------------------------------------------------------------


def test_choose_keeps_order_expands_all_and_drops_repeats():
    available = ("a", "b", "c")
    assert variants.choose(["c", "a"], available) == ["c", "a"]
    assert variants.choose(["all"], available) == ["a", "b", "c"]
    assert variants.choose(["base", "all", "b"], available) == ["base", "a", "b", "c"]
    assert variants.choose(["b", "b", "base"], available) == ["b", "base"]


def test_select_gives_the_labs(storage):
    assert [lab.name for lab in storage.select(["base", "arbiter"])] == ["store", "store-arbiter"]
    assert [lab.name for lab in storage.select(["all"])] == [lab.name for lab in storage.variants.values()]
    assert storage.every()[0] is storage.base


def test_an_unknown_variant_points_at_variants_and_suggests(storage):
    with pytest.raises(LabFileError) as info:
        storage.select(["arbitre"])
    err = info.value
    assert (err.line, err.col) == (STORAGE.count("\n") + 1, 1)  # the `variants:` line
    assert err.message == ("unknown variant 'arbitre' (known: arbiter, nfs-v3, big-brick, no-nfs, hv2, base, all); did you mean 'arbiter'?")


def test_an_unknown_variant_of_a_file_without_variants(tmp_path):
    file = load_lab_file(lab_file(tmp_path, "nodes: {a: {}}\n"))
    with pytest.raises(LabFileError) as info:
        file.select(["arbiter"])
    assert (info.value.line, info.value.col) == (1, 1)
    assert info.value.message == "unknown variant 'arbiter': this lab file has no 'variants:' mapping (only 'base', its own lab)"
    assert file.select(["base"]) == [file.base]


def test_load_lab_takes_one_variant(storage, tmp_path):
    path = lab_file(tmp_path, STORAGE + VARIANTS)
    assert load_lab(path, "arbiter") == storage.variants["arbiter"]
    assert load_lab(path, "base") == storage.base
    with pytest.raises(LabFileError, match="'all' is 5 labs here: name one variant"):
        load_lab(path, "all")


# -- errors and where they point --------------------------------------------------------------------


def error_of(tmp_path: Path, text: str) -> tuple[int, int, str]:
    with pytest.raises(LabFileError) as info:
        load_lab_file(lab_file(tmp_path, text))
    return info.value.line, info.value.col, info.value.message


def test_a_base_key_made_wrong_by_a_variant_is_named_at_the_base(tmp_path):
    text = "nodes:\n  hv1: {roles: [hypervisor]}\n  a: {}\nroles:\n  hypervisor: {}\nvariants:\n  bare: {nodes: {hv1: null}}\n"
    assert error_of(tmp_path, text) == (5, 3, "variant 'bare': settings for role 'hypervisor' are given but no node has that role")


def test_a_key_a_variant_adds_is_named_in_the_variant(tmp_path):
    text = "nodes:\n  a: {}\nvariants:\n  more:\n    roles:\n      gluster: {}\n"
    assert error_of(tmp_path, text) == (6, 7, "variant 'more': settings for role 'gluster' are given but no node has that role")


def test_a_null_inside_a_new_mapping_removes_nothing(tmp_path):
    text = "nodes:\n  a: {}\nvariants:\n  v: {nodes: {b: {display: null}}}\n"
    line, col, message = error_of(tmp_path, text)
    assert (line, col) == (4, 19)
    assert message.startswith("variant 'v': 'display: null' removes a key the lab does not have (nodes: b: display;")


def test_a_repeated_key_in_a_variant(tmp_path):
    text = "nodes:\n  a: {}\nvariants:\n  v: {nodes: {a: {vcpus: 2, vcpus: 3}}}\n"
    assert error_of(tmp_path, text) == (4, 29, "variant 'v': duplicate key 'vcpus' in 'nodes: a' (first at line 4)")


def test_a_variant_that_is_empty_is_an_error_and_an_empty_mapping_is_not(tmp_path):
    assert error_of(tmp_path, "nodes: {a: {}}\nvariants:\n  v:\n") == (
        3,
        5,
        "variant 'v' must be a mapping (key: value lines), got nothing",
    )
    file = load_lab_file(lab_file(tmp_path, "nodes: {a: {}}\nvariants:\n  v: {}\n"))
    assert file.variants["v"].nodes == file.base.nodes


def test_too_many_variants(tmp_path):
    text = "nodes: {a: {}}\nvariants:\n" + "".join(f"  v{i}: {{}}\n" for i in range(variants.MAX_VARIANTS + 1))
    assert error_of(tmp_path, text) == (
        variants.MAX_VARIANTS + 3,
        3,
        f"a lab file holds at most {variants.MAX_VARIANTS} variants (each is a lab brought up of its own)",
    )


def test_the_base_is_wrong_before_any_variant_is_read(tmp_path):
    text = "nodes:\n  a: {vcpus: 0}\nvariants:\n  v: {nodes: {a: {vcpus: 2}}}\n"
    assert error_of(tmp_path, text) == (2, 14, "vcpus of node 'a' 0 is out of range: use 1 to 64")


VARIANT_SEED = "nodes:\n  a: {roles: [nfs-server]}\n  hv: {roles: [hypervisor]}\n" + textwrap.dedent(
    """\
    roles:
      nfs-server: {exports: [{path: /srv/x, clients: mgmt}]}
      hypervisor: {netfs_pools: [{name: p, server: a, path: /srv/x}]}
    variants:
      v3: {roles: {hypervisor: {netfs_pools: [{name: p, server: a, path: /srv/x, mount_options: [vers=3]}]}}}
      bare: {nodes: {hv: null}, roles: {hypervisor: null}}
      more: {nodes: {b: {memory: 1G}}}
    """
)


@given(mutated_text(VARIANT_SEED))
@settings(FUZZ, max_examples=150)
def test_mutated_variants_load_or_fail_cleanly(tmp_path_factory, text: str) -> None:
    """As the loader fuzzing (test_loader_fuzz.py), on a file with variants: every variant's lab renders too."""
    path = str(tmp_path_factory.getbasetemp() / "variants.yaml")  # never written: the templates check finds no folder
    try:
        file = parse_lab_file(text, path, default_name="fuzz")
    except LabFileError as err:
        assert err.path == path and position_in(text, err.line, err.col), str(err)[:300]
        return
    for lab in file.every():
        check_lab(lab)


def test_the_readme_example_loads():
    """The example of README's "Variants, a matrix and a baseline"."""
    section = (ROOT / "README.md").read_text().split("### Variants, a matrix and a baseline\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    file = parse_lab_file(example, "gluster-matrix.yaml", default_name="gluster-matrix")
    assert [lab.name for lab in file.every()] == [
        "gluster-matrix",
        "gluster-matrix-arbiter",
        "gluster-matrix-disperse",
        "gluster-matrix-two-hv",
        "gluster-matrix-no-ping",
    ]
    assert file.variants["no-ping"].gluster.ping_timeout != file.base.gluster.ping_timeout == 5


def test_the_readme_error_example_is_what_the_loader_says():
    section = (ROOT / "README.md").read_text().split("### Variants, a matrix and a baseline\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    shown = section.split("```\ngluster-matrix.yaml:", 1)[1].split("\n", 1)[0]
    with pytest.raises(LabFileError) as info:
        parse_lab_file(example + "  one-net: {networks: {storage: null}}\n", "gluster-matrix.yaml", default_name="gluster-matrix")
    assert str(info.value) == f"gluster-matrix.yaml:{shown}"


# -- releases -----------------------------------------------------------------------------------------


def test_a_lab_runs_on_bookworm_unless_it_or_its_variant_names_another_release(tmp_path):
    file = load_lab_file(lab_file(tmp_path, STORAGE + VARIANTS + "  on-trixie: {release: trixie}\n"))
    assert file.base.release == "bookworm" and file.lab("arbiter").release == "bookworm"
    assert file.lab("on-trixie").release == "trixie" and file.lab("on-trixie").name == "store-on-trixie"
    assert load_lab_file(lab_file(tmp_path, "release: trixie\n" + STORAGE, "t.yaml")).base.release == "trixie"


def test_a_variant_with_an_unknown_release_names_its_line(tmp_path):
    path = lab_file(tmp_path, STORAGE + "variants:\n  old: {release: buster}\n")
    with pytest.raises(LabFileError) as err:
        load_lab_file(path)
    assert (err.value.line, err.value.message) == (
        len(STORAGE.splitlines()) + 2,
        "variant 'old': release 'buster' is not a Debian release kvmlab builds images of (bookworm, trixie)",
    )
