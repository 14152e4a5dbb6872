"""Helpers shared by the lab tests that drive the real `kvmlab` command: a running `kvmlab up`,
and every trace a run may leave behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kvmlab import render, runs, settings
from kvmlab.providers.base import Provider

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "labs" / "tiny.yaml"
# Where a client keeps what is its own; another machine's client has its own of each.
CLIENT_STATE = ("KVMLAB_STATE", "KVMLAB_LEASES", "KVMLAB_CHECKPOINT_DIR", "KVMLAB_ARTIFACTS")


class UpProcess:
    """`kvmlab up LAB` in its own process group, its stderr read line by line."""

    def __init__(self, env: dict[str, str] | None = None, lab: Path = TINY, args: tuple[str, ...] = ("--rebuild",)) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvmlab.cli", "up", *args, str(lab)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=default_sigint,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"'{pattern}' never appeared; output:\n" + "\n".join(self.lines[-40:]))

    @property
    def run_id(self) -> str:
        return self.wait_for(r"run ([0-9a-f]{6}):").group(1)

    def finish(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc


def leftovers(provider: Provider, run_id: str) -> list[str]:
    """Every trace of RUN_ID: libvirt objects, volumes (in the pool of settings.POOL), run files, consoles, registry."""
    found = [d.name for d in provider.list_domains() if run_id in d.name]
    found += [n for n in provider.list_networks() if f"-{run_id}-" in n]
    found += [v for v in provider.list_volumes(settings.POOL) if f"-{run_id}-" in v]
    found += [str(p) for p in (settings.state_dir() / "runs").glob(f"*-{run_id}")]
    found += [str(p) for p in settings.console_dir().glob(f"*-{run_id}-*")]
    if run_id in runs.all_runs():
        found.append(f"registry entry {run_id}")
    return found


def wait_domain_running(provider: Provider, run_id: str, timeout: float = 120, lab: str = "tiny", node: str = "n1") -> None:
    domain = render.domain_name(lab, run_id, node)
    deadline = time.monotonic() + timeout
    while provider.domain_state(domain) != "running":
        assert time.monotonic() < deadline, f"{domain} never started"
        time.sleep(0.2)


def default_sigint() -> None:
    """Give a child Ctrl-C's default action: a test suite started in the background (`cmd &` in a script)
    inherits SIGINT ignored, and Python then never turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def node_libvirt_uri(lab, node: str) -> str:
    """A lab node running libvirtd, named as a user names a server of theirs: its address, the key it
    accepts, its pinned host key (the run's own files)."""
    return (
        f"qemu+libssh://root@{lab.node(node).address()}/system?keyfile={lab.run_dir / 'id_ed25519'}"
        f"&known_hosts={lab.run_dir / 'known_hosts'}&known_hosts_verify=normal&sshauth=privkey"
    )


def own_client_state(folder: Path) -> dict[str, str]:
    """Environment giving a client its own run registry, leases, checkpoints and artifacts under FOLDER,
    as a client on another machine has."""
    return {var: str(folder / var.lower()) for var in CLIENT_STATE}


def client_of(folder: Path, uri: str, timeout: float = 1200):
    """A client of libvirt URI with its own state under FOLDER (own_client_state). Returns its
    environment, and a function running `kvmlab ARGS` as that client that logs the command's tail."""
    env = {**os.environ, **own_client_state(folder), "KVMLAB_URI": uri}

    def kvmlab(*args: str, timeout: float = timeout) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [sys.executable, "-m", "kvmlab.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )
        sys.stderr.write(f"$ kvmlab {' '.join(args)}  (exit {res.returncode})\n{res.stdout[-4000:]}{res.stderr[-4000:]}\n")
        return res

    return env, kvmlab
