"""The `kvmlab` command."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from kvmlab import accel, golden, hosts_file, images, matrix, preflight, providers, render, results, runs, settings, variants
from kvmlab.baseline import compare, regressed
from kvmlab.baseline import report as baseline_report
from kvmlab.errors import HarnessError, Interrupted
from kvmlab.keys import new_keypair
from kvmlab.loader import load_lab, load_lab_file
from kvmlab.model import DEFAULT_RELEASE, RELEASES, Lab
from kvmlab.providers.base import Provider
from kvmlab.texttable import table as _table
from kvmlab.yamlread import LAB_NAME_RE

EXIT_INTERRUPTED = 130
BUILT = "built"  # the checkpoint of a freshly built lab, saved for the next `up` once verified


def _provider(uri: str | None = None) -> Provider:
    """The provider of the libvirt host at URI (default KVMLAB_URI's)."""
    return providers.connect(uri)


def _provider_of(run: runs.Run) -> Provider:
    """The libvirt host RUN was brought up on (a run placed by --hosts records its host's URI)."""
    return _provider(run.uri or None)


def _by_host(found: list[runs.Run]) -> dict[str, list[runs.Run]]:
    """FOUND grouped by the URI of the libvirt host each runs on."""
    groups: dict[str, list[runs.Run]] = {}
    for run in found:
        groups.setdefault(run.uri or settings.libvirt_uri(), []).append(run)
    return groups


def _runs_of(lab_name: str) -> list[runs.Run]:
    me = runs.me()
    return [r for r in runs.all_runs().values() if r.lab == lab_name and r.user == me]


def _one_run(lab_name: str) -> runs.Run:
    found = [r for r in _runs_of(lab_name) if r.owner_alive()]
    if not found:
        raise HarnessError(f"no lab '{lab_name}' is up (start one with `kvmlab up labs/{lab_name}.yaml`)")
    return max(found, key=lambda r: r.started)


def cmd_doctor(args: argparse.Namespace) -> int:
    checks = preflight.host_checks(settings.cache_dir(), settings.pool_dir())
    for release in RELEASES:  # only the default release's image is needed before any lab asks for another
        built = images.cached_image(release)
        hint = f"not built yet: `kvmlab image build --release {release}` (2-5 minutes)"
        checks.append(
            preflight.Check(
                f"image {release}", built.exists() or release != DEFAULT_RELEASE, str(built.directory) if built.exists() else hint
            )
        )
    image = images.cached_image()
    if image.exists():
        chosen, reason = accel.choose_accel(image.kernel, settings.cache_dir())
        checks.append(preflight.Check("accelerator", True, f"{chosen.upper()}: {reason}"))
    mem, disk = preflight.available_memory_mib(), preflight.free_disk_mib(settings.pool_dir())
    checks.append(preflight.Check("memory", True, f"{mem} MiB available"))
    checks.append(preflight.Check("disk", True, f"{disk} MiB free under {settings.pool_dir()}"))
    for path in args.labs:
        lab = load_lab(path)
        need_mem, need_disk = preflight.lab_needs(lab)
        ok = need_mem <= mem and need_disk <= disk
        checks.append(preflight.Check(f"lab {lab.name}", ok, f"needs {need_mem} MiB memory, {need_disk} MiB disk"))
    print(_table(("check", "ok", "detail"), [(c.name, "yes" if c.ok else "NO", c.detail) for c in checks]))
    return 0 if all(c.ok for c in checks) else 1


def cmd_image_build(args: argparse.Namespace) -> int:
    for release in RELEASES if args.release == "all" else (args.release,):
        print(images.ensure_image(force=args.force, release=release).directory)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from kvmlab import graph

    lab = load_lab(args.lab)
    out = graph.write(lab, Path(args.output or f"{lab.name}.svg"))
    print(f"lab {lab.name}: {len(lab.nodes)} nodes, {len(lab.networks)} networks drawn to {out}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from kvmlab.lab import write_files
    from kvmlab.redact import redact

    lab = load_lab(args.lab)
    keypair = new_keypair("kvmlab-render")
    files = render.render_lab(
        render.RenderInput(
            lab=lab,
            placement=render.preview_placement(lab),
            backing=render.Backing(str(settings.pool_dir()), images.recipe_digest(release=lab.release)),
            accel=args.accel,
            ssh_public_key=keypair.public_openssh,
            host_keys={n.name: (keypair.private_openssh, keypair.public_openssh) for n in lab.nodes},
            owner=render.Owner(pid=0, user=runs.me(), host="render", boot_id="render", created="render"),
            console_dir=str(settings.console_dir()),
        )
    )
    write_files(Path(args.output), {k: redact(v) for k, v in files.items()})
    print(f"wrote {len(files)} files to {args.output}")
    return 0


def _new_session(lab: Lab, keep_going: bool, cold_boot: bool, hosts: str | None = None):
    from kvmlab.lab import LabSession

    hosts = hosts or hosts_file.hosts_file_from_env()
    named = [node for node in lab.nodes if node.host]
    if named and not hosts:
        raise HarnessError(
            f"{lab.path}: node '{named[0].name}' names host '{named[0].host}': give the hosts file that defines it"
            " (--hosts FILE or KVMLAB_HOSTS=FILE)"
        )
    spread = hosts_file.spread_over(lab, hosts, lambda line: print(line, file=sys.stderr)) if hosts else None
    if spread is None:
        session = LabSession(lab, _provider_for_new(lab, hosts), keep_going=keep_going, cold_boot=cold_boot)
    else:
        where, uris = spread
        providers = {name: _provider(uri) for name, uri in uris.items()}
        first = next(iter(providers.values()))
        session = LabSession(lab, first, keep_going=keep_going, cold_boot=cold_boot, spread=where, host_providers=providers)
    session.failure_dir = settings.artifacts_dir() / session.run_id / "up"
    return session


def _provider_for_new(lab: Lab, hosts: str | None) -> Provider:
    """The libvirt host for a new run of LAB: of the hosts file's hosts (--hosts, KVMLAB_HOSTS) the one
    with the most room, else KVMLAB_URI's."""
    hosts = hosts or hosts_file.hosts_file_from_env()
    if hosts is None:
        return _provider()
    return _provider(hosts_file.place(lab, hosts, lambda line: print(line, file=sys.stderr)))


def _bring_up(session, rebuild: bool):
    """SESSION's lab up and kept: restored from its saved verified state when it can be, else built."""
    session.use_saved = not rebuild
    with _teardown_on_signal():
        try:
            session.up()
        except BaseException as exc:
            if session.failure_dir is not None and session.failure_dir.is_dir():  # the evidence up() collected
                _write_report(session, "up", evidence=session.failure_dir, error=str(exc) or type(exc).__name__)
            raise
    session.mark_kept()
    return session


def _print_up(session) -> None:
    lab = session.lab
    print()
    print(_table(("node", "roles", "address", "state", "ready s"), session.summary_rows()))
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in session.phase_s.items())
    how = "restored from its saved verified state" if session.restored else "built"
    print(f"\nlab {lab.name} is up, {how} (run {session.run_id}, {session.accel.upper()}; {phases}).")
    print(f"  ssh: kvmlab ssh {lab.name} NODE    tear down: kvmlab down {lab.name}")


def _verify(session, names: list[str], junit: str | None, started: datetime) -> dict[str, Any]:
    """Run the role checks on SESSION, print the table; save the lab for the next `up` when a fresh build passes.
    Returns the run's entry of the results file (kvmlab/results.py), written beside its artifacts."""
    from kvmlab.verify import PASS, checks_for, run_checks, summary, table, write_junit

    checks = checks_for(session.lab, names)
    # Kept as a saved lab for the next `up` on this machine only: a remote host's nodes boot (no generic clones).
    fresh = (
        not session.restored and not session.step_failures and session.image is not None and session.host.local and session.spread is None
    )
    if fresh:  # the state to keep is the one before the checks ran
        session.snapshot(BUILT)
    start = time.monotonic()
    checked = run_checks(session, checks, log=session.log)
    print()
    for failure in session.step_failures:
        print(f"bring-up step failed: {failure}")
    print(table(checked))
    print(f"\nlab {session.lab.name}: {summary(checked, time.monotonic() - start)}")
    for r in checked:
        if r.outcome != PASS:
            print(f"\n{r.outcome} {r.check.id}:\n{r.message}")
    if junit:
        write_junit(Path(junit), session.lab, checked, session.step_failures)
        print(f"\nJUnit XML: {junit}")
    ok = all(r.outcome == PASS for r in checked) and not session.step_failures
    if ok and fresh and not names:
        golden.save(session, BUILT, session.image, sum(session.phase_s.values()))
    evidence = None
    if not ok:  # what the failed checks' nodes show now, for the report
        evidence = settings.artifacts_dir() / session.run_id / "verify"
        failed_roles = {r.check.role for r in checked if r.outcome != PASS} | {f.role for f in session.step_failures}
        try:
            nodes = [h.name for h in session.nodes if failed_roles & set(h.roles) and h.remote.answers()]
            session.collect_artifacts(evidence, journal_nodes=nodes)
        except (HarnessError, OSError) as exc:
            print(f"evidence for the report: not all collected ({exc})", file=sys.stderr)
    _write_report(session, "verify", checked, evidence)
    return _write_results(session, results.of_run(session, checked, started))


def _write_report(session, command: str, checked=None, evidence: Path | None = None, error: str = "") -> None:
    """The run's HTML page and, beside it, its JUnit XML (the checks, and the bring-up steps that failed)."""
    from kvmlab import report
    from kvmlab.verify import write_junit

    folder = settings.artifacts_dir() / session.run_id
    path, junit = folder / f"report-{command}.html", folder / f"junit-{command}.xml"
    try:
        report.write(report.of_session(session, command, checked, evidence), path)
        write_junit(junit, session.lab, checked or [], session.step_failures, error=error)
    except Exception as exc:  # a page about the run must never stand in the way of its result or error
        print(f"report: not written ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    print(f"report: {path}\nJUnit XML: {junit}", file=sys.stderr)


def _write_results(session, run: dict[str, Any]) -> dict[str, Any]:
    """RUN (a results file's entry) written as the results file of SESSION's run, beside its report."""
    path = settings.artifacts_dir() / session.run_id / results.file_name()
    try:
        results.write(path, [run])
    except OSError as exc:  # as the report: never in the way of the run's result
        print(f"results: not written ({exc})", file=sys.stderr)
    else:
        print(f"results: {path}", file=sys.stderr)
    return run


def _on_release(lab: Lab, release: str | None) -> Lab:
    """LAB on the release the command line chose (--release), else on its own. On another release than
    its file's it is another lab, named LAB-RELEASE, so that both can run side by side."""
    if not release or release == lab.release:
        return lab
    name = f"{lab.name}-{release}"
    if not LAB_NAME_RE.match(name):
        raise HarnessError(f"lab {lab.name} on {release} would be named '{name}', longer than a lab name may be: give it a shorter 'name:'")
    return dataclasses.replace(lab, release=release, name=name)


def cmd_up(args: argparse.Namespace) -> int:
    lab = _on_release(load_lab_file(args.lab).lab(args.variant), args.release)
    started = results.now()
    session = _bring_up(_new_session(lab, keep_going=False, cold_boot=args.cold_boot, hosts=args.hosts), args.rebuild)
    rc = 0
    if args.verify:
        rc = 0 if results.passed(_verify(session, [], args.junit, started)) else 1
    else:
        _write_report(session, "up")
    _print_up(session)
    return rc


def cmd_verify(args: argparse.Namespace) -> int:
    file = load_lab_file(args.lab)
    labs = [_on_release(lab, args.release) for lab in (file.select(args.variant) if args.variant else [file.base])]
    baseline = results.read(Path(args.baseline)) if args.baseline else None  # read first: a wrong path fails before any lab comes up
    runs_done = _verify_labs(labs, args, lambda lab: _junit_file(args.junit, lab, several=len(labs) > 1))
    regressed = _compare_with_baseline(runs_done, baseline)
    return 0 if all(results.passed(r) for r in runs_done) and not regressed else 1


def cmd_matrix(args: argparse.Namespace) -> int:
    file = load_lab_file(args.lab)
    labs = [_on_release(lab, args.release) for lab in (file.select(args.variant) if args.variant else file.every())]
    baseline = results.read(Path(args.baseline)) if args.baseline else None
    out = Path(args.junit_dir) if args.junit_dir else settings.artifacts_dir() / f"matrix-{file.base.name}-{results.stamp()}"
    runs_done = _verify_labs(labs, args, lambda lab: str(out / f"{lab.name}.xml"))
    print(f"\nmatrix of {file.base.path}:\n{matrix.table(runs_done)}\n\n{matrix.summary(runs_done)}")
    print(f"JUnit XML: {out}/<lab>.xml, one per lab")
    try:
        print(f"results: {results.write(out / results.file_name(), runs_done)}")
    except OSError as exc:
        print(f"results: not written ({exc})", file=sys.stderr)
    regressed = _compare_with_baseline(runs_done, baseline)
    return 0 if all(results.passed(r) for r in runs_done) and not regressed else 1


def _junit_file(junit: str | None, lab: Lab, several: bool) -> str | None:
    """With several labs, one JUnit file each: FILE.xml becomes FILE-<lab>.xml."""
    if not junit or not several:
        return junit
    path = Path(junit)
    return str(path.with_name(f"{path.stem}-{lab.name}{path.suffix}"))


def _verify_labs(labs: list[Lab], args: argparse.Namespace, junit_for: Callable[[Lab], str | None]) -> list[dict[str, Any]]:
    """Bring up and check each lab in turn; their results files' entries."""
    from kvmlab.verify import checks_for

    for lab in labs:  # a wrong --check fails now, not after the first labs have run
        checks_for(lab, args.check)
    several = len(labs) > 1
    done = []
    for lab in labs:
        if several:
            print(f"\n=== lab {lab.name} ({variants.BASE if not lab.variant else 'variant ' + lab.variant}) ===", flush=True)
        done.append(_verify_lab(lab, args, junit_for(lab), tear_down=several))
    return done


def _verify_lab(lab: Lab, args: argparse.Namespace, junit: str | None, tear_down: bool) -> dict[str, Any]:
    """Check LAB: the run of it that is up, else a bring-up of it (torn down after its checks if TEAR_DOWN)."""
    from kvmlab.lab import LabSession
    from kvmlab.verify import write_junit

    started = results.now()
    running = [r for r in _runs_of(lab.name) if r.owner_alive() and Path(r.lab_file).resolve() == Path(args.lab).resolve()]
    if running:
        run = max(running, key=lambda r: r.started)
        print(f"lab {lab.name} is up (run {run.run_id}): checking it", file=sys.stderr)
        session, ours = LabSession.attach(lab, _provider_of(run), run), False
    else:
        session, ours = _new_session(lab, keep_going=True, cold_boot=args.cold_boot, hosts=args.hosts), True
    came_up = not ours
    try:
        if ours:
            # A step that fails does not stop the bring-up: the checks then say what it broke.
            _bring_up(session, args.rebuild)
            came_up = True
            _print_up(session)
        return _verify(session, args.check, junit, started)
    except Interrupted:
        raise
    except HarnessError as exc:  # recorded, so that a matrix goes on with the next lab and a baseline sees it
        print(f"kvmlab: {exc}", file=sys.stderr)
        if junit:
            write_junit(Path(junit), lab, [], error=str(exc))
        return _write_results(session, results.of_run(session, [], started, error=str(exc), came_up=came_up))
    finally:
        if tear_down and ours:  # labs run one after another: each goes before the next comes up, or they would not fit
            session.down()


def _compare_with_baseline(runs_done: list[dict[str, Any]], baseline: tuple[Path, list[dict[str, Any]]] | None) -> bool:
    """Print what changed since the BASELINE run; whether a check (or a lab) regressed."""
    if baseline is None:
        return False
    path, before = baseline
    changes = compare(before, runs_done)
    known = {run["lab"] for run in before}
    print("\n" + baseline_report(changes, str(path), sum(run["lab"] in known for run in runs_done)))
    return regressed(changes)


def cmd_roles(args: argparse.Namespace) -> int:
    from kvmlab.roles import all_checks, packages

    rows = []
    for package in packages():
        for role in package.roles:
            checks = [c.name for c in all_checks() if c.role == role.name]
            rows.append((role.name, package.settings.key, role.summary, ", ".join(checks) or "-"))
    print(_table(("role", "settings key", "what it sets up", "checks"), rows))
    return 0


def _owner(run: runs.Run) -> str:
    if run.kept:
        return "kept"
    return f"pid {run.pid}" if run.owner_alive() else f"dead pid {run.pid}"


def cmd_status(args: argparse.Namespace) -> int:
    if args.lab is not None:
        return _status_of(args.lab)
    states = _domain_states(list(runs.all_runs().values()))
    rows = []
    for run in sorted(runs.all_runs().values(), key=lambda r: r.started):
        lab_nodes = [n for n in states if n.startswith(render.prefix(run.lab, run.run_id) + "-")]
        node_states = (
            states.get(render.prefix(run.lab, run.run_id)) or ", ".join(f"{n.rsplit('-', 1)[-1]}={states[n]}" for n in lab_nodes) or "-"
        )
        rows.append((run.lab, run.run_id, run.user, _owner(run), " ".join(run.subnets.values()), node_states))
    if not rows:
        print("no labs")
        return 0
    print(_table(("lab", "run", "user", "owner", "subnets", "nodes"), rows))
    return 0


def _domain_states(found: list[runs.Run]) -> dict[str, str]:
    """Every domain's state on the libvirt hosts FOUND run on (and KVMLAB_URI's)."""
    states: dict[str, str] = {}
    by_host = _by_host(found)
    for uri in dict.fromkeys([settings.libvirt_uri(), *by_host]):
        try:
            states |= {d.name: d.state for d in _provider(uri).list_domains()}
        except HarnessError as exc:
            if uri not in by_host:
                raise
            # One host that does not answer must not hide the labs of the others.
            print(f"kvmlab: {str(exc).splitlines()[0]}; its labs' nodes show as unreachable", file=sys.stderr)
            states |= {render.prefix(r.lab, r.run_id): "unreachable" for r in by_host[uri]}
    return states


def _state_of(states: dict[str, str], run: runs.Run, node: str) -> str:
    """NODE's state from _domain_states(): unreachable if its host did not answer, absent if it has no domain."""
    return states.get(render.prefix(run.lab, run.run_id)) or states.get(render.domain_name(run.lab, run.run_id, node), "absent")


def _status_of(lab_name: str) -> int:
    """Every run of LAB_NAME: who owns it, and each node's state, addresses and roles."""
    registry = sorted(runs.all_runs().values(), key=lambda r: r.started)
    mine = [r for r in registry if r.lab == lab_name]
    if not mine:
        up = sorted({r.lab for r in registry})
        raise HarnessError(f"no lab '{lab_name}' is up (labs up: {', '.join(up) or 'none'})")
    states = _domain_states(mine)
    for i, run in enumerate(mine):
        started = datetime.fromtimestamp(run.started).astimezone().isoformat(timespec="seconds")
        subnets = ", ".join(f"{k} {v}" for k, v in run.subnets.items())
        print(("\n" if i else "") + f"lab {run.lab} run {run.run_id}: {_owner(run)}, user {run.user}, started {started}, {subnets}")
        print(f"  lab file: {run.lab_file}")
        try:
            lab = load_lab_file(run.lab_file).named(run.lab)
        except (HarnessError, OSError) as exc:  # moved or edited since: say so, and show the domains alone
            print(f"  (cannot read the lab file: {exc})")
            prefix = render.prefix(run.lab, run.run_id) + "-"
            rows = [(n.removeprefix(prefix), st, "-", "-") for n, st in states.items() if n.startswith(prefix)]
        else:
            placement = run.placement()
            rows = [
                (
                    node.name,
                    _state_of(states, run, node.name),
                    " ".join(f"{net}={placement.address(lab, node.name, net)}" for net in node.networks if net in placement.subnets),
                    ",".join(node.roles) or "-",
                )
                for node in lab.nodes
            ]
        print(_table(("node", "state", "addresses", "roles"), rows))
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    run = _one_run(args.lab)
    config = settings.state_dir() / "runs" / render.prefix(run.lab, run.run_id) / "ssh_config"
    os.execvp("ssh", ["ssh", "-F", str(config), args.node, *args.command])
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    run = _one_run(args.lab)
    domain = render.domain_name(run.lab, run.run_id, args.node)
    os.execvp("virsh", ["virsh", "-c", run.uri or settings.libvirt_uri(), "console", domain])
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    import asyncio

    from kvmlab.cli_exercise import trainee_session
    from kvmlab.web.server import WebConsole

    # A trainee's lab is named for exercise and trainee, not as its lab file says: attach it as training does.
    session, task_html = trainee_session(args.lab, _provider()) or (_attach(args.lab), "")
    console = WebConsole(session, log=lambda line: print(f"kvmlab: {line}", file=sys.stderr), task_html=task_html)

    async def serve() -> None:
        # Ctrl-C or SIGTERM stop it, even where SIGINT came ignored (a shell's background job).
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        url = await console.start(args.address, args.port)
        if not ipaddress.ip_address(args.address).is_loopback:
            print(
                f"kvmlab: warning: {args.address} is not loopback; anyone who can reach it and has the key sees the consoles",
                file=sys.stderr,
            )
        print(f"kvmlab web: lab {session.lab.name} at {url}  (Ctrl-C stops it)", flush=True)
        try:
            await stop.wait()
        finally:
            await console.stop()

    asyncio.run(serve())
    print("kvmlab web: stopped")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from kvmlab.gc import Collected, collect

    mine = _runs_of(args.lab)
    if not mine:
        print(f"no lab '{args.lab}' is up")
        return 0
    # A process still running the lab (an `up` not finished, a pytest session) would fail in odd ways.
    refusals = [] if args.force else [why for r in mine if (why := runs.down_refusal(r) or _checkpoint_busy(r))]
    if refusals:
        raise HarnessError("\n".join(refusals))
    out = Collected()
    for uri, on_host in _by_host(mine).items():
        out.merge(collect(_provider(uri), only_runs={r.run_id for r in on_host}))
    print(f"lab {args.lab}: removed {len(out.domains)} domains, {len(out.networks)} networks, {len(out.volumes)} volumes")
    return 0


def _checkpoint_busy(run: runs.Run) -> str | None:
    """A `kvmlab snapshot` or `revert` still working on RUN (its owner may be a kept lab's finished `up`)."""
    from kvmlab.checkpoints import checkpoint_root, run_lock

    root = checkpoint_root(render.prefix(run.lab, run.run_id))
    if not root.is_dir():
        return None
    with run_lock(root, blocking=False) as free:
        if free:
            return None
    return f"lab {run.lab} (run {run.run_id}): a snapshot or revert is running on it; wait for it to end, or pass --force"


def _attach(lab_name: str):
    from kvmlab.lab import LabSession

    run = _one_run(lab_name)
    return LabSession.attach(load_lab_file(run.lab_file).named(run.lab), _provider_of(run), run)


def cmd_snapshot(args: argparse.Namespace) -> int:
    session = _attach(args.lab)
    if args.name is None:
        book = session.checkpoints.book
        if not book.checkpoints:
            print(f"lab {args.lab} has no checkpoints")
        for ck in book.checkpoints.values():
            print(f"{ck.name}  created {ck.created}  (saved in {ck.save_s} s)")
        return 0
    seconds = session.snapshot(args.name)
    print(f"lab {args.lab}: checkpoint {args.name} saved in {seconds:.1f} s (revert: kvmlab revert {args.lab} {args.name})")
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    session = _attach(args.lab)
    seconds = session.revert(args.name)
    print(f"lab {args.lab}: reverted to checkpoint {args.name} in {seconds:.1f} s")
    return 0


def _gc_hosts(hosts: str | None) -> list[str]:
    """Every libvirt host a run may have left something on: KVMLAB_URI's, those runs recorded, the hosts file's."""
    uris = [settings.libvirt_uri(), *(uri for r in runs.all_runs().values() for uri in r.uris if uri)]
    if hosts := hosts or hosts_file.hosts_file_from_env():
        uris += [entry.uri for entry in hosts_file.load_hosts_file(hosts)]
    return list(dict.fromkeys(uris))


def cmd_gc(args: argparse.Namespace) -> int:
    from kvmlab.gc import Collected, collect, forget_host

    out, unreachable = Collected(), []
    if args.forget:
        forgotten = forget_host(args.forget)
        print(f"forgot runs {', '.join(forgotten)} on {args.forget}: their records and subnet leases are gone")
    for uri in _gc_hosts(args.hosts):
        if uri == args.forget:
            continue
        try:
            out.merge(collect(_provider(uri)))
        except HarnessError as exc:
            unreachable.append((uri, str(exc).splitlines()[0]))
    for uri, problem in unreachable:
        print(
            f"kvmlab gc: could not collect on {uri}: {problem}; what dead runs left there stays until it answers"
            f" (if it never will: `kvmlab gc --forget {uri}`)",
            file=sys.stderr,
        )
    if out.empty:
        print("nothing to collect")
    else:
        print(
            f"removed runs {', '.join(out.runs) or '-'}: {len(out.domains)} domains, {len(out.networks)} networks, "
            f"{len(out.volumes)} volumes, {len(out.builds)} unfinished image builds, "
            f"{len(out.saved)} leftovers of unfinished lab saves, {len(out.checkpoints)} leftovers of unfinished checkpoints, "
            f"{len(out.generics)} generic nodes of older images and generic disks nothing uses"
            + (f", {len(out.tunnels)} tunnels of lab networks that are gone" if out.tunnels else "")
        )
    return 1 if unreachable else 0


class _teardown_on_signal:
    """Turn SIGTERM (and SIGHUP) into KeyboardInterrupt, so the teardown of Ctrl-C runs for them too."""

    def __enter__(self) -> None:
        self._old = {s: signal.signal(s, self._raise) for s in (signal.SIGTERM, signal.SIGHUP)}

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    @staticmethod
    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an IP address (e.g. 127.0.0.1)") from None


def _add_release_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release", choices=RELEASES, help="run the lab on this Debian release's image instead of its file's `release:`")


def _add_hosts_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hosts", metavar="FILE", help="libvirt hosts (hosts.yaml): a new lab goes to the one with the most room (default $KVMLAB_HOSTS)"
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The options verify and matrix share."""
    p.add_argument("--rebuild", action="store_true", help="build the lab even if a saved verified state of it exists")
    p.add_argument("--cold-boot", action="store_true", help="boot every node's kernel instead of cloning a saved generic node of its shape")
    _add_release_option(p)
    _add_hosts_option(p)
    p.add_argument(
        "--baseline", metavar="FILE_OR_DIR", help="compare with an earlier results file (or the newest in a folder); a regression fails"
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvmlab", description="Multi-VM KVM storage labs from a YAML file.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="check this host (qemu, libvirtd, KVM, mmdebstrap, memory, disk)")
    d.add_argument("labs", nargs="*", help="lab files to size against free memory and disk")
    d.set_defaults(fn=cmd_doctor)
    img = sub.add_parser("image", help="the lab image").add_subparsers(dest="image_command", required=True)
    b = img.add_parser("build", help="build the lab image unless it is cached")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--release", choices=(*RELEASES, "all"), default=DEFAULT_RELEASE, help=f"the Debian release (default {DEFAULT_RELEASE})")
    b.set_defaults(fn=cmd_image_build)
    r = sub.add_parser("render", help="write every generated file of a lab without starting anything")
    r.add_argument("lab")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--accel", choices=("kvm", "tcg"), default="tcg")
    r.set_defaults(fn=cmd_render)
    g = sub.add_parser("graph", help="draw a lab's topology and storage paths from its file (no lab runs)")
    g.add_argument("lab", help="the lab file")
    g.add_argument("-o", "--output", help="the picture: .svg (default: LABNAME.svg here), .png, .pdf or .dot")
    g.set_defaults(fn=cmd_graph)
    u = sub.add_parser("up", help="bring a lab up and leave it running")
    u.add_argument("lab")
    u.add_argument("--verify", action="store_true", help="run the checks of every role in the lab; if they pass, save it for the next `up`")
    u.add_argument("--rebuild", action="store_true", help="build the lab even if a saved verified state of it exists")
    u.add_argument("--junit", metavar="FILE", help="with --verify: write the check results as JUnit XML")
    u.add_argument("--cold-boot", action="store_true", help="boot every node's kernel instead of cloning a saved generic node of its shape")
    u.add_argument("--variant", metavar="NAME", help="bring up this variant of the lab file (its lab is named LAB-NAME)")
    _add_release_option(u)
    _add_hosts_option(u)
    u.set_defaults(fn=cmd_up)
    v = sub.add_parser("verify", help="run the checks of every role in a lab (bringing it up first unless it is up)")
    v.add_argument("lab", help="a lab file, anywhere")
    v.add_argument("--check", action="append", default=[], metavar="NAME", help="only this role's checks (ROLE) or one check (ROLE::CHECK)")
    v.add_argument("--junit", metavar="FILE", help="write the results as JUnit XML (with several variants: FILE-LAB.xml each)")
    _add_run_options(v)
    v.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="check this variant's lab instead of the file's own (repeatable; 'all': every variant, 'base': the file's own too)",
    )
    v.set_defaults(fn=cmd_verify)
    m = sub.add_parser("matrix", help="verify a lab file's own lab and each of its variants, and print a table of checks by variant")
    m.add_argument("lab", help="a lab file with a 'variants:' mapping")
    m.add_argument(
        "--variant", action="append", metavar="NAME", help="only these labs (repeatable; 'base': the file's own; default: base and all)"
    )
    m.add_argument("--junit-dir", metavar="DIR", help="where a JUnit file per lab and the results file go (default artifacts/matrix-…)")
    _add_run_options(m)
    m.set_defaults(fn=cmd_matrix, check=[])
    sub.add_parser("roles", help="the roles kvmlab has, their settings key and checks").set_defaults(fn=cmd_roles)
    st = sub.add_parser("status", help="labs on this host; with LAB, that lab's runs and nodes")
    st.add_argument("lab", nargs="?", help="lab name: its runs, and each node's state, addresses and roles")
    st.set_defaults(fn=cmd_status)
    s = sub.add_parser("ssh", help="ssh to a node of a running lab")
    s.add_argument("lab")
    s.add_argument("node")
    s.add_argument("command", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_ssh)
    c = sub.add_parser("console", help="attach to a node's serial console")
    c.add_argument("lab")
    c.add_argument("node")
    c.set_defaults(fn=cmd_console)
    w = sub.add_parser("web", help="serve a page with each node's serial console and screen (noVNC) on loopback")
    w.add_argument("lab")
    w.add_argument("--address", default="127.0.0.1", type=_ip_address, help="address to listen on (default 127.0.0.1)")
    w.add_argument("--port", default=0, type=int, help="port (default: any free one)")
    w.set_defaults(fn=cmd_web)
    dn = sub.add_parser("down", help="tear a lab down")
    dn.add_argument("lab", help="lab name (e.g. smoke)")
    dn.add_argument("--force", action="store_true", help="even while the process that brought it up still runs")
    dn.set_defaults(fn=cmd_down)
    sn = sub.add_parser("snapshot", help="save a running lab (every node's memory and disks) as a checkpoint")
    sn.add_argument("lab")
    sn.add_argument("name", nargs="?", help="checkpoint name; without it, list the lab's checkpoints")
    sn.set_defaults(fn=cmd_snapshot)
    rv = sub.add_parser("revert", help="put a running lab back to one of its checkpoints")
    rv.add_argument("lab")
    rv.add_argument("name")
    rv.set_defaults(fn=cmd_revert)
    gc = sub.add_parser("gc", help="remove what dead runs left behind, on every libvirt host runs were recorded on")
    _add_hosts_option(gc)
    gc.add_argument(
        "--forget",
        metavar="URI",
        help="a libvirt host that will never answer again: forget the runs recorded on it (and their subnets), then collect elsewhere",
    )
    gc.set_defaults(fn=cmd_gc)
    from kvmlab.cli_exercise import add_parser as add_exercise_parser

    add_exercise_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt as exc:
        print(f"kvmlab: interrupted ({exc or 'SIGINT'}); everything this command started has been removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    except HarnessError as exc:
        print(f"kvmlab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
