"""Hypothesis strategies that mutate a lab file: as text, as bytes, and as loaded YAML data.

Each strategy returns the final mutated text (or bytes), so a falsifying example that Hypothesis prints
is itself the reproduction: paste it into a file and run `kvmlab render` on it.
"""

from __future__ import annotations

import copy
import string
from typing import Any

import yaml
from hypothesis import strategies as st

# Pieces of YAML syntax that break structure in interesting ways, plus scalars that resolve to odd types.
YAML_TOKENS = (
    ":",
    ": ",
    "- ",
    "-",
    "[",
    "]",
    "{",
    "}",
    ",",
    "? ",
    "&a ",
    "*a",
    "*b",
    "<<: ",
    "<<: *a",
    "!!python/object ",
    "!!python/object/apply:os.system ",
    "!!int ",
    "!!str ",
    "!!float ",
    "!!binary ",
    "!x ",
    "!<tag:x> ",
    "---\n",
    "...\n",
    "\t",
    "|\n",
    ">-\n",
    "#",
    "%YAML 1.1\n",
    "'",
    '"',
    '"\\0"',
    "\\",
    "@",
    "`",
    "~",
    "null",
    "0x1F",
    "010",
    "1:30",
    "1_000",
    ".inf",
    "2G",
    "9" * 400 + "G",
    "\r",
    "\u2028",
    "\x85",
    "\ufeff",
)
# Explicit alphabets: Hypothesis's full-unicode text strategy would write its charmap cache into the checkout.
ODD_CHARS = "é\u00a0\u2028\u2029\x85\ufeff\x00\x07\x1b\r\t\U0001f600"
ALPHABET = string.ascii_letters + string.digits + string.punctuation + " \n" + ODD_CHARS
SMALL_TEXT = st.text(alphabet=ALPHABET, max_size=12)
NAME_TEXT = st.text(alphabet=string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=8)

BAD_BYTES = (b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80")


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True) or [""]


@st.composite
def text_edit(draw: st.DrawFn, text: str) -> str:
    """One edit of the lab's text: delete, insert, duplicate, re-indent, replace or truncate."""
    op = draw(st.sampled_from(("insert", "delete_chars", "delete_lines", "duplicate_line", "reindent", "replace_char", "truncate")))
    pos = draw(st.integers(0, len(text)))
    lines = _lines(text)
    i = draw(st.integers(0, len(lines) - 1))
    if op == "insert":
        token = draw(st.sampled_from(YAML_TOKENS) | SMALL_TEXT)
        return text[:pos] + token + text[pos:]
    if op == "delete_chars":
        return text[:pos] + text[pos + draw(st.integers(1, 40)) :]
    if op == "delete_lines":
        return "".join(lines[:i] + lines[i + draw(st.integers(1, 3)) :])
    if op == "duplicate_line":
        return "".join(lines[: i + 1] + lines[i:])
    if op == "reindent":
        # Add or remove leading spaces, or lead with a tab (YAML forbids tabs in indentation).
        delta = draw(st.sampled_from((-4, -2, -1, 1, 2, 4, "tab")))
        line = lines[i]
        if delta == "tab":
            line = "\t" + line
        elif isinstance(delta, int) and delta > 0:
            line = " " * delta + line
        else:
            line = line[min(-delta, len(line) - len(line.lstrip(" "))) :]
        return "".join([*lines[:i], line, *lines[i + 1 :]])
    if op == "replace_char":
        return text[:pos] + draw(st.text(alphabet=ALPHABET, min_size=1, max_size=1)) + text[pos + 1 :]
    return text[:pos]  # truncate


@st.composite
def mutated_text(draw: st.DrawFn, seed: str) -> str:
    """SEED after one to four text edits."""
    text = seed
    for _ in range(draw(st.integers(1, 4))):
        text = draw(text_edit(text))
    return text


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: str) -> bytes:
    """SEED as it might sit on disk: another encoding, stray or invalid bytes, a cut multi-byte character."""
    text = draw(mutated_text(seed)) if draw(st.booleans()) else seed
    pos = draw(st.integers(0, len(text)))
    encoding = draw(st.sampled_from(("utf-8", "latin-1", "utf-16", "utf-16-le", "utf-16-be", "utf-8-sig")))
    if encoding == "latin-1":
        text = text[:pos] + draw(st.sampled_from("éüßÅ\xa0")) + text[pos:]  # one byte each in latin-1: invalid UTF-8
    data = text.encode(encoding, errors="replace")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("insert", "flip", "truncate")))
        if op == "insert":
            data = data[:at] + draw(st.sampled_from(BAD_BYTES) | st.binary(min_size=1, max_size=6)) + data[at:]
        elif op == "flip":
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        else:
            data = data[:at]
    return data


