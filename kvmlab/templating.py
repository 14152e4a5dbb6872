"""The one Jinja2 environment every generated text comes from.

Templates are looked up in layers: the lab's override folder (`use_overrides`, or `overrides=` per call), then the
folders of `KVMLAB_TEMPLATES` (os.pathsep-separated), then the built-in templates. A user's file replaces the
built-in file of the same relative path; `builtin/<path>` always names the built-in one, so an override can
`{% include "builtin/roles/nfs-server/exports.j2" %}` and add to it instead of copying it.
"""

from __future__ import annotations

import difflib
import os
import threading
import types
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import TypeAlias

import jinja2

from kvmlab.errors import HarnessError

ENV_VAR = "KVMLAB_TEMPLATES"
BUILTIN_PREFIX = "builtin"
# A file of the built-in set that must exist, so a stray `templates/` folder elsewhere is never taken for ours.
_MARKER = "libvirt/domain.xml.j2"

Overrides: TypeAlias = Path | str | Iterable[Path | str] | None


@lru_cache(maxsize=1)
def templates_dir() -> Path:
    """The built-in templates: kvmlab/templates/ in an installed wheel, the repo's templates/ in a checkout or editable install."""
    package = Path(__file__).resolve().parent
    candidates = (package / "templates", package.parent / "templates")
    for folder in candidates:
        if (folder / _MARKER).is_file():
            return folder
    raise HarnessError(f"built-in templates not found (looked in {', '.join(map(str, candidates))}); reinstall kvmlab")


def builtin_templates() -> list[str]:
    """Relative paths (with '/') of every built-in template."""
    return _listing(templates_dir())


# What use_overrides() set; a plain global rather than a ContextVar because nodes are set up in threads,
# which would start with an empty context and silently lose the lab's overrides.
_active: tuple[Path, ...] = ()
_active_lock = threading.Lock()


class OverrideScope:
    """Returned by use_overrides(): already in force; `with` (or restore()) puts back what was active before."""

    def __init__(self, folders: tuple[Path, ...]) -> None:
        global _active
        with _active_lock:
            self._previous, _active = _active, folders
        self.folders = folders

    def restore(self) -> None:
        global _active
        with _active_lock:
            _active = self._previous

    def __enter__(self) -> tuple[Path, ...]:
        return self.folders

    def __exit__(self, *exc: object) -> None:
        self.restore()


def use_overrides(folder: Overrides) -> OverrideScope:
    """Make `folder` (a lab's `templates:` folder; None for none) the override layer of every render from now on.

    Relative paths are taken from the current directory, so resolve a lab-relative path before passing it.
    Usable as a plain call or as `with use_overrides(folder): ...` to undo it at the end of the block.
    """
    return OverrideScope(_normalize(folder))


def active_overrides() -> tuple[Path, ...]:
    return _active


def env_overrides() -> tuple[Path, ...]:
    raw = os.environ.get(ENV_VAR, "")
    return tuple(Path(p).resolve() for p in raw.split(os.pathsep) if p)


def search_path(overrides: Overrides = None) -> tuple[Path, ...]:
    """Every folder templates come from, first match wins; the built-in folder last.

    `overrides` None means those set by use_overrides(). Hash all of these (not only templates_dir()) when a
    cache key must change with the templates.
    """
    lab = active_overrides() if overrides is None else _normalize(overrides)
    env = env_overrides()
    # A missing folder is an error, not a silent fall back to the built-in templates the user meant to replace.
    for folders, source in ((lab, "the lab's templates"), (env, f"${ENV_VAR}")):
        for folder in folders:
            if not folder.is_dir():
                raise HarnessError(f"template overrides folder {folder} (from {source}) does not exist or is not a directory")
    return (*dict.fromkeys((*lab, *env)), templates_dir())  # a folder named twice keeps its first place


def environment(overrides: Overrides = None) -> jinja2.Environment:
    """The environment for these override folders (None: the active ones); one is built and kept per search path."""
    return _environment(search_path(overrides))


