"""The ceph role's pools and client keys in Ceph's terms: settings and their errors at the lab file's line,
the commands that make them, Ceph's refusal naming the entry, and what the checks expect (no VMs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvmlab.errors import LabFileError, RoleError, SettingRefused
from kvmlab.loader import parse_lab
from kvmlab.remote import Result
from kvmlab.roles.ceph import checks, steps
from kvmlab.roles.ceph.pools import CephClient, CephPool, book_client, names_a_pool

HEAD = """nodes:
  mon: {roles: [ceph-mon, ceph-admin]}
  osd1: {roles: [ceph-osd], disks: {osd: 4G}}
  osd2: {roles: [ceph-osd], disks: {osd: 4G}}
  hv: {roles: [hypervisor]}
roles:
  ceph:
"""  # the settings start at line 8


def _ceph(settings: str):
    return parse_lab(HEAD + settings, "labs/t.yaml", default_name="t").ceph


def test_without_lists_the_lab_has_the_books_pool_and_key():
    s = _ceph("    pool: vms\n    pg_num: 64\n    client: hvs\n")
    assert s.pools == (CephPool("vms", 64),)
    assert s.clients == (CephClient("hvs", (("mon", "allow r"), ("osd", "allow rwx pool=vms"))),)
    assert (s.pool, s.pg_num, s.client) == ("vms", 64, "hvs")


def test_pools_and_clients_in_cephs_terms():
    s = _ceph(
        "    pools:\n"
        "      - {name: a, pg_num: 16, size: 2, min_size: 1}\n"
        "      - {name: b, application: rgw}\n"
        "    pool: b\n"
        "    clients:\n"
        "      - {name: x, caps: {mon: profile rbd, osd: profile rbd pool=a}}\n"
        "      - {name: y, caps: {mon: allow r}}\n"
    )
    assert s.pools == (CephPool("a", 16, 2, 1, "rbd", "labs/t.yaml:9:9"), CephPool("b", 32, 0, 0, "rgw", "labs/t.yaml:10:9"))
    assert (s.pool, s.pg_num, s.client) == ("b", 32, "x")  # libvirt uses `pool:`'s pool, and the first client
    assert s.clients[1] == CephClient("y", (("mon", "allow r"),), "labs/t.yaml:14:9")


@pytest.mark.parametrize(
    "settings,line,says",
    [
        ("    pools: []\n", 8, "ceph pools is empty"),
        ("    pools:\n      - {pg_num: 16}\n", 9, "a ceph pool is missing required key 'name'"),
        ("    pools:\n      - {name: a}\n      - {name: a}\n", 10, "pool 'a' is listed twice"),
        ("    pools:\n      - {name: a, size: 3}\n", 9, "the lab has 2 ceph-osd node(s)"),
        ("    pools:\n      - {name: a, min_size: 3}\n", 9, "min_size 3 is more than its size 2"),
        ("    pools:\n      - {name: a, pg_num: 24}\n", 9, "pg_num of pool a 24 is not a power of two"),
        ("    pools:\n      - {name: a, application: RBD}\n", 9, "application 'RBD' is not valid"),
        ("    pools:\n      - {name: a, replicas: 2}\n", 9, "replicas"),
        ("    pools:\n      - {name: a}\n    pg_num: 32\n", 10, "each pool has its own pg_num"),
        ("    pools:\n      - {name: a}\n    pool: b\n", 10, "pool 'b' is not one of the listed ones (a)"),
        ("    clients:\n      - {name: x}\n", 9, "ceph client x is missing required key 'caps'"),
        ("    clients:\n      - {name: x, caps: {}}\n", 9, "client x has no caps"),
        ("    clients:\n      - {name: x, caps: {rgw: allow}}\n", 9, "rgw"),
        ("    clients:\n      - {name: admin, caps: {mon: allow r}}\n", 9, "client.admin is the cluster's own key"),
        ("    clients:\n      - {name: x, caps: {mon: allow r}}\n      - {name: x, caps: {mon: allow r}}\n", 10, "listed twice"),
        ("    clients:\n      - {name: x, caps: {mon: allow r}}\n    client: z\n", 10, "client 'z' is not one of the listed ones (x)"),
    ],
)
def test_bad_pools_and_clients_fail_at_their_line(settings, line, says):
    with pytest.raises(LabFileError) as err:
        _ceph(settings)
    assert f"labs/t.yaml:{line}:" in str(err.value) and says in str(err.value), str(err.value)


class FakeRemote:
    """Answers each command with the first canned Result whose key is in it; records the commands."""

    def __init__(self, answers: dict[str, Result]) -> None:
        self.answers, self.commands = answers, []

    def run(self, command: str, timeout: float = 0) -> Result:
        self.commands.append(command)
        return next((r for key, r in self.answers.items() if key in command), Result(0, "", ""))


def test_a_pool_is_made_with_the_books_commands_and_its_own_settings():
    remote = FakeRemote({})
    steps.create_pool(remote, "mon", CephPool("a", 16, size=2, min_size=1))
    steps.create_pool(remote, "mon", CephPool("b", 8, application="rgw"))
    assert [c.replace(steps.CEPH, "ceph") for c in remote.commands] == [
        "ceph osd pool create a 16 16",
        "ceph osd pool set a size 2",
        "ceph osd pool set a min_size 1",
        "rbd pool init a",
        "ceph osd pool create b 8 8",
        "ceph osd pool application enable b rgw",
    ]


def test_cephs_refusal_of_caps_names_the_clients_line():
    refusal = Result(22, "", "Error EINVAL: mon capability parse failed, stopped at 'q' of 'allow rq'\n")
    remote = FakeRemote({"auth get-or-create": refusal})
    with pytest.raises(SettingRefused) as err:
        steps.create_client(remote, "mon", CephClient("x", (("mon", "allow rq"),), "labs/t.yaml:14:9"))
    text = str(err.value)
    assert text.startswith("labs/t.yaml:14:9: Ceph refused client key client.x: Error EINVAL: mon capability parse failed")
    assert "auth get-or-create client.x mon 'allow rq'" in text


def test_a_failure_that_is_not_cephs_refusal_is_the_harnesss():
    remote = FakeRemote({"osd pool create": Result(1, "", "Traceback (most recent call last):\n  timed out\n")})
    with pytest.raises(RoleError):
        steps.create_pool(remote, "mon", CephPool("a"))


def test_only_a_key_limited_to_named_pools_is_proved_refused_elsewhere():
    assert names_a_pool(book_client("x", "a"))
    assert names_a_pool(CephClient("x", (("osd", "profile rbd pool=a, profile rbd-read-only pool=b"),)))
    assert not names_a_pool(CephClient("x", (("mon", "allow r"), ("osd", "allow rwx"))))
    assert not names_a_pool(CephClient("x", (("mon", "allow r"),)))


def _lab_handle(ceph, answer: str):
    mon = SimpleNamespace(name="mon", run_expect=lambda command, what="": answer)
    return SimpleNamespace(
        lab=SimpleNamespace(ceph=ceph, by_role=lambda role: [1, 2, 3] if role == "ceph-osd" else []), by_role=lambda role: [mon]
    )


def test_pool_settings_reads_every_pool_back_from_the_pool_map():
    ceph = _ceph("    pools:\n      - {name: a, pg_num: 16, size: 2, min_size: 1}\n      - {name: b}\n")
    pool_map = (
        '[{"pool_name": "a", "size": 2, "min_size": 1, "pg_num": 16, "application_metadata": {"rbd": {}}},'
        ' {"pool_name": "b", "size": 3, "min_size": 2, "pg_num": 32, "application_metadata": {"rbd": {}}}]'
    )
    seen = checks.pools_have_the_lab_settings(_lab_handle(ceph, pool_map))
    assert seen["a:size"] == 2 and seen["a:min_size"] == 1 and seen["b:pg_num"] == 32 and "b:min_size" not in seen
    wrong = pool_map.replace('"pg_num": 16', '"pg_num": 8')
    with pytest.raises(AssertionError, match="pool a has pg_num 8, the lab file says 16"):
        checks.pools_have_the_lab_settings(_lab_handle(ceph, wrong))
