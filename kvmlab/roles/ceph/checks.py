"""Checks of the ceph-mon, ceph-osd and ceph-admin roles (book 5.7): the cluster, its pool and client key, and the hypervisors' rbd pool.

Expectations come from the lab's model (lab.lab.ceph) and files.py; nodes are
found by role. Monitor commands run on the monitor, which holds the admin keyring
it made at bootstrap, through librados (query.py: a quarter of the `ceph` CLI's time
under TCG). A check raises AssertionError naming the node and what it saw.
"""

from __future__ import annotations

import json
import shlex
import uuid
from typing import Any

from kvmlab.roles import Check
from kvmlab.roles.ceph.conf import READERS, RUNNING_SCRIPT, CephConfOption, same_value
from kvmlab.roles.ceph.files import fsid, pool_size, secret_uuid
from kvmlab.roles.ceph.pools import names_a_pool
from kvmlab.roles.ceph.query import mon_command
from kvmlab.roles.ceph.steps import CEPH, EXPECTED_WARNINGS, MODULE_DEPENDENCY, PYO3_FAILURE
from kvmlab.roles.hypervisor.checks import has_hypervisor

MON, OSD, ADMIN = "ceph-mon", "ceph-osd", "ceph-admin"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb924"  # the start of sha256(""): a secret without a value


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _mon(lab: Any) -> Any:
    mons = lab.by_role(MON)
    assert mons, f"lab {lab.lab.name} has no node with role {MON}"
    return mons[0]


def _json(node: Any, command: str, what: str = "") -> Any:
    return json.loads(node.run_expect(f"{command} --format json", what))


def _mon_json(node: Any, prefix: str, **args: object) -> Any:
    """Monitor command PREFIX's JSON answer, sent through librados on NODE."""
    detail = " ".join(f"{v}" for v in args.values())
    return json.loads(node.run_expect(mon_command(prefix, **args), f"ceph {prefix} {detail}".strip()))


def _client_keyring(mon: Any, client: str) -> str:
    """A keyring file of the client key, readable by root only, for rados --id."""
    path = f"/root/client-{_uid()}.keyring"
    mon.run_expect(
        f"umask 077 && {mon_command('auth get', 'plain', entity=f'client.{client}')} > {path}", f"a keyring file for client.{client}"
    )
    return path


# -- the cluster ------------------------------------------------------------------------


def cluster_is_healthy(lab: Any) -> dict[str, str]:
    """The monitor's status (`ceph -s`): the lab's fsid, an active manager, and health OK or only the warnings EXPECTED_WARNINGS allows.
    Returns the checks muted, with why: on trixie (Ceph 18), the manager modules that cannot load for PYO3_FAILURE."""
    mon = _mon(lab)
    status = _mon_json(mon, "status")
    want = fsid(lab.lab, lab.placement)
    assert status["fsid"] == want, f"{mon.name}: the cluster's fsid is {status['fsid']}, this lab run's is {want}"
    assert status.get("mgrmap", {}).get("available"), f"{mon.name}: no manager is active (mgrmap: {status.get('mgrmap')})"
    health = status["health"]
    checks = {name: check for name, check in health.get("checks", {}).items() if not check.get("muted")}
    unexpected = {name: check.get("summary", {}).get("message", "") for name, check in checks.items()}
    unexpected = {name: message for name, message in unexpected.items() if name not in EXPECTED_WARNINGS}
    assert health["status"] in ("HEALTH_OK", "HEALTH_WARN") and not unexpected, f"{mon.name}: the cluster is {health['status']}: " + (
        "; ".join(f"{name}: {message}" for name, message in sorted(unexpected.items())) or "no checks listed"
    )
    muted = {m.get("code", ""): m.get("summary", "") for m in health.get("mutes", [])}
    unknown = sorted(set(muted) - {MODULE_DEPENDENCY})
    assert not unknown, f"{mon.name}: health checks muted that kvmlab did not mute: {unknown}"
    if MODULE_DEPENDENCY in muted:
        detail = json.loads(mon.run_expect(f"{CEPH} health detail --format json", "health detail"))
        failures = [d["message"] for d in detail.get("checks", {}).get(MODULE_DEPENDENCY, {}).get("detail", [])]
        other = [f for f in failures if PYO3_FAILURE not in f]
        assert not other, f"{mon.name}: manager modules fail for other reasons than PyO3 in subinterpreters: {other}"
        muted[MODULE_DEPENDENCY] = f"{len(failures)} manager modules cannot load: {PYO3_FAILURE} (Ceph 18 on trixie)"
    return {name: muted[name] for name in sorted(muted)}


