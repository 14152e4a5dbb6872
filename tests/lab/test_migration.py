"""Moving guests between two hypervisors on shared NFS, and a guest's lifecycle (OUTLINE 7.1-7.5, 6.x display).

Inner guests (kernel + busybox initramfs, kvmlab/inner_guest.py) run inside the hypervisors. A boot
costs ~70 s under TCG inside TCG, so one guest, `mig1`, is booted once and serves the lock, console,
live migration, tuning and hot-plug tests; the guests of the other tests are started but need no boot
(QEMU and libvirt do their part whether the guest's kernel has finished booting or not).
"""

from __future__ import annotations

import shlex
import time
import uuid
from dataclasses import replace

import pytest

from kvmlab.inner_guest import Graphics, downtime
from kvmlab.roles.hypervisor.files import INNER_INITRD, INNER_KERNEL
from kvmlab.wait import timeout_for, wait_until
from tests.lab import migration_helpers as mh

pytestmark = [pytest.mark.lab("migration"), pytest.mark.slow]

MIGRATE = "virsh migrate --live --persistent --verbose"
PING_INTERVAL = 0.2
# Every guest a test of this module makes (removed before and after the module, for --lab-reuse).
NAMES = ("mig1", "off1", "cache1", "local1", "vi1", "vi1-clone", "vi1-custom", "vnc1", "spice1")
REPORT: dict[str, float] = {}  # measured numbers, printed at the end of the module


@pytest.fixture(scope="module")
def session(lab_manager):
    lab = lab_manager.get("migration")
    mh.remove(lab, *NAMES)
    yield lab
    if REPORT:
        print("\nmigration measurements: " + ", ".join(f"{k} {v:.1f} s" for k, v in REPORT.items()))
    mh.remove(lab, *NAMES)


@pytest.fixture(autouse=True)
def _evidence(lab):
    """Through the `lab` fixture a failing test leaves the lab's consoles, journals and role state."""
    return lab


@pytest.fixture(scope="module")
def mig1(session):
    """The long-lived guest: disk on the shared pool with cache=none, started on hv1 (not waited for)."""
    g = mh.guest(session, "mig1", 0)
    mh.create_disk(session, g)
    mh.define(session, "hv1", g)
    mh.check(session, "hv1", "virsh -q start mig1")
    return g


def booted(lab, g):
    """mig1 running somewhere and answering; started again on hv1 if an earlier test left it off."""
    if not mh.running_on(lab, g.name):
        host = "hv1" if mh.state(lab, "hv1", g.name) != "absent" else "hv2"
        mh.check(lab, host, f"virsh -q start {g.name}")
    return mh.wait_booted(lab, g)


# -- what the lab prepares ---------------------------------------------------------------------------


def test_shared_pool_defined_started_autostarted_on_both(session):
    exports = session.node("nfs1").host.check_output("exportfs -v")
    assert "/srv/nfs/vms" in exports
    for opt in ("rw", "sync", "no_root_squash"):
        assert opt in exports.split("/srv/nfs/vms", 1)[1].split(")", 1)[0], exports
    for hv in mh.HVS:
        fields = mh.info(mh.check(session, hv, f"virsh pool-info {mh.POOL}"))
        assert (fields["State"], fields["Persistent"], fields["Autostart"]) == ("running", "yes", "yes"), (hv, fields)
        xml = mh.check(session, hv, f"virsh pool-dumpxml {mh.POOL}")
        assert "<pool type='netfs'" in xml and "<dir path='/srv/nfs/vms'/>" in xml and f"<path>{mh.POOL_DIR}</path>" in xml
    name = f"shared-{uuid.uuid4().hex[:6]}.qcow2"
    mh.check(session, "hv1", f"virsh -q vol-create-as {mh.POOL} {name} 8M --format qcow2")
    try:
        mh.check(session, "hv2", f"virsh -q pool-refresh {mh.POOL}")
        assert name in mh.check(session, "hv2", f"virsh -q vol-list {mh.POOL}")
    finally:
        mh.run(session, "hv1", f"virsh -q vol-delete --pool {mh.POOL} {name}")


