"""A user's own lab: roles from the registry, checks chosen by role, a templates folder, the lab marker's path."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvmlab import render, roles
from kvmlab.errors import HarnessError, LabFileError
from kvmlab.lab import StepFailure
from kvmlab.loader import load_lab
from kvmlab.verify import ERROR, FAIL, PASS, checks_for, run_checks, summary, table, write_junit
from kvmlab_fixtures.options import lab_file

HERE = Path(__file__).parent / "own_labs"
REPO_LABS = Path(__file__).parents[2] / "labs"


def test_every_role_package_brings_settings_files_and_checks():
    keys = roles.settings_keys()
    assert set(roles.known_roles()) == {r for names in keys.values() for r in names}
    for package in roles.packages():
        assert package.image_packages, package.settings.key
        assert package.checks, f"role package {package.settings.key} has no checks"
        for check in package.checks:
            assert check.role in roles.known_roles(), check.id
    ids = [c.id for c in roles.all_checks()]
    assert len(ids) == len(set(ids)), "check ids must be unique"


def test_the_users_lab_gets_the_checks_of_its_roles_only():
    lab = load_lab(HERE / "mine.yaml")
    chosen = {c.role for c in checks_for(lab)}
    assert chosen == {"nfs-server", "iscsi-target", "gluster", "hypervisor"}
    assert "nfs-server::pool-clients-allowed" in {c.id for c in checks_for(lab)}


def test_a_check_that_does_not_apply_is_left_out():
    lab = load_lab(HERE / "mine.yaml")
    no_pools = replace(lab, settings={**lab.settings, "hypervisor": replace(lab.hypervisor, netfs_pools=())})
    ids = {c.id for c in checks_for(no_pools)}
    assert "hypervisor::netfs-pools-active" not in ids
    assert "hypervisor::default-pool" in ids


def test_checks_narrowed_by_role_or_id_and_an_unknown_name_says_what_exists():
    lab = load_lab(HERE / "mine.yaml")
    assert {c.role for c in checks_for(lab, ["gluster"])} == {"gluster"}
    assert [c.id for c in checks_for(lab, ["hypervisor::default-pool"])] == ["hypervisor::default-pool"]
    with pytest.raises(HarnessError, match=r"no check 'glusterr' applies to lab mine .*did you mean 'gluster'\?"):
        checks_for(lab, ["glusterr"])


def test_role_settings_are_attributes_of_the_lab_with_defaults_for_absent_roles():
    lab = load_lab(HERE / "mine.yaml")
    assert lab.nfs_server.exports[0].path == "/srv/images"
    assert lab.ceph is lab.settings["ceph"] and lab.ceph.pool == "KVMpool"  # absent role: its defaults
    with pytest.raises(AttributeError, match="no attribute or role settings 'nosuch'"):
        _ = lab.nosuch


def test_the_labs_templates_folder_overrides_kvmlabs_template():
    lab = load_lab(HERE / "mine.yaml")
    assert lab.templates == str((HERE / "tpl").resolve())
    files = _render(lab)
    assert files["roles/store-a/exports"].startswith("# exports of a user's own template")


def test_a_templates_folder_with_a_file_that_overrides_nothing_is_refused_at_its_line():
    with pytest.raises(LabFileError) as info:
        load_lab(HERE / "badtpl.yaml")
    assert info.value.line == 12
    assert "roles/nfs-server/export.j2" in info.value.message
    assert "exports.j2" in info.value.message


def test_an_unknown_role_names_the_roles_kvmlab_has(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("nodes:\n  a: {roles: [nfs-servr]}\n")
    with pytest.raises(LabFileError) as info:
        load_lab(path)
    assert (info.value.line, info.value.col) == (2, 15)
    assert "unknown role 'nfs-servr'" in info.value.message and "did you mean 'nfs-server'?" in info.value.message


def test_lab_marker_takes_a_bare_name_or_a_file_relative_to_the_test(tmp_path):
    test = tmp_path / "proj" / "test_x.py"
    assert lab_file("smoke", test, REPO_LABS) == (REPO_LABS / "smoke.yaml").resolve()
    assert lab_file("mylab.yaml", test, REPO_LABS) == tmp_path / "proj" / "mylab.yaml"
    assert lab_file("sub/other.yml", test, REPO_LABS) == tmp_path / "proj" / "sub" / "other.yml"


def _fake_check(role: str, name: str, fn):
    return roles.Check(role, name, fn)


def test_run_checks_tells_failures_from_errors_and_keeps_going(tmp_path):
    def ok(_lab):
        pass

    def wrong(_lab):
        raise AssertionError("kvm-a: pool shared is inactive, not running")

    def bare(_lab):
        assert 1 == 2

    def broken(_lab):
        raise KeyError("oops")

    checks = [_fake_check("hypervisor", n, f) for n, f in (("ok", ok), ("wrong", wrong), ("bare", bare), ("broken", broken))]
    results = run_checks(SimpleNamespace(), checks)
    assert [r.outcome for r in results] == [PASS, FAIL, FAIL, ERROR]
    assert results[1].message == "kvm-a: pool shared is inactive, not running"
    assert "assert 1 == 2" in results[2].message
    assert "KeyError" in results[3].message
    text = table(results)
    assert "hypervisor  wrong   FAIL" in text and "kvm-a: pool shared is inactive" in text
    lab = load_lab(HERE / "mine.yaml")
    step = StepFailure("kvm-a", "hypervisor", "clients", "pool-start: access denied")
    write_junit(tmp_path / "r.xml", lab, results, [step])
    xml = (tmp_path / "r.xml").read_text()
    assert 'tests="5"' in xml and 'failures="2"' in xml and 'errors="2"' in xml
    assert 'classname="bring-up" name="kvm-a hypervisor clients"' in xml and "kvm-a: hypervisor clients failed" in xml
    assert 'classname="hypervisor" name="wrong"' in xml and "kvm-a: pool shared is inactive" in xml


def test_checks_of_different_roles_run_side_by_side_and_a_roles_own_checks_in_order():
    gluster_started = threading.Event()
    seen: list[str] = []

    def nfs_waits_for_gluster(_lab):  # run one after another, this would time out
        assert gluster_started.wait(10), "the gluster check did not run beside this one"
        seen.append("nfs")

    def gluster_first(_lab):
        gluster_started.set()
        seen.append("gluster 1")

    def gluster_second(_lab):
        seen.append("gluster 2")

    checks = [
        _fake_check("nfs-server", "a", nfs_waits_for_gluster),
        _fake_check("gluster", "b", gluster_first),
        _fake_check("gluster", "c", gluster_second),
    ]
    results = run_checks(SimpleNamespace(), checks)
    assert [r.check.name for r in results] == ["a", "b", "c"] and {r.outcome for r in results} == {PASS}
    assert seen.index("gluster 1") < seen.index("gluster 2")
    assert "in " in summary(results, 0.5) and "side by side" in summary(results, 0.5)


def _render(lab):
    from kvmlab.keys import new_keypair

    kp = new_keypair("t")
    return render.render_lab(
        render.RenderInput(
            lab=lab,
            placement=render.preview_placement(lab),
            backing=render.Backing("/pool", "digest"),
            accel="tcg",
            ssh_public_key=kp.public_openssh,
            host_keys={n.name: (kp.private_openssh, kp.public_openssh) for n in lab.nodes},
            owner=render.Owner(pid=0, user="u", host="h", boot_id="b", created="c"),
            console_dir="/consoles",
        )
    )