@lru_cache(maxsize=16)
def _environment(folders: tuple[Path, ...]) -> jinja2.Environment:
    builtin = jinja2.FileSystemLoader(str(folders[-1]))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([*(jinja2.FileSystemLoader(str(f)) for f in folders), jinja2.PrefixLoader({BUILTIN_PREFIX: builtin})]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render_template(name: str, context: dict, *, subject: str = "", overrides: Overrides = None) -> str:
    """Render one template; errors name the template file, its line, the folder it came from and what was rendered.

    `overrides` None uses the folders set by use_overrides(); pass a folder (or () for none) to choose per call.
    """
    folders = search_path(overrides)
    env = _environment(folders)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or _find(folders, exc.name or name)
        raise HarnessError(_located(where, exc.lineno, exc.message or str(exc), folders, subject)) from exc
    except jinja2.TemplateNotFound as exc:
        looked = ", ".join(str(f) for f in folders)
        raise HarnessError(f"template not found: {exc.name or name} (looked in {looked}){_for(subject)}") from exc
    except Exception as exc:
        # Undefined variables and errors of filters or tests surface here; jinja2 rewrites the traceback so a
        # template's frame carries its file and line. Without one, the fault is not the template's: let it through.
        frame = _template_frame(exc.__traceback__)
        if frame is None:
            raise
        message = exc.message if isinstance(exc, jinja2.TemplateError) and exc.message else f"{type(exc).__name__}: {exc}"
        raise HarnessError(_located(frame[0], frame[1], message, folders, subject)) from exc


def check_overrides(folder: Path | str) -> list[str]:
    """Problems of an override folder: missing, a file that replaces no built-in template, a template that does not parse.

    Hidden files and files whose name starts with '_' are skipped: the latter are helpers for {% include %} or
    {% import %} in the folder's own templates.
    """
    root = Path(folder)
    if not root.exists():
        return [f"{root}: template overrides folder does not exist"]
    if not root.is_dir():
        return [f"{root}: template overrides folder is not a directory"]
    builtin = builtin_templates()
    known, dirs = set(builtin), {_parent(t) for t in builtin}
    env = _environment((root.resolve(), templates_dir()))
    problems: list[str] = []
    for rel in _listing(root):
        path = root / rel
        if rel not in known and not Path(rel).name.startswith("_"):
            problems.append(f"{path}: overrides no built-in template{_did_you_mean(rel, builtin)}; {_siblings(rel, builtin, dirs)}")
            continue
        try:
            env.parse(path.read_text(encoding="utf-8"), rel, str(path))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{path}:{exc.lineno}: {exc.message}")
        except (UnicodeDecodeError, OSError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
    return problems


# ---- helpers ----


def _normalize(overrides: Overrides) -> tuple[Path, ...]:
    if overrides is None:
        return ()
    items = [overrides] if isinstance(overrides, str | Path) else list(overrides)
    # Resolved now, so the cache key and messages stay right if the current directory changes later.
    return tuple(dict.fromkeys(Path(p).expanduser().resolve() for p in items))


def _listing(root: Path) -> list[str]:
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts) and "__pycache__" not in rel.parts:
            out.append(rel.as_posix())
    return sorted(out)


def _parent(rel: str) -> str:
    parent = Path(rel).parent.as_posix()
    return "" if parent == "." else parent


def _did_you_mean(rel: str, builtin: list[str]) -> str:
    close = difflib.get_close_matches(rel, builtin, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _siblings(rel: str, builtin: list[str], dirs: set[str]) -> str:
    parent = _parent(rel)
    here = [Path(t).name for t in builtin if _parent(t) == parent]
    if here:
        return f"built-in templates in {parent or '.'}/: {', '.join(here)}"
    near = difflib.get_close_matches(parent, sorted(dirs), n=1, cutoff=0.5)
    hint = f" (closest built-in folder: {near[0]}/)" if near else ""
    return f"no built-in templates in {parent or '.'}/{hint}"


def _find(folders: tuple[Path, ...], name: str) -> str:
    if name.startswith(BUILTIN_PREFIX + "/"):
        return str(folders[-1] / name.removeprefix(BUILTIN_PREFIX + "/"))
    for folder in folders:
        if (folder / name).is_file():
            return str(folder / name)
    return name


def _template_frame(tb: types.TracebackType | None) -> tuple[str, int] | None:
    """The innermost frame of template code in a traceback: (template file, line).

    jinja2 replaces each frame of compiled template code by one whose file is the template and whose line is the
    template's line; those frames carry `__jinja_exception__` in their globals.
    """
    found = None
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _origin(path: Path, folders: tuple[Path, ...]) -> str:
    for folder in folders[:-1]:
        if path.is_relative_to(folder):
            return f"override from {folder}"
    return "built-in"


def _located(filename: str, line: int | None, message: str, folders: tuple[Path, ...], subject: str) -> str:
    path = Path(filename)
    # Relative to the current directory when below it (templates/… from the repo root), else the full path.
    shown = path.relative_to(Path.cwd()) if path.is_absolute() and path.is_relative_to(Path.cwd()) else path
    where = f"{shown}:{line}" if line else str(shown)
    return f"{where}: {message} ({_origin(path, folders)} template{_for(subject, sep=', ')})"


def _for(subject: str, sep: str = " ") -> str:
    return f"{sep}for {subject}" if subject else ""