def conf_is_in_effect(lab: Any) -> dict[str, str]:
    """Each ceph.conf option of the lab file is what the daemons it is for run with (asked through their
    admin sockets: the monitor and manager on the monitor node, each OSD on its node) and what a
    client connected to the cluster uses, as Ceph reads the value (1G is 1073741824, yes is true)."""
    options: tuple[CephConfOption, ...] = lab.lab.ceph.conf
    mon = _mon(lab)
    places = [(mon, ("mon", "mgr", "client"), {f"mon.{mon.name}", f"mgr.{mon.name}", "client.admin"})]
    places += [(node, ("osd",), set()) for node in lab.by_role(OSD)]
    values: dict[str, str] = {}
    for node, kinds, must in places:
        want = {kind: sorted({o.name for o in options if kind in READERS[o.section]}) for kind in kinds}
        want = {kind: names for kind, names in want.items() if names}
        if not want:
            continue
        seen = json.loads(
            node.run_expect(f"python3 -c {shlex.quote(RUNNING_SCRIPT)} {shlex.quote(json.dumps(want))}", "the running daemons' options")
        )
        daemons = set(seen) | {d for d in must if d.split(".")[0] in want}
        if "osd" in want:
            answered = sorted(seen) or "none"
            assert any(d.startswith("osd.") for d in seen), f"{node.name}: no OSD admin socket answered (daemons seen: {answered})"
        for daemon in sorted(daemons):
            got = seen.get(daemon)
            assert got is not None, f"{node.name}: {daemon} did not answer on its admin socket (answered: {sorted(seen) or 'none'})"
            for option in options:
                if daemon.split(".")[0] not in READERS[option.section]:
                    continue
                value = got.get(option.name)
                assert value is not None and same_value(option.value, str(value)), (
                    f"{node.name}: {daemon} runs with {option.name} = {value!r}, "
                    f"the lab file sets [{option.section}] {option.name} = {option.value!r} ({option.where})"
                )
                values[f"{daemon}:{option.name}"] = str(value)
    return values  # for a baseline: what each daemon runs with


def osds_are_up_and_in(lab: Any) -> None:
    """Every ceph-osd node holds one OSD in the CRUSH map under its own name, up and in; the cluster has no others."""
    mon = _mon(lab)
    tree = _mon_json(mon, "osd tree")
    by_id = {item["id"]: item for item in tree["nodes"]}
    hosts = {item["name"]: item for item in tree["nodes"] if item["type"] == "host"}
    osds = [item for item in tree["nodes"] if item["type"] == "osd"] + list(tree.get("stray", []))
    for node in lab.by_role(OSD):
        host = hosts.get(node.name)
        assert host is not None, f"{mon.name}: ceph osd tree has no host {node.name} (hosts: {', '.join(sorted(hosts)) or 'none'})"
        mine = [by_id[i] for i in host.get("children", []) if i in by_id]
        assert len(mine) == 1, f"{mon.name}: host {node.name} has {len(mine)} OSDs in ceph osd tree ({[o['name'] for o in mine]}), want 1"
        osd = mine[0]
        assert osd.get("status") == "up", f"{mon.name}: {osd['name']} on {node.name} is {osd.get('status')}, not up"
        assert float(osd.get("reweight", 0)) > 0, f"{mon.name}: {osd['name']} on {node.name} is out (reweight {osd.get('reweight')})"
    want = len(lab.by_role(OSD))
    assert len(osds) == want, (
        f"{mon.name}: the cluster has {len(osds)} OSDs ({', '.join(o['name'] for o in osds)}), the lab has {want} OSD nodes"
    )


def pools_have_the_lab_settings(lab: Any) -> dict[str, object]:
    """Every pool of the lab file: its pg_num, replicas (one per OSD node, at most 3, unless the file says), min_size
    when the file sets it, and its application, as the monitor's pool map has them (`osd pool ls detail`)."""
    s = lab.lab.ceph
    mon = _mon(lab)
    have = {p["pool_name"]: p for p in _mon_json(mon, "osd pool ls", detail="detail")}
    seen: dict[str, object] = {}
    wrong = []
    for pool in s.pools:
        got = have.get(pool.name)
        if got is None:
            wrong.append(f"no pool {pool.name}")
            continue
        applications = sorted(got.get("application_metadata") or {})
        want = {"pg_num": pool.pg_num, "size": pool.size or pool_size(lab.lab), "application": [pool.application]}
        if pool.min_size:
            want["min_size"] = pool.min_size
        for key, value in want.items():
            read = applications if key == "application" else got.get(key)
            seen[f"{pool.name}:{key}"] = read
            if read != value:
                wrong.append(f"pool {pool.name} has {key} {read}, the lab file says {value}")
    assert not wrong, f"{mon.name}: " + "; ".join(wrong) + f" (pools: {', '.join(sorted(have)) or 'none'})"
    return seen