def test_root_ssh_between_hypervisors_both_ways(session):
    for src in mh.HVS:
        dst = mh.other(src)
        assert mh.check(session, src, f"ssh -o BatchMode=yes {dst} hostname").strip() == dst
        # libvirt names a host by the canonical name in /etc/hosts: the node's name on its first network.
        assert mh.check(session, src, f"virsh -c {mh.uri(dst)} hostname").strip() in (dst, f"{dst}-{session.node(dst).model.networks[0]}")


def test_names_resolve_both_ways(session):
    for src in mh.HVS:
        dst = mh.other(src)
        assert mh.check(session, src, f"getent hosts {dst}").split()[0] == session.node(dst).address()


def test_migration_ports_configured_and_open(session):
    for hv in mh.HVS:
        conf = mh.check(session, hv, "grep -E '^(migration_port_m(in|ax)|lock_manager) ' /etc/libvirt/qemu.conf")
        assert "migration_port_min = 49152" in conf and "migration_port_max = 49215" in conf
        rules = mh.run(session, hv, "iptables -S; nft list ruleset 2>/dev/null").stdout
        assert "DROP" not in rules and "REJECT" not in rules and "drop" not in rules and "reject" not in rules, rules
    token = uuid.uuid4().hex
    for port in (49152, 49215):
        mh.check(session, "hv2", f"rm -f /tmp/port-{port}; (timeout 30 busybox nc -l -p {port} > /tmp/port-{port} 2>&1 &)")
        wait_until(lambda p=port: f":{p} " in mh.run(session, "hv2", "ss -ltn").stdout, 15, f"nc listening on {port} on hv2")
        mh.check(session, "hv1", f"echo {token} | timeout 10 busybox nc -w 2 hv2 {port}")
        wait_until(lambda p=port: token in mh.run(session, "hv2", f"cat /tmp/port-{p}").stdout, 15, f"the token through port {port}")


def test_clocks_in_sync(session):
    hv1_addr = session.node("hv1").address()
    tracking = wait_until(
        lambda: (t := mh.check(session, "hv2", "chronyc -n tracking")) and hv1_addr in t and "Normal" in t and t,
        timeout_for("service", session.accel),
        "hv2's chrony to follow hv1",
        interval=3.0,
    )
    assert "Leap status     : Normal" in tracking
    offset = float(mh.info(tracking)["System time"].split()[0])
    assert abs(offset) < 0.5, tracking
    # Wall clocks read one after the other over SSH: equal within the round trips.
    t0 = time.time()
    a = float(mh.check(session, "hv1", "date +%s.%N"))
    b = float(mh.check(session, "hv2", "date +%s.%N"))
    assert abs(b - a) <= time.time() - t0 + 0.5


def test_virtlockd_is_the_lock_manager_on_a_shared_lockspace(session):
    for hv in mh.HVS:
        assert 'lock_manager = "lockd"' in mh.check(session, hv, "cat /etc/libvirt/qemu.conf")
        lockd = mh.check(session, hv, "cat /etc/libvirt/qemu-lockd.conf")
        assert 'file_lockspace_dir = "/var/lib/libvirt/lockd/files"' in lockd
        assert mh.check(session, hv, "findmnt -n -o FSTYPE,SOURCE /var/lib/libvirt/lockd/files").split()[0] in ("nfs", "nfs4")
        assert mh.check(session, hv, "systemctl is-active virtlockd.socket").strip() == "active"


def test_inner_guest_boot_files_identical_on_both(session):
    sums = {hv: mh.check(session, hv, f"sha256sum {INNER_KERNEL} {INNER_INITRD}") for hv in mh.HVS}
    assert sums["hv1"] == sums["hv2"]
    listing = mh.check(session, "hv1", f"cpio -it < {INNER_INITRD}").split()
    kver = mh.check(session, "hv1", "uname -r").strip()
    for member in ("init", "bin/busybox", "www/cgi-bin/state", f"lib/modules/{kver}/virtio_net.ko", f"lib/modules/{kver}/virtio_blk.ko"):
        assert member in listing, listing


# -- 7.3 offline migration -----------------------------------------------------------------------------