# ---- data-level mutations: yaml.safe_load, change the structure, dump back ----


class RawInt(str):
    """Digits written unquoted under YAML's int tag, as a user would type them ('010', '1:30', 5000 nines)."""


class FuzzDumper(yaml.SafeDumper):
    """safe_dump that writes RawInt plain (an explicit !!int only when the text does not look like one)."""


FuzzDumper.add_representer(RawInt, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:int", str(value)))

HUGE = (
    10**300,
    -(10**300),
    2**64,
    2**31 + 1,
    1e308,
    float("inf"),
    float("nan"),
    RawInt("9" * 5000),
    "9" * 400 + "G",
    "9" * 400,
    "1" + "0" * 30 + "T",
)
NEGATIVE = (-1, -(10**6), -0.5, "-5G", "-1M", RawInt("-0x10"))
# YAML 1.1 ints that Python's int(text, 0) refuses, and explicit !!int on words.
ODD_INTS = tuple(
    RawInt(t) for t in ("010", "0_1", "1__0", "1_", "1:30", "190:20:30", "0x_", "0b", "+0b1_0", "two", "0o17", "", "-", "1:", "1.5")
)
# Long values: names, paths, sizes, and words with spaces (a message cannot shorten them by cutting one long word).
LONG = ("a" * 100_000, "/" + "a" * 100_000, "x" * 100_000 + "G", "a" + "-" * 100_000, "lun" + "0" * 100_000, "word " * 20_000)
# Names of nothing: nodes, networks, disks, LUNs, exports and backends that no seed defines.
GHOSTS = ("ghost", "nfs9", "hv9", "storage9", "mgmt2", "osd9", "lun9", "r9", "brick9", "/srv/nfs/ghost", "/srv/ghost", "tape")
WRONG_TYPE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    SMALL_TEXT,
    st.lists(st.integers() | SMALL_TEXT, max_size=3),
    st.dictionaries(NAME_TEXT, st.integers() | st.none(), max_size=2),
)
DATA_OPS = ("wrong_type", "drop", "ghost", "misspell_key", "unknown_key", "huge", "negative", "odd_int", "long", "node_field", "crowd")
# The values of "huge", "negative" and "odd_int", and what "node_field" sets a node's numbers to.
ODD_VALUES = {"huge": HUGE, "negative": NEGATIVE, "odd_int": ODD_INTS}
Path = tuple[Any, ...]


def _paths(doc: Any, prefix: Path = ()) -> list[Path]:
    """Every place below the root that holds a value, parents first."""
    out: list[Path] = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _parent(doc: Any, path: Path) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def one_edit(word: str, draw: st.DrawFn) -> str:
    """WORD with one character inserted, deleted, replaced or two neighbours swapped."""
    i = draw(st.integers(0, max(len(word) - 1, 0)))
    op = draw(st.sampled_from(("insert", "delete", "replace", "swap")))
    char = draw(st.sampled_from(string.ascii_lowercase + "-_"))
    if op == "insert":
        return word[:i] + char + word[i:]
    if op == "delete" and len(word) > 1:
        return word[:i] + word[i + 1 :]
    if op == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + char + word[i + 1 :]


def _rename(mapping: dict, old: Any, new: Any) -> dict:
    """MAPPING with key OLD renamed, in place in the order (node order is boot and address order)."""
    return {new if k == old else k: v for k, v in mapping.items()}


