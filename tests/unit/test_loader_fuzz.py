"""Fuzzing the lab loader: every lab in labs/, mutated, either loads into a lab that renders sanely or fails with a LabFileError.

The mutations (tests/unit/fuzz_mutations.py) work on the text, on the bytes of the file and on the loaded YAML data.
Hypothesis is derandomized, so CI tries the same labs every run; a failure prints the minimal mutated lab.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kvmlab import render
from kvmlab.errors import HarnessError, LabFileError
from kvmlab.loader import load_lab, parse_lab
from kvmlab.model import Lab
from tests.unit.fuzz_mutations import deep_text, mutated_bytes, mutated_data, mutated_text

ROOT = Path(__file__).resolve().parents[2]
SEEDS = {p.stem: p.read_text() for p in sorted((ROOT / "labs").glob("*.yaml"))}
MAX_MESSAGE = 600  # a message quotes the user's value; a 100k-character value must come back shortened
# PyYAML's line breaks (its marks count these, not str.splitlines()'s longer list).
YAML_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
FAKE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForFuzzRendersOnly00000000000000000 fuzz"

TRIED = {"labs": 0}  # mutated labs handed to the loader, reported at the end of the run (tests/unit/conftest.py)

# CI budget: about 75 s for the whole file on 2 cores (data-level labs cost most: their 100k-character values).
# derandomize: the same examples every run, no example database.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

SEED_NAMES = st.sampled_from(sorted(SEEDS))
# (seed name, mutated lab): the seed names the lab (its default name) and keeps the example readable.
TEXT_LABS = SEED_NAMES.flatmap(lambda seed: st.tuples(st.just(seed), mutated_text(SEEDS[seed])))
DATA_LABS = SEED_NAMES.flatmap(lambda seed: st.tuples(st.just(seed), mutated_data(SEEDS[seed])))
BYTES_LABS = SEED_NAMES.flatmap(lambda seed: st.tuples(st.just(seed), mutated_bytes(SEEDS[seed])))


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty folder for the lab path: a `templates:` value then resolves inside it, never into the checkout."""
    return tmp_path_factory.mktemp("fuzz")


def position_in(text: str, line: int, col: int) -> bool:
    """Whether LINE:COL lies in TEXT: its lines counted as PyYAML does, a last line without a newline counted too.

    Column 1 of the line after a final line break is allowed as well: PyYAML marks the end of the stream there
    (e.g. "nodes: [\n" fails with "expected the node content, but found '<stream end>'" at 2:1).
    """
    ends_with_break = text[-1:] in ("\r", "\n", "\x85", "\u2028", "\u2029")
    lines = max(1, len(YAML_BREAK.findall(text)) + (0 if ends_with_break else 1))
    return col >= 1 and (1 <= line <= lines or (ends_with_break and line == lines + 1 and col == 1))


def check_outcome(load: Callable[[], Lab], path: str, texts: list[str]) -> None:
    """LOAD either fails with a LabFileError that points into the file (as any of TEXTS), or its lab renders consistently."""
    TRIED["labs"] += 1
    try:
        lab = load()
    except LabFileError as err:
        assert err.path == path
        assert any(position_in(text, err.line, err.col) for text in texts), f"{err.line}:{err.col} is outside the file: {str(err)[:300]}"
        assert len(err.message) <= MAX_MESSAGE, f"message of {len(err.message)} characters: {err.message[:300]}..."
        return
    check_lab(lab)


def check_lab(lab: Lab) -> None:
    names = [n.name for n in lab.nodes]
    assert len(set(names)) == len(names), f"node names repeat: {names}"
    try:
        placement = render.preview_placement(lab)
    except HarnessError as err:  # the networks do not fit the preview range: a clean, explained refusal
        assert str(err)
        return
    for net in lab.networks:
        subnet = placement.subnets[net.name]
        host = ipaddress.IPv4Address(placement.host_address(net.name))
        assert host in subnet
        addresses: dict[str, str] = {}
        macs: dict[str, str] = {}
        for node in (n for n in lab.nodes if net.name in n.networks):
            address = ipaddress.IPv4Address(placement.address(lab, node.name, net.name))
            where = f"node '{node.name}' on network '{net.name}' ({subnet}, {len(lab.nodes)} nodes): {address}"
            assert address in subnet, f"{where} is outside the subnet"
            assert address not in (subnet.network_address, subnet.broadcast_address, host), f"{where} is a reserved address"
            assert str(address) not in addresses, f"{where} is also {addresses.get(str(address))}'s"
            mac = placement.mac(lab, node.name, net.name)
            assert mac not in macs, f"{where}: MAC {mac} is also {macs.get(mac)}'s"
            addresses[str(address)], macs[mac] = node.name, node.name
    inp = render.RenderInput(
        lab=lab,
        placement=placement,
        backing=render.Backing("/var/lib/kvmlab/pool", "0123456789abcdef"),
        accel="tcg",
        ssh_public_key=FAKE_KEY,
        host_keys={n.name: ("fake private key", FAKE_KEY) for n in lab.nodes},
        owner=render.Owner(pid=1, user="fuzz", host="fuzz", boot_id="boot", created="2026-01-01T00:00:00+00:00"),
        console_dir="/var/lib/kvmlab/console",
    )
    try:
        files = render.render_lab(inp)
    except HarnessError as err:
        assert str(err).strip(), f"{type(err).__name__} without a message"
        return
    assert files


