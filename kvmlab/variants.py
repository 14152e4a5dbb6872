"""Variants of a lab: the `variants:` mapping of a lab file, each entry merged over the file's own mapping.

The merge works on the composed YAML nodes, not on plain data, so that every value of the merged lab keeps
its mark: an error in a value a variant sets points at its line under `variants:`, an error in a value of the
base at the base's line. It follows JSON Merge Patch (RFC 7386): mappings merge key by key, anything else
(a list, a scalar) replaces, and a null removes the key. Nothing here changes a node of the file: merged
mappings are new nodes, so the base and every other variant read the file as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from yaml.nodes import MappingNode, Node

from kvmlab.yamlread import Fields, Reader, is_null, quote, suggest

KEY = "variants"
BASE, ALL = "base", "all"  # words of the command line (`--variant base`, `--variant all`), so no variant is named so
RESERVED = (BASE, ALL)
# Each variant is a bring-up of its own (minutes under TCG): a file with more is a generated or broken one,
# and parsing each one costs as much as parsing the lab.
MAX_VARIANTS = 64


def lab_name(base: str, variant: str) -> str:
    """The name of a variant's lab: its own libvirt objects, saved state and artifacts, never the base's."""
    return f"{base}-{variant}"


def read(reader: Reader, top: Fields, base_name: str) -> Fields:
    """The variants of a lab file (name -> (key node, overrides node)), each checked for its name and shape."""
    if KEY not in top:
        return {}
    fields = reader.named_mapping(top[KEY][1], KEY)
    for number, (name, (key, value)) in enumerate(fields.items(), start=1):
        if number > MAX_VARIANTS:
            raise reader.fail(key, f"a lab file holds at most {MAX_VARIANTS} variants (each is a lab brought up of its own)")
        reader.name(key, "variant name")
        if name in RESERVED:
            raise reader.fail(
                key, f"variant name '{name}' is reserved: `--variant {BASE}` runs the file's own lab, `--variant {ALL}` every variant"
            )
        own = reader.mapping(value, f"variant '{name}'", ())
        if KEY in own:
            raise reader.fail(own[KEY][0], f"variant '{name}' has variants of its own: a variant is one set of overrides; remove this key")
        if "name" in own:
            raise reader.fail(
                own["name"][0], f"variant '{name}' sets 'name': a variant's lab is named '{lab_name(base_name, name)}'; remove this key"
            )
    return fields


def apply(reader: Reader, root: Node, overrides: Node) -> MappingNode:
    """The lab file's top mapping ROOT with a variant's OVERRIDES merged in, and without `variants:`."""
    merged = _Merger(reader).merge(root, overrides, ())
    own = [(k, v) for k, v in merged.value if k.value != KEY]
    return MappingNode(merged.tag, own, merged.start_mark, merged.end_mark, merged.flow_style)


class _Merger:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        # Merged pairs by (base node, override node): an override that aliases one anchor many times
        # is merged once, not once per path to it (which grows exponentially with nested aliases).
        self._done: dict[tuple[int, int], MappingNode] = {}

    def merge(self, base: Node | None, over: Node, path: tuple[str, ...]) -> Node:
        """OVER merged onto BASE (None: nothing there yet); PATH names the place for errors."""
        if not isinstance(over, MappingNode):
            return over  # a list or a scalar replaces whatever was there
        if not isinstance(base, MappingNode):
            base = None  # a mapping replacing a scalar or a list is merged into nothing, which drops its nulls
        memo = (id(base), id(over))
        if memo not in self._done:
            self._done[memo] = self._merge_mappings(base, over, path)
        return self._done[memo]

    def _merge_mappings(self, base: MappingNode | None, over: MappingNode, path: tuple[str, ...]) -> MappingNode:
        where = f"'{': '.join(path)}'" if path else "the lab"
        # Read as the loader reads them: `<<` merge keys resolved, so an override can change or remove a merged key.
        pairs = dict(self.reader.mapping(base, where, ())) if base is not None else {}
        for name, (key, value) in self.reader.mapping(over, where, ()).items():
            if is_null(value):
                if name not in pairs:
                    raise self.reader.fail(key, _removes_nothing(name, path, tuple(pairs)))
                del pairs[name]
            elif name in pairs and isinstance(pairs[name][1], MappingNode) and isinstance(value, MappingNode):
                # Merged key by key: the base's key keeps its place (node order is address order).
                pairs[name] = (pairs[name][0], self.merge(pairs[name][1], value, (*path, name)))
            else:
                pairs[name] = (key, self.merge(None, value, (*path, name)))
        shape = base if base is not None else over
        return MappingNode(shape.tag, list(pairs.values()), shape.start_mark, shape.end_mark, shape.flow_style)


def _removes_nothing(name: str, path: tuple[str, ...], known: tuple[str, ...]) -> str:
    at = ": ".join((*path, quote(name)))
    add = f"to add it with its defaults write '{quote(name)}: {{}}'"
    return f"'{quote(name)}: null' removes a key the lab does not have ({at}; {add}){suggest(name, known)}"


def choose(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The variants WANTED on the command line, in that order, once each: `all` is every variant in file order,
    `base` the file's own lab. Raises UnknownVariant for a name the file does not have."""
    chosen: list[str] = []
    for name in wanted:
        if name == ALL:
            names = list(available)
        elif name == BASE or name in available:
            names = [name]
        else:
            raise UnknownVariant(name, available)
        chosen += [n for n in names if n not in chosen]
    return chosen


class UnknownVariant(ValueError):
    def __init__(self, name: str, available: Sequence[str]) -> None:
        if available:
            message = f"unknown variant '{quote(name)}'{suggest(name, [*available, BASE, ALL])}"
        else:
            message = f"unknown variant '{quote(name)}': this lab file has no 'variants:' mapping (only '{BASE}', its own lab)"
        super().__init__(message)
        self.message = message
