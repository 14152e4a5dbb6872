"""Directories on the libvirt host: this machine's for real, a remote host's as the commands sent to it."""

from __future__ import annotations

import pytest

from kvmlab import host_files
from kvmlab.errors import HarnessError
from kvmlab.libvirt_host import host_of
from kvmlab.remote import Result

HERE = host_of("qemu:///system")
REMOTE = host_of("qemu+ssh://root@10.1.2.3/system")


def test_this_machine_s_directories_are_made_synced_listed_and_removed(tmp_path):
    memory = tmp_path / "run" / "base@1"
    host_files.make_dir(HERE, memory)
    (memory / "n1.save").write_bytes(b"state")
    (tmp_path / "run" / "book.json").write_text("{}")  # a file: not a memory directory
    host_files.sync_tree(HERE, memory)
    assert host_files.subdirs(HERE, tmp_path / "run") == ["base@1"]
    assert host_files.exists(HERE, memory / "n1.save")
    host_files.remove_tree(HERE, memory)
    assert not memory.exists() and host_files.subdirs(HERE, tmp_path / "run") == []
    assert host_files.subdirs(HERE, tmp_path / "missing") == []


@pytest.fixture
def sent(monkeypatch):
    """The commands run on REMOTE; each answers with the next of ANSWERS (default: success, no output)."""
    commands: list[str] = []
    answers: list[Result] = []

    def run_on_host(host, command, timeout=0):
        assert host == REMOTE
        commands.append(command)
        return answers.pop(0) if answers else Result(0, "", "")

    monkeypatch.setattr(host_files, "run_on_host", run_on_host)
    return commands, answers


def test_a_remote_host_s_directories_are_handled_by_commands_on_it(sent, tmp_path):
    commands, answers = sent
    run = tmp_path / "odd dir"
    host_files.make_dir(REMOTE, run / "base@1")
    host_files.sync_tree(REMOTE, run / "base@1")
    answers.append(Result(0, "base@1\nbase@2\n", ""))
    assert host_files.subdirs(REMOTE, run) == ["base@1", "base@2"]
    host_files.remove_tree(REMOTE, run / "base@2")
    answers.append(Result(1, "", ""))
    assert not host_files.exists(REMOTE, run / "base@2")
    quoted = f"'{run}/base@1'"
    assert commands[0] == f"mkdir -p {quoted}"
    assert commands[1].startswith(f"find {quoted} -print0") and "sync --" in commands[1]
    assert commands[3] == f"rm -rf '{run}/base@2'"
    assert not (run / "base@1").exists(), "nothing is made on this machine for a remote host"


def test_a_command_that_fails_on_the_remote_host_says_where_and_what_it_printed(sent, tmp_path):
    _commands, answers = sent
    answers.append(Result(1, "", "mkdir: cannot create directory: No space left on device"))
    with pytest.raises(HarnessError, match=r"make .* on the libvirt host root@10.1.2.3 \(port 22\): mkdir: .*No space left"):
        host_files.make_dir(REMOTE, tmp_path / "x")