def client_keys_have_their_caps(lab: Any) -> dict[str, object]:
    """Every client key of the lab file exists with exactly its caps (`auth get`; the key itself is not read out)."""
    mon = _mon(lab)
    wrong, seen = [], {}
    strip_key = "import json,sys; print(json.dumps([e['caps'] for e in json.load(sys.stdin)]))"
    for client in lab.lab.ceph.clients:
        entity = f"client.{client.name}"
        res = mon.run(f"{mon_command('auth get', entity=entity)} | python3 -c {shlex.quote(strip_key)}")
        if res.rc != 0:
            wrong.append(f"no key {entity}")
            continue
        caps = json.loads(res.stdout)[0]
        seen[entity] = caps
        if caps != dict(client.caps):
            wrong.append(f"{entity} has caps {caps}, the lab file says {dict(client.caps)}")
    assert not wrong, f"{mon.name}: " + "; ".join(wrong)
    return seen


def client_key_reads_and_writes_its_pool(lab: Any) -> None:
    """The client key puts, gets and removes an object in the lab's pool."""
    s = lab.lab.ceph
    mon = _mon(lab)
    name = f"probe-{_uid()}"
    keyring = _client_keyring(mon, s.client)
    try:
        rados = f"rados -p {s.pool} --id {s.client} --keyring {keyring}"
        mon.run_expect(f"echo {name} > /tmp/{name} && {rados} put {name} /tmp/{name}", f"put an object as client.{s.client}")
        got = mon.run_expect(f"{rados} get {name} -", f"get it back as client.{s.client}")
        assert got == name, f"{mon.name}: object {name} of pool {s.pool} reads back as '{got}'"
        mon.run_expect(f"{rados} rm {name}", f"remove it as client.{s.client}")
    finally:
        mon.run(f"rm -f {keyring} /tmp/{name}")


def client_key_is_refused_on_another_pool(lab: Any) -> None:
    """The client key can neither write nor read a pool other than its own (the pool is made for the check and removed)."""
    s = lab.lab.ceph
    mon = _mon(lab)
    other = f"other-{_uid()[:6]}"
    keyring = _client_keyring(mon, s.client)
    # The pool is deleted afterwards (ceph.conf allows it) so that later checks and runs see only the lab's own pool.
    mon.run_expect(
        f"{mon_command('osd pool create', pool=other, pg_num=8, pgp_num=8)} && "
        f"{mon_command('osd pool application enable', pool=other, app='rados')}",
        f"a scratch pool {other}",
    )
    try:
        mon.run_expect(f"rados -p {other} put as-admin /etc/hostname", f"write to {other} as admin")  # the pool works
        denied = mon.run(f"rados -p {other} --id {s.client} --keyring {keyring} put {other} /etc/hostname")
        said = denied.output.replace("\n", " ")
        assert denied.rc != 0, f"{mon.name}: client.{s.client} wrote to pool {other}, which its caps do not name"
        assert "operation not permitted" in said.lower() or "permission denied" in said.lower(), (
            f"{mon.name}: client.{s.client}'s write to {other} failed, but not as refused: {said}"
        )
        read = mon.run(f"rados -p {other} --id {s.client} --keyring {keyring} get as-admin -")
        assert read.rc != 0, f"{mon.name}: client.{s.client} read an object of pool {other}, which its caps do not name"
    finally:
        mon.run(f"rm -f {keyring}")
        mon.run(mon_command("osd pool rm", pool=other, pool2=other, yes_i_really_really_mean_it=True))
    pools = _mon_json(mon, "osd pool ls")
    assert other not in pools, f"{mon.name}: scratch pool {other} is still there after osd pool rm"


def _libvirt_client_names_pools(lab: Any) -> bool:
    """Only a key whose osd caps name pools can be refused elsewhere (the book's is)."""
    return names_a_pool(next(c for c in lab.ceph.clients if c.name == lab.ceph.client))


def admin_nodes_reach_the_cluster(lab: Any) -> None:
    """ceph -s works on every ceph-admin node (its ceph.conf and admin keyring) and shows this lab's cluster."""
    want = fsid(lab.lab, lab.placement)
    for admin in lab.by_role(ADMIN):
        seen = _json(admin, f"{CEPH} -s", "ceph -s with the admin keyring")["fsid"]
        assert seen == want, f"{admin.name}: ceph -s shows cluster {seen}, this lab run's is {want}"


# -- the hypervisors ------------------------------------------------------------------------