def test_offline_migration_defines_shut_off_guest_that_starts_on_destination(session):
    g = mh.guest(session, "off1", 1)
    mh.create_disk(session, g)
    mh.define(session, "hv1", g)
    assert mh.state(session, "hv1", "off1") == "shut off"
    mh.check(session, "hv1", f"virsh migrate --offline --persistent off1 {mh.uri('hv2')}")
    assert mh.state(session, "hv2", "off1") == "shut off"
    assert mh.info(mh.check(session, "hv2", "virsh dominfo off1"))["Persistent"] == "yes"
    mh.check(session, "hv2", "virsh -q start off1")
    assert mh.state(session, "hv2", "off1") == "running"
    mh.remove(session, "off1")


# -- 7.3 locking ---------------------------------------------------------------------------------------


def test_lock_refuses_a_second_start_on_the_other_hypervisor(session, mig1):
    host = mh.where(session, "mig1")
    peer = mh.other(host)
    mh.define(session, peer, mig1)
    try:
        result = mh.run(session, peer, "virsh -q start mig1")
        assert result.rc != 0, f"mig1 started on {peer} while it runs on {host}"
        assert "resource busy" in result.output and "is locked" in result.output, result.output
        assert mh.running_on(session, "mig1") == [host]
    finally:
        mh.run(session, peer, "virsh -q undefine mig1")


# -- 7.3 unsafe cache --------------------------------------------------------------------------------


def _qemu_drops_caches(session) -> bool:
    """libvirt's QEMU capability 'migration-file-drop-cache' (QEMU 3.1 and later)."""
    return mh.run(session, "hv1", "grep -q migration-file-drop-cache /var/cache/libvirt/qemu/capabilities/*.xml").rc == 0


def test_unsafe_cache_is_refused_then_migrates_with_cache_none(session):
    """The book's refusal of cache=writeback on shared storage comes from libvirt's safety check.

    libvirt keeps refusing it only when QEMU cannot drop the destination's page cache at the
    switch-over; with 'migration-file-drop-cache' (QEMU >= 3.1, here 7.2) it calls the migration
    safe and lets it run (qemuMigrationSrcIsSafe). Either way this test checks what libvirt does.
    """
    g = mh.guest(session, "cache1", 2, cache="writeback")
    mh.create_disk(session, g)
    mh.define(session, "hv1", g)
    mh.check(session, "hv1", "virsh -q start cache1")
    attempt = mh.run(session, "hv1", f"{MIGRATE} cache1 {mh.uri('hv2')}")
    if _qemu_drops_caches(session):
        assert attempt.rc == 0, f"libvirt with QEMU's drop-cache capability still refused:\n{attempt.output}"
        assert mh.running_on(session, "cache1") == ["hv2"]
        mh.check(session, "hv2", f"{MIGRATE} cache1 {mh.uri('hv1')}")  # back, for the rest of the test
    else:
        assert attempt.rc != 0 and "Unsafe migration" in attempt.output, attempt.output
    assert mh.running_on(session, "cache1") == ["hv1"]
    mh.check(session, "hv1", "virt-xml cache1 --edit --disk cache=none")
    assert "cache='none'" in mh.dumpxml(session, "hv1", "cache1", inactive=True)
    mh.check(session, "hv1", "virsh -q destroy cache1 && virsh -q start cache1")
    assert "cache='none'" in mh.dumpxml(session, "hv1", "cache1")
    mh.check(session, "hv1", f"{MIGRATE} cache1 {mh.uri('hv2')}", timeout=600)
    assert mh.running_on(session, "cache1") == ["hv2"]
    mh.remove(session, "cache1")


def test_migration_with_a_local_disk_is_refused_as_unsafe(session):
    """The 'Unsafe migration' error libvirt still gives: a disk the destination cannot see."""
    disk = "/var/lib/libvirt/images/local1.qcow2"  # the default dir pool: ext4 on hv1 only
    g = replace(mh.guest(session, "local1", 6), disk=disk)
    mh.check(session, "hv1", f"qemu-img create -q -f qcow2 {disk} 16M")
    try:
        mh.define(session, "hv1", g)
        mh.check(session, "hv1", "virsh -q start local1")
        refused = mh.run(session, "hv1", f"{MIGRATE} local1 {mh.uri('hv2')}")
        assert refused.rc != 0 and "Unsafe migration" in refused.output, refused.output
        assert mh.running_on(session, "local1") == ["hv1"]
    finally:
        mh.remove(session, "local1")
        mh.run(session, "hv1", f"rm -f {disk}")


