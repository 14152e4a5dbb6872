"""Training exercises: a folder with exercise.yaml and task.md, read into an Exercise with file:line errors.

exercise.yaml says which lab the exercise runs on, what the trainee finds (`start`: role steps left
out of the bring-up, commands run after it), the stages and their objectives (a role check, or a
command on a node that succeeds when the objective is met), hints per objective, the reference
solution (the book's commands, per stage) and plausible wrong solutions the grader must catch.

Commands, hints and the task text are Jinja2 templates rendered with the running lab's addresses
(see `facts`), so they name the subnets and addresses of the trainee's own copy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from yaml.nodes import Node

from kvmlab import yaml_errors
from kvmlab.errors import HarnessError, LabFileError
from kvmlab.loader import decode_lab_text, load_lab
from kvmlab.model import Lab
from kvmlab.roles import PHASES, all_checks, known_roles
from kvmlab.yamlread import EXTENSION_KEYS, Fields, Reader, quote, suggest

EXERCISE_FILE = "exercise.yaml"
TASK_FILE = "task.md"
ENV_VAR = "KVMLAB_EXERCISES"  # more folders of exercises, os.pathsep-separated
ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
OBJECTIVE_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
SECTION_RE = re.compile(r"^\d+(\.\d+)*(/\d+(\.\d+)*)*$")
SAVE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class Command:
    """A shell command (a Jinja2 template) run as root on one node of the lab."""

    node: str
    run: str
    where: str  # file:line, for errors
    save: str = ""  # keep the command's output as {{ saved.NAME }} for the commands after it (a value copied by hand)


@dataclass(frozen=True)
class Objective:
    id: str
    title: str
    weight: int
    hints: tuple[str, ...]
    check: str = ""  # a role check id (ROLE::CHECK), or
    command: Command | None = None  # a command that exits 0 when the objective is met


@dataclass(frozen=True)
class Stage:
    title: str
    objectives: tuple[Objective, ...]


@dataclass(frozen=True)
class SolutionStep:
    stage: int  # 1-based
    command: Command


@dataclass(frozen=True)
class WrongSolution:
    title: str
    steps: tuple[Command, ...]
    fails: tuple[str, ...]  # the objectives it must fail; every other objective it must pass


@dataclass(frozen=True)
class Exercise:
    id: str
    folder: Path
    title: str
    section: str
    minutes: int
    lab_file: Path
    leave: frozenset[tuple[str, str | None]]
    start: tuple[Command, ...]
    stages: tuple[Stage, ...]
    solution: tuple[SolutionStep, ...]
    wrong: tuple[WrongSolution, ...]

    @property
    def objectives(self) -> tuple[Objective, ...]:
        return tuple(o for s in self.stages for o in s.objectives)

    def stage_of(self, objective_id: str) -> int:
        for number, stage in enumerate(self.stages, 1):
            if any(o.id == objective_id for o in stage.objectives):
                return number
        raise KeyError(objective_id)

    def objective(self, ref: str) -> Objective:
        """An objective by id or by its number (1-based, in the order the stages list them)."""
        objectives = self.objectives
        if ref.isdigit() and 1 <= int(ref) <= len(objectives):
            return objectives[int(ref) - 1]
        for o in objectives:
            if o.id == ref:
                return o
        numbered = [f"{i} ({o.id})" for i, o in enumerate(objectives, 1)]
        raise HarnessError(f"exercise {self.id} has no objective '{ref}'{suggest(ref, numbered)}")

    def task_text(self) -> str:
        return (self.folder / TASK_FILE).read_text(encoding="utf-8")

    def lab(self) -> Lab:
        return load_lab(self.lab_file)


def builtin_dir() -> Path | None:
    """The exercises kvmlab ships: kvmlab/exercises/ in an installed wheel, the repo's exercises/ in a checkout."""
    package = Path(__file__).resolve().parent
    for folder in (package / "exercises", package.parent / "exercises"):
        if folder.is_dir() and any(folder.glob(f"*/{EXERCISE_FILE}")):
            return folder
    return None