@st.composite
def data_edit(draw: st.DrawFn, doc: dict) -> dict:
    """One change of the loaded lab, in place; returns DOC."""
    op = draw(st.sampled_from(DATA_OPS))
    paths = _paths(doc)
    if op in ("ghost", "huge", "negative", "odd_int", "long"):
        # Values, not whole sections: the leaves are where sizes, counts and names are.
        paths = [p for p in paths if not isinstance(_parent(doc, p)[p[-1]], dict | list)] or paths
    path = draw(st.sampled_from(paths))
    parent, key = _parent(doc, path), path[-1]
    nodes = doc.get("nodes") if isinstance(doc.get("nodes"), dict) else {}
    if op == "node_field":
        # A node's numbers are few among a lab's values: aim at them, since they are converted to int.
        spec = nodes[draw(st.sampled_from(list(nodes)))] if nodes else None
        if isinstance(spec, dict):
            spec[draw(st.sampled_from(("vcpus", "memory")))] = draw(st.sampled_from(HUGE + NEGATIVE + ODD_INTS) | st.integers(0, 100))
        return doc
    if op == "crowd":
        # Still valid: a smaller subnet and more nodes, so that loadable labs reach the address checks.
        nets = doc.get("networks", {})
        if isinstance(nets, dict):
            nets = doc["networks"] = nets or {"mgmt": {}}
            nets[draw(st.sampled_from(sorted(nets, key=str)))] = {"prefix": draw(st.integers(24, 28))}
        if isinstance(doc.get("nodes"), dict):
            for n in range(draw(st.integers(0, 24))):
                doc["nodes"][f"x{n}"] = {}
        return doc
    if op == "drop":
        del parent[key]
        return doc
    if op == "misspell_key" or op == "unknown_key":
        dicts = [p for p in [(), *paths] if isinstance(_parent(doc, (*p, None)), dict)]
        target = _parent(doc, (*draw(st.sampled_from(dicts)), None))
        if op == "unknown_key" or not target:
            target[draw(NAME_TEXT | st.sampled_from(GHOSTS))] = draw(WRONG_TYPE)
            return doc
        old = draw(st.sampled_from(list(target)))
        renamed = _rename(target, old, one_edit(str(old), draw))
        target.clear()
        target.update(renamed)
        return doc
    if op == "wrong_type":
        value: Any = draw(WRONG_TYPE)
    elif op == "ghost":
        current = parent[key]
        value = one_edit(current, draw) if isinstance(current, str) and current and draw(st.booleans()) else draw(st.sampled_from(GHOSTS))
    elif op == "long":
        value = draw(st.sampled_from(LONG))
        if isinstance(parent, dict) and draw(st.booleans()):
            # A huge key: a node, network or disk name, or a setting's name.
            renamed = _rename(parent, key, value)
            parent.clear()
            parent.update(renamed)
            return doc
    else:
        value = draw(st.sampled_from(ODD_VALUES[op]))
    parent[key] = value
    return doc


@st.composite
def mutated_data(draw: st.DrawFn, seed: str) -> str:
    """SEED loaded, changed one to four times, dumped back as YAML text."""
    doc = copy.deepcopy(yaml.safe_load(seed))
    for _ in range(draw(st.integers(1, 4))):
        if not isinstance(doc, dict) or not doc:
            break
        doc = draw(data_edit(doc))
    if isinstance(doc, dict) and draw(st.integers(0, 9)) == 0:
        # Last, so no later change can point it at a real folder (the loader would list a whole tree).
        doc["templates"] = draw(st.sampled_from(("nope", "a\x00b", "x" * 5000, "t/" * 3000, ".", "empty")))
    return yaml.dump(doc, Dumper=FuzzDumper, sort_keys=False, allow_unicode=True)


# ---- deep nesting: built as text, since safe_dump itself would recurse ----

DEEP_SHAPES = {
    "open_lists": lambda d: "[" * d,
    "closed_lists": lambda d: "[" * d + "]" * d,
    "flow_maps": lambda d: "{a: " * d + "1" + "}" * d,
    "block_lists": lambda d: "- " * d + "x",
    "anchored": lambda d: "".join(f"&a{i} [" for i in range(d)) + "]" * d,
}
# Where the deep value goes: the whole file, the nodes mapping, a node, a node's memory, a role setting.
DEEP_PLACES = {
    "root": "{}\n",
    "nodes": "nodes: {}\n",
    "node": "nodes:\n  a: {}\n",
    "memory": "nodes:\n  a: {{memory: {}}}\n",
    "roles": "nodes:\n  a: {{roles: [nfs-server]}}\nroles:\n  nfs-server: {{exports: {}}}\n",
}


@st.composite
def deep_text(draw: st.DrawFn) -> str:
    shape = DEEP_SHAPES[draw(st.sampled_from(sorted(DEEP_SHAPES)))]
    place = DEEP_PLACES[draw(st.sampled_from(sorted(DEEP_PLACES)))]
    return place.format(shape(draw(st.integers(100, 5000))))
