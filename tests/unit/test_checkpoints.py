"""Checkpoint bookkeeping, saved-lab keys and exact leases, without VMs; pause/save/restore on the test driver."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest

from kvmlab import golden, render, runs
from kvmlab.checkpoints import Book, Checkpoint, CheckpointNode, CheckpointSession, check_name, overlay_name
from kvmlab.errors import HarnessError
from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from tests.unit.test_render import render_smoke

ROOT = Path(__file__).resolve().parents[2]


def test_overlay_names_keep_the_run_prefix_so_gc_finds_them():
    assert overlay_name("kvmlab-smoke-0a1b2c-hv1-root.qcow2", 3) == "kvmlab-smoke-0a1b2c-hv1-root.c3.qcow2"


@pytest.mark.parametrize("bad", ["", "Upper", "a b", "../x", "-lead", "x" * 41])
def test_checkpoint_names_are_checked(bad):
    with pytest.raises(HarnessError, match="not valid"):
        check_name(bad)


def test_book_round_trips_and_knows_frozen_layers(tmp_path):
    book = Book(counter=2, tops={"n1": {"root": "r.c2.qcow2"}})
    book.checkpoints["a"] = Checkpoint("a", "2026-11-26T00:00:00+00:00", {"n1": {"root": "r.qcow2"}}, 1.5)
    book.save(tmp_path / "book.json")
    again = Book.load(tmp_path / "book.json")
    assert again.counter == 2 and again.tops == book.tops
    assert again.checkpoints["a"].layers == {"n1": {"root": "r.qcow2"}}
    assert again.frozen() == {"r.qcow2"}
    assert Book.load(tmp_path / "missing.json").checkpoints == {}


def test_saved_lab_key_follows_the_lab_file_image_and_accelerator(tmp_path):
    lab = tmp_path / "tiny.yaml"
    shutil.copyfile(ROOT / "labs" / "tiny.yaml", lab)
    key = golden.lab_key(lab, "img1", "tcg")
    assert key == golden.lab_key(lab, "img1", "tcg")
    assert key != golden.lab_key(lab, "img2", "tcg")
    assert key != golden.lab_key(lab, "img1", "kvm")
    lab.write_text(lab.read_text() + "\n# changed\n")
    assert key != golden.lab_key(lab, "img1", "tcg")


def test_exact_registration_refuses_a_run_id_or_subnet_in_use(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_LEASES", str(tmp_path / "leases"))
    monkeypatch.setattr(runs, "host_networks", lambda: [])
    first = runs.register_exact("aaaaaa", "tiny", "labs/tiny.yaml", {"mgmt": "10.213.9.0/24"})
    assert first is not None and first.subnets == {"mgmt": "10.213.9.0/24"}
    assert runs.register_exact("aaaaaa", "tiny", "labs/tiny.yaml", {"mgmt": "10.213.10.0/24"}) is None
    assert runs.register_exact("bbbbbb", "tiny", "labs/tiny.yaml", {"mgmt": "10.213.9.0/25"}) is None
    assert runs.register_exact("bbbbbb", "tiny", "labs/tiny.yaml", {"mgmt": "10.213.11.0/24"}) is not None


def test_pause_resume_and_save_restore_on_the_test_driver(provider, tmp_path):
    files = render_smoke()
    provider.create_network(files["networks/mgmt.xml"])
    provider.create_network(files["networks/storage.xml"])
    provider.create_domain(files["domains/nfs1.xml"])
    name = "kvmlab-smoke-0a1b2c-nfs1"
    provider.pause_domain(name)
    assert provider.domain_state(name) == "paused"
    provider.resume_domain(name)
    assert provider.domain_state(name) == "running"
    state = tmp_path / "nfs1.save"
    provider.save_domain(name, str(state))
    assert provider.domain_state(name) == "absent"
    provider.restore_domain(str(state))
    assert provider.domain_state(name) == "running"


def _members(protocol: type) -> set[str]:
    return {name for cls in protocol.__mro__ if cls.__module__.startswith("kvmlab.") for name in vars(cls) if not name.startswith("_")}


@pytest.mark.parametrize("protocol", [CheckpointSession, golden.GoldenSession])
def test_lab_session_offers_what_checkpoints_and_saved_labs_use(protocol):
    """checkpoints.py and golden.py do not import lab.py; their protocols say what they use, and LabSession must have it."""
    lab = load_lab(ROOT / "labs" / "smoke.yaml")
    session = LabSession(lab, provider=None)  # type: ignore[arg-type]  # nothing is started
    session.placement = render.preview_placement(lab)
    assert _members(protocol), protocol
    assert [m for m in sorted(_members(protocol)) if not _has(session, m)] == []
    handle = session.node("nfs1")
    assert [m for m in sorted(_members(CheckpointNode)) if not _has(handle, m)] == []


def _has(obj: object, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)  # without calling properties (a node's state asks the provider)
    except AttributeError:
        return False
    return True


def test_a_restore_waits_for_each_storage_role_present_to_settle(monkeypatch):
    from kvmlab import lab as lab_module
    from kvmlab.roles import Role, registry

    settled: list[str] = []

    def ceph_settles(lab, remote_of):
        settled.append(f"ceph on {lab.name}")

    def never_settles(lab, remote_of):
        raise HarnessError("gave up waiting for Gluster to settle")

    roles = dict(registry())
    roles["ceph-mon"] = Role("ceph-mon", "", settle=ceph_settles)
    roles["gluster"] = Role("gluster", "", settle=never_settles)  # not in the Ceph lab: never asked
    monkeypatch.setattr(lab_module, "registry", lambda: roles)
    ceph_lab = load_lab(Path(__file__).parents[2] / "labs" / "ceph.yaml")
    LabSession(ceph_lab, provider=None).settle_storage()  # type: ignore[arg-type]
    assert settled == ["ceph on ceph"]

    roles["ceph-mon"] = Role("ceph-mon", "", settle=never_settles)
    with pytest.raises(HarnessError, match="Gluster to settle"):
        LabSession(ceph_lab, provider=None).settle_storage()  # type: ignore[arg-type]


class _Remote:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def answers(self) -> bool:
        return True

    def check(self, command: str, what: str = "", timeout: float = 0) -> None:
        self.log.append(command)


def _clock_session(agent_answers: set[str], tmp_path: Path, monkeypatch):
    from types import SimpleNamespace

    from kvmlab import checkpoints

    monkeypatch.setenv("KVMLAB_CHECKPOINTS", str(tmp_path))
    monkeypatch.setattr(checkpoints, "AGENT_CLOCK_S", 0.3)
    ssh: list[str] = []
    agent: list[str] = []

    def set_guest_time(domain: str, seconds: float) -> None:
        if domain not in agent_answers:
            raise HarnessError("libvirt: set the clock: Guest agent is not responding")
        agent.append(domain)

    provider = SimpleNamespace(set_guest_time=set_guest_time)
    nodes = [
        SimpleNamespace(
            name=n, domain=f"d-{n}", state="running", remote=_Remote(ssh), provider=provider, forget_session=lambda: None, console_tail=str
        )
        for n in ("a", "b")
    ]
    session = SimpleNamespace(prefix="p", accel="tcg", provider=provider, log=lambda _m: None)
    return checkpoints.Checkpoints(session), nodes, agent, ssh


def test_a_restored_node_s_clock_is_set_through_its_agent_without_ssh(tmp_path, monkeypatch):
    cps, nodes, agent, ssh = _clock_session({"d-a", "d-b"}, tmp_path, monkeypatch)
    cps._set_clocks(nodes)
    assert sorted(agent) == ["d-a", "d-b"] and ssh == []


def test_a_node_whose_agent_does_not_answer_gets_its_clock_over_ssh(tmp_path, monkeypatch):
    cps, nodes, agent, ssh = _clock_session({"d-a"}, tmp_path, monkeypatch)
    cps._set_clocks(nodes)
    assert agent == ["d-a"] and len(ssh) == 1 and ssh[0].startswith("date -u -s @")
