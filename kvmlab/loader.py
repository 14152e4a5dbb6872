"""YAML lab file -> Lab model. Every error names file:line:col and what would be right.

The loader reads the lab's own keys (name, networks, nodes, templates); each role
package parses its entry under `roles:` (kvmlab/roles/<role>/settings.py). A file's
`variants:` are further labs, each its overrides merged over the file (kvmlab/variants.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node

from kvmlab import roles as role_registry
from kvmlab import variants, yaml_errors
from kvmlab.display_settings import parse_display
from kvmlab.errors import LabFileError
from kvmlab.model import DEFAULT_RELEASE, FIRST_NODE_OFFSET, RELEASES, Disk, Lab, Network
from kvmlab.model import Node as LabNode
from kvmlab.roles.reader import SettingsReader
from kvmlab.yamlread import DISK_RANGE_MIB, EXTENSION_KEYS, LAB_NAME_HINT, LAB_NAME_RE, Fields, Reader, is_null, quote

DEFAULT_MEMORY_MIB, DEFAULT_VCPUS = 640, 1
MEMORY_RANGE_MIB = (256, 65536)
VCPU_RANGE = (1, 64)
PREFIX_RANGE = (16, 28)
TOP_KEYS = ("name", "release", "networks", "nodes", "roles", "templates", "failover", variants.KEY, EXTENSION_KEYS)


@dataclass(frozen=True)
class LabFile:
    """The labs of one lab file: its own (the base) and one per variant, each parsed when the file was read."""

    base: Lab
    variants: Mapping[str, Lab]  # variant name -> its lab, in file order
    variants_at: tuple[int, int] = (1, 1)  # line and column of `variants:`: where an unknown variant name points

    def select(self, wanted: Sequence[str]) -> list[Lab]:
        """The labs of the variants WANTED on the command line ('base': the file's own lab, 'all': every variant)."""
        try:
            names = variants.choose(wanted, tuple(self.variants))
        except variants.UnknownVariant as exc:
            raise LabFileError(self.base.path, *self.variants_at, exc.message) from None
        return [self.base if name == variants.BASE else self.variants[name] for name in names]

    def lab(self, variant: str | None = None) -> Lab:
        """One lab of the file: VARIANT's, or the file's own."""
        if variant is None:
            return self.base
        labs = self.select([variant])
        if len(labs) != 1:
            raise LabFileError(self.base.path, *self.variants_at, f"'{variant}' is {len(labs)} labs here: name one variant")
        return labs[0]

    def every(self) -> list[Lab]:
        """The file's own lab, then each variant's."""
        return [self.base, *self.variants.values()]

    def named(self, lab_name: str) -> Lab:
        """The lab of this file called LAB_NAME (a run's record names its lab, not its variant); the file's own if none is."""
        return next((lab for lab in self.variants.values() if lab.name == lab_name), self.base)


def decode_lab_text(data: bytes, path: str) -> str:
    """The file's text; a file in another encoding, or not text at all, is named at the first byte that is not UTF-8."""
    if b"\0" in data[:8192]:
        at = data.index(b"\0")
        line, col = _line_col(data, at)
        raise LabFileError(path, line, col, "this is a binary file (it holds NUL bytes), not a YAML lab file")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark is harmless
    except UnicodeDecodeError as exc:
        line, col = _line_col(data, exc.start)
        raise LabFileError(
            path, line, col, f"the file is not UTF-8 text: byte 0x{data[exc.start]:02X} here; save it as UTF-8 (iconv -f latin1 -t utf-8)"
        ) from None


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, len(data[start:offset].decode("utf-8", "replace")) + 1


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def load_lab(path: str | os.PathLike[str], variant: str | None = None) -> Lab:
    """The lab of a lab file, or of one of its variants."""
    return load_lab_file(path).lab(variant)


def load_lab_file(path: str | os.PathLike[str]) -> LabFile:
    file = Path(path)
    shown = _display_path(file)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise LabFileError(shown, 1, 1, f"cannot read lab file: {exc.strerror}") from exc
    return parse_lab_file(decode_lab_text(data, shown), shown, default_name=file.stem)


def parse_lab(text: str, path: str, default_name: str) -> Lab:
    return parse_lab_file(text, path, default_name).base


def parse_lab_file(text: str, path: str, default_name: str) -> LabFile:
    try:
        return _parse_file(text, path, default_name)
    except LabFileError as exc:
        lines = text.splitlines() or [""]
        if exc.line <= len(lines):
            raise
        # YAML places some errors just past a final newline: point at the end of the last line instead.
        raise LabFileError(path, len(lines), len(lines[-1]) + 1, exc.message) from None
    except RecursionError:
        line, col = yaml_errors.too_deep_at(text)
        raise LabFileError(
            path, line, col, f"values are nested more than {yaml_errors.MAX_DEPTH} levels deep here: a lab file never needs that"
        ) from None


def _parse_file(text: str, path: str, default_name: str) -> LabFile:
    root = yaml_errors.compose(text, path, "lab file is empty: it needs at least a 'nodes:' mapping")
    base = _parse_lab(Reader(path), root, path, default_name)
    reader = Reader(path)
    top = reader.mapping(root, "the lab", TOP_KEYS)
    found = variants.read(reader, top, base.name)
    labs = {name: _parse_variant(path, root, base, name, key, overrides) for name, (key, overrides) in found.items()}
    at = top[variants.KEY][0].start_mark if variants.KEY in top else None
    return LabFile(base, labs, (at.line + 1, at.column + 1) if at else (1, 1))


# Every variant is parsed when its file is read, even when one lab of the file is asked for: a mistake in a
# variant then shows at once (in `kvmlab render`, in the unit tests that load labs/, before a matrix brings
# up its first lab) instead of when its turn comes, maybe an hour into a matrix run. It costs milliseconds a
# variant. The price is that while one variant is wrong, no lab of the file loads: as with any wrong line.
def _parse_variant(path: str, root: Node, base: Lab, name: str, key: Node, overrides: Node) -> Lab:
    reader = Reader(path)  # a reader of its own: its caches go by node identity, and the merged nodes are new
    full = variants.lab_name(base.name, name)
    if not LAB_NAME_RE.match(full):
        too_long = f"variant '{name}' names its lab '{full}' ({len(full)} characters): {LAB_NAME_HINT}"
        raise reader.fail(key, f"{too_long}; shorten the variant's or the lab's name")
    try:
        return _parse_lab(reader, variants.apply(reader, root, overrides), path, full, variant=name)
    except LabFileError as exc:  # the line may be the base's: say which variant's lab it is wrong in
        raise LabFileError(exc.path, exc.line, exc.col, f"variant '{name}': {exc.message}") from None


def _parse_lab(reader: Reader, root: Node, path: str, default_name: str, variant: str = "") -> Lab:
    top = reader.mapping(root, "the lab", TOP_KEYS)

    # A variant's lab is named after its variant (variants.read refuses a variant's own 'name:').
    name = default_name if variant else reader.optional(top, "name", reader.lab_name, default_name.lower().replace("_", "-"))
    if not LAB_NAME_RE.match(name):
        raise LabFileError(
            path, 1, 1, f"lab name '{name}' (from the file name) is not valid: add 'name: <lowercase name>' ({LAB_NAME_HINT})"
        )

    networks, prefix_nodes = _networks(reader, top)
    net_names = tuple(n.name for n in networks)
    nodes, node_keys = _nodes(reader, root, top, net_names)
    _check_subnets_fit(reader, networks, nodes, prefix_nodes, node_keys)
    settings_keys = role_registry.settings_keys()
    roles_fields = reader.mapping(top["roles"][1], "roles", tuple(settings_keys)) if "roles" in top else {}
    used_roles = {r for n in nodes for r in n.roles}
    for key_name, (key, _value) in roles_fields.items():
        if not used_roles & set(settings_keys[key_name]):
            raise reader.fail(key, f"settings for role '{key_name}' are given but no node has that role")
    templates = reader.optional(top, "templates", lambda n: _templates_dir(reader, n, path), "")
    release = reader.optional(top, "release", lambda n: _release(reader, n), DEFAULT_RELEASE)

    # Each role package parses its own entry, in registry order, seeing what came before it
    # (a netfs pool checks its export against the nfs-server settings parsed first).
    settings = {p.settings.key: p.settings.default for p in role_registry.packages()}
    common = {"name": name, "path": path, "networks": networks, "nodes": nodes, "templates": templates, "release": release}
    common["variant"] = variant
    lab = Lab(settings=settings, **common)
    for package in role_registry.packages():
        parsed = package.settings.parse(SettingsReader(reader, lab, node_keys, roles_fields, root))
        settings = {**settings, package.settings.key: parsed}
        lab = Lab(settings=settings, **common)
    if "failover" in top:
        lab = Lab(settings=settings, failover=_failover(reader, top["failover"][1], lab), **common)
    return lab


def _failover(reader: Reader, node: Node, lab: Lab) -> tuple[str, ...]:
    """The failover scenarios a lab runs after its checks: each needs its roles in the lab (and a RAID a spare)."""
    from kvmlab.failover import SCENARIOS

    names = reader.names_list(node, "failover", tuple(SCENARIOS), "failover scenario")
    present = {role for n in lab.nodes for role in n.roles}
    for item, name in zip(reader.sequence(node, "failover"), names, strict=True):
        missing = [role for role in SCENARIOS[name].roles if role not in present]
        if missing:
            raise reader.fail(item, f"failover scenario '{name}' ({SCENARIOS[name].what}) needs a node with role {', '.join(missing)}")
        lacks = SCENARIOS[name].lacks(lab)
        if lacks:
            raise reader.fail(item, f"failover scenario '{name}' ({SCENARIOS[name].what}) needs {lacks}")
    return names


def _release(reader: Reader, node: Node) -> str:
    return reader.one_of(node, "release", RELEASES, "a Debian release kvmlab builds images of")


def _networks(reader: Reader, top: Fields) -> tuple[tuple[Network, ...], dict[str, Node]]:
    """The networks, and the `prefix:` value of each network that sets one (errors about its size point there)."""
    if "networks" not in top:
        return (Network("mgmt"),), {}
    value = top["networks"][1]
    fields = reader.named_mapping(value, "networks")
    if not fields:
        raise reader.fail(value, "networks is empty: name at least one network, e.g. 'mgmt: {}'")
    nets, prefix_nodes = [], {}
    for net_name, (name_node, spec) in fields.items():
        reader.name(name_node, "network name")
        opts = {} if is_null(spec) else reader.mapping(spec, f"network '{net_name}'", ("prefix",))
        prefix = reader.optional(opts, "prefix", lambda n: reader.integer(n, "network prefix", PREFIX_RANGE), 24)
        nets.append(Network(net_name, prefix))
        if "prefix" in opts:
            prefix_nodes[net_name] = opts["prefix"][1]
    return tuple(nets), prefix_nodes


def _check_subnets_fit(
    reader: Reader, networks: tuple[Network, ...], nodes: tuple[LabNode, ...], prefix_nodes: dict[str, Node], node_keys: dict[str, Node]
) -> None:
    """Every node's address must lie inside its subnet, short of the broadcast address (see Placement.address)."""
    for net in networks:
        on_net = [(i, n) for i, n in enumerate(nodes) if net.name in n.networks]
        if not on_net:
            continue
        usable = 2 ** (32 - net.prefix) - 2  # the last usable offset: the broadcast address is one above
        outside = [(i, n) for i, n in on_net if FIRST_NODE_OFFSET + i > usable]
        if not outside:
            continue
        index, first = outside[0]
        highest = FIRST_NODE_OFFSET + on_net[-1][0]
        needed = 32 - (highest + 1).bit_length()  # the longest prefix whose last usable offset reaches HIGHEST
        fix = (
            f"use 'prefix: {needed}' or lower"
            if needed >= PREFIX_RANGE[0]
            else f"a lab has room for at most {2 ** (32 - PREFIX_RANGE[0]) - 2 - FIRST_NODE_OFFSET + 1} nodes"
        )
        where = prefix_nodes.get(net.name) or node_keys[first.name]
        raise reader.fail(
            where,
            f"network '{net.name}' (/{net.prefix}) is too small: node '{first.name}' would get address .{FIRST_NODE_OFFSET + index} of it "
            f"(nodes take addresses {FIRST_NODE_OFFSET}, {FIRST_NODE_OFFSET + 1}, … in file order) "
            f"but a /{net.prefix} ends at .{usable}; {fix}",
        )


def _nodes(reader: Reader, root: Node, top: Fields, net_names: tuple[str, ...]) -> tuple[tuple[LabNode, ...], dict[str, Node]]:
    value = reader.required(top, "nodes", root, "the lab")
    fields = reader.named_mapping(value, "nodes")
    if not fields:
        raise reader.fail(value, "nodes is empty: a lab needs at least one node")
    nodes = []
    for node_name, (name_node, spec) in fields.items():
        reader.name(name_node, "node name")
        what = f"node '{node_name}'"
        opts = {} if is_null(spec) else reader.mapping(spec, what, ("roles", "memory", "vcpus", "disks", "networks", "display", "host"))
        roles = reader.optional(opts, "roles", lambda n: reader.names_list(n, f"roles of {what}", role_registry.known_roles(), "role"), ())
        memory = reader.optional(opts, "memory", lambda n: reader.size_mib(n, f"memory of {what}", MEMORY_RANGE_MIB), DEFAULT_MEMORY_MIB)
        vcpus = reader.optional(opts, "vcpus", lambda n: reader.integer(n, f"vcpus of {what}", VCPU_RANGE), DEFAULT_VCPUS)
        networks = reader.optional(opts, "networks", lambda n: reader.names_list(n, f"networks of {what}", net_names, "network"), net_names)
        if not networks:
            raise reader.fail(opts["networks"][1], f"{what} needs at least one network (known: {', '.join(net_names)})")
        disks = _disks(reader, opts["disks"][1], what) if "disks" in opts else ()
        display = reader.optional(opts, "display", lambda n: parse_display(reader, n, node_name), None)
        host = reader.optional(opts, "host", lambda n: reader.name(n, f"host of {what}"), "")
        nodes.append(LabNode(node_name, roles, memory, vcpus, disks, networks, display, host))
    return tuple(nodes), {name: key for name, (key, _spec) in fields.items()}


def _disks(reader: Reader, value: Node, what: str) -> tuple[Disk, ...]:
    fields = reader.named_mapping(value, f"disks of {what}")
    disks = []
    for disk_name, (name_node, size) in fields.items():
        reader.name(name_node, f"disk name of {what}")
        disks.append(Disk(disk_name, reader.size_mib(size, f"size of disk '{disk_name}' of {what}", DISK_RANGE_MIB)))
    return tuple(disks)


def _templates_dir(reader: Reader, node: Node, lab_path: str) -> str:
    """The lab's own templates folder, relative to the lab file; every file in it must override a template of kvmlab's."""
    from kvmlab.templating import check_overrides

    text = reader.string(node, "templates")
    if "\0" in text or len(text) > 4096:
        raise reader.fail(node, f"templates '{quote(text)}' is not a folder path: write e.g. templates: my-templates")
    try:
        folder = (Path(lab_path).parent / text).resolve()
        problems = check_overrides(folder)
    except OSError as exc:
        raise reader.fail(node, f"templates folder '{quote(text)}' cannot be read: {exc.strerror}") from None
    if problems:
        raise reader.fail(node, f"templates folder '{text}' ({folder}): " + "; ".join(problems))
    return str(folder)
