"""Roles: each one a package under kvmlab/roles/ with everything it is made of.

A role package (see nfs_server/ for a small one) holds:

- settings.py  its entry under `roles:` in a lab file: dataclasses with defaults and
               a `parse(SettingsReader)` that raises file:line errors
- files.py     `files(lab, placement, node) -> {name: text}`, rendered from
               templates/roles/<role>/
- steps.py     setup steps over SSH, one per phase (below)
- checks.py    its verification suite: `Check`s that find nodes by role and take
               their expectations from the lab's model
- __init__.py  `PACKAGE = RolePackage(...)` tying them together, with the Debian
               packages the image needs for it

The registry below finds every package here; nothing else lists roles by name.

Steps enable units with `systemctl --no-reload enable`: the units are in the image already,
and a plain `enable` reloads systemd (every generator, every unit file), which costs tens of
seconds of emulated CPU per call on a busy TCG host. Only a step that writes a unit file or
drop-in runs `systemctl daemon-reload`, once.

PHASES order the steps. A step runs once its own node's steps of earlier phases
and the earlier-phase steps of the roles it waits for (`Role.waits_for`; by
default its own package's roles) have finished on every node: a dependency
graph (kvmlab/step_graph.py), not a lab-wide barrier. `setup` starts on each
node as soon as that node is ready:

- setup:   what a node does alone (format a brick, start a daemon, export a dir)
- join:    what needs another node's setup (peer probe, OSDs joining the monitor)
- finish:  what needs the joined cluster (pools, client keys, volume options)
- clients: what consumes the storage (a hypervisor's pools, mounts, secrets)
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from kvmlab.model import Lab, Node, Placement
from kvmlab.remote import Remote

PHASES = ("setup", "join", "finish", "clients")


@dataclass
class RoleContext:
    lab: Lab
    placement: Placement
    files: dict[str, str]  # rendered files, by relative path
    remotes: dict[str, Remote]
    progress: Callable[[str], None]

    def remote(self, node: str) -> Remote:
        return self.remotes[node]

    def file(self, node: Node, name: str) -> str:
        return self.files[f"roles/{node.name}/{name}"]

    def address(self, node: str, network: str) -> str:
        return self.placement.address(self.lab, node, network)


Step = Callable[[RoleContext, Node], None]


@dataclass(frozen=True)
class Check:
    """One verification of a role on a running lab. `run(lab)` raises AssertionError saying node and what was seen.

    `lab` is the running LabSession (roles do not import it): `lab.lab` is the model,
    `lab.by_role(role)` the node handles, `lab.placement` the subnets and addresses.
    `applies(model)` says whether the check means anything for a lab (e.g. only when
    a hypervisor has a pool on the role's storage); a check that does not apply is
    left out, never counted as passed.

    A check that reads settings back from the running service may return them as a
    mapping (setting -> value as read, JSON-serialisable): `kvmlab verify` records it in
    its results file, and `--baseline` reports a value that changed since an earlier run.
    """

    role: str
    name: str
    run: Callable[[Any], Mapping[str, Any] | None]
    applies: Callable[[Lab], bool] = lambda _lab: True

    @property
    def id(self) -> str:
        return f"{self.role}::{self.name}"


@dataclass(frozen=True)
class Role:
    name: str
    summary: str  # one line for `kvmlab roles`
    steps: dict[str, Step] = field(default_factory=dict)  # phase -> step, on the nodes with this role
    # Steps this role runs on nodes with another role: {"hypervisor": {"clients": attach}} makes
    # each hypervisor use this storage, as a step of its own (one failing does not stop the others).
    steps_on: dict[str, dict[str, Step]] = field(default_factory=dict)
    # Commands whose output goes into the artifacts when something fails.
    state_commands: tuple[str, ...] = ()
    boot_priority: int = 9  # lower boots first: nodes on the longest setup chains
    # Roles whose steps of earlier phases this role's steps need, on every node that has them
    # (None: every role of its own package). Its steps_on steps wait for the same roles.
    waits_for: tuple[str, ...] | None = None
    # After a revert or a saved-lab restore: wait until the service has settled (an operation the
    # save caught in flight has finished), raising HarnessError with what it saw if it does not.
    settle: Callable[[Lab, Callable[[str], Remote]], None] | None = None


@dataclass(frozen=True)
class Settings:
    """A role package's entry under `roles:` in a lab file."""

    key: str  # e.g. "ceph" (one entry for ceph-mon, ceph-osd and ceph-admin)
    default: Any  # the frozen settings dataclass with every default
    parse: Callable[[Any], Any]  # SettingsReader -> settings; raises LabFileError


@dataclass(frozen=True)
class RolePackage:
    """Everything one package under kvmlab/roles/ brings: roles, settings, image packages, files, checks."""

    order: int  # settings are parsed and files rendered in this order (a pool needs its export parsed first)
    roles: tuple[Role, ...]
    settings: Settings
    image_packages: tuple[str, ...] = ()  # Debian packages baked into the image (guests have no internet)
    # More packages on a release that splits what image_packages names into several (by release name).
    release_packages: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: Callable[[Lab, Placement, Node], dict[str, str]] = lambda _lab, _pl, _node: {}
    checks: tuple[Check, ...] = ()


@lru_cache(maxsize=1)
def packages() -> tuple[RolePackage, ...]:
    """Every role package under kvmlab/roles/, in their order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:
            module = importlib.import_module(f"{__name__}.{info.name}")
            found.append(module.PACKAGE)
    return tuple(sorted(found, key=lambda p: p.order))


def registry() -> dict[str, Role]:
    return {role.name: role for package in packages() for role in package.roles}


def waits_for(role: str) -> frozenset[str]:
    """The roles ROLE's steps wait for (see Role.waits_for)."""
    for package in packages():
        for r in package.roles:
            if r.name == role:
                return frozenset(r.waits_for if r.waits_for is not None else (x.name for x in package.roles))
    raise KeyError(role)


def known_roles() -> tuple[str, ...]:
    return tuple(registry())


def settings_keys() -> dict[str, tuple[str, ...]]:
    """Keys under `roles:` in a lab file, and the roles each one configures."""
    return {p.settings.key: tuple(r.name for r in p.roles) for p in packages()}


def all_checks() -> tuple[Check, ...]:
    return tuple(check for package in packages() for check in package.checks)


def image_packages(release: str) -> tuple[str, ...]:
    return tuple(sorted({name for p in packages() for name in (*p.image_packages, *p.release_packages.get(release, ()))}))
