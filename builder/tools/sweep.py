"""`python -m builder sweep`: train every variant of a grid (or an Optuna search) as ordinary runs.

A sweep is SPEC(s) x grid values x override sets x seeds. Every variant is validated (spec,
`--set` overrides and training config, exactly as `train` does) before the first one starts;
then each runs as its own `python -m builder train ... --out SWEEP/NAME` subprocess, so a
crash or a diverging run is recorded as failed (with its last output line) and the sweep goes
on. Re-running the same command skips finished variants and resumes interrupted ones with
`train --resume`. Torch is not imported here (the children import it).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from builder.lang.errors import BuilderError, Diagnostic, Document, Loc, SpecError, format_path, validate
from builder.lang.loading import load_spec, parse_path
from builder.lang.spec import NonNegativeInt, PositiveInt, StrictModel, rule_error
from builder.lang.yaml_io import load_document, parse_scalar
from training.cli import FLAGS, load_training
from training.runfiles import LOG, SPEC_FILE, recipe_changes, run_status, spec_data, write_record

if TYPE_CHECKING:
    from builder.lang.spec import Spec
    from training.config import TrainingConfig

Log = Callable[[str], None]
# 128 + SIGINT or SIGTERM: the trainer checkpointed and stopped; killed by one of them (before the trainer
# handles signals, or after it is done): whatever checkpoint there is stands.
INTERRUPTED = (130, 143, -signal.SIGINT, -signal.SIGTERM)

# --- the sweep file ---------------------------------------------------------------------------------


class TrainFlags(StrictModel):
    """The `train` flags every variant gets (the command line's flags win)."""

    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    seed: NonNegativeInt | None = None
    device: str | None = None
    threads: PositiveInt | None = None  # CPU threads of each variant (default: the CPUs divided by --jobs)
    init: str | None = None  # .safetensors weights every variant starts from, as `--init`
    data: str | None = None  # KIND[:ROOT], as `--data`


class IntParam(StrictModel):
    kind: Literal["int"]
    low: int
    high: int
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        return self


class FloatParam(StrictModel):
    kind: Literal["float"]
    low: float
    high: float
    log: bool = False  # sample uniformly in log space (learning rates, weight decay)

    @model_validator(mode="before")
    @classmethod
    def _ints_are_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):  # `low: 0` is a number here; strict mode would refuse the int
            return {k: float(v) if k in ("low", "high") and type(v) is int else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        return self


def _check_range(low: float, high: float, log: bool) -> None:
    if high <= low:
        raise rule_error("high", f"must be > low ({low}), got {high}")
    if log and low <= 0:
        raise rule_error("low", f"must be > 0 on a log scale, got {low}")


class CategoricalParam(StrictModel):
    kind: Literal["categorical"]
    choices: Annotated[list[Any], Field(min_length=1)]  # any YAML values, e.g. {kind: batchnorm}


class MedianPruner(StrictModel):
    """Stop a trial whose per-epoch metric is below the median of earlier trials at that epoch."""

    kind: Literal["median"]
    startup_trials: NonNegativeInt = 2  # trials that always run to the end first
    warmup_epochs: NonNegativeInt = 1  # epochs of each trial never pruned


class NoPruner(StrictModel):
    kind: Literal["none"]


class SearchConfig(StrictModel):
    """An Optuna study over `--set` paths; each trial is an ordinary run directory."""

    params: Annotated[
        dict[str, Annotated[IntParam | FloatParam | CategoricalParam, Field(discriminator="kind")]],
        Field(min_length=1),
    ]
    trials: PositiveInt = 20  # the budget, over all workers together
    metric: Literal["val_acc", "test_acc"] = "val_acc"  # val_acc falls back to test_acc without a val split
    pruner: Annotated[MedianPruner | NoPruner, Field(discriminator="kind")] = MedianPruner(kind="median")
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: NonNegativeInt | None = None
    study: str | None = None  # default: the sweep file's name
    storage: str | None = None  # default: sqlite:///<sweep dir>/study.db; --storage wins


class SweepFile(StrictModel):
    """A sweep written down: base specs, a grid and/or override sets, seeds, flags, a search."""

    specs: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]  # relative to this file
    overrides: list[str] = []  # noqa: RUF012 - `--set` arguments every variant gets
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # noqa: RUF012 - PATH: [values]
    variants: list[dict[str, Any]] = []  # noqa: RUF012 - override sets, each PATH: value
    seeds: PositiveInt = 1
    jobs: PositiveInt = 1
    train: TrainFlags = TrainFlags()
    search: SearchConfig | None = None

    @model_validator(mode="after")
    def _search_alone(self) -> SweepFile:
        if self.search is not None and (self.grid or self.variants):
            raise rule_error("search", "a search samples its own variants; leave grid and variants out")
        if self.search is not None and len(self.specs) != 1:
            raise rule_error("specs", "a search takes exactly one base spec")
        return self


