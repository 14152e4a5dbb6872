"""The ceph roles' conf: ceph.conf options in Ceph's own names, written per section, judged by Ceph, read back."""

from __future__ import annotations

import ipaddress
import json

import pytest

from kvmlab.errors import LabFileError, SettingRefused
from kvmlab.loader import load_lab
from kvmlab.model import Placement
from kvmlab.roles.ceph.conf import CephConfOption, same_value
from kvmlab.roles.ceph.files import files
from kvmlab.roles.ceph.steps import judge_conf

LAB = """networks: {mgmt: {}}
nodes:
  mon1: {roles: [ceph-mon]}
  osd1: {roles: [ceph-osd], disks: {osd: 4G}}
roles:
  ceph:
    conf:
%s"""


def lab_with(tmp_path, conf: str):
    path = tmp_path / "ceph.yaml"
    path.write_text(LAB % conf)
    return load_lab(path)


def rendered_conf(lab) -> str:
    placement = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24")})
    return files(lab, placement, lab.node("mon1"))["ceph.conf"]


def sections(text: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[]")
            out[current] = {}
        elif "=" in line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            out[current][key] = value
    return out


def test_options_keep_their_section_order_and_line_with_names_as_ceph_spells_them(tmp_path):
    lab = lab_with(
        tmp_path, "      global: {osd heartbeat grace: 45}\n      osd: {osd-max-backfills: 2, bluestore_cache_autotune: false}\n"
    )
    assert [(o.section, o.name, o.value) for o in lab.ceph.conf] == [
        ("global", "osd_heartbeat_grace", "45"),
        ("osd", "osd_max_backfills", "2"),
        ("osd", "bluestore_cache_autotune", "false"),
    ]
    assert [o.where.rsplit("/", 1)[-1] for o in lab.ceph.conf] == ["ceph.yaml:8:16", "ceph.yaml:9:13", "ceph.yaml:9:35"]


def test_an_option_of_the_lab_replaces_kvmlabs_default_in_its_section_only(tmp_path):
    lab = lab_with(
        tmp_path, "      global: {osd_heartbeat_grace: 45}\n      osd: {osd_memory_target: 1G}\n      client: {rbd_cache: false}\n"
    )
    conf = sections(rendered_conf(lab))
    assert conf["global"]["osd_heartbeat_grace"] == "45"
    assert conf["osd"] == {"osd_memory_target": "1G"}
    assert conf["client"] == {"rbd_cache": "false"}
    assert "mon" not in conf  # a section the lab does not use is not written
    assert conf["global"]["mon_allow_pool_delete"] == "true"  # the other defaults stay


def test_without_conf_the_file_is_kvmlabs_alone(tmp_path):
    path = tmp_path / "ceph.yaml"
    path.write_text((LAB % "").replace("    conf:\n", "    network: mgmt\n"))
    conf = sections(rendered_conf(load_lab(path)))
    assert sorted(conf) == ["global", "osd"]
    assert conf["osd"] == {"osd_memory_target": "939524096"}


@pytest.mark.parametrize(
    "conf,message",
    [
        (
            "      mds: {mds_cache_memory_limit: 1G}",
            "ceph conf section 'mds' is not one kvmlab writes: use one of global, mon, mgr, osd, client",
        ),
        ("      global: {fsid: abc}", "ceph conf option 'fsid' is set by the role: the cluster id is made per lab run"),
        ("      global: {public network: 10.0.0.0/8}", "choose the network with 'network:'"),
        ("      osd: {osd_max_backfills: 2, osd max backfills: 3}", "ceph conf \\[osd\\] sets osd_max_backfills twice"),
        ("      osd: {osd_max_backfills: }", "ceph conf \\[osd\\] osd_max_backfills has no value"),
        ("      osd: {'osd$x': 1}", "'osd\\$x' in ceph conf \\[osd\\] is not a Ceph option name"),
    ],
)
def test_bad_conf_is_refused_at_its_line(tmp_path, conf, message):
    with pytest.raises(LabFileError, match=message) as err:
        lab_with(tmp_path, conf + "\n")
    assert err.value.line == 8


@pytest.mark.parametrize(
    "wanted,running",
    [("1G", "1073741824"), ("yes", "true"), ("off", "false"), ("0.5", "0.500000"), ("10m", "600"), ("10M", "10485760"), ("45", "45")],
)
def test_values_compare_as_ceph_reads_them(wanted, running):
    assert same_value(wanted, running)


@pytest.mark.parametrize("wanted,running", [("1G", "4294967296"), ("true", "false"), ("banana", "4294967296"), ("2", "3")])
def test_different_values_differ(wanted, running):
    assert not same_value(wanted, running)


class FakeRemote:
    def __init__(self, answers):
        self.answers, self.commands = answers, []

    def run(self, command, timeout=None):
        from kvmlab.remote import Result

        self.commands.append(command)
        return Result(0, "\n".join(json.dumps(a) for a in self.answers), "")


def test_cephs_refusal_of_an_unknown_option_names_its_line(tmp_path):
    option = CephConfOption("osd", "osd_max_backfils", "2", "labs/x.yaml:9:14")
    remote = FakeRemote([[1, "", "failed to get config option 'osd_max_backfils': option not found"]])
    with pytest.raises(SettingRefused, match=r"labs/x\.yaml:9:14: Ceph refused option \[osd\] osd_max_backfils = .2.: failed to get"):
        judge_conf(remote, "mon1", (option,))
    assert "osd.0" in remote.commands[0]


def test_a_value_ceph_could_not_parse_is_refused(tmp_path):
    option = CephConfOption("global", "osd_memory_target", "banana", "labs/x.yaml:8:17")
    with pytest.raises(SettingRefused, match="it reads '4294967296' instead"):
        judge_conf(FakeRemote([[0, "4294967296", ""]]), "mon1", (option,))
    judge_conf(FakeRemote([[0, "1073741824", ""]]), "mon1", (CephConfOption("global", "osd_memory_target", "1G"),))


def test_scripts_sent_over_ssh_hold_no_nul_character():
    from kvmlab.roles.ceph.conf import PROBE_SCRIPT, RUNNING_SCRIPT

    # A NUL in an SSH command line ends the channel before the command runs.
    assert "\0" not in RUNNING_SCRIPT and "\0" not in PROBE_SCRIPT
    assert 'b"\\0"' in RUNNING_SCRIPT  # the admin socket's request terminator, as the script writes it