# -- chapter 6: display --------------------------------------------------------------------------------


def test_vnc_listens_on_the_chosen_address_only_and_asks_for_a_password(session):
    listen = session.node("hv1").address(session.lab.hypervisor.guest_bridge)
    g = mh.guest(session, "vnc1", 3, disk=False, graphics=(Graphics("vnc", 5911, listen, uuid.uuid4().hex[:8]),))
    mh.define(session, "hv1", g)
    mh.check(session, "hv1", "virsh -q start vnc1")
    try:
        sockets = mh.check(session, "hv1", "ss -Hltnp 'sport = :5911'")
        assert f"{listen}:5911" in sockets and "qemu" in sockets, sockets
        assert len(sockets.strip().splitlines()) == 1, sockets  # not also on 0.0.0.0 or 127.0.0.1
        assert mh.run(session, "hv1", "busybox nc -w 2 127.0.0.1 5911 </dev/null").rc != 0
        version, types = mh.rfb_security_types(listen, 5911)
        assert version.startswith(b"RFB 003.")
        assert types == [2], f"security types {types}: 2 is VNC authentication, 1 would be none"
    finally:
        mh.remove(session, "vnc1")


def test_spice_port_answers(session):
    listen = session.node("hv1").address(session.lab.hypervisor.guest_bridge)
    g = mh.guest(session, "spice1", 4, disk=False, graphics=(Graphics("spice", 5912, listen),))
    mh.define(session, "hv1", g)
    mh.check(session, "hv1", "virsh -q start spice1")
    try:
        assert "<graphics type='spice' port='5912'" in mh.dumpxml(session, "hv1", "spice1")
        reply = mh.spice_link_reply(listen, 5912)
        assert reply[:4] == b"REDQ", reply  # SPICE's link magic: a SPICE server answered
    finally:
        mh.remove(session, "spice1")


# -- 7.1 / 7.5 lifecycle -------------------------------------------------------------------------------


def _virt_install(session) -> None:
    g = mh.guest(session, "vi1", 5)
    virt = "kvm" if g.domain_type == "kvm" else "qemu"
    kernel_args = f"console=ttyS0 quiet kvmlab.ip={g.address}/{g.prefix} kvmlab.name=vi1"
    mh.check(
        session,
        "hv1",
        f"virt-install --name vi1 --virt-type {virt} --memory 96 --vcpus 1 --import --osinfo detect=on,require=off"
        f" --disk pool={mh.POOL},size=0.03,format=qcow2,cache=none"
        f" --boot kernel={INNER_KERNEL},initrd={INNER_INITRD},kernel_args={shlex.quote(kernel_args)}"
        f" --network bridge=br0,mac={g.mac},model=virtio --graphics none --noautoconsole --noreboot",
        timeout=300,
    )


def test_virt_install_creates_guest_with_disk_in_pool(session):
    mh.remove(session, "vi1", "vi1-clone", "vi1-custom")
    _virt_install(session)
    assert mh.state(session, "hv1", "vi1") in ("running", "shut off")
    xml = mh.dumpxml(session, "hv1", "vi1", inactive=True)
    assert f"{mh.POOL_DIR}/vi1.qcow2" in xml
    assert "vi1.qcow2" in mh.check(session, "hv1", f"virsh -q vol-list {mh.POOL}")
    assert mh.qemu_img_info(session, "hv1", f"{mh.POOL_DIR}/vi1.qcow2")["format"] == "qcow2"
    mh.run(session, "hv1", "virsh -q destroy vi1")


def _clone_facts(session, name: str) -> tuple[str, str, list[str]]:
    xml = mh.dumpxml(session, "hv1", name, inactive=True)
    uid = xml.split("<uuid>", 1)[1].split("<", 1)[0]
    mac = xml.split("<mac address='", 1)[1].split("'", 1)[0]
    disks = [part.split("'", 1)[0] for part in xml.split("<source file='")[1:]]
    return uid, mac, disks


