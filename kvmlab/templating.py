"""The one Jinja2 environment every generated text comes from."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import jinja2

from kvmlab.errors import HarnessError


def templates_dir() -> Path:
    override = os.environ.get("KVMLAB_TEMPLATES")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render_template(name: str, context: dict, *, subject: str = "") -> str:
    """Render one template; errors name the template, its line and what was rendered."""
    try:
        return environment().get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise HarnessError(f"templates/{exc.name or name}:{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        where = f" for {subject}" if subject else ""
        raise HarnessError(f"templates/{name}: {exc.message}{where}") from exc
    except jinja2.TemplateNotFound as exc:
        raise HarnessError(f"template not found: templates/{exc.name}") from exc
