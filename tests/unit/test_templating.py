"""Template lookup: user override folders layered over the built-in templates, and errors that point at the template line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmlab import templating
from kvmlab.errors import HarnessError
from kvmlab.templating import check_overrides, render_template, search_path, templates_dir, use_overrides

EXPORTS = "roles/nfs-server/exports.j2"
EXPORTS_CTX = {"exports": [{"path": "/srv/a", "clients": "*", "options": "rw"}]}


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch):
    """No override leaks in from the environment or out to other tests."""
    monkeypatch.delenv(templating.ENV_VAR, raising=False)
    with use_overrides(None):
        yield


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_templates_are_found():
    assert (templates_dir() / "libvirt/domain.xml.j2").is_file()
    assert EXPORTS in templating.builtin_templates()


def test_override_wins_and_other_templates_fall_back(tmp_path: Path):
    builtin = render_template(EXPORTS, EXPORTS_CTX)
    write(tmp_path, EXPORTS, "# mine\n{% for e in exports %}{{ e.path }}\n{% endfor %}")

    assert render_template(EXPORTS, EXPORTS_CTX, overrides=tmp_path) == "# mine\n/srv/a\n"
    # A template the folder does not hold still comes from the built-in set.
    pool = {"type": "dir", "name": "p", "target": "/t", "mode": "0700"}
    assert render_template("libvirt/pool.xml.j2", pool, overrides=tmp_path) == render_template("libvirt/pool.xml.j2", pool)
    # Without overrides the built-in one is used again: environments are kept per override folder.
    assert render_template(EXPORTS, EXPORTS_CTX) == builtin


def test_use_overrides_applies_until_the_block_ends(tmp_path: Path):
    write(tmp_path, EXPORTS, "lab\n")
    with use_overrides(tmp_path) as folders:
        assert folders == (tmp_path.resolve(),)
        assert render_template(EXPORTS, EXPORTS_CTX) == "lab\n"
    assert render_template(EXPORTS, EXPORTS_CTX) != "lab\n"


def test_lab_folder_comes_before_env_folder_before_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    lab, user = tmp_path / "lab", tmp_path / "user"
    write(lab, EXPORTS, "lab\n")
    write(user, EXPORTS, "user\n")
    write(user, "seed/hosts.j2", "user hosts\n")
    monkeypatch.setenv(templating.ENV_VAR, str(user))

    assert search_path(lab) == (lab.resolve(), user.resolve(), templates_dir())
    assert render_template(EXPORTS, {}, overrides=lab) == "lab\n"
    assert render_template(EXPORTS, {}) == "user\n"
    assert render_template("seed/hosts.j2", {}, overrides=lab) == "user hosts\n"


def test_override_can_include_the_builtin_template(tmp_path: Path):
    write(tmp_path, EXPORTS, '{% include "builtin/' + EXPORTS + '" %}/srv/extra *(ro)\n')
    builtin = render_template(EXPORTS, EXPORTS_CTX)
    assert render_template(EXPORTS, EXPORTS_CTX, overrides=tmp_path) == builtin + "/srv/extra *(ro)\n"


def test_missing_override_folder_is_an_error_not_a_silent_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(HarnessError, match=r"template overrides folder .*nope \(from the lab's templates\) does not exist"):
        render_template(EXPORTS, EXPORTS_CTX, overrides=tmp_path / "nope")
    monkeypatch.setenv(templating.ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(HarnessError, match=r"gone \(from \$KVMLAB_TEMPLATES\)"):
        render_template(EXPORTS, EXPORTS_CTX)


def test_check_overrides_accepts_a_good_folder(tmp_path: Path):
    write(tmp_path, EXPORTS, "{{ exports }}\n")
    write(tmp_path, "roles/nfs-server/_macros.j2", "{% macro m() %}x{% endmacro %}\n")  # a helper, not an override
    write(tmp_path, ".gitkeep", "")
    assert check_overrides(tmp_path) == []


def test_check_overrides_folder_missing_or_a_file(tmp_path: Path):
    assert check_overrides(tmp_path / "nope") == [f"{tmp_path / 'nope'}: template overrides folder does not exist"]
    file = write(tmp_path, "f", "")
    assert check_overrides(file) == [f"{file}: template overrides folder is not a directory"]


def test_check_overrides_names_a_stray_file_with_a_suggestion_and_its_neighbours(tmp_path: Path):
    write(tmp_path, "roles/nfs-server/export.j2", "")
    write(tmp_path, "rols/ceph/ceph.conf.j2", "")
    problems = check_overrides(tmp_path)
    assert problems == [
        f"{tmp_path}/roles/nfs-server/export.j2: overrides no built-in template (did you mean 'roles/nfs-server/exports.j2'?); built-in templates in roles/nfs-server/: exports.j2, nfs.conf.j2",
        f"{tmp_path}/rols/ceph/ceph.conf.j2: overrides no built-in template (did you mean 'roles/ceph/ceph.conf.j2'?); no built-in templates in rols/ceph/ (closest built-in folder: roles/ceph/)",
    ]


def test_check_overrides_reports_a_syntax_error_with_its_line(tmp_path: Path):
    write(tmp_path, EXPORTS, "ok\n{% for e in exports %}\n{{ e.path }\n{% endfor %}\n")
    (problem,) = check_overrides(tmp_path)
    assert problem.startswith(f"{tmp_path}/{EXPORTS}:3: ")


def test_syntax_error_in_override_names_file_line_folder_and_subject(tmp_path: Path):
    write(tmp_path, EXPORTS, "# line 1\n# line 2\n{% if exports %}\n")
    with pytest.raises(HarnessError) as info:
        render_template(EXPORTS, EXPORTS_CTX, subject="node 'nfs1'", overrides=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path.resolve()}/{EXPORTS}:3: ")
    assert "unexpected end of template" in message.lower()
    assert message.endswith(f"(override from {tmp_path.resolve()} template, for node 'nfs1')")


def test_undefined_variable_in_override_names_file_line_folder_and_subject(tmp_path: Path):
    write(
        tmp_path, EXPORTS, "# one\n{% for e in exports %}\n{{ e.path }} {{ e.clients }}({{ e.options }})\n{% endfor %}\n{{ nfs_version }}\n"
    )
    with pytest.raises(HarnessError) as info:
        render_template(EXPORTS, EXPORTS_CTX, subject="node 'nfs1'", overrides=tmp_path)
    assert (
        str(info.value)
        == f"{tmp_path.resolve()}/{EXPORTS}:5: 'nfs_version' is undefined (override from {tmp_path.resolve()} template, for node 'nfs1')"
    )


def test_undefined_attribute_inside_an_included_template_names_the_included_file(tmp_path: Path):
    write(tmp_path, EXPORTS, '{% include "roles/nfs-server/_line.j2" %}\n')
    write(tmp_path, "roles/nfs-server/_line.j2", "{% for e in exports %}\n{{ e.nope }}\n{% endfor %}\n")
    with pytest.raises(HarnessError, match=r"/roles/nfs-server/_line\.j2:2: 'dict object' has no attribute 'nope'"):
        render_template(EXPORTS, EXPORTS_CTX, overrides=tmp_path)


def test_undefined_variable_in_builtin_template_says_built_in():
    with pytest.raises(HarnessError) as info:
        render_template(EXPORTS, {}, subject="node 'nfs1'")
    message = str(info.value)
    assert f"{EXPORTS}:" in message
    assert "'exports' is undefined" in message
    assert message.endswith("(built-in template, for node 'nfs1')")


def test_unknown_template_lists_where_it_looked(tmp_path: Path):
    with pytest.raises(HarnessError, match=r"template not found: roles/x/y\.j2 \(looked in .*\) for node 'a'"):
        render_template("roles/x/y.j2", {}, subject="node 'a'", overrides=tmp_path)


def test_error_of_a_filter_points_at_the_template_line(tmp_path: Path):
    write(tmp_path, EXPORTS, "\n{{ 1 // 0 }}\n")
    with pytest.raises(HarnessError, match=rf"{EXPORTS}:2: ZeroDivisionError: integer division or modulo by zero"):
        render_template(EXPORTS, {}, overrides=tmp_path)