def test_virt_clone_auto_and_custom_get_new_uuid_mac_and_disk(session):
    if mh.state(session, "hv1", "vi1") == "absent":
        _virt_install(session)
    mh.run(session, "hv1", "virsh -q destroy vi1")
    mh.check(session, "hv1", "virt-clone --original vi1 --auto-clone", timeout=300)
    custom_disk = f"{mh.POOL_DIR}/vi1-custom.qcow2"
    mh.check(session, "hv1", f"virt-clone --original vi1 --name vi1-custom --file {custom_disk}", timeout=300)
    orig = _clone_facts(session, "vi1")
    auto = _clone_facts(session, "vi1-clone")
    custom = _clone_facts(session, "vi1-custom")
    assert len({orig[0], auto[0], custom[0]}) == 3, "UUIDs must differ"
    assert len({orig[1], auto[1], custom[1]}) == 3, "MACs must differ"
    assert custom[2] == [custom_disk]
    assert auto[2] and auto[2] != orig[2] and custom[2] != orig[2]
    for disk in auto[2] + custom[2]:
        mh.check(session, "hv1", f"qemu-img check {disk}")


def test_virt_xml_turns_boot_menu_on_and_adds_a_thin_qcow2_disk(session):
    if mh.state(session, "hv1", "vi1") == "absent":
        _virt_install(session)
    mh.check(session, "hv1", "virt-xml vi1 --edit --boot bootmenu.enable=on")
    thin = f"{mh.POOL_DIR}/vi1-thin.qcow2"
    mh.check(session, "hv1", f"virt-xml vi1 --add-device --disk path={thin},size=1,format=qcow2,sparse=yes,target.dev=vdb")
    xml = mh.dumpxml(session, "hv1", "vi1", inactive=True)
    assert "<bootmenu enable='yes'/>" in xml
    assert f"<source file='{thin}'/>" in xml and "<target dev='vdb'" in xml
    info = mh.qemu_img_info(session, "hv1", thin)
    assert info["format"] == "qcow2" and info["virtual-size"] == 2**30 and info["actual-size"] < 8 * 2**20


def test_qemu_img_convert_vmdk_to_qcow2_passes_check(session):
    base = f"/var/lib/libvirt/images/conv-{uuid.uuid4().hex[:6]}"
    try:
        mh.check(session, "hv1", f"dd if=/dev/urandom of={base}.raw bs=1M count=8 status=none && truncate -s 64M {base}.raw")
        mh.check(session, "hv1", f"qemu-img convert -f raw -O vmdk {base}.raw {base}.vmdk")
        assert mh.qemu_img_info(session, "hv1", f"{base}.vmdk")["format"] == "vmdk"
        mh.check(session, "hv1", f"qemu-img convert -p -f vmdk -O qcow2 {base}.vmdk {base}.qcow2")
        assert mh.qemu_img_info(session, "hv1", f"{base}.qcow2")["format"] == "qcow2"
        assert "No errors were found" in mh.check(session, "hv1", f"qemu-img check {base}.qcow2")
        mh.check(session, "hv1", f"qemu-img compare -f raw -F qcow2 {base}.raw {base}.qcow2")
    finally:
        mh.run(session, "hv1", f"rm -f {base}.raw {base}.vmdk {base}.qcow2")


# -- the booted guest: console, live migration, tuning, hot-plug ----------------------------------------


def test_virsh_console_reaches_a_login_prompt(session, mig1):
    booted(session, mig1)
    host = mh.where(session, "mig1")
    # virsh console needs a terminal: script gives it one; the carriage return makes getty prompt again.
    out = mh.run(
        session, host, "(sleep 3; printf '\\r'; sleep 8) | timeout 20 script -qfec 'virsh console --force mig1' /dev/null", timeout=60
    )
    assert "mig1 login:" in out.stdout, out.output