# --- variants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Override:
    """One `--set PATH=VALUE` of a variant and where it was written (for messages)."""

    path: str
    value: Any
    origin: str

    @property
    def arg(self) -> str:
        return f"{self.path}={json.dumps(self.value)}"  # JSON is YAML flow: parses back to `value`


@dataclass(frozen=True)
class Variant:
    """One run of a sweep: a base spec, its own overrides (the diff from the base), a seed."""

    name: str  # the run directory's name
    group: str  # the name without the seed: runs that differ only in seed are averaged
    spec: str
    overrides: tuple[Override, ...]
    seed: int | None
    origin: str  # where it was defined


@dataclass
class Plan:
    """Everything a sweep needs, from the command line and/or a sweep file."""

    out: Path
    specs: list[str]
    grid: list[list[Override]] = field(default_factory=list)  # one list of alternatives per field
    sets: list[list[Override]] = field(default_factory=list)  # override sets (alternatives too)
    common: list[str] = field(default_factory=list)  # --set arguments of every variant
    flags: dict[str, Any] = field(default_factory=dict)  # training flag dest -> value
    seeds: int = 1
    jobs: int = 1
    search: SearchConfig | None = None
    name: str = ""  # the sweep file's stem, else the first spec's
    origin: str = "command line"


def expand(plan: Plan) -> list[Variant]:
    """Specs x override sets x grid x seeds, in that nesting order, with unique names."""
    seeds: list[int | None] = [None]  # one seed: the spec's (or --seed)
    if plan.seeds > 1:
        base = int(plan.flags.get("seed") or 0)
        seeds = list(range(base, base + plan.seeds))
    stems = [Path(s).stem for s in plan.specs]
    out: list[Variant] = []
    for index, (spec, stem) in enumerate(zip(plan.specs, stems), start=1):
        label = stem if stems.count(stem) == 1 else f"{stem}{index}"
        for chosen in itertools.product(plan.sets or [[]], *([[o] for o in values] for values in plan.grid)):
            overrides = tuple(o for part in chosen for o in part)
            group = variant_name(label, overrides)
            for seed in seeds:
                name = group if seed is None else f"{group}--seed={seed}"
                origin = overrides[-1].origin if overrides else plan.origin
                out.append(Variant(name, group, spec, overrides, seed, origin))
    return _unique(out)


def variant_name(stem: str, overrides: Sequence[Override]) -> str:
    """`alexnet_digits--width=0.5--defaults.norm=batchnorm`: readable, and a safe directory name."""
    parts = [stem, *(f"{_slug(o.path)}={_slug(_short(o.value))}" for o in overrides)]
    name = "--".join(parts)
    if len(name) > 150:  # file systems allow 255 bytes; keep room for suffixes
        name = f"{name[:140]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def _short(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) == {"kind"}:
            return str(value["kind"])
        return "_".join(f"{k}{_short(v)}" if k != "kind" else str(v) for k, v in value.items())
    if isinstance(value, list):
        return "-".join(_short(v) for v in value)
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text.replace("[", "").replace("]", "")).strip("_") or "_"


