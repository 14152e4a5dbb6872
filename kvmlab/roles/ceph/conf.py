"""The ceph roles' `conf:`: ceph.conf options per section, in Ceph's own names and values.

kvmlab does not keep a list of Ceph's options: the monitor node's own `ceph-conf` judges each
name and value before the monitor is made (a refusal names the option's line in the lab file),
and the check reads every option back from the running daemons' admin sockets and from a client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from yaml.nodes import Node

from kvmlab.yamlread import Reader, boolean, is_null, quote

SECTIONS = ("global", "mon", "mgr", "osd", "client")
# Which daemons (admin socket prefixes) or the client read each section's options.
READERS = {"global": ("mon", "mgr", "osd", "client"), "mon": ("mon",), "mgr": ("mgr",), "osd": ("osd",), "client": ("client",)}
OPTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ -]{0,127}$")  # osd_memory_target, "osd memory target", osd-memory-target
# What the role derives from the lab file itself; a second value would contradict it.
ROLE_OWN = {
    "fsid": "the cluster id is made per lab run",
    "mon_host": "the monitor's address comes from its node and the role's network",
    "mon_initial_members": "the monitor is the node with role ceph-mon",
    "public_network": "choose the network with 'network:'",
}
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
TIME_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 604800}
NUMBER = re.compile(r"^(-?\d+(?:\.\d+)?)\s*([a-z]*)$")


@dataclass(frozen=True)
class CephConfOption:
    section: str  # global, mon, mgr, osd or client
    name: str  # Ceph's canonical spelling: underscores (Ceph reads spaces and dashes as underscores)
    value: str  # as ceph.conf takes it: booleans are true/false
    where: str = ""  # file:line:col of the option in the lab file, named when Ceph refuses it


def canonical(name: str) -> str:
    return re.sub(r"[ -]+", "_", name.strip()).lower()


def parse_conf(r: Reader, value: Node) -> tuple[CephConfOption, ...]:
    """`conf: {global: {osd_pool_default_size: 2}, osd: {osd_max_backfills: 2}}`, in file order."""
    options = []
    for section, (section_node, body) in r.named_mapping(value, "ceph conf").items():
        if section not in SECTIONS:
            raise r.fail(section_node, f"ceph conf section '{quote(section)}' is not one kvmlab writes: use one of {', '.join(SECTIONS)}")
        seen: dict[str, str] = {}
        for name, (key_node, item) in r.named_mapping(body, f"ceph conf section '{section}'").items():
            if not OPTION_NAME.match(name):
                raise r.fail(key_node, f"'{quote(name)}' in ceph conf [{section}] is not a Ceph option name: write e.g. osd_max_backfills")
            key = canonical(name)
            if key in ROLE_OWN:
                raise r.fail(key_node, f"ceph conf option '{name}' is set by the role: {ROLE_OWN[key]}")
            if key in seen:
                raise r.fail(key_node, f"ceph conf [{section}] sets {key} twice ('{seen[key]}' and '{name}' are the same option to Ceph)")
            seen[key] = name
            mark = key_node.start_mark
            text = _value(r, key_node, item, f"ceph conf [{section}] {name}")
            options.append(CephConfOption(section, key, text, f"{r.path}:{mark.line + 1}:{mark.column + 1}"))
    return tuple(options)


def _value(r: Reader, key_node: Node, node: Node, what: str) -> str:
    if is_null(node):
        raise r.fail(key_node, f"{what} has no value: write it as ceph.conf takes it, e.g. 'true', 2 or 1G")
    if node.tag == "tag:yaml.org,2002:bool":
        return "true" if boolean(r, node, what) else "false"
    text = r.scalar_text(node, what)
    if not text or "\n" in text or not text.isprintable() or text != text.strip():
        raise r.fail(node, f"{what} must be one printable line without surrounding spaces, got '{quote(text)}'")
    return text


def by_section(options: tuple[CephConfOption, ...]) -> dict[str, dict[str, str]]:
    """Every section kvmlab writes, with the lab's own options of it (the template leaves out its defaults of those)."""
    out: dict[str, dict[str, str]] = {section: {} for section in SECTIONS}
    for option in options:
        out[option.section][option.name] = option.value
    return out


def same_value(wanted: str, running: str) -> bool:
    """Whether a daemon's value is the one the lab file wrote, as Ceph reads values: booleans in any
    of its words, sizes with K/M/G/T suffixes (powers of 1024) and times with s/m/h/d suffixes (Ceph
    shows both as plain numbers), numbers by value (0.5 is 0.500000)."""
    a, b = wanted.strip().lower(), running.strip().lower()
    if a == b or {a, b} <= set(TRUE_WORDS) or {a, b} <= set(FALSE_WORDS):
        return True
    return bool(_numbers(a) & _numbers(b))


def _numbers(text: str) -> set[Decimal]:
    """Every number TEXT can mean to Ceph: '10m' is 10 MiB to a size option and 600 s to a time one."""
    m = NUMBER.match(text)
    if not m:
        return set()
    try:
        n = Decimal(m.group(1))
    except InvalidOperation:
        return set()
    unit = m.group(2)
    return {n * scale for scale in (SIZE_UNITS.get(unit.rstrip("ib")), TIME_UNITS.get(unit)) if scale is not None}


# The lab's options as the monitor node's ceph-conf reads them from /etc/ceph/ceph.conf, for the
# daemon (or client) each section is for: before any daemon exists, Ceph's own judgement of each.
PROBE_SCRIPT = """
import json, subprocess, sys
for who, name in json.loads(sys.argv[1]):
    p = subprocess.run(["ceph-conf", "-c", "/etc/ceph/ceph.conf", "--name", who, "--show-config-value", name],
                       capture_output=True, text=True)
    print(json.dumps([p.returncode, p.stdout.strip(), p.stderr.strip()]))
"""

# What every running daemon of this node (its admin socket) and a client connected to the cluster
# use for the given options: {"osd.0": {"osd_max_backfills": "2"}, "client.admin": {...}}.
RUNNING_SCRIPT = r"""
import glob, json, os, socket, struct, sys
want = json.loads(sys.argv[1])  # {"osd": [names], "client": [names], ...}

def recv(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("admin socket closed")
        data += chunk
    return data

out = {}
for path in sorted(glob.glob("/var/run/ceph/ceph-*.asok")):
    daemon = os.path.basename(path)[len("ceph-"):-len(".asok")]
    for name in want.get(daemon.split(".")[0], []):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(60)
            sock.connect(path)
            sock.sendall(json.dumps({"prefix": "config get", "var": name}).encode() + b"\0")
            size = struct.unpack(">I", recv(sock, 4))[0]
            out.setdefault(daemon, {})[name] = json.loads(recv(sock, size)).get(name)
if want.get("client"):
    import rados
    cluster = rados.Rados(conffile="/etc/ceph/ceph.conf", name="client.admin")
    cluster.connect(timeout=60)
    out["client.admin"] = {name: cluster.conf_get(name) for name in want["client"]}
    cluster.shutdown()
print(json.dumps(out))
"""
