"""Subnet leases never collide; gc removes dead runs' objects and nothing else."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys

import pytest

from kvmlab import cli, gc, golden, host_locks, runs, settings
from kvmlab.libvirt_host import host_of
from tests.unit.test_render import render_smoke


@pytest.fixture(autouse=True)
def private_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMLAB_LEASES", str(tmp_path / "leases"))
    monkeypatch.setenv("KVMLAB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("KVMLAB_CONSOLE_DIR", str(tmp_path / "console"))
    monkeypatch.setenv("KVMLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("KVMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runs, "host_networks", lambda: [ipaddress.IPv4Network("10.213.0.0/24")])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_allocate_skips_taken_and_sizes_by_prefix():
    got = runs.allocate({"a": 24, "b": 26, "c": 24}, [ipaddress.IPv4Network("10.213.0.0/23")])
    assert got == {
        "a": ipaddress.IPv4Network("10.213.2.0/24"),
        "b": ipaddress.IPv4Network("10.213.3.0/26"),
        "c": ipaddress.IPv4Network("10.213.4.0/24"),
    }


def test_allocate_from_another_pool_names_what_did_not_fit():
    pool = ipaddress.IPv4Network("10.99.0.0/23")
    assert runs.allocate({"a": 24}, [], pool=pool) == {"a": ipaddress.IPv4Network("10.99.0.0/24")}
    with pytest.raises(runs.NoFreeSubnet, match=r"no free /24 subnet left in 10\.99\.0\.0/23 for network 'c'") as info:
        runs.allocate({"a": 24, "b": 24, "c": 24}, [], pool=pool)
    assert (info.value.network, info.value.prefix, info.value.pool) == ("c", 24, pool)


def test_a_run_gives_its_subnets_back_as_a_placement():
    run = runs.register("cccccc", "smoke", "labs/smoke.yaml", {"mgmt": 24, "storage": 26})
    placement = run.placement()
    assert placement.run_id == "cccccc"
    assert placement.subnets == {k: ipaddress.IPv4Network(v) for k, v in run.subnets.items()}
    assert placement.subnets["storage"].prefixlen == 26


def test_two_runs_of_the_same_lab_get_distinct_subnets():
    first = runs.register("aaaaaa", "smoke", "labs/smoke.yaml", {"mgmt": 24, "storage": 24})
    second = runs.register("bbbbbb", "smoke", "labs/smoke.yaml", {"mgmt": 24, "storage": 24})
    nets = [ipaddress.IPv4Network(s) for r in (first, second) for s in r.subnets.values()]
    assert len(nets) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    assert ipaddress.IPv4Network("10.213.0.0/24") not in nets  # the host's own route
    runs.release("aaaaaa")
    assert set(runs.all_runs()) == {"bbbbbb"}


def test_parallel_registrations_never_share_a_subnet(tmp_path):
    code = (
        "import sys; from kvmlab import runs; "
        "runs.host_networks = lambda: []; "
        "r = runs.register(sys.argv[1], 'p', 'p.yaml', {'n': 24}); print(r.subnets['n'])"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, f"{i:06x}"], stdout=subprocess.PIPE, text=True, env=os.environ) for i in range(8)
    ]
    subnets = [p.communicate()[0].strip() for p in procs]
    assert len(set(subnets)) == 8, subnets


def test_owner_liveness():
    run = runs.register("cccccc", "smoke", "x", {"mgmt": 24})
    assert run.owner_alive()
    run.pid = dead_pid()
    assert not run.owner_alive()
    run.kept = True
    assert run.owner_alive()


def _start_smoke_objects(provider, run_id: str, pid: int, user: str = "tester", host: str | None = None) -> None:
    for rel, text in render_smoke().items():
        text = text.replace("0a1b2c", run_id).replace("pid='4242'", f"pid='{pid}'").replace("user='tester'", f"user='{user}'")
        text = text.replace("boot='boot-1'", f"boot='{runs.boot_id()}'")
        if host is not None:
            text = text.replace("host='builder'", f"host='{host}'")
        if rel.startswith("networks/"):
            provider.create_network(
                text.replace("10.213.4.", f"10.{int(run_id[:2], 16)}.4.").replace("10.213.5.", f"10.{int(run_id[:2], 16)}.5.")
            )
        elif rel.startswith("domains/"):
            provider.create_domain(text)


def test_gc_removes_a_dead_runs_objects_and_record(provider):
    pid = dead_pid()
    runs.register("dddddd", "smoke", "x", {"mgmt": 24})
    records = runs.all_runs()
    rec = records["dddddd"]
    rec.pid = pid
    with runs._registry() as reg:
        reg["dddddd"] = rec
    _start_smoke_objects(provider, "dddddd", pid, user=runs.me())
    run_dir = settings.state_dir() / "runs" / "kvmlab-smoke-dddddd"
    run_dir.mkdir(parents=True)
    settings.console_dir().mkdir(parents=True)
    console = settings.console_dir() / "kvmlab-smoke-dddddd-nfs1.log"
    console.write_text("boot")

    out = gc.collect(provider)

    assert sorted(out.domains) == ["kvmlab-smoke-dddddd-hv1", "kvmlab-smoke-dddddd-nfs1"]
    assert sorted(out.networks) == ["kvmlab-smoke-dddddd-mgmt", "kvmlab-smoke-dddddd-storage"]
    assert out.runs == ["dddddd"]
    assert not run_dir.exists() and not console.exists()
    assert "dddddd" not in runs.all_runs()
    assert not [d for d in provider.list_domains() if "dddddd" in d.name]


def test_gc_spares_live_kept_and_other_users_runs(provider):
    runs.register("eeeeee", "smoke", "x", {"mgmt": 24})  # owned by this live test process
    _start_smoke_objects(provider, "eeeeee", os.getpid(), user=runs.me())
    kept = runs.register("ffffff", "smoke", "x", {"mgmt": 24})
    runs.set_kept("ffffff", True)
    _start_smoke_objects(provider, "ffffff", dead_pid(), user=runs.me())
    # No record at all, but another user's domains: never ours to remove.
    _start_smoke_objects(provider, "abcdef", dead_pid(), user="someone-else")
    assert kept.run_id == "ffffff"

    out = gc.collect(provider)

    assert out.empty, out
    names = {d.name for d in provider.list_domains()}
    assert {"kvmlab-smoke-eeeeee-nfs1", "kvmlab-smoke-ffffff-nfs1", "kvmlab-smoke-abcdef-nfs1"} <= names


def test_a_kept_lab_unknown_to_this_registry_is_spared_by_its_domains_word(provider):
    # Kept by a client with another run registry (KVMLAB_LEASES), whose `up` has exited: this registry
    # has no record, and the owner pid in the domains is dead. Only the domains' kept='1' says to spare it.
    _start_smoke_objects(provider, "cccccc", dead_pid(), user=runs.me(), host=socket.gethostname())
    _start_smoke_objects(provider, "c0c0c0", dead_pid(), user=runs.me(), host=socket.gethostname())
    for dom in provider.list_domains():
        if "cccccc" in dom.name:
            provider.mark_domain_kept(dom.name)
    assert {d.name: d.kept for d in provider.list_domains()} == {
        "kvmlab-smoke-cccccc-nfs1": True,
        "kvmlab-smoke-cccccc-hv1": True,
        "kvmlab-smoke-c0c0c0-nfs1": False,
        "kvmlab-smoke-c0c0c0-hv1": False,
    }

    out = gc.collect(provider)

    assert sorted(out.domains) == ["kvmlab-smoke-c0c0c0-hv1", "kvmlab-smoke-c0c0c0-nfs1"]
    assert {d.name for d in provider.list_domains()} == {"kvmlab-smoke-cccccc-nfs1", "kvmlab-smoke-cccccc-hv1"}
    assert gc.collect(provider, only_runs={"cccccc"}).domains, "`down` still takes it"


def test_a_run_that_starts_while_gc_lists_the_host_keeps_its_network(provider):
    # A run registers, then creates its network, while gc is still listing the domains: gc must judge
    # that network by a record read after its listings, not take it for a killed run's orphan.
    text = render_smoke()["networks/mgmt.xml"].replace("0a1b2c", "0b0b0b").replace("10.213.4.", "10.98.4.")

    class StartsDuringTheListing:
        def __init__(self, inner):
            self.inner = inner

        def list_domains(self):
            found = self.inner.list_domains()
            runs.register("0b0b0b", "smoke", "x", {"mgmt": 24})  # owned by this live process
            self.inner.create_network(text)
            return found

        def __getattr__(self, name):
            return getattr(self.inner, name)

    out = gc.collect(StartsDuringTheListing(provider))

    assert out.networks == [], out
    assert "kvmlab-smoke-0b0b0b-mgmt" in provider.list_networks()


def test_a_network_of_a_run_no_registry_here_knows_is_kept_while_its_owner_holds_its_lock(provider, tmp_path, monkeypatch):
    # Another client (another registry) has just created its network; its first domain comes later.
    monkeypatch.setattr(host_locks, "LOCK_DIR", str(tmp_path))
    text = render_smoke()["networks/mgmt.xml"].replace("0a1b2c", "0e0e0e").replace("10.213.4.", "10.97.4.")
    provider.create_network(text)
    owner = host_locks.RunLock(host_of(provider.uri), "0e0e0e")
    assert gc.collect(provider).networks == []
    owner.release()  # its process ended without a domain: an orphan now
    stale = tmp_path / "kvmlab-run-0e0e0e"
    stale.touch()  # as a killed owner leaves it: there, and held by nobody
    assert gc.collect(provider).networks == ["kvmlab-smoke-0e0e0e-mgmt"]
    assert not stale.exists(), "the dead run's lock file stays behind"


def test_gc_removes_orphans_that_nothing_claims(provider):
    # A run killed between creating its network and writing anything else: no record, no domain.
    text = render_smoke()["networks/mgmt.xml"].replace("0a1b2c", "0f0f0f").replace("10.213.4.", "10.99.4.")
    provider.create_network(text)
    out = gc.collect(provider)
    assert out.networks == ["kvmlab-smoke-0f0f0f-mgmt"]


def test_down_removes_only_the_named_run(provider):
    runs.register("111111", "smoke", "x", {"mgmt": 24})
    runs.register("222222", "smoke", "x", {"mgmt": 24})
    _start_smoke_objects(provider, "111111", os.getpid(), user=runs.me())
    _start_smoke_objects(provider, "222222", os.getpid(), user=runs.me())
    out = gc.collect(provider, only_runs={"111111"})
    assert len(out.domains) == 2 and all("111111" in d for d in out.domains)
    assert set(runs.all_runs()) == {"222222"}


def _saved_lab(name: str, volumes: dict[str, dict[str, str]]) -> None:
    path = golden.saved_root() / name
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"volumes": volumes}))


def test_gc_removes_what_a_killed_lab_save_left_and_keeps_saved_labs():
    _saved_lab("smoke-0123", {"nfs1": {"root": "saved-smoke-0123-nfs1-root.qcow2"}})
    (golden.saved_root() / "smoke-4567.partial").mkdir()
    pool = ["saved-smoke-0123-nfs1-root.qcow2", "saved-smoke-4567-nfs1-root.qcow2", "base-abc.qcow2"]
    deleted: list[str] = []

    removed = golden.remove_orphans(pool, deleted.append)

    assert deleted == ["saved-smoke-4567-nfs1-root.qcow2"]
    assert sorted(removed) == ["saved-smoke-4567-nfs1-root.qcow2", "smoke-4567.partial"]
    assert (golden.saved_root() / "smoke-0123" / "manifest.json").exists()
    assert not (golden.saved_root() / "smoke-4567.partial").exists()


def test_gc_leaves_a_save_in_progress_alone():
    (golden.saved_root() / "smoke-4567.partial").mkdir(parents=True)
    with golden._saving():
        removed = golden.remove_orphans(["saved-smoke-4567-nfs1-root.qcow2"], lambda vol: pytest.fail(vol))
    assert removed == []
    assert (golden.saved_root() / "smoke-4567.partial").exists()


GONE_HOST = "qemu+libssh://root@10.213.7.2/system"


def _run_on(run_id: str, uri: str, pid: int, node_uris: dict[str, str] | None = None) -> None:
    runs.register(run_id, "tiny", "labs/tiny.yaml", {"mgmt": 24}, uri=uri, node_uris=node_uris)
    with runs._registry() as registry:
        registry[run_id].pid = pid


def test_gc_forgets_the_dead_runs_of_a_host_that_will_never_answer(monkeypatch, capsys):
    _run_on("aaaaaa", GONE_HOST, dead_pid())
    _run_on("bbbbbb", "qemu:///system", dead_pid(), node_uris={"n1": "qemu:///system", "n2": GONE_HOST})
    _run_on("cccccc", "qemu:///system", dead_pid())
    monkeypatch.setattr(cli, "_gc_hosts", lambda hosts: [GONE_HOST])  # nothing else to collect on here
    assert cli.main(["gc", "--forget", GONE_HOST]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"forgot runs aaaaaa, bbbbbb on {GONE_HOST}: their records and subnet leases are gone"
    )
    left = runs.all_runs()
    assert sorted(left) == ["bbbbbb", "cccccc"]  # the spread run keeps its other host's node
    assert left["bbbbbb"].uris == ["qemu:///system"]


def test_gc_does_not_forget_a_host_a_live_process_still_uses(capsys):
    _run_on("aaaaaa", GONE_HOST, os.getpid())
    assert cli.main(["gc", "--forget", GONE_HOST]) == 1
    assert f"runs on {GONE_HOST} are still owned by live processes: aaaaaa (lab tiny, pid {os.getpid()})" in capsys.readouterr().err
    assert sorted(runs.all_runs()) == ["aaaaaa"]


def test_gc_refuses_to_forget_a_host_no_run_was_recorded_on(capsys):
    _run_on("aaaaaa", GONE_HOST, dead_pid())
    assert cli.main(["gc", "--forget", "qemu+libssh://root@10.213.7.3/system"]) == 1
    assert (
        f"no run is recorded on qemu+libssh://root@10.213.7.3/system: nothing to forget (hosts with runs: {GONE_HOST})"
        in capsys.readouterr().err
    )
