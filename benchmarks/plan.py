"""The accuracy tables as files and commands, for benchmarks/Snakefile and benchmarks/collect.py.

A table is a YAML file under ``benchmarks/tables/``; each entry of its ``cells`` is expanded over its list-valued
fields (``ipc``, ``imbalance``, ``prune``, ``seeds``) into rows. The files the workflow makes, under the work folder:

    sets/<group>/<method>/manifest.json            a set: `distillset distill` (all methods of one real pass in one
                                                   command) or `distillset coreset`, or a link to a published set
    evals/<group>/<method>/<evaluation>/evaluation.json
                                                   one trained model: `distillset evaluate` on a folder that links
                                                   the set's files, so models of one set train side by side

Model ``m`` of a row is trained with evaluation seed ``100 * seed + m`` (one model per command), and the random
baseline (``resample: true``) draws a new subset for every model (subset seed ``seed + m``), as the reference
code draws a new random subset in each experiment.
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TABLES = Path(__file__).resolve().parent / "tables"
CORESET_RULES = ("random", "herding", "kcenter", "kcenter-random")
# the settings every distill command states (a table's `distill:` overrides them), so a recorded command does not
# depend on the CLI's defaults or the machine
DISTILL_DEFAULTS = {"real_precision": "fp32", "compile": False}
CELL_FIELDS = {"methods", "rows", "dataset", "ipc", "imbalance", "prune", "keep", "seeds", "iterations", "params",
               "lr_schedule", "resample", "run", "evaluations", "models"}
TEACHER = "TEACHER"  # in a table's `evaluations`: `soft_labels: TEACHER`, `elf: {teacher: TEACHER}` name its teacher


def _tag(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class TeacherSpec:
    """A table's teacher (`teacher:` in its config): ``distillset teacher train ... --out <work>/<path>``."""

    dataset: str
    model: str = "convnet3"
    epochs: int = 20
    dsa: bool = True
    precision: str = "fp32"
    compile: bool = True  # not part of the recipe (same weights up to rounding), recorded in the teacher's runtime
    width: int | None = None
    seed: int = 0

    @property
    def path(self) -> str:
        width = f"-w{self.width}" if self.width else ""
        return (f"teachers/{self.dataset}-{self.model}{width}-e{self.epochs}{'-dsa' if self.dsa else ''}"
                f"-{self.precision}-s{self.seed}")

    def argv(self, work: str) -> list[str]:
        argv = ["distillset", "teacher", "train", "--dataset", self.dataset, "--model", self.model, "--epochs",
                str(self.epochs), "--dsa" if self.dsa else "--no-dsa", "--precision", self.precision,
                *([] if self.compile else ["--no-compile"]), "--seed", str(self.seed), "--out", f"{work}/{self.path}"]
        return argv + (["--width", str(self.width)] if self.width else [])


def _with_teacher(value: Any, teacher: str, work: str) -> Any:
    """``value`` with the TEACHER placeholder replaced by the teacher folder under ``work``."""
    return f"{work}/{teacher}" if value == TEACHER else value


@dataclass(frozen=True)
class Group:
    """One command that makes sets: ``distill`` (its methods share the real pass), ``coreset`` or ``run``
    (a published set, linked)."""

    kind: str
    dataset: str
    methods: tuple[str, ...]
    ipc: int
    seed: int = 0
    iterations: int = 0
    imbalance: float | None = None
    prune: str | None = None
    keep: float | None = None
    params: tuple[tuple[str, Any], ...] = ()
    lr_schedule: str = "constant"  # the image learning rate over the iterations (distill --lr-schedule)
    options: tuple[tuple[str, Any], ...] = ()  # speed settings of the command (not part of the key)
    run: str | None = None
    teacher: str | None = None  # the teacher folder (under the work folder) of the *-teacher methods

    @property
    def key(self) -> str:
        if self.kind == "run":
            return "published-" + Path(self.run).name
        tags = "".join([f"-lt{self.imbalance}" if self.imbalance is not None else "",
                        f"-{self.prune}{self.keep}" if self.prune else "",
                        *(f"-{k}{_tag(v)}" for k, v in self.params),
                        f"-lr{self.lr_schedule}" if self.lr_schedule != "constant" else "",
                        f"-{Path(self.teacher).name}" if self.teacher else ""])
        return f"{self.dataset}-{'+'.join(self.methods)}-ipc{self.ipc}-it{self.iterations}-s{self.seed}{tags}"

    def argv(self, work: str) -> list[str]:
        """The command that makes this group's sets under ``work``."""
        if self.kind == "run":
            return []
        out = f"{work}/sets/{self.key}" + ("" if len(self.methods) > 1 else f"/{self.methods[0]}")
        common = ["--dataset", self.dataset, "--ipc", str(self.ipc), "--seed", str(self.seed), "--out", out]
        if self.imbalance is not None:
            common += ["--imbalance", str(self.imbalance)]
        if self.kind == "coreset":
            return ["distillset", "coreset", "--method", self.methods[0], *common]
        argv = ["distillset", "distill", "--method", ",".join(self.methods), *common,
                "--iterations", str(self.iterations), "--resume"]
        if self.prune:
            argv += ["--prune-rule", self.prune, "--prune-ratio", str(self.keep)]
        if self.teacher:
            argv += ["--teacher", f"{work}/{self.teacher}"]
            return argv + [arg for key, value in self.params for arg in ("--param", f"{key}={_tag(value)}")]
        for key, value in self.params:
            argv += ["--param", f"{key}={_tag(value)}"]
        if self.lr_schedule != "constant":
            argv += ["--lr-schedule", self.lr_schedule]
        for key, value in self.options:
            flag = key.replace("_", "-")
            if isinstance(value, bool):
                argv.append(f"--{flag}" if value else f"--no-{flag}")
            else:
                argv += [f"--{flag}", str(value)]
        return argv


