"""ceph-mon, ceph-osd, ceph-admin (book 5.7): a Ceph 16 cluster bootstrapped by hand, and hypervisors' rbd pools.

Debian 12 ships neither ceph-deploy (the book's tool) nor cephadm, so the monitor is
made the way Ceph's "Manual Deployment" guide makes it:

- setup   (ceph-mon): keyrings, monmap, `ceph-mon --mkfs`, ceph-mon@ and ceph-mgr@ started
- join    (ceph-osd): the bootstrap-osd keyring from the monitor, then a bluestore OSD on the
          raw extra disk made by hand (osd-create.sh: `ceph osd new`, `ceph-osd --mkfs`)
- finish  (ceph-mon): every OSD up and in, the pools, the client keys, a healthy cluster;
          (ceph-admin): ceph.conf and the admin keyring, so `ceph -s` works there
- clients (hypervisor, through attach_hypervisor): a libvirt secret with the client key
          and an rbd pool on the cluster

Keys travel monitor -> harness -> node over SSH stdin and are written with umask 077;
none is ever part of a command line (a RoleError prints its command).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable

from kvmlab.errors import RoleError, SettingRefused
from kvmlab.model import Lab, Node
from kvmlab.remote import Remote
from kvmlab.roles import RoleContext
from kvmlab.roles.ceph.conf import PROBE_SCRIPT, CephConfOption, same_value
from kvmlab.roles.ceph.files import has_ceph, monitor, secret_uuid
from kvmlab.roles.ceph.pools import CephClient, CephPool
from kvmlab.roles.ceph.query import mon_json
from kvmlab.roles.pools import define_pool
from kvmlab.wait import wait_until

CONF = "/etc/ceph/ceph.conf"
ADMIN_KEYRING = "/etc/ceph/ceph.client.admin.keyring"
BOOTSTRAP_OSD_KEYRING = "/var/lib/ceph/bootstrap-osd/ceph.keyring"
SCRIPTS = "/etc/kvmlab/ceph"
OSD_DROP_IN = "/etc/systemd/system/ceph-osd@.service.d/kvmlab-block.conf"
CEPH = "ceph --connect-timeout 60"  # a CLI call that cannot hang on an unreachable monitor

# Fixed deadlines scaled for TCG (RoleContext does not say which accelerator runs).
# Measured under TCG: three OSDs up ~65 s after their join starts, the manager ~95 s
# after the monitor; health settles once the pool's PGs have peered.
OSDS_UP_S = 600.0
HEALTHY_S = 600.0

# Health checks a working lab may still raise, with the reason each is harmless.
# Anything else keeps the cluster from being called healthy.
EXPECTED_WARNINGS: dict[str, str] = {}

# Ceph 18 on Debian 13 (trixie): the manager runs each module in a Python subinterpreter, and the
# modules that import bcrypt or cryptography (PyO3 extensions, which refuse subinterpreters) cannot
# load: balancer, crash, pg_autoscaler, status, ... No lab needs them (pg counts are the lab's own,
# the autoscaler is off), so that warning, when every failure is this one, is muted (sticky, in the
# monitor's store) and the cluster can be HEALTH_OK; any other module failure still counts.
PYO3_FAILURE = "PyO3 modules do not yet support subinterpreters"
MODULE_DEPENDENCY = "MGR_MODULE_DEPENDENCY"


# -- ceph-mon -----------------------------------------------------------------
def mon_setup(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    remote.put(CONF, ctx.file(node, "ceph.conf"))
    judge_conf(remote, node.name, ctx.lab.ceph.conf)
    for script in ("mon-bootstrap.sh", "mgr-start.sh"):
        remote.put(f"{SCRIPTS}/{script}", ctx.file(node, script), 0o755)
    remote.check(f"sh {SCRIPTS}/mon-bootstrap.sh", "bootstrap the monitor (keyrings, monmap, mkfs, ceph-mon@)")
    remote.check(f"sh {SCRIPTS}/mgr-start.sh", "create the manager's key and start ceph-mgr@")


def judge_conf(remote: Remote, mon: str, options: tuple[CephConfOption, ...]) -> None:
    """Before the monitor is made: Ceph's own ceph-conf reads each option of the lab's conf for the
    daemon its section is for. An unknown name, or a value Ceph did not take (it reads back another),
    fails with the option's line in the lab file and Ceph's words."""
    if not options:
        return
    who = {"global": f"mon.{mon}", "mon": f"mon.{mon}", "mgr": f"mgr.{mon}", "osd": "osd.0", "client": "client.admin"}
    asked = [(who[o.section], o.name) for o in options]
    command = f"python3 -c {shlex.quote(PROBE_SCRIPT)} {shlex.quote(json.dumps(asked))}"
    res = remote.run(command, timeout=300)
    answers = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("[")]
    if res.rc != 0 or len(answers) != len(options):
        raise RoleError(mon, "read the lab's ceph.conf options with ceph-conf", command, res.rc, res.output)
    for option, (rc, value, said) in zip(options, answers, strict=True):
        what = f"Ceph refused option [{option.section}] {option.name} = '{option.value}'"
        shown = f"ceph-conf --name {who[option.section]} --show-config-value {option.name}"
        if rc != 0:
            raise SettingRefused(option.where, what, said or value or f"ceph-conf exited {rc}", mon, shown)
        if not same_value(option.value, value):
            raise SettingRefused(option.where, what, f"it reads '{value}' instead (a value it could not parse is dropped)", mon, shown)


def mon_finish(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    want = len(ctx.lab.by_role("ceph-osd"))
    wait_until(
        lambda: osds_up_and_in(remote) == (want, want),
        OSDS_UP_S,
        f"{want} OSDs up and in",
        interval=5.0,
        context=lambda: remote.run(f"{CEPH} osd tree", timeout=120).output,
    )
    s = ctx.lab.ceph
    for pool in s.pools:
        create_pool(remote, node.name, pool)
    for client in s.clients:
        create_client(remote, node.name, client)
    wait_until(
        lambda: unexpected_health(remote) == [],
        HEALTHY_S,
        "HEALTH_OK (or only expected warnings)",
        interval=5.0,
        context=lambda: remote.run(f"{CEPH} health detail", timeout=120).output,
    )


def create_pool(remote: Remote, mon: str, pool: CephPool) -> None:
    """The book's commands for a pool; the settings the lab file gives beyond them, one `ceph osd pool set` each."""
    name = shlex.quote(pool.name)
    commands = [f"{CEPH} osd pool create {name} {pool.pg_num} {pool.pg_num}"]
    commands += [f"{CEPH} osd pool set {name} {var} {value}" for var, value in (("size", pool.size), ("min_size", pool.min_size)) if value]
    if pool.application == "rbd":
        commands.append(f"rbd pool init {name}")
    else:
        commands.append(f"{CEPH} osd pool application enable {name} {shlex.quote(pool.application)}")
    for command in commands:
        _ceph_judges(remote, mon, command, pool.where, f"Ceph refused pool {pool.name}", f"create pool {pool.name}")


