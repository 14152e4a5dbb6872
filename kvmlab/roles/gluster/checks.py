"""Checks of the gluster role (book 5.6): the trusted pool, the bricks, the volume and its type, its options,
where data lands, and the hypervisors' pool on it.

Nodes are found by role, one brick on each. Expectations come from the lab's model (the
volume's type and options as the lab file says them) and the role's files.py helpers.
A check raises AssertionError naming the node and what it saw.
"""

from __future__ import annotations

import shlex
import uuid
import xml.etree.ElementTree as ET
from typing import Any, NamedTuple

from kvmlab.model import Lab, Placement
from kvmlab.roles import Check
from kvmlab.roles.gluster.files import brick_path, brick_sets, fstab_line, peer_name, volume_options
from kvmlab.roles.gluster.options import group_options, read_back, same_value
from kvmlab.roles.gluster.settings import GlusterSettings
from kvmlab.roles.hypervisor.checks import assert_pool_running, has_hypervisor

ROLE = "gluster"

CONNECTED = "State: Peer in Cluster (Connected)"
GROUPS = "/var/lib/glusterd/groups"  # the files `gluster volume set VOL group NAME` applies
GET_MARK = "@@kvmlab-option "  # starts the answer of each option in one script's output
LINK_FILE_MODE = "---------T"  # a DHT link file: the name on the set it hashes to, the data on another
CHUNK = 512  # bytes of each disperse fragment per stripe (Gluster's EC chunk)


def _brick_names(lab: Any) -> list[str]:
    """host:path of every brick, in the order the volume was created with: the gluster nodes' order."""
    s = lab.lab.gluster
    return [f"{peer_name(g.name, s)}:{brick_path(s)}" for g in lab.by_role(ROLE)]


def _xml(node: Any, command: str, what: str) -> ET.Element:
    out = node.run_expect(command, what)
    try:
        return ET.fromstring(out)
    except ET.ParseError as exc:
        raise AssertionError(f"{node.name}: `{command}` did not print XML ({exc}): {out[:600]}") from exc