def test_live_migration_keeps_the_guest_running(session, mig1):
    before = booted(session, mig1)
    src = mh.where(session, "mig1")
    dst = mh.other(src)
    nfs1 = session.node("nfs1")
    log = "/tmp/ping-mig1.log"
    nfs1.run(f"rm -f {log}; (setsid timeout 600 ping -D -n -i {PING_INTERVAL} {mig1.address} > {log} 2>&1 & echo $! > /tmp/ping-mig1.pid)")
    wait_until(
        lambda: nfs1.run(f"grep -c 'bytes from' {log}").stdout.strip() not in ("", "0", "1", "2", "3", "4"), 30, "pings before migrating"
    )
    start = time.monotonic()
    result = mh.run(session, src, f"{MIGRATE} mig1 {mh.uri(dst)}", timeout=900)
    total = time.monotonic() - start
    assert result.rc == 0, result.output
    time.sleep(3)  # pings after the guest resumed, so the gap is closed on both sides
    nfs1.run("kill -INT $(cat /tmp/ping-mig1.pid)")
    lines = nfs1.run(f"cat {log}").stdout.splitlines()
    after = mh.state_after_migration(session, mig1)

    assert "Migration: [100 %]" in result.output, result.output  # --verbose reports progress
    assert mh.running_on(session, "mig1") == [dst], "runs on the destination only"
    assert mh.state(session, src, "mig1") in ("shut off", "absent")
    # From inside: the same boot, the same counter process, still counting, uptime continued.
    assert after["boot_id"] == before["boot_id"] and after["counter_pid"] == before["counter_pid"]
    assert after["counter_alive"] == "yes"
    assert int(after["counter"]) > int(before["counter"])
    assert float(after["uptime"]) > float(before["uptime"])
    # From outside: every lost ping falls into the one measured gap.
    down = downtime(lines, PING_INTERVAL)
    summary = next(line for line in lines if "packets transmitted" in line)
    sent, received = int(summary.split()[0]), int(summary.split()[3])
    assert sent - received <= down / PING_INTERVAL + 2, f"{sent - received} pings lost, more than a {down:.1f} s downtime explains"
    job = mh.info(mh.check(session, dst, "virsh domjobinfo mig1 --completed"))
    REPORT.update({"live migration total": total, "ping downtime": down})
    print(f"\nlive migration {src} -> {dst}: total {total:.1f} s, downtime by ping {down:.2f} s; libvirt: {job}")


def test_tuning_speed_max_downtime_and_compressed_migration(session, mig1):
    before = booted(session, mig1)
    src = mh.where(session, "mig1")
    dst = mh.other(src)
    mh.check(session, src, "virsh migrate-setspeed mig1 64")
    assert mh.check(session, src, "virsh migrate-getspeed mig1").strip() == "64"
    mh.check(session, src, "virsh migrate-setmaxdowntime mig1 1000")
    assert mh.check(session, src, "virsh migrate-getmaxdowntime mig1").strip() == "1000"
    start = time.monotonic()
    mh.check(session, src, f"{MIGRATE} --compressed mig1 {mh.uri(dst)}", timeout=900)
    REPORT["compressed migration total"] = time.monotonic() - start
    assert mh.running_on(session, "mig1") == [dst]
    after = mh.state_after_migration(session, mig1)
    assert after["boot_id"] == before["boot_id"] and int(after["counter"]) > int(before["counter"])


def test_attach_disk_live_and_config_is_seen_running_and_after_restart(session, mig1):
    booted(session, mig1)
    host = mh.where(session, "mig1")
    extra = f"{mh.POOL_DIR}/mig1-extra.qcow2"
    mh.check(session, host, f"qemu-img create -q -f qcow2 {extra} 16M")
    mh.check(
        session, host, f"virsh attach-disk mig1 {extra} vdb --targetbus virtio --driver qemu --subdriver qcow2 --cache none --live --config"
    )
    wait_until(lambda: "vdb" in mh.read_state(mig1)["disks"].split(), timeout_for("service", session.accel), "vdb in the running guest")
    assert f"<source file='{extra}'" in mh.dumpxml(session, host, "mig1", inactive=True)
    old_boot = mh.read_state(mig1)["boot_id"]
    mh.check(session, host, "virsh -q destroy mig1 && virsh -q start mig1")
    state = mh.wait_booted(session, mig1)
    assert state["boot_id"] != old_boot
    assert "vdb" in state["disks"].split() and "vda" in state["disks"].split()