def create_client(remote: Remote, mon: str, client: CephClient) -> None:
    caps = " ".join(f"{service} {shlex.quote(cap)}" for service, cap in client.caps)
    # get-or-create prints the new keyring: keep it out of every log.
    command = f"{CEPH} auth get-or-create {shlex.quote('client.' + client.name)} {caps} >/dev/null"
    _ceph_judges(remote, mon, command, client.where, f"Ceph refused client key client.{client.name}", f"create key client.{client.name}")


def _ceph_judges(remote: Remote, mon: str, command: str, where: str, refused: str, what: str) -> None:
    """Run COMMAND; Ceph's own refusal ("Error EINVAL: ...") is the lab file's fault, anything else the harness's."""
    res = remote.run(command, timeout=300)
    if res.rc == 0:
        return
    said = [line.strip() for line in res.output.splitlines() if line.strip().startswith("Error E")]
    if said:
        raise SettingRefused(where, refused, " ".join(said), mon, command)
    raise RoleError(mon, what, command, res.rc, res.output)


SETTLE_S = 180.0


def settle(lab: Lab, remote_of: Callable[[str], Remote]) -> None:
    """After a restore: health as it was when the lab was built. An op the save caught in flight
    shows as SLOW_OPS (aged by the clock jump) until it completes, usually within ~15 s."""
    remote = remote_of(monitor(lab).name)
    wait_until(
        lambda: unexpected_health(remote) == [],
        SETTLE_S,
        "Ceph to settle after the restore (HEALTH_OK or only expected warnings)",
        interval=2.0,
        context=lambda: remote.run(f"{CEPH} health detail", timeout=120).output,
    )


def osds_up_and_in(remote: Remote) -> tuple[int, int] | None:
    res = mon_json(remote, "osd stat")
    if res.rc != 0:
        return None
    stat = json.loads(res.stdout)
    return stat["num_up_osds"], stat["num_in_osds"]


def unexpected_health(remote: Remote) -> list[str] | None:
    """Checks keeping the cluster from health OK, less EXPECTED_WARNINGS; None if unknown.

    A cluster whose manager is not active yet counts as unhealthy even while health says OK:
    the monitor raises MGR_DOWN only after mon_mgr_inactive_grace (60 s), and without a manager
    no PG state is reported, so an early HEALTH_OK under TCG says nothing."""
    res = mon_json(remote, "status")
    if res.rc != 0:
        return None
    status = json.loads(res.stdout)
    health = status["health"]
    waiting = [] if status.get("mgrmap", {}).get("available") else ["no active manager yet"]
    if health["status"] == "HEALTH_OK":
        return waiting
    checks = {name: c for name, c in health.get("checks", {}).items() if name not in EXPECTED_WARNINGS and not c.get("muted")}
    if MODULE_DEPENDENCY in checks and mute_known_module_failures(remote):
        del checks[MODULE_DEPENDENCY]
    problems = [f"{name}: {c['summary']['message']}" for name, c in checks.items()]
    return waiting + (problems if health["status"] == "HEALTH_WARN" else problems or [health["status"]])


