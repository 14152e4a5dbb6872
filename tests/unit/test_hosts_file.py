"""hosts.yaml: read with file:line errors; a lab goes to the host with the most room that fits it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvmlab.errors import HarnessError, LabFileError
from kvmlab.hosts_file import HostEntry, Room, load_hosts_file, pick
from kvmlab.loader import parse_lab
from kvmlab.preflight import lab_needs

LAB = parse_lab("nodes:\n  n1: {memory: 1G}\n  n2: {memory: 1G}\n", "lab.yaml", "two")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    return path


def test_a_hosts_file_names_its_hosts_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'hosts:\n  a: {uri: "qemu+ssh://root@host-a/system?keyfile=/k"}\n  here:\n    uri: qemu:///system\n',
    )
    assert load_hosts_file(path) == [HostEntry("a", "qemu+ssh://root@host-a/system?keyfile=/k"), HostEntry("here", "qemu:///system")]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("", 1, "the hosts file is empty"),
        ("hosts:\n  a: {uri: qemu:///system}\nlabs: 1\n", 3, "unknown key 'labs' in the hosts file"),
        ("hosts: {}\n", 1, "'hosts' names no host"),
        ("hosts:\n  a: {url: qemu:///system}\n", 2, "unknown key 'url' in host a (known: uri); did you mean 'uri'?"),
        ("hosts:\n  a: {}\n", 2, "host a is missing required key 'uri'"),
        ("hosts:\n  a:\n    uri: http://host-a/\n", 3, "is not a libvirt URI kvmlab drives: write e.g. qemu+ssh://root@HOST/system"),
        ("hosts:\n  a:\n    uri: qemu+tcp://host-a/system\n", 3, "is not a libvirt URI kvmlab drives"),
        ("hosts:\n  'a b': {uri: qemu:///system}\n", 2, "host name 'a b' is not valid"),
        ("hosts:\n  a: {uri: qemu:///system}\n  a: {uri: qemu:///system}\n", 3, "duplicate key 'a'"),
    ],
)
def test_a_wrong_hosts_file_is_named_at_its_line(tmp_path: Path, text: str, line: int, says: str) -> None:
    with pytest.raises(LabFileError) as caught:
        load_hosts_file(write(tmp_path, text))
    assert caught.value.line == line, str(caught.value)
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'hosts.yaml'}:{line}:")


def test_a_missing_hosts_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match="cannot read the hosts file: No such file"):
        load_hosts_file(tmp_path / "none.yaml")


def test_the_lab_goes_to_the_host_with_the_most_memory_that_fits_it() -> None:
    memory, disk = lab_needs(LAB)
    a, b, c = HostEntry("a", "qemu:///system"), HostEntry("b", "qemu+ssh://b/system"), HostEntry("c", "qemu+ssh://c/system")
    rooms = [Room(a, memory + 100, disk), Room(b, memory + 5000, disk - 1), Room(c, memory + 2000, disk + 10)]
    assert pick(LAB, rooms) == c  # b has more memory, but not the disk


def test_no_host_with_room_is_an_error_saying_what_each_host_had() -> None:
    memory, disk = lab_needs(LAB)
    rooms = [Room(HostEntry("a", "qemu:///system"), memory - 1, disk), Room(HostEntry("b", "qemu+ssh://b/system"), problem="ssh: refused")]
    with pytest.raises(HarnessError) as caught:
        pick(LAB, rooms)
    message = str(caught.value)
    assert f"no host has room for lab 'two' ({memory} MiB of memory" in message
    assert f"a: {memory - 1} MiB memory, {disk} MiB disk free" in message
    assert "b: ssh: refused" in message


def test_this_machine_without_libvirtd_is_passed_over_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from kvmlab import hosts_file

    monkeypatch.setattr(hosts_file, "LIBVIRT_SOCKETS", (str(tmp_path / "libvirt-sock"),))
    room = hosts_file.measure(HostEntry("here", "qemu:///system"))
    assert room.problem == f"libvirtd is not running (no socket {tmp_path / 'libvirt-sock'})"
    (tmp_path / "libvirt-sock").touch()
    room = hosts_file.measure(HostEntry("here", "qemu:///system"))
    assert not room.problem and room.memory_mib > 0