@dataclass(frozen=True)
class Evaluation:
    """How one model is trained on a set (``distillset evaluate`` options); ``elf`` holds ELF settings."""

    model: str = "convnet3"
    epochs: int = 1000
    precision: str = "fp32"
    compile: bool = False
    elf: tuple[tuple[str, Any], ...] | None = None
    soft_labels: str | None = None  # TEACHER: train on the table teacher's soft labels
    relabel: str = "augmented"  # with soft_labels: label every augmented batch, or the images once ("fixed")
    teacher: str | None = None  # the table's teacher folder (under the work folder), when this evaluation uses it

    def name(self, seed: int) -> str:
        elf = "" if self.elf is None else "-elf" + "".join(
            f"-{k}" if v == TEACHER else f"-{k}{_tag(v)}" for k, v in self.elf)
        return (f"{self.model}-e{self.epochs}-s{seed}-{self.precision}" + ("-compile" if self.compile else "")
                + elf + ((f"-soft-{self.relabel}" if self.relabel != "fixed" else "-soft") if self.soft_labels else ""))

    def argv(self, run: str, seed: int, work: str = "benchmarks/work") -> list[str]:
        argv = ["distillset", "evaluate", run, "--model", self.model, "--num-models", "1", "--epochs",
                str(self.epochs), "--seed", str(seed), "--precision", self.precision,
                "--compile" if self.compile else "--no-compile"]
        if self.elf is not None:
            argv.append("--elf")
            for key, value in self.elf:
                argv += ["--elf-param", f"{key}={_tag(_with_teacher(value, self.teacher, work))}"]
        if self.soft_labels:
            argv += ["--soft-labels", _with_teacher(self.soft_labels, self.teacher, work), "--relabel", self.relabel]
        return argv


@dataclass(frozen=True)
class Model:
    """One trained model of a row: its set and how it is trained."""

    group: Group
    method: str
    evaluation: Evaluation
    seed: int

    @property
    def set_path(self) -> str:
        return f"sets/{self.group.key}/{self.method}"

    @property
    def path(self) -> str:
        return f"evals/{self.group.key}/{self.method}/{self.evaluation.name(self.seed)}"


@dataclass(frozen=True)
class Row:
    """One row of a table: ``models`` trained on the row's set (or, resampled, on one set each)."""

    method: str
    group: Group
    evaluation: Evaluation
    models: tuple[Model, ...]
    resample: bool = False
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Table:
    name: str
    rows: list[Row]
    paper: list[dict[str, Any]]
    description: str = ""
    teacher: TeacherSpec | None = None

    @property
    def groups(self) -> list[Group]:
        return list(dict.fromkeys(model.group for row in self.rows for model in row.models))

    @property
    def models(self) -> list[Model]:
        return list(dict.fromkeys(model for row in self.rows for model in row.models))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _evaluations(spec: dict[str, Any], cell: dict[str, Any], teacher: TeacherSpec | None) -> list[Evaluation]:
    base = {k: spec[k] for k in ("epochs", "precision", "compile") if k in spec}
    entries = cell.get("evaluations", [{}])
    evaluations = []
    for entry in entries:
        elf = None if entry.get("elf") is None else tuple(sorted(entry["elf"].items()))
        uses_teacher = entry.get("soft_labels") == TEACHER or any(v == TEACHER for _, v in elf or ())
        if uses_teacher and teacher is None:
            raise ValueError("an evaluation names TEACHER but the table has no `teacher:`")
        evaluations.append(Evaluation(**{**base, **{k: v for k, v in entry.items() if k != "elf"}}, elf=elf,
                                      teacher=teacher.path if uses_teacher else None))
    return evaluations


