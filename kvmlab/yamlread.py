"""Reading a composed YAML tree with its marks, so that every error names file:line:col.

The loader reads the lab's top level with it; each role's settings parser reads
its own `roles:` entry with it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kvmlab.errors import LabFileError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")  # node, network, disk: fits a hostname and a disk serial
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
UNIT_MIB = {"": 1 / (1024 * 1024), "B": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
DISK_RANGE_MIB = (16, 2 * 1024 * 1024)

LAB_NAME_HINT = "use 1-32 lowercase letters, digits or '-', starting with a letter"

T = TypeVar("T")

Fields = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


class Reader:
    """Walks a composed YAML tree, keeping marks so errors point at the user's text."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: Node, message: str) -> LabFileError:
        mark = node.start_mark
        return LabFileError(self.path, mark.line + 1, mark.column + 1, message)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines), got {kind(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            name = self.scalar_text(key, f"a key of {what}")
            if name in out:
                raise self.fail(key, f"duplicate key '{name}' in {what} (first at line {out[name][0].start_mark.line + 1})")
            if allowed and name not in allowed:
                raise self.fail(key, f"unknown key '{name}' in {what}{suggest(name, allowed)}")
            out[name] = (key, value)
        return out

    def named_mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        """A mapping whose keys are user-chosen names (nodes, networks)."""
        return self.mapping(node, what, ())

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a list (e.g. [a, b]), got {kind(node)}")
        return list(node.value)

    def scalar_text(self, node: Node, what: str) -> str:
        if not isinstance(node, ScalarNode):
            raise self.fail(node, f"{what} must be a single value, got {kind(node)}")
        return str(node.value)

    def string(self, node: Node, what: str) -> str:
        text = self.scalar_text(node, what)
        if node.tag != "tag:yaml.org,2002:str" or text == "":
            raise self.fail(node, f"{what} must be a non-empty string, got '{text}'")
        return text

    def name(self, node: Node, what: str) -> str:
        text = self.scalar_text(node, what)
        if not NAME_RE.match(text):
            raise self.fail(node, f"{what} '{text}' is not a valid name: use 1-15 lowercase letters, digits or '-', starting with a letter")
        return text

    def lab_name(self, node: Node) -> str:
        text = self.scalar_text(node, "lab name")
        if not LAB_NAME_RE.match(text):
            raise self.fail(node, f"lab name '{text}' is not valid: {LAB_NAME_HINT}")
        return text

    def integer(self, node: Node, what: str, bounds: tuple[int, int]) -> int:
        text = self.scalar_text(node, what)
        if node.tag != "tag:yaml.org,2002:int":
            raise self.fail(node, f"{what} must be a whole number between {bounds[0]} and {bounds[1]}, got '{text}'")
        value = int(text, 0)
        if not bounds[0] <= value <= bounds[1]:
            raise self.fail(node, f"{what} {value} is out of range: use {bounds[0]} to {bounds[1]}")
        return value

    def size_mib(self, node: Node, what: str, bounds: tuple[int, int]) -> int:
        text = self.scalar_text(node, what)
        match = SIZE_RE.match(text)
        if not match or node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int"):
            raise self.fail(node, f"{what} '{text}' is not a size: write e.g. 512M, 2G or 1.5GiB")
        unit = (match.group(2) or "").upper()[:1]
        if node.tag == "tag:yaml.org,2002:int" and not match.group(2):
            unit = "M"  # a bare number is MiB, like virsh's default
        mib = int(float(match.group(1)) * UNIT_MIB[unit])
        if not bounds[0] <= mib <= bounds[1]:
            raise self.fail(node, f"{what} {text} is impossible: it must be between {fmt_mib(bounds[0])} and {fmt_mib(bounds[1])}")
        return mib

    def names_list(self, node: Node, what: str, known: tuple[str, ...], kind: str) -> tuple[str, ...]:
        items: list[str] = []
        for item in self.sequence(node, what):
            text = self.scalar_text(item, f"an entry of {what}")
            if text not in known:
                raise self.fail(item, f"unknown {kind} '{text}' in {what}{suggest(text, known)}")
            if text in items:
                raise self.fail(item, f"{kind} '{text}' is listed twice in {what}")
            items.append(text)
        return tuple(items)

    def optional(self, fields: dict[str, tuple[Node, Node]], key: str, parse: Callable[[Node], T], default: T) -> T:
        return parse(fields[key][1]) if key in fields else default

    def required(self, fields: dict[str, tuple[Node, Node]], key: str, where: Node, what: str) -> Node:
        if key not in fields:
            raise self.fail(where, f"{what} is missing required key '{key}'")
        return fields[key][1]


def kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return f"'{node.value}'" if node.value != "" else "nothing"


def suggest(word: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f" (known: {', '.join(known) or 'none'}){hint}"


def fmt_mib(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def as_seq(node: Node) -> SequenceNode:
    return SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)


def abs_path(reader: Reader, node: Node, what: str) -> str:
    text = reader.string(node, what)
    if not text.startswith("/") or "//" in text or any(c in text for c in " \t'\"\\"):
        raise reader.fail(node, f"{what} '{text}' must be an absolute path without spaces or quotes, e.g. /srv/nfs/vms")
    return text.rstrip("/") or "/"


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def boolean(reader: Reader, node: Node, what: str) -> bool:
    if node.tag != "tag:yaml.org,2002:bool":
        raise reader.fail(node, f"{what} must be true or false, got '{reader.scalar_text(node, what)}'")
    return str(node.value).lower() in ("true", "yes", "on")
