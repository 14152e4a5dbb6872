"""The gluster role's volume types and options in Gluster's own terms: parsing, the create words, what the checks
expect back from Gluster, and the refusal of an option naming its line (no VMs: Gluster's answers are canned)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from kvmlab.errors import LabFileError, RoleError, SettingRefused
from kvmlab.loader import parse_lab
from kvmlab.model import Placement
from kvmlab.remote import Result
from kvmlab.roles.gluster import checks, files, steps
from kvmlab.roles.gluster.options import GlusterOption, group_options, read_back, same_value
from kvmlab.roles.gluster.settings import default_redundancy

PLACEMENT = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")})


def _lab(nodes: int, settings: str = "{}", path: str = "labs/t.yaml"):
    text = "nodes:\n" + "".join(f"  g{i}: {{roles: [gluster], disks: {{brick: 1G}}}}\n" for i in range(1, nodes + 1))
    text += "  hv1: {roles: [hypervisor]}\n"
    return parse_lab(text + f"roles:\n  gluster: {settings}\n", path, default_name="t")


@pytest.mark.parametrize(
    "nodes,settings,words,type_str,sets",
    [
        (2, "{}", "replica 2", "Replicate", [["g1", "g2"]]),  # the default: every node holds a copy
        (4, "{}", "replica 4", "Replicate", [["g1", "g2", "g3", "g4"]]),
        (4, "{replica: 2}", "replica 2", "Distributed-Replicate", [["g1", "g2"], ["g3", "g4"]]),
        (3, "{arbiter: 1}", "replica 3 arbiter 1", "Replicate", [["g1", "g2", "g3"]]),
        (3, "{replica: 3, arbiter: 1}", "replica 3 arbiter 1", "Replicate", [["g1", "g2", "g3"]]),
        (6, "{arbiter: 1}", "replica 3 arbiter 1", "Distributed-Replicate", [["g1", "g2", "g3"], ["g4", "g5", "g6"]]),
        (3, "{disperse: 3}", "disperse 3 redundancy 1", "Disperse", [["g1", "g2", "g3"]]),
        (6, "{disperse: 3, redundancy: 1}", "disperse 3 redundancy 1", "Distributed-Disperse", [["g1", "g2", "g3"], ["g4", "g5", "g6"]]),
        (6, "{disperse: 6}", "disperse 6 redundancy 2", "Disperse", [["g1", "g2", "g3", "g4", "g5", "g6"]]),
        (5, "{disperse: 5, redundancy: 2}", "disperse 5 redundancy 2", "Disperse", [["g1", "g2", "g3", "g4", "g5"]]),
    ],
)
def test_each_volume_type_parses_and_renders_its_create_words(nodes, settings, words, type_str, sets):
    lab = _lab(nodes, settings)
    s = lab.gluster
    assert s.create_words() == words
    assert s.type_str(nodes) == type_str
    assert [[n.name for n in group] for group in files.brick_sets(lab)] == sets
    script = files.files(lab, PLACEMENT, lab.node("g1"))["gluster-volume.sh"]
    assert f"gluster --mode=script volume create kvmgluster {words} transport tcp \\\n" in script
    assert script.count(":/gluster/bricks/1/brick") == nodes  # one brick per gluster node, in file order
    assert script.index("g1-mgmt:") < script.index(f"g{nodes}-mgmt:")


@pytest.mark.parametrize("disperse,redundancy", [(3, 1), (4, 1), (5, 1), (6, 2), (7, 3), (8, 1), (9, 1), (10, 2), (12, 4)])
def test_default_redundancy_is_glusters_own_choice(disperse, redundancy):
    # The gluster CLI picks the smallest redundancy that leaves a power of two of data bricks, else 1.
    assert default_redundancy(disperse) == redundancy
    assert 2 * redundancy < disperse


@pytest.mark.parametrize(
    "nodes,settings,line,message",
    [
        (3, "{arbiter: 2}", 7, "arbiter 2 is not possible: Gluster has one arbiter per replica 3 set, write arbiter: 1"),
        (3, "{replica: 1}", 7, "replica 1 is too small: a replicated volume keeps at least 2 copies (replica: 2 or more)"),
        (3, "{replica: 4}", 7, "replica 4 needs the number of gluster nodes to be a multiple of 4, this lab has 3: g1, g2, g3"),
        (4, "{disperse: 3}", 8, "disperse 3 needs the number of gluster nodes to be a multiple of 3, this lab has 4: g1, g2, g3, g4"),
        (3, "{disperse: 3, redundancy: 0}", 7, "redundancy 0 is not possible with disperse 3: each set must lose at least 1 brick"),
        (3, "{arbiter: 1, redundancy: 1}", 7, "'redundancy' and 'arbiter' cannot go together"),
        (2, "{disperse: 3}", 6, "disperse 3 needs the number of gluster nodes to be a multiple of 3, this lab has 2: g1, g2"),
    ],
)
def test_an_impossible_type_is_refused_at_its_line(nodes, settings, line, message):
    with pytest.raises(LabFileError) as info:
        _lab(nodes, settings)
    assert info.value.line == line
    assert info.value.message.startswith(message)


def test_options_keep_their_order_their_gluster_spelling_and_their_line():
    settings = "\n    options:\n      performance.cache-size: 64MB\n      performance.quick-read: off\n      nfs.disable: yes\n"
    settings += "      performance.io-thread-count: 0x10\n      cluster.min-free-disk: 10.5\n      user.note: 'on'\n"
    options = _lab(2, settings, path="labs/x.yaml").gluster.options
    assert [(o.name, o.value) for o in options] == [
        ("performance.cache-size", "64MB"),
        ("performance.quick-read", "off"),  # YAML booleans become Gluster's on/off
        ("nfs.disable", "on"),
        ("performance.io-thread-count", "16"),  # YAML's reading of the number
        ("cluster.min-free-disk", "10.5"),
        ("user.note", "on"),
    ]
    assert [o.where for o in options] == [f"labs/x.yaml:{line}:7" for line in range(8, 14)]


@pytest.mark.parametrize(
    "option,message",
    [
        ("ping-timeout: 10", "gluster option 'ping-timeout' (Gluster's network.ping-timeout) is set by the role from its 'ping_timeout'"),
        (
            "storage.owner-uid: 107",
            "gluster option 'storage.owner-uid' is set by the role from its 'owner_uid' setting: write 'owner_uid: 107'",
        ),
        ("auth.allow: '*'", "gluster option 'auth.allow' is set by the role to the subnet of its network"),
        ("performance.cache-size: [1, 2]", "gluster option performance.cache-size must be a single value, got a list"),
        ('performance.cache-size: "64MB\\n1"', "gluster option performance.cache-size must be one printable line"),
    ],
)
def test_an_option_kvmlab_cannot_pass_on_is_refused_at_its_line(option, message):
    with pytest.raises(LabFileError) as info:
        _lab(2, f"\n    options:\n      {option}\n")
    assert info.value.line == 8
    assert info.value.message.startswith(message)


def test_unknown_options_are_left_to_gluster():
    (option,) = _lab(2, "{options: {no.such-option: whatever}}").gluster.options
    assert (option.name, option.value) == ("no.such-option", "whatever")


@pytest.mark.parametrize(
    "want,seen,same",
    [
        ("on", "on", True),
        ("on", "enable", True),
        ("off", "false", True),
        ("off", "disable (DEFAULT)", True),
        ("on", "off", False),
        ("5", "5", True),
        ("10", "10.0", True),
        ("64MB", "64MB", True),
        ("64MB", "32MB", False),
        ("full", "diff", False),
    ],
)
def test_read_back_values_compare_as_gluster_reads_them(want, seen, same):
    assert same_value(want, seen) is same


XML_GET = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput><opRet>0</opRet><opErrno>0</opErrno><opErrstr/>
<volGetopts><count>1</count><Opt><Option>{name}</Option><Value>{value}</Value></Opt></volGetopts></cliOutput>"""