def mute_known_module_failures(remote: Remote) -> bool:
    """Mute MGR_MODULE_DEPENDENCY if every module it names fails for PYO3_FAILURE; whether it did."""
    res = mon_json(remote, "health", detail="detail")
    if res.rc != 0:
        return False
    detail = json.loads(res.stdout).get("checks", {}).get(MODULE_DEPENDENCY, {}).get("detail", [])
    if not detail or not all(PYO3_FAILURE in d.get("message", "") for d in detail):
        return False
    return remote.run(f"{CEPH} health mute {MODULE_DEPENDENCY} --sticky", timeout=120).rc == 0


# -- ceph-osd -----------------------------------------------------------------
def osd_setup(ctx: RoleContext, node: Node) -> None:
    """Everything an OSD needs that does not need the monitor, done while the monitor is made."""
    remote = ctx.remote(node.name)
    remote.put(CONF, ctx.file(node, "ceph.conf"))
    remote.put(f"{SCRIPTS}/osd-create.sh", ctx.file(node, "osd-create.sh"), 0o755)
    remote.put(OSD_DROP_IN, ctx.file(node, "osd-block-owner.conf"))
    remote.check("systemctl daemon-reload && systemctl --no-reload enable -q ceph.target ceph-osd.target", "enable ceph-osd.target")


def osd_join(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    mon = monitor(ctx.lab).name
    keyring = ctx.remote(mon).check(f"cat {BOOTSTRAP_OSD_KEYRING}", "read the bootstrap-osd keyring").stdout
    put_private(remote, BOOTSTRAP_OSD_KEYRING, keyring, "write the bootstrap-osd keyring")
    # Registers the OSD with the monitor, mkfs on the raw disk, enables and starts ceph-osd@N.
    remote.check(f"sh {SCRIPTS}/osd-create.sh", f"create a bluestore OSD on disk {ctx.lab.ceph.osd_disk}")


# -- ceph-admin ---------------------------------------------------------------
def admin_finish(ctx: RoleContext, node: Node) -> None:
    remote = ctx.remote(node.name)
    mon = monitor(ctx.lab).name
    if node.name != mon:  # the monitor made both files itself
        remote.put(CONF, ctx.file(node, "ceph.conf"))
        keyring = ctx.remote(mon).check(f"cat {ADMIN_KEYRING}", "read the admin keyring").stdout
        put_private(remote, ADMIN_KEYRING, keyring, "write the admin keyring")
    remote.check(f"{CEPH} -s", "run ceph -s with the admin keyring")


# -- hypervisor ---------------------------------------------------------------
def attach_hypervisor(ctx: RoleContext, node: Node) -> None:
    """A libvirt secret with the client key and an rbd pool; nothing when the lab has no Ceph."""
    if not has_ceph(ctx.lab):
        return
    s = ctx.lab.ceph
    remote = ctx.remote(node.name)
    remote.put(CONF, ctx.file(node, "ceph.conf"))  # for rbd/rados by hand on the hypervisor
    remote.put("/etc/kvmlab/secret-ceph.xml", ctx.file(node, "secret-ceph.xml"))
    remote.check("virsh -q secret-define /etc/kvmlab/secret-ceph.xml", "define the ceph client secret")
    mon = monitor(ctx.lab).name
    key = ctx.remote(mon).check(f"{CEPH} auth get-key {shlex.quote('client.' + s.client)}", "read the client key").stdout.strip()
    uuid = secret_uuid(ctx.lab, ctx.placement)
    remote.check(
        f'umask 077 && f=$(mktemp) && cat > "$f" && virsh -q secret-set-value --secret {uuid} --file "$f"; rc=$?; rm -f "$f"; exit $rc',
        "store the client key in the secret",
        stdin=key,
    )
    # rbd pools have no build step: libvirt's pool-build is a no-op for them.
    define_pool(remote, s.libvirt_pool, ctx.file(node, f"pool-{s.libvirt_pool}.xml"))


def put_private(remote: Remote, path: str, content: str, step: str) -> None:
    """Write a secret file 0600 from stdin: never world-readable, not even for a moment."""
    quoted = shlex.quote(path)
    remote.check(f"umask 077 && mkdir -p $(dirname {quoted}) && cat > {quoted} && chmod 600 {quoted}", step, stdin=content)


CEPH_STATE = (f"{CEPH} -s", f"{CEPH} health detail", f"{CEPH} osd tree", f"{CEPH} osd pool ls detail")
