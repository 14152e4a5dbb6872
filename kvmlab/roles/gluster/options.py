"""The gluster role's `options:`: any `gluster volume set` option of the lab file, as Gluster takes it and reads it back.

kvmlab does not second-guess option names or values: Gluster judges them when the role
sets them, and its refusal names the option's line in the lab file (GlusterOption.where).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from yaml.nodes import Node

from kvmlab.yamlread import Reader, boolean, is_null, quote

OPTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # Gluster's keys: performance.cache-size, user.cifs, group
MAX_VALUE = 1024
# Options the role sets from its own settings: the lab sets them there, so that one value rules.
ROLE_OWN = {
    "network.ping-timeout": "ping_timeout",
    "storage.owner-uid": "owner_uid",
    "storage.owner-gid": "owner_gid",
    "auth.allow": "",
}
# gluster reads a boolean option from any of these words (gf_string2boolean); it shows it back as written.
TRUE_WORDS = ("on", "yes", "true", "enable", "1")
FALSE_WORDS = ("off", "no", "false", "disable", "0")
DEFAULT_MARK = " (DEFAULT)"  # `volume get` marks an option the volume does not set with its default


@dataclass(frozen=True)
class GlusterOption:
    name: str  # as the lab file writes it, e.g. performance.cache-size
    value: str  # as `gluster volume set` takes it: booleans are on/off
    where: str = ""  # file:line:col of the option in the lab file, named when Gluster refuses it


def parse_options(r: Reader, value: Node) -> tuple[GlusterOption, ...]:
    """`options: {performance.cache-size: 64MB, performance.quick-read: off}`, in file order."""
    options = []
    for name, (key_node, item) in r.named_mapping(value, "gluster options").items():
        if not OPTION_NAME.match(name):
            raise r.fail(key_node, f"gluster option '{quote(name)}' is not a Gluster option name: write e.g. performance.cache-size")
        text = _value(r, key_node, item, name)
        _not_the_roles_own(r, key_node, name, text)
        mark = key_node.start_mark
        options.append(GlusterOption(name, text, f"{r.path}:{mark.line + 1}:{mark.column + 1}"))
    return tuple(options)


def _not_the_roles_own(r: Reader, key_node: Node, name: str, value: str) -> None:
    # gluster completes a name without a dot (ping-timeout is network.ping-timeout): refuse those too.
    full = next((k for k in ROLE_OWN if name == k or ("." not in name and k.endswith("." + name))), None)
    if full is None:
        return
    called = f"'{name}'" if name == full else f"'{name}' (Gluster's {full})"
    setting = ROLE_OWN[full]
    if not setting:
        raise r.fail(
            key_node,
            f"gluster option {called} is set by the role to the subnet of its network, which the hypervisors mount from: "
            "choose that network with 'network:'",
        )
    raise r.fail(
        key_node,
        f"gluster option {called} is set by the role from its '{setting}' setting: "
        f"write '{setting}: {quote(value, 20)}' beside 'options:' instead",
    )


def _value(r: Reader, key_node: Node, node: Node, name: str) -> str:
    what = f"gluster option {name}"
    if is_null(node):
        raise r.fail(key_node, f"{what} has no value: write it as `gluster volume set` takes it, e.g. '{name}: on' or a number")
    if node.tag == "tag:yaml.org,2002:bool":
        return "on" if boolean(r, node, what) else "off"  # how Gluster spells booleans
    if node.tag == "tag:yaml.org,2002:int":
        return str(r.integer(node, what, (-(2**63), 2**64 - 1)))  # YAML's reading: 0x10 is 16, as the user meant
    text = r.scalar_text(node, what)
    if not text or "\n" in text or not text.isprintable() or len(text) > MAX_VALUE:
        raise r.fail(node, f"{what} must be one printable line of 1 to {MAX_VALUE} characters, got '{quote(text)}'")
    return text


def same_value(want: str, seen: str) -> bool:
    """Whether Gluster's SEEN reads as WANT: booleans in any of Gluster's words, numbers by value."""
    want, seen = want.strip(), seen.strip().removesuffix(DEFAULT_MARK)
    if want == seen:
        return True
    for words in (TRUE_WORDS, FALSE_WORDS):
        if want.lower() in words and seen.lower() in words:
            return True
    try:
        return Decimal(want) == Decimal(seen)
    except InvalidOperation:
        return False


def read_back(output: str, name: str) -> tuple[str | None, str]:
    """(value, problem) of option NAME in the output of `gluster volume get VOL NAME --xml`; value None when it is not there.

    Gluster 10 nests each answer in volGetopts/Opt; older ones put Option and Value
    straight under volGetopts. A name without a dot comes back completed (network.ping-timeout).
    """
    try:
        root = ET.fromstring(output.strip())
    except ET.ParseError:
        return _read_back_text(output, name)
    if root.findtext("opRet", "0") != "0":
        return None, f"gluster volume get failed: {(root.findtext('opErrstr') or '').strip() or output.strip()[:300]}"
    opts = root.findall("volGetopts/Opt") or root.findall("volGetopts")
    pairs = [(o.findtext("Option") or "", o.findtext("Value") or "") for o in opts if o.find("Option") is not None]
    for option, value in pairs:
        if option == name or ("." not in name and option.endswith("." + name)):
            return value, ""
    return None, f"not listed by gluster volume get (it printed: {output.strip()[:300]})"


def _read_back_text(output: str, name: str) -> tuple[str | None, str]:
    """The table `gluster volume get` prints without --xml: a heading, then `option   value` lines."""
    for line in output.splitlines():
        option, _, value = line.strip().partition(" ")
        if option == name or ("." not in name and option.endswith("." + name)):
            return value.strip(), ""
    return None, f"not listed by gluster volume get (it printed: {output.strip()[:300]})"


def group_options(text: str) -> list[tuple[str, str]]:
    """The `key=value` lines of a file of /var/lib/glusterd/groups/, which `volume set VOL group NAME` applies."""
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            pairs.append((key.strip(), value.strip()))
    return pairs