def test_read_back_takes_gluster_10s_xml_the_older_flat_one_and_the_plain_table():
    assert read_back(XML_GET.format(name="performance.cache-size", value="64MB"), "performance.cache-size") == ("64MB", "")
    flat = "<cliOutput><opRet>0</opRet><volGetopts><count>1</count><Option>network.ping-timeout</Option><Value>5</Value></volGetopts></cliOutput>"
    assert read_back(flat, "network.ping-timeout") == ("5", "")
    assert read_back(XML_GET.format(name="performance.quick-read", value="off"), "quick-read") == ("off", "")  # completed name
    table = "Option                                   Value\n------                                   -----\nauth.allow                               10.1.2.*\n"
    assert read_back(table, "auth.allow") == ("10.1.2.*", "")
    failed = "<cliOutput><opRet>-1</opRet><opErrno>0</opErrno><opErrstr>Did you mean auth.allow or ...?</opErrstr></cliOutput>"
    value, problem = read_back(failed, "auth.alow")
    assert value is None and problem == "gluster volume get failed: Did you mean auth.allow or ...?"


def test_a_group_file_is_its_key_value_lines():
    assert group_options("# virt\nperformance.quick-read=off\n\ncluster.eager-lock=enable\n") == [
        ("performance.quick-read", "off"),
        ("cluster.eager-lock", "enable"),
    ]