def rbd_pool_is_running_on_each_hypervisor(lab: Any) -> None:
    """Each hypervisor's rbd pool is running, autostarted, on the lab's Ceph pool, under a libvirtd that does not exit when idle."""
    s = lab.lab.ceph
    for hv in lab.by_role("hypervisor"):
        rows = [line.split() for line in hv.run_expect("virsh pool-list --all --details").splitlines()[2:]]
        row = next((r for r in rows if r and r[0] == s.libvirt_pool), None)
        assert row is not None, f"{hv.name}: no pool {s.libvirt_pool} (pools: {', '.join(r[0] for r in rows if r) or 'none'})"
        assert row[1:3] == ["running", "yes"], f"{hv.name}: pool {s.libvirt_pool} is {row[1]}, autostart {row[2]}"
        xml = hv.run_expect(f"virsh pool-dumpxml {s.libvirt_pool}")
        assert "<pool type='rbd'>" in xml and f"<name>{s.pool}</name>" in xml, (
            f"{hv.name}: pool {s.libvirt_pool} is not an rbd pool on Ceph pool {s.pool}:\n{xml}"
        )
        # An rbd pool stays running only while libvirtd does: a libvirtd that exits when
        # idle (Debian's --timeout 120) comes back with the pool inactive.
        args = hv.run_expect("ps -o args= -C libvirtd", "libvirtd's command line")
        assert "--timeout" not in args, (
            f"{hv.name}: libvirtd runs as `{args}`: it exits when idle and leaves pool {s.libvirt_pool} inactive"
        )


def rbd_volumes_are_images_of_the_pool(lab: Any) -> None:
    """A volume created in each hypervisor's rbd pool is an RBD image of the lab's pool, of its size, and goes with vol-delete."""
    s = lab.lab.ceph
    mon = _mon(lab)
    for hv in lab.by_role("hypervisor"):
        name = f"probe-{_uid()}"
        hv.run_expect(f"virsh vol-create-as {s.libvirt_pool} {name} 64M", f"create a volume in pool {s.libvirt_pool}")
        try:
            images = mon.run_expect(f"rbd ls {s.pool}").split()
            assert name in images, f"{mon.name}: volume {name}, created by {hv.name}, is not an image of pool {s.pool} ({images})"
            size = _json(mon, f"rbd info {s.pool}/{name}")["size"]
            assert size == 64 * 2**20, f"{mon.name}: image {s.pool}/{name}, created by {hv.name} as 64 MiB, is {size} bytes"
        finally:
            hv.run(f"virsh vol-delete --pool {s.libvirt_pool} {name}")
        images = mon.run_expect(f"rbd ls {s.pool}").split()
        assert name not in images, f"{mon.name}: image {s.pool}/{name} is still there after {hv.name}'s vol-delete"


def secret_holds_the_client_key(lab: Any) -> None:
    """Each hypervisor's libvirt secret is for the client key and holds it (digests are compared: no key is printed)."""
    s = lab.lab.ceph
    mon = _mon(lab)
    secret = secret_uuid(lab.lab, lab.placement)
    on_mon = mon.run_expect(
        f"set -o pipefail; {mon_command('auth get-key', 'plain', entity=f'client.{s.client}')} | tr -d '\\n' | sha256sum",
        f"digest of client.{s.client}'s key",
    )
    for hv in lab.by_role("hypervisor"):
        usage = hv.run_expect(f"virsh secret-dumpxml {secret}")
        assert f"<name>client.{s.client} secret</name>" in usage, f"{hv.name}: secret {secret} is not for client.{s.client}:\n{usage}"
        on_hv = hv.run_expect(f"virsh secret-get-value {secret} | tr -d '\\n' | sha256sum", f"digest of secret {secret}")
        assert not on_hv.startswith(EMPTY_SHA256), f"{hv.name}: secret {secret} has no value"
        assert on_hv == on_mon, f"{hv.name}: secret {secret} does not hold client.{s.client}'s key (the digests differ)"


CHECKS = (
    Check(MON, "cluster-healthy", cluster_is_healthy),
    Check(OSD, "osds-up-and-in", osds_are_up_and_in),
    Check(MON, "conf-in-effect", conf_is_in_effect, applies=lambda lab: bool(lab.ceph.conf)),
    Check(MON, "pool-settings", pools_have_the_lab_settings),
    Check(MON, "client-caps", client_keys_have_their_caps),
    Check(MON, "client-key-own-pool", client_key_reads_and_writes_its_pool),
    Check(MON, "client-key-refused-elsewhere", client_key_is_refused_on_another_pool, applies=_libvirt_client_names_pools),
    Check(ADMIN, "admin-cli", admin_nodes_reach_the_cluster),
    Check(MON, "hypervisor-rbd-pool", rbd_pool_is_running_on_each_hypervisor, applies=has_hypervisor),
    Check(MON, "hypervisor-rbd-volumes", rbd_volumes_are_images_of_the_pool, applies=has_hypervisor),
    Check(MON, "hypervisor-secret", secret_holds_the_client_key, applies=has_hypervisor),
)