def load_table(path: Path) -> Table:
    """Read a table config (benchmarks/tables/<name>.yaml); a wrong field is named in the error."""
    config = yaml.safe_load(path.read_text())
    name = path.stem
    evaluate = config.get("evaluate", {})
    num_models = int(evaluate.get("models", 5))
    options = tuple(sorted({**DISTILL_DEFAULTS, **config.get("distill", {})}.items()))
    teacher = TeacherSpec(**{"dataset": config.get("dataset"), **config["teacher"]}) if "teacher" in config else None
    rows: list[Row] = []
    for cell in config["cells"]:
        if unknown := set(cell) - CELL_FIELDS:
            raise ValueError(f"{path}: unknown cell field(s) {sorted(unknown)}; known: {sorted(CELL_FIELDS)}")
        methods = tuple(cell["methods"])
        kind = "run" if "run" in cell else "coreset" if set(methods) <= set(CORESET_RULES) else "distill"
        if kind == "run" and len(methods) != 1:
            raise ValueError(f"{path}: a `run` cell names the one method of its published set")
        evaluations = _evaluations(evaluate, cell, teacher)
        product = itertools.product(_as_list(cell.get("ipc", 10)), _as_list(cell.get("imbalance", None)),
                                    _as_list(cell.get("prune", None)), _as_list(cell.get("seeds", 0)))
        for ipc, imbalance, prune, seed in product:
            fields = {"dataset": cell.get("dataset", config.get("dataset")), "ipc": int(ipc), "imbalance": imbalance,
                      "prune": prune, "keep": cell.get("keep") if prune else None,
                      "params": tuple(sorted(cell.get("params", {}).items()))}
            if kind == "distill":
                fields.update(iterations=int(cell.get("iterations", config.get("iterations", 2000))), options=options,
                              lr_schedule=cell.get("lr_schedule", "constant"))
                if any(method.endswith("-teacher") for method in methods):
                    if teacher is None:
                        raise ValueError(f"{path}: the *-teacher methods need the table's `teacher:`")
                    fields.update(teacher=teacher.path, options=())
            if kind == "run":  # the published set names its dataset
                fields.update(run=cell["run"], dataset=None)
            for method in cell.get("rows", methods):
                for evaluation in evaluations:
                    rows.append(_row(kind, method, methods, fields, seed, evaluation,
                                     int(cell.get("models", num_models)), bool(cell.get("resample"))))
    return Table(name, rows, config.get("paper", []), config.get("description", ""), teacher)


def _row(kind: str, method: str, methods: tuple[str, ...], fields: dict[str, Any], seed: int,
         evaluation: Evaluation, num_models: int, resample: bool) -> Row:
    """A row's models: model ``m`` is trained with seed ``100 * seed + m``; on its own subset when resampled."""
    shared = methods if kind == "distill" else (method,)
    models = []
    for index in range(num_models):
        set_seed = seed + index if resample else seed
        group = Group(kind, methods=shared, seed=set_seed, **fields)
        models.append(Model(group, method, evaluation, 100 * seed + index))
    extra = {k: v for k, v in (("imbalance", fields["imbalance"]), ("prune", fields["prune"]),
                               ("keep", fields["keep"])) if v is not None}
    extra.update({f"param_{k}": v for k, v in fields["params"]})
    if fields.get("lr_schedule", "constant") != "constant":
        extra["lr_schedule"] = fields["lr_schedule"]
    extra["seed"] = seed
    return Row(method, models[0].group, evaluation, tuple(models), resample, extra)


def tables(folder: Path = TABLES) -> dict[str, Table]:
    return {path.stem: load_table(path) for path in sorted(folder.glob("*.yaml"))}


def groups_of(all_tables: dict[str, Table]) -> dict[str, Group]:
    """Every group by key; two tables naming one key with different commands is an error."""
    found: dict[str, Group] = {}
    for table in all_tables.values():
        for group in table.groups:
            other = found.setdefault(group.key, group)
            if other != group:
                raise ValueError(f"two tables make {group.key} with different settings: {other} vs {group}; "
                                 "give them the same `distill` settings")
    return found


def models_of(all_tables: dict[str, Table]) -> dict[str, Model]:
    return {model.path: model for table in all_tables.values() for model in table.models}


def shell(argv: list[str], executable: str) -> str:
    """``argv`` as a shell command, with ``distillset`` replaced by ``executable``."""
    return shlex.join([executable, *argv[1:]] if argv and argv[0] == "distillset" else argv)


def iter_commands(row: Row, work: str) -> Iterator[str]:
    """The commands behind a row: the set's (or sets') and every model's, as recorded in its ``extra``."""
    for group in dict.fromkeys(model.group for model in row.models):
        if group.kind != "run":
            yield shlex.join(group.argv(work))
    for model in row.models:
        yield shlex.join(model.evaluation.argv(f"{work}/{model.path}", model.seed, work))