# -- checks against canned answers of Gluster --------------------------------------------------


class FakeNode:
    def __init__(self, name: str, answers: dict[str, str]):
        self.name, self.answers, self.commands = name, answers, []

    def run_expect(self, command: str, what: str = "") -> str:
        self.commands.append(command)
        return next(out for start, out in self.answers.items() if command.startswith(start))


def _running(lab, answers: dict[str, str]):
    nodes = [FakeNode(n.name, answers) for n in lab.by_role("gluster")]
    return SimpleNamespace(lab=lab, placement=PLACEMENT, by_role=lambda role: nodes if role == "gluster" else [])


def _volume_info(bricks: list[str], arbiters: set[str], **counts: str) -> str:
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in counts.items())
    listed = "".join(
        f"<brick uuid='u'>{b}<name>{b}</name><hostUuid>u</hostUuid><isArbiter>{int(b in arbiters)}</isArbiter></brick>" for b in bricks
    )
    return (
        "<cliOutput><opRet>0</opRet><volInfo><volumes><volume><name>kvmgluster</name><statusStr>Started</statusStr>"
        f"{fields}<bricks>{listed}</bricks></volume><count>1</count></volumes></volInfo></cliOutput>"
    )


BRICKS = [f"g{i}-mgmt:/gluster/bricks/1/brick" for i in range(1, 4)]
ARBITER = dict(
    typeStr="Replicate", brickCount="3", distCount="1", replicaCount="3", arbiterCount="1", disperseCount="0", redundancyCount="0"
)


def test_volume_type_check_passes_on_the_arbiter_volume_gluster_reports():
    lab = _lab(3, "{arbiter: 1}")
    checks.volume_has_the_labs_type(_running(lab, {"gluster volume info": _volume_info(BRICKS, {BRICKS[2]}, **ARBITER)}))


def test_volume_type_check_says_which_count_differs():
    lab = _lab(3, "{arbiter: 1}")
    plain = {**ARBITER, "arbiterCount": "0"}
    with pytest.raises(
        AssertionError, match=r"g1: volume kvmgluster is not replica 3 arbiter 1 over 3 bricks: arbiterCount 0 \(the lab wants 1\)"
    ):
        checks.volume_has_the_labs_type(_running(lab, {"gluster volume info": _volume_info(BRICKS, set(), **plain)}))
    with pytest.raises(AssertionError, match=r"arbiter bricks of kvmgluster are \['g1-mgmt:/gluster/bricks/1/brick'\], not \['g3-mgmt"):
        checks.volume_has_the_labs_type(_running(lab, {"gluster volume info": _volume_info(BRICKS, {BRICKS[0]}, **ARBITER)}))


@pytest.mark.parametrize(
    "nodes,settings,want",
    [
        (3, "{}", {"typeStr": "Replicate", "brickCount": "3", "distCount": "1", "replicaCount": "3", "arbiterCount": "0"}),
        (
            4,
            "{replica: 2}",
            {"typeStr": "Distributed-Replicate", "brickCount": "4", "distCount": "2", "replicaCount": "2", "arbiterCount": "0"},
        ),
        (
            6,
            "{disperse: 3}",
            {"typeStr": "Distributed-Disperse", "brickCount": "6", "distCount": "2", "disperseCount": "3", "redundancyCount": "1"},
        ),
    ],
)
def test_volume_info_expected_of_each_type(nodes, settings, want):
    s = _lab(nodes, settings).gluster
    assert checks.expected_volume_info(s, nodes) == {"name": "kvmgluster", "statusStr": "Started", **want}


def test_volume_options_check_reads_back_the_roles_and_the_labs_options_and_names_the_line_of_a_wrong_one():
    lab = _lab(
        2, "\n    ping_timeout: 5\n    options:\n      performance.cache-size: 64MB\n      performance.quick-read: off\n", "labs/x.yaml"
    )
    values = {"auth.allow": "10.213.4.*", "storage.owner-uid": "64055", "storage.owner-gid": "64055", "network.ping-timeout": "5"}
    values |= {"performance.cache-size": "32MB", "performance.quick-read": "disable"}
    out = "".join(f"{checks.GET_MARK}{k}\n{XML_GET.format(name=k, value=v)}\n" for k, v in values.items())
    running = _running(lab, {"echo": out})
    with pytest.raises(AssertionError) as info:
        checks.volume_options_read_back_as_set(running)
    assert str(info.value).splitlines()[0] == "g2: options of volume kvmgluster: performance.cache-size is 32MB, not 64MB (labs/x.yaml:9:7)"
    (command,) = running.by_role("gluster")[1].commands  # one SSH call for every option
    assert command.count("gluster volume get kvmgluster") == 6