def _unique(variants: list[Variant]) -> list[Variant]:
    """Two variants with the same name (values that slug alike) get -2, -3, ... in order."""
    seen: dict[str, int] = {}
    out = []
    for v in variants:
        n = seen.get(v.name, 0) + 1
        seen[v.name] = n
        out.append(v if n == 1 else Variant(f"{v.name}-{n}", f"{v.group}-{n}", v.spec, v.overrides, v.seed, v.origin))
    return out


# --- building a plan ----------------------------------------------------------------------------


def plan_from_args(args: argparse.Namespace) -> Plan:
    """The command line's plan; a single path holding a sweep file (a `specs:` key) starts from it."""
    plan = Plan(out=Path(), specs=list(args.paths))
    if len(args.paths) == 1 and _is_sweep_file(args.paths[0]):
        plan = plan_from_file(args.paths[0])
    plan.grid += [_grid_arg(text) for text in args.grid]
    plan.common += args.overrides
    for dest, *_ in FLAGS:
        if getattr(args, dest) is not None:
            plan.flags[dest] = getattr(args, dest)
    if args.data is not None:
        plan.flags["data"] = args.data
    plan.seeds = args.seeds or plan.seeds
    plan.jobs = args.jobs or plan.jobs
    if not plan.name and plan.specs:
        plan.name = Path(plan.specs[0]).stem
    plan.out = Path(args.out) if args.out else Path("sweeps") / plan.name
    return plan


def _is_sweep_file(path: str) -> bool:
    """A sweep file has a `specs:` key (a spec never does); one that does not parse is reported at once."""
    doc = load_document(path)
    return isinstance(doc.data, dict) and "specs" in doc.data


def plan_from_file(path: str) -> Plan:
    """Read and validate a sweep file; its grid values are located at their lines."""
    doc = load_document(path)
    sweep: SweepFile = validate(SweepFile, doc)
    _check_paths(doc, sweep)
    here = Path(path).parent
    plan = Plan(
        out=Path(), specs=[_relative(here / s) for s in sweep.specs], common=list(sweep.overrides),
        flags=sweep.train.model_dump(exclude_none=True), seeds=sweep.seeds, jobs=sweep.jobs, search=sweep.search,
        name=Path(path).stem, origin=str(doc.locate(())) if doc.locs else path,
    )
    plan.grid = [
        [Override(key, value, str(doc.locate(("grid", key, i)))) for i, value in enumerate(values)]
        for key, values in sweep.grid.items()
    ]
    if sweep.variants:
        plan.sets = [
            [Override(k, v, str(doc.locate(("variants", i, k)))) for k, v in one.items()]
            for i, one in enumerate(sweep.variants)
        ]
    return plan


def _check_paths(doc: Document, sweep: SweepFile) -> None:
    """Every grid, variant and search key must be a field path like `blocks[0].out_channels`."""
    keys: list[tuple[tuple[str | int, ...], str]] = [(("grid", k), k) for k in sweep.grid]
    keys += [(("variants", i, k), k) for i, one in enumerate(sweep.variants) for k in one]
    keys += [(("search", "params", k), k) for k in (sweep.search.params if sweep.search else {})]
    found = []
    for where, key in keys:
        try:
            parse_path(key, doc.locate(where, at_key=True))
        except SpecError as exc:
            found += exc.diagnostics
    if found:
        raise SpecError(found)