def peers_are_connected_by_their_gluster_names(lab: Any) -> None:
    """Each gluster node sees every other one in the cluster, connected, known by its name on the gluster network."""
    s = lab.lab.gluster
    nodes = lab.by_role(ROLE)
    for node in nodes:
        out = node.run_expect("gluster peer status", "gluster peer status")
        others = len(nodes) - 1
        assert f"Number of Peers: {others}" in out, f"{node.name}: gluster peer status does not show {others} peers:\n{out}"
        connected = out.count(CONNECTED)
        assert connected == others, f"{node.name}: {connected} of {others} peers are in the cluster and connected:\n{out}"
        # Each peer is known by its name on the gluster network, not by the address it probed from.
        seen = {line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Hostname:")}
        want = {peer_name(n.name, s) for n in nodes if n is not node}
        assert seen == want, f"{node.name}: peers are known as {', '.join(sorted(seen)) or 'nothing'}, not {', '.join(sorted(want))}"


def bricks_are_directories_on_their_own_xfs_disk(lab: Any) -> None:
    """brick_dir is the brick disk, XFS, mounted from /etc/fstab; the brick is a directory inside it."""
    s = lab.lab.gluster
    disk = f"/dev/disk/by-id/virtio-{s.brick_disk}"
    for node in lab.by_role(ROLE):
        host = node.host
        mount = host.mount_point(s.brick_dir)
        assert mount.exists, f"{node.name}: nothing is mounted at {s.brick_dir}"
        assert mount.filesystem == "xfs", f"{node.name}: brick disk at {s.brick_dir} is {mount.filesystem}, not xfs"
        mounted = node.run_expect(f"readlink -f {mount.device}")
        want = node.run_expect(f"readlink -f {disk}")
        assert mounted == want, f"{node.name}: {s.brick_dir} is mounted from {mount.device} ({mounted}), not brick disk {disk} ({want})"
        assert host.file(brick_path(s)).is_directory, f"{node.name}: brick {brick_path(s)} is not a directory"
        entry = f"{disk} {s.brick_dir} xfs"
        fstab = host.file("/etc/fstab").content_string
        assert entry in fstab, f"{node.name}: /etc/fstab has no '{entry}' line:\n{fstab}"


def expected_volume_info(s: GlusterSettings, bricks: int) -> dict[str, str]:
    """What `gluster volume info VOL --xml` says of a started volume of the lab's type with BRICKS bricks.

    distCount is the number of sets the volume distributes over (Gluster 10 says 1 for one
    replica 3 arbiter 1 set); a replicated volume counts its arbiter in replicaCount.
    """
    seen = {
        "name": s.volume,
        "statusStr": "Started",
        "typeStr": s.type_str(bricks),
        "brickCount": str(bricks),
        "distCount": str(bricks // s.set_size),
    }
    if s.disperse:
        return {**seen, "disperseCount": str(s.disperse), "redundancyCount": str(s.redundancy)}
    return {**seen, "replicaCount": str(s.replica), "arbiterCount": str(s.arbiter)}


def volume_has_the_labs_type(lab: Any) -> None:
    """The volume is started with the lab file's type, as Gluster reports it: typeStr (Replicate, Distributed-Replicate,
    Disperse, Distributed-Disperse), brick count, bricks per set, replica and arbiter counts or disperse and redundancy
    counts; one brick per gluster node, in order; with an arbiter, the last brick of each set is the arbiter."""
    s = lab.lab.gluster
    node = lab.by_role(ROLE)[0]
    want_bricks = _brick_names(lab)
    info = _xml(node, f"gluster volume info {s.volume} --xml", f"gluster volume info {s.volume}")
    vol = info.find("volInfo/volumes/volume")
    assert vol is not None, f"{node.name}: gluster volume info shows no volume {s.volume}: {ET.tostring(info, encoding='unicode')[:600]}"
    want = expected_volume_info(s, len(want_bricks))
    # An older Gluster without arbiter support prints no arbiterCount: that is no arbiter.
    seen = {k: vol.findtext(k, "0" if k == "arbiterCount" else None) for k in want}
    wrong = [f"{k} {seen[k]} (the lab wants {v})" for k, v in want.items() if seen[k] != v]
    assert not wrong, f"{node.name}: volume {s.volume} is not {s.create_words()} over {len(want_bricks)} bricks: " + ", ".join(wrong)
    bricks = list(vol.iter("brick"))
    names = [b.findtext("name") for b in bricks]
    assert names == want_bricks, f"{node.name}: volume {s.volume} has bricks {names}, not {want_bricks}"
    if any(b.find("isArbiter") is not None for b in bricks):
        arbiters = [b.findtext("name") for b in bricks if b.findtext("isArbiter") == "1"]
        want_arbiters = [f"{peer_name(group[-1].name, s)}:{brick_path(s)}" for group in brick_sets(lab.lab)] if s.arbiter else []
        assert arbiters == want_arbiters, (
            f"{node.name}: arbiter bricks of {s.volume} are {arbiters or 'none'}, not {want_arbiters or 'none'}"
        )


def every_brick_is_online(lab: Any) -> None:
    """gluster volume status (asked on the last node) shows every node's brick online."""
    s = lab.lab.gluster
    node = lab.by_role(ROLE)[-1]
    status = _xml(node, f"gluster volume status {s.volume} --xml", f"gluster volume status {s.volume}")
    online = {
        f"{n.findtext('hostname')}:{n.findtext('path')}": n.findtext("status") == "1"
        for n in status.iter("node")
        if (n.findtext("path") or "").startswith("/")
    }
    want = _brick_names(lab)
    missing = [b for b in want if b not in online]
    assert not missing, f"{node.name}: status of {s.volume} lacks bricks {', '.join(missing)} (it lists: {', '.join(online) or 'none'})"
    offline = [b for b in want if not online[b]]
    assert not offline, f"{node.name}: bricks of {s.volume} offline: {', '.join(offline)}"
    extra = [b for b in online if b not in want]
    assert not extra, f"{node.name}: volume {s.volume} has bricks the lab does not: {', '.join(extra)}"


def expected_options(lab: Lab, pl: Placement) -> list[tuple[str, str, str]]:
    """(option, value, where it comes from) of every `volume set` of the volume, in the order they are set."""
    role = [(name, value, "set by the role") for name, value in volume_options(lab, pl)]
    return role + [(o.name, o.value, o.where or "the lab file") for o in lab.gluster.options]


def volume_options_read_back_as_set(lab: Any) -> dict[str, str]:
    """Every option the volume was set with reads back with its value from `gluster volume get VOL OPTION --xml` (asked
    on the second node): the role's own (auth.allow, owner uid/gid, network.ping-timeout), then the lab file's
    `options:`, a later one winning. A `group NAME` option stands for the key=value lines of its file in
    /var/lib/glusterd/groups/. Values compare as Gluster reads them: on/yes/true/enable/1 alike (and their
    opposites), numbers by value."""
    s = lab.lab.gluster
    node = lab.by_role(ROLE)[1]
    want: dict[str, tuple[str, str]] = {}
    for name, value, source in expected_options(lab.lab, lab.placement):
        if name == "group":
            text = node.run_expect(f"cat {GROUPS}/{shlex.quote(value)}", f"read gluster option group {value}")
            want.update((k, (v, f"group {value}, {source}")) for k, v in group_options(text))
        else:
            want[name] = (value, source)
    answers = _volume_get(node, s.volume, list(want))
    wrong, values = [], {}
    for name, (value, source) in want.items():
        seen, problem = read_back(answers.get(name, ""), name)
        if seen is None:
            wrong.append(f"{name} ({source}): {problem}")
        else:
            values[name] = seen
            if not same_value(value, seen):
                wrong.append(f"{name} is {seen}, not {value} ({source})")
    assert not wrong, f"{node.name}: options of volume {s.volume}: " + "; ".join(wrong)
    return values  # for a baseline: what the volume runs with


def _volume_get(node: Any, volume: str, names: list[str]) -> dict[str, str]:
    """The output of `gluster volume get VOLUME NAME --xml` for each of NAMES, asked in one script (an SSH call costs seconds under TCG)."""
    script = "; ".join(f"echo {shlex.quote(GET_MARK + name)}; gluster volume get {volume} {shlex.quote(name)} --xml 2>&1" for name in names)
    out = node.run_expect(f"{script}; true", f"gluster volume get {volume}: {len(names)} options")
    answers: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith(GET_MARK):
            current = answers.setdefault(line[len(GET_MARK) :], [])
        else:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in answers.items()}


def brick_roots_belong_to_the_volume_owner(lab: Any) -> None:
    """Each brick directory belongs to storage.owner-uid/gid, as the volume sets them."""
    s = lab.lab.gluster
    for node in lab.by_role(ROLE):
        brick = node.host.file(brick_path(s))
        seen = (brick.uid, brick.gid)
        want = (s.owner_uid, s.owner_gid)
        assert seen == want, f"{node.name}: brick {brick_path(s)} belongs to uid:gid {seen[0]}:{seen[1]}, not {want[0]}:{want[1]}"


def hypervisor_pool_is_on_the_fuse_mount(lab: Any) -> None:
    """Each hypervisor's pool is running and autostarted on the volume's FUSE mount, from /etc/fstab with backup volfile servers."""
    s = lab.lab.gluster
    first = peer_name(lab.by_role(ROLE)[0].name, s)
    want_fstab = fstab_line(lab.lab).split()
    for hv in lab.by_role("hypervisor"):
        assert_pool_running(hv, s.pool)
        xml = hv.run_expect(f"virsh pool-dumpxml {s.pool}")
        assert f"<path>{s.mount}</path>" in xml, f"{hv.name}: pool {s.pool} does not have target {s.mount}:\n{xml}"
        mount = hv.host.mount_point(s.mount)
        assert mount.exists, f"{hv.name}: nothing is mounted at {s.mount}"
        assert mount.filesystem == "fuse.glusterfs", f"{hv.name}: {s.mount} is {mount.filesystem}, not fuse.glusterfs"
        source = f"{first}:/{s.volume}"
        assert mount.device == source, f"{hv.name}: {s.mount} is mounted from {mount.device}, not {source}"
        fstab = [line.split() for line in hv.host.file("/etc/fstab").content_string.splitlines() if f" {s.mount} " in line]
        assert len(fstab) == 1, f"{hv.name}: /etc/fstab has {len(fstab)} lines for {s.mount}, not 1: {fstab}"
        assert fstab[0] == want_fstab, f"{hv.name}: /etc/fstab mounts {s.mount} with '{' '.join(fstab[0])}', not '{' '.join(want_fstab)}'"


class BrickFile(NamedTuple):
    size: int
    mode: str  # as stat -c %A prints it
    sha256: str


def _is_data(f: BrickFile | None) -> bool:
    """Whether a brick holds the file itself: not a DHT link file (mode ---------T, no data), which points at another set."""
    return f is not None and not (f.size == 0 and f.mode == LINK_FILE_MODE)


def placement_problems(
    s: GlusterSettings, sets: list[list[str]], name: str, size: int, sha256: str, seen: dict[str, BrickFile | None]
) -> list[str]:
    """What is wrong with where a file of SIZE bytes and SHA256, written through the volume, landed on the bricks
    (SEEN: node -> its brick's copy); SETS are the nodes of each replica or disperse set, in create order."""
    holding = [group for group in sets if any(_is_data(seen[n]) for n in group)]
    if len(holding) != 1:
        held = ", ".join(n for group in holding for n in group if _is_data(seen[n])) or "none"
        return [f"{name} should be on the bricks of one set of {' / '.join(','.join(g) for g in sets)}; bricks holding it: {held}"]
    problems = []
    group = holding[0]
    if s.disperse:
        data = s.disperse - s.redundancy
        fragment = -(-size // (CHUNK * data)) * CHUNK  # each data brick's share, in whole chunks
        for n in group:
            f = seen[n]
            if f is None:
                problems.append(f"{n}: has no fragment of {name}")
            elif f.size != fragment:
                problems.append(
                    f"{n}: fragment of {name} is {f.size} bytes, not {fragment} (1/{data} of {size} bytes, in {CHUNK}-byte chunks)"
                )
            elif f.sha256 == sha256 and size:
                problems.append(f"{n}: holds the whole of {name}, not a fragment")
        return problems
    arbiter = group[-1] if s.arbiter else None
    for n in group:
        f = seen[n]
        if f is None:
            problems.append(f"{n}: has no copy of {name}")
        elif n == arbiter:
            if f.size != 0:
                problems.append(f"{n}: the arbiter holds {f.size} bytes of {name}; an arbiter holds its name and no data")
        elif f.sha256 != sha256:
            problems.append(f"{n}: copy of {name} has sha256 {f.sha256} ({f.size} bytes), not {sha256} ({size} bytes)")
    return problems


def _brick_files(node: Any, s: GlusterSettings, names: tuple[str, ...]) -> dict[str, BrickFile | None]:
    """Size, mode and sha256 of each of NAMES on NODE's brick, in one command; None for a name the brick does not hold."""
    brick = brick_path(s)
    script = (
        f"cd {brick} && for f in {' '.join(names)}; do "
        "if [ -e $f ]; then echo $f $(stat -c '%s %A' $f) $(sha256sum < $f | cut -c1-64); else echo $f -; fi; done"
    )
    out: dict[str, BrickFile | None] = {}
    for line in node.run_expect(script, f"look for {', '.join(names)} on the brick").splitlines():
        fields = line.split()
        out[fields[0]] = BrickFile(int(fields[1]), fields[2], fields[3]) if len(fields) == 4 else None
    return out


def data_written_through_the_pool_lands_as_the_type_says(lab: Any) -> None:
    """A volume and a 4 MiB file written (fsync'd) through each hypervisor's pool land on the bricks as the volume's type
    places them, and are gone from every brick once deleted:
    - replicated: identical whole copies on every brick of one replica set, i.e. on every brick when there is
      one set; with an arbiter, the last brick of the set holds the file's name and no data (size 0);
    - dispersed: a fragment on every brick of one disperse set, each 1/(disperse - redundancy) of the file in
      whole 512-byte chunks, none of them the whole file;
    - distributed (several sets): one set holds the file; the others hold nothing, or a DHT link file.
    The probes stay whole under sharding too: 4 MiB is Gluster's smallest shard block."""
    s = lab.lab.gluster
    nodes = lab.by_role(ROLE)
    sets = [[n.name for n in group] for group in brick_sets(lab.lab)]
    for hv in lab.by_role("hypervisor"):
        vol, blob = f"probe-{uuid.uuid4().hex[:8]}.qcow2", f"probe-{uuid.uuid4().hex[:8]}.bin"
        hv.run_expect(f"virsh vol-create-as {s.pool} {vol} 16M --format qcow2", f"create a volume in pool {s.pool}")
        try:
            # Count the data as written only once fsync has returned (see DESIGN: Gluster does not fsync by default).
            hv.run_expect(f"dd if=/dev/urandom of={s.mount}/{blob} bs=1M count=4 conv=fsync status=none", f"write {blob}")
            seen = {node.name: _brick_files(node, s, (vol, blob)) for node in nodes}
            problems = []
            for name in (vol, blob):
                size, sha = hv.run_expect(f"stat -c %s {s.mount}/{name} && sha256sum < {s.mount}/{name} | cut -c1-64").split()
                on_bricks = {n: seen[n].get(name) for n in seen}
                problems += placement_problems(s, sets, name, int(size), sha, on_bricks)
            assert not problems, f"volume {s.volume} ({s.create_words()}), written by {hv.name}: " + "; ".join(problems)
            info = hv.run_expect(f"qemu-img info --output=json {s.mount}/{vol}")
            assert '"format": "qcow2"' in info, f"{hv.name}: {s.mount}/{vol} is not qcow2: {info}"
        finally:
            hv.run(f"virsh vol-delete --pool {s.pool} {vol}; rm -f {s.mount}/{blob}")
        for node in nodes:
            left = [name for name, f in _brick_files(node, s, (vol, blob)).items() if f is not None]
            assert not left, f"{node.name}: {', '.join(left)} still on brick {brick_path(s)} after {hv.name} deleted them"


CHECKS = (
    Check(ROLE, "peers-connected", peers_are_connected_by_their_gluster_names),
    Check(ROLE, "bricks-on-xfs", bricks_are_directories_on_their_own_xfs_disk),
    Check(ROLE, "volume-type", volume_has_the_labs_type),
    Check(ROLE, "bricks-online", every_brick_is_online),
    Check(ROLE, "volume-options", volume_options_read_back_as_set),
    Check(ROLE, "brick-owner", brick_roots_belong_to_the_volume_owner),
    Check(ROLE, "hypervisor-pool-on-fuse-mount", hypervisor_pool_is_on_the_fuse_mount, applies=has_hypervisor),
    Check(ROLE, "pool-data-placement", data_written_through_the_pool_lands_as_the_type_says, applies=has_hypervisor),
)
