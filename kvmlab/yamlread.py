"""Reading a composed YAML tree with its marks, so that every error names file:line:col.

The loader reads the lab's top level with it; each role's settings parser reads
its own `roles:` entry with it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import TypeVar

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kvmlab.errors import LabFileError

PATH_RE = re.compile(r"^/[A-Za-z0-9._@%+=:,/-]*$")  # paths go into config files and shell commands: no spaces, quotes or controls
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")  # node, network, disk: fits a hostname and a disk serial
LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# Exact arithmetic: a size of a few hundred digits is out of range, not a float overflow.
MIB = Decimal(2**20)
UNIT_MIB = {"": 1 / MIB, "B": 1 / MIB, "K": 1 / Decimal(1024), "M": Decimal(1), "G": Decimal(1024), "T": MIB}
MAX_DIGITS = 30  # longer numbers are out of every range; int() of thousands of digits is refused or slow
MERGE_TAG = "tag:yaml.org,2002:merge"
EXTENSION_KEYS = "x-*"  # in a mapping's allowed keys: any 'x-…' key is accepted and left unread (a home for anchors)
DISK_RANGE_MIB = (16, 2 * 1024 * 1024)

NAME_HINT = "use 1-15 lowercase letters, digits or '-', starting with a letter"
LAB_NAME_HINT = "use 1-32 lowercase letters, digits or '-', starting with a letter"

T = TypeVar("T")

Fields = dict[str, tuple[Node, Node]]  # key -> (key node, value node)


class Reader:
    """Walks a composed YAML tree, keeping marks so errors point at the user's text."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._merging: set[int] = set()  # mappings whose merge keys are being read: a loop through anchors ends here
        self._merge_cache: dict[tuple[int, tuple[str, ...]], Fields] = {}

    def fail(self, node: Node, message: str) -> LabFileError:
        mark = node.start_mark
        return LabFileError(self.path, mark.line + 1, mark.column + 1, message)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping (key: value lines), got {kind(node)}")
        out: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if key.tag == MERGE_TAG:
                # `<<: *anchor` (YAML's merge key): the anchored mapping's keys, unless this mapping sets them itself.
                for source in self._merge_sources(value, what):
                    for name, pair in self._merged(node, source, what, allowed).items():
                        merged.setdefault(name, pair)
                continue
            name = self.scalar_text(key, f"a key of {what}")
            if name in out:
                raise self.fail(key, f"duplicate key '{quote(name)}' in {what} (first at line {out[name][0].start_mark.line + 1})")
            if allowed and name not in allowed and not (EXTENSION_KEYS in allowed and name.startswith("x-")):
                raise self.fail(key, f"unknown key '{quote(name)}' in {what}{suggest(name, allowed)}")
            out[name] = (key, value)
        return {**{k: v for k, v in merged.items() if k not in out}, **out}

    def _merged(self, into: Node, source: Node, what: str, allowed: tuple[str, ...]) -> Fields:
        """SOURCE's keys, read once however often anchors repeat it (nested merges would otherwise grow exponentially)."""
        if id(source) in self._merging:
            raise self.fail(source, f"a merge key '<<' in {what} merges a mapping into itself (through its anchor): remove it")
        cache_key = (id(source), allowed)
        if cache_key not in self._merge_cache:
            self._merging.add(id(into))
            try:
                self._merge_cache[cache_key] = self.mapping(source, what, allowed)
            finally:
                self._merging.discard(id(into))
        return self._merge_cache[cache_key]

    def _merge_sources(self, value: Node, what: str) -> list[Node]:
        sources = value.value if isinstance(value, SequenceNode) else [value]
        for source in sources:
            if not isinstance(source, MappingNode):
                raise self.fail(source, f"a merge key '<<' in {what} takes a mapping or a list of them (<<: *common), got {kind(source)}")
        return list(sources)

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
            raise self.fail(node, f"{what} must be a non-empty string, got '{quote(text)}'")
        return text

    def name(self, node: Node, what: str) -> str:
        text = self.scalar_text(node, what)
        if not NAME_RE.match(text):
            raise self.fail(node, f"{what} '{quote(text)}' is not a valid name: {NAME_HINT}")
        return text

    def identifier(self, node: Node, what: str, pattern: re.Pattern[str], example: str) -> str:
        """A name that goes into a service's config and commands (a Ceph pool, an IQN): PATTERN's characters only."""
        text = self.string(node, what)
        if not pattern.match(text):
            raise self.fail(node, f"{what} '{quote(text)}' is not valid: write e.g. {example}")
        return text

    def lab_name(self, node: Node) -> str:
        text = self.scalar_text(node, "lab name")
        if not LAB_NAME_RE.match(text):
            raise self.fail(node, f"lab name '{quote(text)}' is not valid: {LAB_NAME_HINT}")
        return text

    def integer(self, node: Node, what: str, bounds: tuple[int, int]) -> int:
        text = self.scalar_text(node, what)
        if node.tag != "tag:yaml.org,2002:int":
            raise self.fail(node, f"{what} must be a whole number between {bounds[0]} and {bounds[1]}, got '{quote(text)}'")
        if len(text) > MAX_DIGITS:
            raise self.fail(node, f"{what} {quote(text)} is out of range: use {bounds[0]} to {bounds[1]}")
        # YAML's own reading of the number: 0x1f, 0o17, 017, 1_000 and 1:30 (base 60) are all ints to YAML.
        try:
            value = int(SafeConstructor().construct_yaml_int(node))
        except (ValueError, IndexError):  # an explicit `!!int two`
            raise self.fail(node, f"{what} must be a whole number between {bounds[0]} and {bounds[1]}, got '{quote(text)}'") from None
        if not bounds[0] <= value <= bounds[1]:
            raise self.fail(node, f"{what} {value} is out of range: use {bounds[0]} to {bounds[1]}")
        return value

    def size_mib(self, node: Node, what: str, bounds: tuple[int, int]) -> int:
        text = self.scalar_text(node, what)
        match = SIZE_RE.match(text)
        if not match or node.tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int"):
            raise self.fail(node, f"{what} '{quote(text)}' is not a size: write e.g. 512M, 2G or 1.5GiB")
        unit = (match.group(2) or "").upper()[:1]
        if node.tag == "tag:yaml.org,2002:int" and not match.group(2):
            unit = "M"  # a bare number is MiB, like virsh's default
        impossible = f"{what} {quote(text.strip())} is impossible: it must be between {fmt_mib(bounds[0])} and {fmt_mib(bounds[1])}"
        if len(match.group(1)) > MAX_DIGITS:
            raise self.fail(node, impossible)
        mib = int(Decimal(match.group(1)) * UNIT_MIB[unit])
        if not bounds[0] <= mib <= bounds[1]:
            raise self.fail(node, impossible)
        return mib

    def names_list(self, node: Node, what: str, known: tuple[str, ...], kind: str) -> tuple[str, ...]:
        items: list[str] = []
        for item in self.sequence(node, what):
            text = self.scalar_text(item, f"an entry of {what}")
            if text not in known:
                raise self.fail(item, f"unknown {kind} '{quote(text)}' in {what}{suggest(text, known)}")
            if text in items:
                raise self.fail(item, f"{kind} '{quote(text)}' is listed twice in {what}")
            items.append(text)
        return tuple(items)

    def one_of(self, node: Node, what: str, known: tuple[str, ...], among: str) -> str:
        """A single name that must be one of KNOWN, e.g. a pool's network among its server's networks."""
        text = self.scalar_text(node, what)
        if text not in known:
            close = difflib.get_close_matches(text, list(known), n=1) if len(text) < 100 else []
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.fail(node, f"{what} '{quote(text)}' is not {among} ({', '.join(known) or 'none'}){hint}")
        return text

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
    return f"'{quote(node.value)}'" if node.value != "" else "nothing"


def quote(text: str, limit: int = 60) -> str:
    """TEXT as an error message quotes it: a megabyte-long name is not echoed whole."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}…{text[-8:]} ({len(text)} characters)"


def suggest(word: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1) if len(word) < 100 else []
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f" (known: {', '.join(known) or 'none'}){hint}"


def fmt_mib(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def as_seq(node: Node) -> SequenceNode:
    return SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)


def abs_path(reader: Reader, node: Node, what: str) -> str:
    text = reader.string(node, what)
    if not PATH_RE.match(text) or "//" in text:
        raise reader.fail(node, f"{what} '{quote(text)}' must be an absolute path without spaces or quotes, e.g. /srv/nfs/vms")
    return text.rstrip("/") or "/"


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def boolean(reader: Reader, node: Node, what: str) -> bool:
    if node.tag != "tag:yaml.org,2002:bool":
        raise reader.fail(node, f"{what} must be true or false, got '{reader.scalar_text(node, what)}'")
    return str(node.value).lower() in ("true", "yes", "on")