def _relative(path: Path) -> str:
    """A spec path as a person would type it from here (relative below the working directory)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def _grid_arg(text: str) -> list[Override]:
    """`--grid FIELD=V1,V2,...`: the values are a YAML flow list, so `{kind: lrn},{kind: batchnorm}` works."""
    source = f"--grid {text}"
    path, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise SpecError.at(Loc(source), "expected FIELD=V1,V2,..., like classifier.dropout=0.3,0.5")
    parse_path(path.strip(), Loc(source))
    try:
        parsed = parse_scalar(f"[{values}]", source)
    except SpecError:
        raise SpecError.at(Loc(source), f"invalid YAML values '{values}'") from None
    return [Override(path.strip(), v, source) for v in parsed]


# --- validation: every variant before any trains ------------------------------------------------------


class SweepInvalid(BuilderError):
    """Variants that `train` would refuse: each named, then its located errors."""

    def __init__(self, failures: list[tuple[Variant, int, int, SpecError]]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} invalid variant(s)")

    def lines(self) -> list[str]:
        out = []
        for v, index, count, exc in self.failures:
            sets = " ".join(f"--set {o.arg}" for o in v.overrides) or "no overrides"
            out.append(f"{v.origin}: error: variant {index} of {count} ({v.name}: {v.spec} {sets}) is invalid:")
            out += [f"  {line}" for line in exc.lines()]
        out.append(f"nothing was trained: {len(self.failures)} of {self.failures[0][2]} variants are invalid")
        return out


def train_namespace(plan: Plan, v: Variant) -> argparse.Namespace:
    """The arguments `train` gets for this variant (one source of truth for validation and running)."""
    flags = {dest: plan.flags.get(dest) for dest, *_ in FLAGS}
    if v.seed is not None:
        flags["seed"] = v.seed
    overrides = [*plan.common, *(o.arg for o in v.overrides)]
    return argparse.Namespace(spec=v.spec, overrides=overrides, data=plan.flags.get("data"), quiet=True, **flags)


def validate_variants(plan: Plan, variants: list[Variant]) -> dict[str, int]:
    """Each variant's number of epochs, once all of them validate as `train` validates them
    (and no finished run directory holds another spec or recipe under the variant's name)."""
    epochs, failures = {}, []
    for i, v in enumerate(variants, start=1):
        try:
            _, spec, config = load_training(train_namespace(plan, v))
            epochs[v.name] = config.epochs
            run_dir = plan.out / v.name
            why = changed_since(run_dir, spec, config) if run_state(run_dir, config.epochs) == "done" else None
            if why:
                message = f"holds a finished run of another spec or recipe ({why}); remove it or choose another --out"
                raise SpecError.at(Loc(str(run_dir)), message)
        except SpecError as exc:
            failures.append((v, i, len(variants), exc))
    if failures:
        raise SweepInvalid(failures)
    return epochs


def changed_since(run_dir: Path, spec: Spec, config: TrainingConfig) -> str | None:
    """How the finished run's spec.yaml differs from this variant (a base spec edited since...), or None.

    The fields a resumed run may change (epochs, device...) and precision (auto is resolved per
    device) do not count, as for `train --resume`."""
    from training.config import RESUMABLE_CHANGES

    try:
        saved = load_spec(run_dir / SPEC_FILE)
    except SpecError:
        return "its spec.yaml is unreadable"
    found = recipe_changes(spec_data(saved), saved.training or {}, spec, config, RESUMABLE_CHANGES | {"precision"})
    if not found:
        return None
    path, old, new = found[0]
    return f"{format_path(path)} is {json.dumps(new)} here but {json.dumps(old)} in the run"


# --- running ------------------------------------------------------------------------------------------


def train_command(ns: argparse.Namespace, run_dir: Path, resume: bool) -> list[str]:
    """`python -m builder train ...` for a namespace from train_namespace."""
    words = [sys.executable, "-m", "builder", "train", ns.spec]
    for override in ns.overrides:
        words += ["--set", override]
    for dest, flag, *_ in FLAGS:
        if getattr(ns, dest) is not None:
            words += [flag, str(getattr(ns, dest))]
    if ns.data is not None:
        words += ["--data", ns.data]
    return [*words, "--resume" if resume else "--out", str(run_dir), "--quiet"]


def run_state(run_dir: Path, epochs: int) -> Literal["done", "resume", "new"]:
    """done: complete for `epochs` epochs; resume: a checkpoint; new: nothing to continue (runfiles.run_status)."""
    status = run_status(run_dir, epochs)
    return "done" if status == "done" else "resume" if status == "interrupted" else "new"


def new_record(plan: Plan, v: Variant, **more: Any) -> dict[str, Any]:
    """What variant.json says while the run goes on (the leaderboard reads group and overrides)."""
    return {"name": v.name, "group": v.group, "spec": v.spec, "overrides": [o.arg for o in v.overrides],
            "common": plan.common, "seed": v.seed, **more, "status": "running"}


@dataclass
class Outcome:
    status: Literal["done", "failed", "interrupted", "pruned", "skipped"]
    code: int = 0
    reason: str = ""


class Children:
    """The running `train` subprocesses; a stop request is forwarded to each exactly once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen[str]] = set()
        self.stopping = False

    def stop(self, signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        with self.lock:
            self.stopping = True
        self.interrupt()

    def interrupt(self) -> None:
        """SIGINT to every running child: the trainer finishes its step, checkpoints and exits 130."""
        with self.lock:
            for proc in self.procs:
                proc.send_signal(signal.SIGINT)

    def run(self, command: list[str], log_path: Path, env: dict[str, str], on_line: Callable[[str], None]) -> Outcome:
        """Run one child, its output appended to log_path; the last line is the reason of a failure."""
        last = ""
        with log_path.open("a") as log, self._started(command, env) as proc:
            if proc is None:
                return Outcome("interrupted", 130, "not started: the sweep was stopping")
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                last = line.strip() or last
                on_line(line)
            code = proc.wait()
        if code == 0:
            return Outcome("done")
        return Outcome("interrupted" if code in INTERRUPTED else "failed", code, last or f"exit status {code}")

    @contextmanager
    def _started(self, command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str] | None]:
        with self.lock:
            if self.stopping:
                yield None
                return
            # Own session: a Ctrl-C at the terminal reaches the sweep only, which forwards it once.
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    start_new_session=True)
            self.procs.add(proc)
        try:
            yield proc
        finally:
            with self.lock:
                self.procs.discard(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def child_env(jobs: int) -> dict[str, str]:
    """The children run this package (whatever the working directory), each on its share of the CPUs."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if jobs > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = str(max(1, cpus // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


@contextmanager
def forwarding_signals(children: Children) -> Iterator[None]:
    """SIGINT/SIGTERM stop launching variants and are passed on to the running ones (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, children.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_variant(plan: Plan, v: Variant, epochs: int, children: Children, env: dict[str, str], log: Log) -> Outcome:
    """Train one variant in its run directory (new, resumed or skipped) and record how it ended."""
    run_dir = plan.out / v.name
    state = run_state(run_dir, epochs)
    if state == "done":
        log(f"{v.name}: finished before, skipped")
        return Outcome("skipped")
    run_dir.mkdir(parents=True, exist_ok=True)
    ns = train_namespace(plan, v)
    command = train_command(ns, run_dir, resume=state == "resume")
    record = new_record(plan, v, command=command[1:])
    write_record(run_dir, record)
    log(f"{v.name}: {'resuming' if state == 'resume' else 'training'}")
    started = time.perf_counter()
    outcome = children.run(command, run_dir / LOG, env, lambda line: None)
    record.update(status=outcome.status, exit_code=outcome.code, reason=outcome.reason,
                  wall_seconds=round(time.perf_counter() - started, 3))
    write_record(run_dir, record)
    log(f"{v.name}: {outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""))
    return outcome


def run_grid(plan: Plan, log: Log) -> int:
    """Validate every variant, run them J at a time, write the leaderboard. Exit 0, 1 (failures) or 130."""
    variants = expand(plan)
    epochs = validate_variants(plan, variants)
    plan.out.mkdir(parents=True, exist_ok=True)
    log(f"sweep of {len(variants)} variants into {plan.out}, {plan.jobs} at a time")
    children, env = Children(), child_env(plan.jobs)
    with forwarding_signals(children), ThreadPoolExecutor(plan.jobs) as pool:
        futures: set[Future[Outcome]] = {
            pool.submit(run_variant, plan, v, epochs[v.name], children, env, log) for v in variants
        }
        outcomes = _wait_all(futures)
    return finish(plan.out, outcomes, children.stopping, log)


def _wait_all(futures: set[Future[Outcome]]) -> list[Outcome]:
    pending, done = futures, set()
    while pending:  # short waits, so a signal handler runs promptly
        finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        done |= finished
    return [f.result() for f in done]


def finish(out: Path, outcomes: list[Outcome], stopped: bool, log: Log) -> int:
    """Print the leaderboard and how many variants ended which way; the exit status."""
    from builder.tools.leaderboard import write_leaderboard

    board = write_leaderboard(out)
    log(board.markdown.rstrip())
    for line in board.problems:
        log(line)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "pruned", "failed", "interrupted")}
    log(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; leaderboard in {board.csv_path}")
    if stopped or counts["interrupted"]:
        log("interrupted: run the same command again to resume (finished variants are skipped)")
        return 130
    return 1 if counts["failed"] else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    if (args.storage is not None or args.trials is not None) and plan.search is None:
        flag = "--storage" if args.storage is not None else "--trials"
        raise SpecError.at(Loc(flag), "needs a sweep file with a search: section")
    if plan.search is not None:
        _check_search_flags(args)
        from builder.tools.search import run_search

        return run_search(plan, plan.search, storage=args.storage, trials=args.trials, log=_print)
    return run_grid(plan, _print)


def _check_search_flags(args: argparse.Namespace) -> None:
    """Grid flags mean nothing to a search: say so instead of ignoring them."""
    wrong = [("--grid", bool(args.grid), "a search samples its own variants"),
             ("--seeds", (args.seeds or 1) > 1, "a search trains each trial once"),
             ("--jobs", (args.jobs or 1) > 1, "a worker trains one trial at a time; start several workers")]
    found = [Diagnostic(Loc(flag), (), why) for flag, bad, why in wrong if bad]
    if found:
        raise SpecError(found)


def _print(line: str) -> None:
    print(line, flush=True)


def add_sweep_parser(sub: Any) -> None:
    """Register `sweep` on the builder CLI's subparsers."""
    p = sub.add_parser(
        "sweep", help="train variants of specs (a grid, override sets, seeds, or an Optuna search)",
        description="Train every variant as its own run directory under --out, then write the leaderboard. "
        "Re-running the same command skips finished variants and resumes interrupted ones.",
    )
    p.add_argument("paths", nargs="+", metavar="SPEC", help="base spec(s), or one sweep file (see docs/sweeps.md)")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a field path (spec or training.*) and its values; several --grid multiply")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="an override every variant gets")
    p.add_argument("--seeds", type=_positive, metavar="N", help="train each variant with N seeds (averaged)")
    p.add_argument("--jobs", type=_positive, metavar="J", help="run J variants at once, the CPU threads divided")
    p.add_argument("--out", metavar="DIR", help="the sweep directory (default sweeps/<name>)")
    for dest, flag, path, metavar, text in FLAGS:
        p.add_argument(flag, dest=dest, metavar=metavar, help=f"{text} (sets {path})")
    p.add_argument("--data", metavar="KIND[:ROOT]", help="dataset of every variant (as train --data)")
    p.add_argument("--storage", metavar="URL", help="search: the Optuna storage (default sqlite in the sweep dir)")
    p.add_argument("--trials", type=_positive, metavar="N", help="search: the trial budget over all workers")
    p.set_defaults(func=cmd_sweep)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value