# -- where data lands --------------------------------------------------------------------------

SHA = "a" * 64
MIB4 = 4 * 2**20


def _copy(size: int = MIB4, sha: str = SHA) -> checks.BrickFile:
    return checks.BrickFile(size, "-rw-r--r--", sha)


def _problems(nodes: int, settings: str, seen: dict) -> list[str]:
    lab = _lab(nodes, settings)
    sets = [[n.name for n in group] for group in files.brick_sets(lab)]
    return checks.placement_problems(lab.gluster, sets, "probe.bin", MIB4, SHA, seen)


def test_replica_places_a_whole_copy_on_every_brick():
    assert _problems(3, "{}", {"g1": _copy(), "g2": _copy(), "g3": _copy()}) == []
    assert _problems(3, "{}", {"g1": _copy(), "g2": _copy(sha="b" * 64), "g3": None}) == [
        f"g2: copy of probe.bin has sha256 {'b' * 64} (4194304 bytes), not {SHA} (4194304 bytes)",
        "g3: has no copy of probe.bin",
    ]


def test_an_arbiter_holds_the_name_and_no_data():
    assert _problems(3, "{arbiter: 1}", {"g1": _copy(), "g2": _copy(), "g3": _copy(0, "e" * 64)}) == []
    assert _problems(3, "{arbiter: 1}", {"g1": _copy(), "g2": _copy(), "g3": _copy()}) == [
        "g3: the arbiter holds 4194304 bytes of probe.bin; an arbiter holds its name and no data"
    ]


def test_distributed_replicate_puts_a_file_on_one_set_only():
    link = checks.BrickFile(0, "---------T", "e" * 64)  # DHT's pointer to the set that holds the data
    assert _problems(4, "{replica: 2}", {"g1": None, "g2": link, "g3": _copy(), "g4": _copy()}) == []
    (problem,) = _problems(4, "{replica: 2}", {"g1": _copy(), "g2": _copy(), "g3": _copy(), "g4": _copy()})
    assert problem == "probe.bin should be on the bricks of one set of g1,g2 / g3,g4; bricks holding it: g1, g2, g3, g4"


def test_disperse_puts_a_fragment_on_every_brick_of_a_set():
    fragment = checks.BrickFile(MIB4 // 2, "-rw-r--r--", "f" * 64)  # disperse 3 redundancy 1: two data bricks
    assert _problems(3, "{disperse: 3}", {"g1": fragment, "g2": fragment, "g3": fragment}) == []
    assert _problems(3, "{disperse: 3}", {"g1": fragment, "g2": _copy(), "g3": None}) == [
        "g2: fragment of probe.bin is 4194304 bytes, not 2097152 (1/2 of 4194304 bytes, in 512-byte chunks)",
        "g3: has no fragment of probe.bin",
    ]


# -- a refused option names its line -----------------------------------------------------------


class FakeRemote:
    def __init__(self, result: Result):
        self.result, self.commands = result, []

    def run(self, command: str, timeout: float = 600.0) -> Result:
        self.commands.append(command)
        return self.result


def test_gluster_refusing_an_option_names_the_lab_files_line_and_quotes_gluster():
    refusal = "volume set: failed: option : foo.bar does not exist\nDid you mean foo.baz?\n"
    remote = FakeRemote(Result(1, "", refusal))
    option = GlusterOption("foo.bar", "baz qux", "labs/x.yaml:23:7")
    with pytest.raises(SettingRefused) as info:
        steps.set_option(remote, "gluster1", "kvmgluster", option)  # type: ignore[arg-type]
    first, second = str(info.value).splitlines()
    assert (
        first
        == "labs/x.yaml:23:7: gluster refused option 'foo.bar' = 'baz qux': volume set: failed: option : foo.bar does not exist Did you mean foo.baz?"
    )
    assert second == "  on node gluster1: gluster --mode=script volume set kvmgluster foo.bar 'baz qux'"
    assert remote.commands == ["gluster --mode=script volume set kvmgluster foo.bar 'baz qux'"]


def test_a_gluster_that_does_not_answer_is_a_role_error_not_a_refusal():
    remote = FakeRemote(Result(1, "", "Connection failed. Please check if gluster daemon is operational."))
    with pytest.raises(RoleError):
        steps.set_option(remote, "gluster1", "kvmgluster", GlusterOption("performance.cache-size", "64MB", "labs/x.yaml:9:7"))  # type: ignore[arg-type]
    steps.set_option(FakeRemote(Result(0, "volume set: success", "")), "gluster1", "kvmgluster", GlusterOption("a.b", "c"))  # type: ignore[arg-type]