def builtin_labs_dir() -> Path:
    """kvmlab's own lab files: kvmlab/labs/ in an installed wheel, the repo's labs/ in a checkout."""
    package = Path(__file__).resolve().parent
    return package / "labs" if (package / "labs").is_dir() else package.parent / "labs"


def _lab_file(spec: str, folder: Path) -> Path:
    """`lab:` of an exercise: a bare name is one of kvmlab's labs, anything else a path from the exercise folder."""
    if "/" not in spec and not spec.endswith((".yaml", ".yml")):
        return builtin_labs_dir() / f"{spec}.yaml"
    return (folder / spec).resolve()


def search_dirs(extra: tuple[str, ...] = ()) -> list[Path]:
    """Where exercises are looked up: EXTRA folders, then KVMLAB_EXERCISES, then kvmlab's own."""
    folders = [Path(p).expanduser() for p in extra]
    folders += [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    builtin = builtin_dir()
    return [*folders, *([builtin] if builtin else [])]


def all_exercises(extra: tuple[str, ...] = ()) -> list[Exercise]:
    """Every exercise found, the first of each id winning (a trainer's folder shadows a built-in one)."""
    found: dict[str, Exercise] = {}
    for folder in search_dirs(extra):
        for path in sorted(folder.glob(f"*/{EXERCISE_FILE}")):
            if path.parent.name not in found:
                found[path.parent.name] = load_exercise(path.parent)
    return sorted(found.values(), key=lambda e: (_section_key(e.section), e.id))


def find_exercise(ref: str, extra: tuple[str, ...] = ()) -> Exercise:
    """An exercise by id (in the search folders) or by the path of its folder."""
    path = Path(ref).expanduser()
    if (path / EXERCISE_FILE).is_file():
        return load_exercise(path)
    for folder in search_dirs(extra):
        if (folder / ref / EXERCISE_FILE).is_file():
            return load_exercise(folder / ref)
    known = sorted({p.parent.name for folder in search_dirs(extra) for p in folder.glob(f"*/{EXERCISE_FILE}")})
    raise HarnessError(f"no exercise '{ref}' (looked in {', '.join(map(str, search_dirs(extra))) or 'nowhere'}){suggest(ref, known)}")


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", section))


def load_exercise(folder: Path) -> Exercise:
    path = folder / EXERCISE_FILE
    shown = str(path)
    try:
        text = decode_lab_text(path.read_bytes(), shown)
    except OSError as exc:
        raise LabFileError(shown, 1, 1, f"cannot read exercise file: {exc.strerror}") from exc
    root = yaml_errors.compose(text, shown, "exercise file is empty: it needs title, section, lab, stages and solution")
    if not (folder / TASK_FILE).is_file():
        raise LabFileError(shown, 1, 1, f"the exercise has no {TASK_FILE} beside {EXERCISE_FILE}: write the task text there (Markdown)")
    return _ExerciseReader(Reader(shown), folder).read(root)


class _ExerciseReader:
    def __init__(self, reader: Reader, folder: Path) -> None:
        self.r = reader
        self.folder = folder
        self.nodes: tuple[str, ...] = ()

    def read(self, root: Node) -> Exercise:
        r = self.r
        top = r.mapping(
            root, "the exercise", ("title", "section", "minutes", "lab", "start", "stages", "solution", "wrong", EXTENSION_KEYS)
        )
        ex_id = self.folder.resolve().name
        if not ID_RE.match(ex_id):
            raise r.fail(root, f"exercise folder name '{quote(ex_id)}' is not a valid id: use 1-20 lowercase letters, digits or '-'")
        lab_node = r.required(top, "lab", root, "the exercise")
        lab_file = _lab_file(r.string(lab_node, "lab"), self.folder)
        if not lab_file.is_file():
            raise r.fail(
                lab_node,
                f"lab '{quote(lab_node.value)}' is neither a file (relative to the exercise folder) nor one of kvmlab's labs"
                f"{suggest(lab_node.value, sorted(p.stem for p in builtin_labs_dir().glob('*.yaml')))}",
            )
        lab = load_lab(lab_file)
        self.nodes = tuple(n.name for n in lab.nodes)
        section = r.string(r.required(top, "section", root, "the exercise"), "section")
        if not SECTION_RE.match(section):
            raise r.fail(top["section"][1], f'section \'{quote(section)}\' is not a book section: write e.g. "5.3" or "6.3/6.5"')
        leave, start = self._start(top, lab)
        stages = self._stages(r.required(top, "stages", root, "the exercise"), lab)
        objective_ids = tuple(o.id for s in stages for o in s.objectives)
        return Exercise(
            id=ex_id,
            folder=self.folder.resolve(),
            title=r.string(r.required(top, "title", root, "the exercise"), "title"),
            section=section,
            minutes=r.optional(top, "minutes", lambda n: r.integer(n, "minutes", (1, 600)), 30),
            lab_file=lab_file,
            leave=leave,
            start=start,
            stages=stages,
            solution=self._solution(r.required(top, "solution", root, "the exercise"), len(stages)),
            wrong=tuple(self._wrong(n, objective_ids) for n in r.sequence(top["wrong"][1], "wrong")) if "wrong" in top else (),
        )

    def _start(self, top: Fields, lab: Lab) -> tuple[frozenset[tuple[str, str | None]], tuple[Command, ...]]:
        r = self.r
        if "start" not in top:
            return frozenset(), ()
        fields = r.mapping(top["start"][1], "start", ("leave", "run"))
        leave: set[tuple[str, str | None]] = set()
        present = tuple(sorted({role for n in lab.nodes for role in n.roles}))
        for item in r.sequence(fields["leave"][1], "start.leave") if "leave" in fields else []:
            text = r.string(item, "an entry of start.leave")
            role, _, phase = text.partition(":")
            if role not in known_roles() or role not in present:
                raise r.fail(item, f"start.leave names role '{quote(role)}', which no node of the lab has{suggest(role, present)}")
            if phase and phase not in PHASES:
                raise r.fail(item, f"start.leave: '{quote(phase)}' is not a phase of role steps{suggest(phase, PHASES)}")
            leave.add((role, phase or None))
        run = tuple(self._command(n, "start.run") for n in r.sequence(fields["run"][1], "start.run")) if "run" in fields else ()
        return frozenset(leave), run

    def _stages(self, node: Node, lab: Lab) -> tuple[Stage, ...]:
        r = self.r
        stages: list[Stage] = []
        seen: set[str] = set()
        checks = {c.id: c for c in all_checks()}
        for item in r.sequence(node, "stages"):
            fields = r.mapping(item, "a stage", ("title", "objectives"))
            objectives = []
            for obj in r.sequence(r.required(fields, "objectives", item, "a stage"), "objectives"):
                o = self._objective(obj, checks, lab)
                if o.id in seen:
                    raise r.fail(obj, f"objective id '{o.id}' is used twice: each objective needs its own id")
                seen.add(o.id)
                objectives.append(o)
            if not objectives:
                raise r.fail(item, "a stage needs at least one objective")
            stages.append(Stage(r.string(r.required(fields, "title", item, "a stage"), "stage title"), tuple(objectives)))
        if not stages:
            raise r.fail(node, "stages is empty: an exercise needs at least one stage with objectives")
        return tuple(stages)

    def _objective(self, node: Node, checks: dict, lab: Lab) -> Objective:
        r = self.r
        fields = r.mapping(node, "an objective", ("id", "title", "weight", "hints", "check", "node", "run"))
        oid = r.string(r.required(fields, "id", node, "an objective"), "objective id")
        if not OBJECTIVE_RE.match(oid):
            raise r.fail(fields["id"][1], f"objective id '{quote(oid)}' is not valid: use lowercase letters, digits and '-'")
        hints = tuple(r.string(h, "a hint") for h in r.sequence(fields["hints"][1], "hints")) if "hints" in fields else ()
        if not hints:
            raise r.fail(node, f"objective '{oid}' has no hints: give at least one (what to look at, never the answer)")
        check, command = "", None
        if "check" in fields and ("run" in fields or "node" in fields):
            raise r.fail(node, f"objective '{oid}' has both 'check' and 'node'/'run': use one (a role check, or a command on a node)")
        if "check" in fields:
            check = r.string(fields["check"][1], "check")
            if check not in checks:
                raise r.fail(fields["check"][1], f"unknown role check '{quote(check)}'{suggest(check, sorted(checks))}")
            if not checks[check].applies(lab):
                raise r.fail(fields["check"][1], f"role check '{check}' does not apply to the lab {lab.path}: it has nothing to see there")
        elif "run" in fields:
            command = self._command(node, f"objective '{oid}'", fields)
        else:
            raise r.fail(node, f"objective '{oid}' needs 'check: ROLE::CHECK', or 'node:' and 'run:' (a command that exits 0 when met)")
        return Objective(
            id=oid,
            title=r.string(r.required(fields, "title", node, "an objective"), "objective title"),
            weight=r.optional(fields, "weight", lambda n: r.integer(n, "weight", (1, 100)), 1),
            hints=hints,
            check=check,
            command=command,
        )

    def _command(self, node: Node, what: str, fields: Fields | None = None) -> Command:
        r = self.r
        fields = fields if fields is not None else r.mapping(node, what, ("node", "run", "save"))
        host = r.one_of(r.required(fields, "node", node, what), f"{what}: node", self.nodes, "a node of the lab")
        run = r.string(r.required(fields, "run", node, what), f"{what}: run")
        save = r.optional(fields, "save", lambda n: r.identifier(n, f"{what}: save", SAVE_RE, "save: key"), "")
        mark = fields["run"][1].start_mark
        return Command(host, run, f"{r.path}:{mark.line + 1}", save)

    def _solution(self, node: Node, stages: int) -> tuple[SolutionStep, ...]:
        r = self.r
        steps = []
        for item in r.sequence(node, "solution"):
            fields = r.mapping(item, "a solution step", ("stage", "node", "run", "save"))
            stage = r.integer(r.required(fields, "stage", item, "a solution step"), "stage", (1, stages))
            steps.append(SolutionStep(stage, self._command(item, "a solution step", {k: v for k, v in fields.items() if k != "stage"})))
        if not steps:
            raise r.fail(node, "solution is empty: give the reference solution's commands")
        if [s.stage for s in steps] != sorted(s.stage for s in steps):
            raise r.fail(node, "solution steps must be in stage order")
        missing = sorted(set(range(1, stages + 1)) - {s.stage for s in steps})
        if missing:
            raise r.fail(
                node, f"the solution has no step for stage {', '.join(map(str, missing))}: `solve` and `reset --stage` need one per stage"
            )
        return tuple(steps)

    def _wrong(self, node: Node, objective_ids: tuple[str, ...]) -> WrongSolution:
        r = self.r
        fields = r.mapping(node, "a wrong solution", ("title", "steps", "fails"))
        listed = r.sequence(r.required(fields, "steps", node, "a wrong solution"), "steps")
        steps = tuple(self._command(n, "a wrong solution step") for n in listed)
        fails = r.names_list(r.required(fields, "fails", node, "a wrong solution"), "fails", objective_ids, "objective")
        if not fails:
            raise r.fail(node, "fails is empty: name the objectives this wrong solution must fail")
        return WrongSolution(r.string(r.required(fields, "title", node, "a wrong solution"), "title"), steps, fails)