def check_text(seed: str, text: str, lab_dir: Path) -> None:
    path = str(lab_dir / f"{seed}.yaml")  # never written: parse_lab only names it
    check_outcome(lambda: parse_lab(text, path, default_name=seed), path, [text])


# Crash kinds found by this fuzzing, always tried (random search finds them too, but not surely within the CI budget).
@example(("trio", "nodes:\n  a: {vcpus: 010}\n"))  # YAML 1.1 octal: int('010', 0) -> ValueError
@example(("trio", "nodes:\n  a: {vcpus: !!int two}\n"))  # explicit !!int on a word -> ValueError
@example(("trio", "nodes:\n  a: {vcpus: " + "9" * 5000 + "}\n"))  # > 4300 digits -> ValueError
@example(("trio", "nodes:\n  a: {memory: " + "9" * 400 + "G}\n"))  # float('9'*400) is inf -> OverflowError
@example(("trio", "nodes:\n  " + "a" * 100_000 + ": {}\n"))  # the whole name quoted in the message
@example(("trio", "nodes:\n  a: {}\nx: *" + "a" * 100_000 + "\n"))  # undefined alias, quoted whole by PyYAML
@example(("trio", 'nodes:\n  a: {}\ntemplates: "a\\0b"\n'))  # NUL in a path -> ValueError from Path.resolve
@example(("trio", "nodes:\n  a: {}\ntemplates: " + "x" * 5000 + "\n"))  # ENAMETOOLONG -> OSError from Path.exists
@example(("trio", "nodes: " + "[" * 3000 + "\n"))  # RecursionError in PyYAML's composer
@example(("trio", "networks:\n  mgmt: {prefix: 28}\nnodes: {a: {}, b: {}, c: {}, d: {}, e: {}, f: {}}\n"))  # 6th node off a /28
@example(("trio", "nodes:\n  a: {vcpus: !!int }\n"))  # explicit !!int on nothing -> IndexError in YAML's int reading
@example(("trio", "nodes: &n\n  a: {}\n  <<: *n\n"))  # a mapping merging itself -> RecursionError, told as "nested too deep"
@example(("tiny", 'nodes: {a: {roles: [nfs-server]}}\nroles: {nfs-server: {exports: [{path: "/x\\ny", clients: mgmt}]}}\n'))
# A long value with spaces, quoted whole by a role's message: only a length cap could cut it (and its advice).
@example(("tiny", 'nodes: {a: {roles: [nfs-server]}}\nroles: {nfs-server: {exports: [{path: /x, clients: "' + "word " * 20_000 + '"}]}}\n'))
@given(TEXT_LABS)
@settings(FUZZ, max_examples=1500)
def test_text_mutations_load_or_fail_cleanly(lab_dir: Path, seed_and_text: tuple[str, str]) -> None:
    check_text(*seed_and_text, lab_dir)


@given(DATA_LABS)
@settings(FUZZ, max_examples=400)
def test_data_mutations_load_or_fail_cleanly(lab_dir: Path, seed_and_text: tuple[str, str]) -> None:
    check_text(*seed_and_text, lab_dir)


@given(deep_text())
@settings(FUZZ, max_examples=6)
def test_deep_nesting_fails_cleanly(lab_dir: Path, text: str) -> None:
    check_text("deep", text, lab_dir)


@example(("trio", b"nodes:\n  n\xe9: {}\n"))  # latin-1: was a UnicodeDecodeError from read_text
@given(BYTES_LABS)
@settings(FUZZ, max_examples=1000)
def test_file_bytes_load_or_fail_cleanly(lab_dir: Path, seed_and_bytes: tuple[str, bytes]) -> None:
    check_bytes(*seed_and_bytes, lab_dir)


def check_bytes(seed: str, data: bytes, lab_dir: Path) -> None:
    file = lab_dir / "bytes" / f"{seed}.yaml"
    file.parent.mkdir(exist_ok=True)
    file.write_bytes(data)
    # The file's lines however the loader decodes it (a UTF-8 reading cut at a bad byte, or latin-1, or UTF-16);
    # load_lab names the file relative to the working folder.
    texts = [data.decode(encoding, errors="replace") for encoding in ("utf-8", "latin-1", "utf-16")]
    check_outcome(lambda: load_lab(file), os.path.relpath(file), texts)


def merge_bomb(levels: int, width: int = 10) -> str:
    """Anchored mappings that each merge WIDTH copies of the one before: WIDTH**LEVELS merges if each alias is walked anew."""
    lines = ["x-m0: &m0 {vcpus: 1}"]
    lines += [f"x-m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * width)}]}}" for i in range(1, levels + 1)]
    return "\n".join([*lines, f"nodes:\n  a: {{<<: *m{levels}}}"]) + "\n"


def test_merge_keys_do_not_multiply_work(lab_dir: Path) -> None:
    """A file of a few hundred bytes must not take hours: run in a child process, killed at the timeout."""
    file = lab_dir / "merge-bomb.yaml"
    file.write_text(merge_bomb(8))
    TRIED["labs"] += 1
    code = "import sys\nfrom kvmlab.errors import LabFileError\nfrom kvmlab.loader import load_lab\ntry: load_lab(sys.argv[1])\nexcept LabFileError: pass"
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(file)], cwd=ROOT, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"load_lab ran past 20 s on a {file.stat().st_size}-byte file of nested merge keys (10**8 merges if not shared)")
    assert proc.returncode == 0, proc.stderr[-2000:]
